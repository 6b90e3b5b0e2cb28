-- A version per payment, bumped by every change of its state: the ledger's compare-and-set compares this one
-- number instead of every column the state machine reads. Existing payments start at 0.
ALTER TABLE ledger.payment_requests ADD COLUMN version bigint NOT NULL DEFAULT 0;
