-- The intake's own records: the idempotency record of each accepted request, and the transactional outbox.
CREATE SCHEMA IF NOT EXISTS intake;

CREATE TABLE intake.payments (
    id                  text PRIMARY KEY,
    merchant_id         text NOT NULL,
    idempotency_key     text NOT NULL,
    request_fingerprint text NOT NULL,
    request             jsonb NOT NULL,
    checkout_url        text,
    failure_code        text,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    UNIQUE (merchant_id, idempotency_key)
);

CREATE INDEX payments_created ON intake.payments (created_at);

CREATE TABLE intake.outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    payment_id    text NOT NULL,
    event_type    text NOT NULL,
    envelope      text NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);

CREATE INDEX outbox_unpublished ON intake.outbox (id) WHERE published_at IS NULL;

-- Wake the relay when a transaction that wrote outbox rows commits (NOTIFY is delivered at commit).
CREATE FUNCTION intake.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paystream_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON intake.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION intake.notify_outbox();
