-- Captures of held payments (docs/reference/capture.md): each accepted POST /v1/payments/{id}/capture under its
-- Idempotency-Key (scoped per merchant, like payments), so a retry replays it and never asks twice.
CREATE TABLE intake.captures (
    merchant_id         text NOT NULL,
    idempotency_key     text NOT NULL,
    payment_id          text NOT NULL,
    request_fingerprint text NOT NULL,
    amount_to_capture   bigint NOT NULL CHECK (amount_to_capture > 0),
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (merchant_id, idempotency_key)
);

CREATE INDEX captures_created ON intake.captures (created_at);

-- The trace context of the request that created the payment: a capture or a void days later continues the
-- payment's trace, so its spans (intake, gateway_worker, provider, ledger) are found with the payment's.
ALTER TABLE intake.payments ADD COLUMN trace_headers jsonb NOT NULL DEFAULT '{}'::jsonb;
