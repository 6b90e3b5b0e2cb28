-- What the ledger publishes to other services (docs/explanation/ownership.md): they read its records only through
-- these views, granted to each reader's role; its tables stay its own. A view may gain columns at its end
-- (CREATE OR REPLACE VIEW in a later migration); changing or dropping a column makes a new version (_v2).

-- Payments as merchants see them, with what reads by merchant and by idempotency key need.
CREATE VIEW ledger.payments_v1 AS
SELECT id, merchant_id, idempotency_key, request_fingerprint, status, amount, currency, reference, description,
       metadata, checkout_url, return_url, cancel_url, customer_email, failure_code, created_at, updated_at,
       expires_at, provider, provider_payment_id
FROM ledger.payment_requests;

-- Each payment's log, in the order it was recorded (id).
CREATE VIEW ledger.payment_events_v1 AS
SELECT id, payment_request_id AS payment_id, event_id, event_type, from_status, to_status, source, outcome,
       occurred_at, recorded_at
FROM ledger.payment_logs;
