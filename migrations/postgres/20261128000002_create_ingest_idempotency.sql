-- Idempotency keys of data-ingestion: a unique (scope, key) decides which request
-- writes; retries from any replica replay the stored answer. Owners heartbeat in
-- ingest_instances so a retry can take over the key of a replica that died.
CREATE TABLE IF NOT EXISTS ingest_idempotency (
    scope           VARCHAR(32) NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    request_hash    VARCHAR(64) NOT NULL,
    owner           VARCHAR(64) NOT NULL,
    state           VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'writing', 'done')),
    record_count    INTEGER NOT NULL DEFAULT 0,
    is_array        BOOLEAN NOT NULL DEFAULT FALSE,
    s3_key          TEXT,
    status          INTEGER,
    response        TEXT,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);

CREATE INDEX IF NOT EXISTS idx_ingest_idempotency_expires ON ingest_idempotency (expires_at);

CREATE TABLE IF NOT EXISTS ingest_instances (
    instance_id  VARCHAR(64) PRIMARY KEY,
    heartbeat_at TIMESTAMP NOT NULL
);
