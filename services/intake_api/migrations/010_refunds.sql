-- Refund requests (docs/reference/refunds.md): the intake's record of each accepted refund, its Idempotency-Key
-- and what it reserved of its payment. Their status is the ledger's (ledger.refunds_v1); a refund the ledger has
-- not recorded yet is pending.
CREATE TABLE intake.refunds (
    id                  text PRIMARY KEY,
    payment_id          text NOT NULL,
    merchant_id         text NOT NULL,
    idempotency_key     text NOT NULL,
    request_fingerprint text NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text NOT NULL,
    reason              text,
    metadata            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL,
    UNIQUE (merchant_id, idempotency_key)
);

CREATE INDEX refunds_by_payment ON intake.refunds (payment_id);
CREATE INDEX refunds_by_merchant_created ON intake.refunds (merchant_id, created_at DESC, id DESC);
