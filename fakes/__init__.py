"""Stand-ins for the outside systems (Stripe, the Official MCP Registry), for tests and the demo.

Product apps never import this package (tests/test_layering.py checks it). It is an app only so
that `run_fake_stripe` and `run_fake_registry` are management commands; importing it loads
nothing beyond the standard library and what production installs anyway.
"""
