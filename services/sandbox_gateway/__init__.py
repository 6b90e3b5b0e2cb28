"""The sandbox gateway: Paystream's built-in stand-in payment provider (docs/reference/sandbox.md).

It opens payment intents, serves a hosted payment page, settles intents with test cards, sends signed
webhooks with retries, and injects faults on request. Everything lives in memory: it is a sandbox.
"""
