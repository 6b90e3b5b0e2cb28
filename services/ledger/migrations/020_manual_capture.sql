-- Authorize now, capture later (docs/reference/capture.md): a payment may be held (AUTHORIZED) before it is taken,
-- and records how it is captured and how much the provider took (refunds are of that amount).
ALTER TABLE ledger.payment_requests DROP CONSTRAINT payment_requests_status_check;
ALTER TABLE ledger.payment_requests ADD CONSTRAINT payment_requests_status_check
    CHECK (status IN ('PENDING', 'AUTHORIZED', 'SUCCEEDED', 'FAILED', 'CANCELED', 'EXPIRED'));

ALTER TABLE ledger.payment_requests
    ADD COLUMN capture_method text NOT NULL DEFAULT 'automatic' CHECK (capture_method IN ('automatic', 'manual')),
    ADD COLUMN amount_captured bigint NOT NULL DEFAULT 0,
    -- When the hold began; while AUTHORIZED, expires_at is when it lapses (authorized_at + AUTHORIZATION_TTL_SECONDS).
    ADD COLUMN authorized_at timestamptz;

-- Payments taken before this migration took their whole amount.
UPDATE ledger.payment_requests SET amount_captured = amount WHERE status = 'SUCCEEDED';

ALTER TABLE ledger.payment_requests ADD CONSTRAINT payment_requests_amount_captured_check
    CHECK (amount_captured >= 0 AND amount_captured <= amount AND (status = 'SUCCEEDED' OR amount_captured = 0));

-- The sweep finds holds due to lapse, and the gauges count open ones, without reading every payment.
CREATE INDEX payment_requests_authorized_expiry ON ledger.payment_requests (expires_at) WHERE status = 'AUTHORIZED';
