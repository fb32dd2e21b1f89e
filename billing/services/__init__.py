"""Billing writes, one module per entity group. Each function states its invariant, the lock it
expects and why it is idempotent."""
