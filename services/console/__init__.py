"""The console (docs/reference/console.md): the merchant's dashboard, a client of the intake API only.

A shop's staff sign in with the merchant's API key and see and act on their payments, refunds and webhooks
through the public intake API; the console never reads the database or the broker.
"""
