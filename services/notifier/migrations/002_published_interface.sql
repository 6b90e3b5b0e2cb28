-- What the notifier publishes to other services (docs/explanation/ownership.md). The intake API, where merchants
-- manage their endpoints and read their events, reads these views and changes endpoints only through these
-- functions: they run as the notifier (SECURITY DEFINER), so the notifier's role is the only one that writes its
-- tables. The views are declared in shared/ownership.py (columns added there are appended at deploy); changing a
-- column or a function's signature makes a new version.

-- Endpoints without their secrets (the intake hands a secret out once, when it makes it).
CREATE VIEW notifier.webhook_endpoints_v1 AS
SELECT id, merchant_id, url, events, status, created_at, disabled_at, deleted_at
FROM notifier.webhook_endpoints;

CREATE VIEW notifier.events_v1 AS
SELECT seq, id, merchant_id, type, payment_id, data, created_at
FROM notifier.events;

CREATE VIEW notifier.delivery_attempts_v1 AS
SELECT id, event_id, endpoint_id, attempt, status_code, error, duration_ms, attempted_at, next_attempt_at
FROM notifier.delivery_attempts;

-- Register an endpoint unless the merchant already has `max_endpoints`: none, or the new endpoint. Registrations of
-- one merchant take turns (a transaction lock on the merchant), so two at once cannot both pass the count.
CREATE FUNCTION notifier.register_webhook_endpoint_v1(
    endpoint_id text, merchant text, endpoint_url text, endpoint_events text[], sealed_secret text,
    max_endpoints integer
) RETURNS SETOF notifier.webhook_endpoints_v1
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('paystream:webhook-endpoints:' || merchant, 0));
    RETURN QUERY
    INSERT INTO notifier.webhook_endpoints (id, merchant_id, url, events, secret_sealed)
    SELECT endpoint_id, merchant, endpoint_url, endpoint_events, sealed_secret
    WHERE (SELECT count(*) FROM notifier.webhook_endpoints w
           WHERE w.merchant_id = merchant AND w.deleted_at IS NULL) < max_endpoints
    RETURNING webhook_endpoints.id, webhook_endpoints.merchant_id, webhook_endpoints.url, webhook_endpoints.events,
              webhook_endpoints.status, webhook_endpoints.created_at, webhook_endpoints.disabled_at,
              webhook_endpoints.deleted_at;
END;
$$;

-- Stop delivering to an endpoint (its history stays): whether the merchant had it.
CREATE FUNCTION notifier.delete_webhook_endpoint_v1(endpoint_id text, merchant text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH deleted AS (
        UPDATE notifier.webhook_endpoints w SET deleted_at = clock_timestamp()
        WHERE w.id = endpoint_id AND w.merchant_id = merchant AND w.deleted_at IS NULL
        RETURNING 1
    )
    SELECT count(*) > 0 FROM deleted;
$$;

-- A new secret; the current one keeps signing beside it until `grace_ends`. None if the merchant has no such endpoint.
CREATE FUNCTION notifier.rotate_webhook_endpoint_secret_v1(
    endpoint_id text, merchant text, grace_ends timestamptz, sealed_secret text
) RETURNS SETOF notifier.webhook_endpoints_v1
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE notifier.webhook_endpoints w
    SET previous_secret_sealed = w.secret_sealed, previous_secret_expires_at = grace_ends, secret_sealed = sealed_secret
    WHERE w.id = endpoint_id AND w.merchant_id = merchant AND w.deleted_at IS NULL
    RETURNING w.id, w.merchant_id, w.url, w.events, w.status, w.created_at, w.disabled_at, w.deleted_at;
$$;

-- Functions are executable by everyone unless revoked: only the roles granted them (shared/ownership.py) may.
REVOKE EXECUTE ON FUNCTION notifier.register_webhook_endpoint_v1 FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION notifier.delete_webhook_endpoint_v1 FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION notifier.rotate_webhook_endpoint_secret_v1 FROM PUBLIC;
