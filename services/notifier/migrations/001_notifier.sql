-- The notifier's records (docs/reference/merchant-webhooks.md): merchants' webhook endpoints, the events they are told about, and
-- every delivery attempt. Endpoints are configured through the intake API, which writes their rows; the
-- notifier writes the rest (and an endpoint's failure state).
CREATE SCHEMA IF NOT EXISTS notifier;

CREATE TABLE notifier.webhook_endpoints (
    id                          text PRIMARY KEY,
    merchant_id                 text NOT NULL,
    url                         text NOT NULL,
    events                      text[] NOT NULL,  -- '{*}': every event type
    status                      text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    -- Fernet ciphertext (WEBHOOK_SECRETS_KEY): a dump of this table cannot sign.
    secret_sealed               text NOT NULL,
    previous_secret_sealed      text,
    previous_secret_expires_at  timestamptz,
    failing_since               timestamptz,
    disabled_at                 timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at                  timestamptz
);

CREATE INDEX webhook_endpoints_by_merchant ON notifier.webhook_endpoints (merchant_id, created_at)
    WHERE deleted_at IS NULL;

CREATE TABLE notifier.events (
    seq          bigserial NOT NULL UNIQUE,  -- the listing order, newest first
    id           text PRIMARY KEY,           -- evt_...
    merchant_id  text NOT NULL,
    type         text NOT NULL,
    payment_id   text,
    data         jsonb NOT NULL,             -- {"object": ...} as it stood when the event was recorded
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX events_by_merchant ON notifier.events (merchant_id, seq DESC);
CREATE INDEX events_by_merchant_payment ON notifier.events (merchant_id, payment_id, seq DESC);

-- One row per (event, endpoint): its state, for the "oldest undelivered" gauge and to skip what is done.
CREATE TABLE notifier.deliveries (
    event_id         text NOT NULL REFERENCES notifier.events (id),
    endpoint_id      text NOT NULL REFERENCES notifier.webhook_endpoints (id),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    pending_since    timestamptz,
    next_attempt_at  timestamptz,
    delivered_at     timestamptz,
    PRIMARY KEY (event_id, endpoint_id)
);

CREATE INDEX deliveries_pending ON notifier.deliveries (pending_since) WHERE status = 'pending';

CREATE TABLE notifier.delivery_attempts (
    id               bigserial PRIMARY KEY,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL,
    attempt          integer NOT NULL,
    status_code      integer,
    error            text,
    duration_ms      integer NOT NULL,
    attempted_at     timestamptz NOT NULL,
    next_attempt_at  timestamptz,
    FOREIGN KEY (event_id, endpoint_id) REFERENCES notifier.deliveries (event_id, endpoint_id)
);

CREATE INDEX delivery_attempts_by_event ON notifier.delivery_attempts (event_id, id);
