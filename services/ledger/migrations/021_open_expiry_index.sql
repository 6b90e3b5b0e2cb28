-- The expiry sweep claims PENDING and AUTHORIZED payments past expires_at, oldest first. Neither status's own
-- partial index answers that: without one index over both, the sweep read every payment each time it ran.
CREATE INDEX payment_requests_open_expiry ON ledger.payment_requests (expires_at)
    WHERE status IN ('PENDING', 'AUTHORIZED');
-- Only the sweep read it, before AUTHORIZED existed; the AUTHORIZED one stays for the open-holds gauges.
DROP INDEX ledger.payment_requests_pending_expiry;
