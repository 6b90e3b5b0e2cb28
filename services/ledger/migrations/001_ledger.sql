-- The ledger's records (docs/reference/records.md): each payment's current state, and every event that touched it.
CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE ledger.payment_requests (
    id                          text PRIMARY KEY,
    merchant_id                 text NOT NULL,
    idempotency_key             text NOT NULL,
    request_fingerprint         text NOT NULL,
    reference                   text NOT NULL,
    amount                      bigint NOT NULL CHECK (amount > 0),
    currency                    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description                 text,
    customer_email              text,
    metadata                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    return_url                  text NOT NULL,
    cancel_url                  text,
    status                      text NOT NULL
        CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED', 'CANCELED', 'EXPIRED')),
    provider                    text,
    provider_payment_id         text,
    checkout_url                text,
    failure_code                text,
    created_at                  timestamptz NOT NULL,
    updated_at                  timestamptz NOT NULL,
    expires_at                  timestamptz NOT NULL,
    completed_at                timestamptz,
    expiration_requested_at     timestamptz,
    reconciliation_requested_at timestamptz,
    UNIQUE (merchant_id, idempotency_key)
);

CREATE INDEX payment_requests_pending_expiry ON ledger.payment_requests (expires_at) WHERE status = 'PENDING';
CREATE INDEX payment_requests_pending_created ON ledger.payment_requests (created_at) WHERE status = 'PENDING';
CREATE INDEX payment_requests_provider ON ledger.payment_requests (provider, provider_payment_id);

CREATE TABLE ledger.payment_logs (
    id                  bigserial PRIMARY KEY,
    payment_request_id  text NOT NULL REFERENCES ledger.payment_requests (id),
    event_id            uuid NOT NULL UNIQUE,
    event_type          text NOT NULL,
    from_status         text,
    to_status           text,
    source              text NOT NULL
        CHECK (source IN ('intake', 'gateway', 'webhook', 'reconciliation', 'expiry', 'merchant')),
    outcome             text NOT NULL CHECK (outcome = 'applied' OR outcome LIKE 'ignored: %'),
    late_success        boolean NOT NULL DEFAULT false,
    payload             jsonb NOT NULL,
    occurred_at         timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX payment_logs_by_payment ON ledger.payment_logs (payment_request_id, id);
