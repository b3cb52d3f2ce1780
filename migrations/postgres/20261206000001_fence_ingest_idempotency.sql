-- Fencing for Idempotency-Key claims (additive: existing rows are adopted as they are).
-- claim_token: a random token written by every claim and takeover; each later state
-- change of the row (before the PUT, the answer, a release) names it, so an owner
-- whose claim moved on changes nothing. Rows from before this column have NULL and
-- are matched as ''.
-- failed_at: when the owner's write failed (database clock); a `writing` claim is
-- taken over only once the failed-write grace has passed since then.
ALTER TABLE ingest_idempotency ADD COLUMN IF NOT EXISTS claim_token VARCHAR(64);
ALTER TABLE ingest_idempotency ADD COLUMN IF NOT EXISTS failed_at TIMESTAMP;
