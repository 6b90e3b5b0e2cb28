-- Refunds (docs/reference/refunds.md): each refund of a payment, its status, and its events in the payment's log.
CREATE TABLE ledger.refunds (
    id                          text PRIMARY KEY,
    payment_request_id          text NOT NULL REFERENCES ledger.payment_requests (id),
    merchant_id                 text NOT NULL,
    idempotency_key             text NOT NULL,
    amount                      bigint NOT NULL CHECK (amount > 0),
    currency                    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reason                      text CHECK (reason IN ('requested_by_customer', 'duplicate', 'fraudulent')),
    metadata                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    status                      text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_code                text,
    provider                    text,
    provider_refund_id          text,
    created_at                  timestamptz NOT NULL,
    updated_at                  timestamptz NOT NULL,
    completed_at                timestamptz,
    reconciliation_requested_at timestamptz,
    UNIQUE (merchant_id, idempotency_key)
);

CREATE INDEX refunds_by_payment ON ledger.refunds (payment_request_id, created_at);
CREATE INDEX refunds_pending_created ON ledger.refunds (created_at) WHERE status = 'pending';

-- The sum of the payment's succeeded refunds, kept by the ledger in the transaction that records each success.
ALTER TABLE ledger.payment_requests ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0
    CHECK (amount_refunded >= 0 AND amount_refunded <= amount);

-- A refund's events are the payment's events too: the log row names the refund and its change of status.
ALTER TABLE ledger.payment_logs
    ADD COLUMN refund_id text,
    ADD COLUMN refund_from_status text,
    ADD COLUMN refund_to_status text;

-- What other services read of refunds: this view is the ledger's published, versioned interface (the intake
-- answers a refund's status from it; the notifier delivers refunds from it). Its columns only ever grow.
CREATE VIEW ledger.refunds_v1 AS
SELECT r.id, r.payment_request_id AS payment_id, r.merchant_id, r.amount, r.currency, r.reason, r.metadata,
       r.status, r.failure_code, r.created_at, r.updated_at, p.amount_refunded AS payment_amount_refunded,
       p.amount AS payment_amount
FROM ledger.refunds r JOIN ledger.payment_requests p ON p.id = r.payment_request_id;
