"""A stateful fake Stripe speaking the wire format of the subset in ../shared/stripe/README.md.

The real `stripe` client reaches it through `STRIPE_API_BASE`; it serves a hosted Checkout page,
a Connect onboarding page and billing-period controls, and sends signed webhooks.
Entry points: `server.FakeStripeServer` (loopback HTTP), `app.FakeStripeApp` (WSGI or
transport-free), `transport.FakeStripeHTTPClient` (no sockets).
"""
