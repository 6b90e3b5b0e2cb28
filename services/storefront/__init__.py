"""The storefront: a demo shop showing how a merchant integrates with Paystream (docs/reference/storefront.md).

Its server, never the browser, holds the API key and sets the amount; it creates each payment through the intake
API with the order id as the Idempotency-Key, sends the customer to the hosted checkout page, and on their return
reads the payment's status from the intake API rather than trusting the redirect.
"""
