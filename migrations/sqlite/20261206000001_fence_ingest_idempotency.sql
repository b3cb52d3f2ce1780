-- Fencing for Idempotency-Key claims (additive: existing rows are adopted as they are).
-- See the PostgreSQL migration of the same name.
ALTER TABLE ingest_idempotency ADD COLUMN claim_token VARCHAR(64);
ALTER TABLE ingest_idempotency ADD COLUMN failed_at TIMESTAMP;
