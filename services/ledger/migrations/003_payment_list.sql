-- GET /v1/payments lists a merchant's payments newest first, a page at a time (keyset on created_at, id).
CREATE INDEX payment_requests_by_merchant_created
    ON ledger.payment_requests (merchant_id, created_at DESC, id DESC);
