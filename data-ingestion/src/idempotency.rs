//! `Idempotency-Key`: a retry with the same key, to any replica, gets the first
//! answer and writes nothing. The database decides: inserting the `(scope, key)` row
//! succeeds for exactly one request (a unique constraint, not a check-then-insert).
//!
//! A row moves `pending` (claimed) -> `writing` (the object key it will be written
//! to, recorded before the PUT) -> `done` (the answer). If the owner dies (its
//! heartbeat in `ingest_instances` stops) or the row goes stale, a retry takes the
//! key over: for `writing` it first asks the store whether the object landed, and
//! if so answers from it instead of writing again, so an acknowledged record is
//! stored exactly once. Keys expire after the configured time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use common::storage::ObjectStore;
use common::{Db, DbError, Query};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::error::IngestError;
use crate::grouper::{FlushHooks, IdempotencyRef};

/// The outcome of claiming a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: do the work.
    Proceed,
    /// Answered before: replay this status and body.
    Replay {
        /// HTTP status of the first answer.
        status: u16,
        /// Body of the first answer.
        body: String,
    },
}

/// What a claim records about the request, to rebuild its answer after a crash.
#[derive(Debug, Clone, Copy)]
pub struct RequestShape {
    /// Records in the request.
    pub records: usize,
    /// Whether the body was an array.
    pub is_array: bool,
}

/// Rebuilds a grouped request's answer from its object key (after a crash).
pub type AnswerFromKey = fn(scope: &str, s3_key: &str, shape: RequestShape) -> Option<String>;

/// Timing rules.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyRules {
    /// How long a key is remembered.
    pub ttl: Duration,
    /// A silent owner is dead after this long.
    pub dead_after: Duration,
    /// A claim older than this can be taken over even from a live owner (its request
    /// and write have timed out by then).
    pub stale_after: Duration,
    /// A claim whose write failed can be taken over this long after the failure: by
    /// then every attempt of that PUT has ended, so an object that has not landed
    /// will not land later and the retry can write without doubling the records.
    pub failed_write_grace: Duration,
}

/// The idempotency store.
#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    store: Arc<dyn ObjectStore>,
    instance: String,
    rules: IdempotencyRules,
    answer_from_key: AnswerFromKey,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Validates the header value: 1 to 255 visible ASCII characters.
pub fn parse_key(value: &axum::http::HeaderValue) -> Result<String, IngestError> {
    let text = value.to_str().unwrap_or("");
    if !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(IngestError::BadRequest(
            "Invalid Idempotency-Key: expected 1 to 255 visible ASCII characters".into(),
        ))
    }
}

/// A fingerprint of the request, so a key reused for a different body is refused.
pub fn request_hash(scope: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn ago(d: Duration) -> NaiveDateTime {
    now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
}

struct Row {
    request_hash: String,
    owner: String,
    state: String,
    s3_key: Option<String>,
    status: Option<i64>,
    response: Option<String>,
    record_count: i64,
    is_array: bool,
    updated_at: NaiveDateTime,
    expires_at: NaiveDateTime,
}

const SELECT_ROW: &str = "SELECT request_hash, owner, state, s3_key, status, response, record_count, \
     is_array, updated_at, expires_at FROM ingest_idempotency WHERE scope = $1 AND idempotency_key = $2";

impl Idempotency {
    /// An idempotency store for this process (`instance` identifies it in heartbeats).
    pub fn new(
        db: Db,
        store: Arc<dyn ObjectStore>,
        rules: IdempotencyRules,
        answer_from_key: AnswerFromKey,
    ) -> Self {
        Self {
            db,
            store,
            instance: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
            rules,
            answer_from_key,
        }
    }

    /// This process's owner id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Claims `key` for a request, or tells how to answer without doing the work.
    pub async fn claim(
        &self,
        scope: &'static str,
        key: &str,
        hash: &str,
        shape: RequestShape,
    ) -> Result<Claim, IngestError> {
        for _ in 0..4 {
            let now = now();
            let expires = now
                + chrono::Duration::from_std(self.rules.ttl).unwrap_or(chrono::Duration::days(1));
            let inserted = self
                .db
                .execute(
                    Query::new(
                        "INSERT INTO ingest_idempotency (scope, idempotency_key, request_hash, owner, state, \
                         record_count, is_array, created_at, updated_at, expires_at) \
                         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $7, $8) \
                         ON CONFLICT (scope, idempotency_key) DO NOTHING",
                    )
                    .bind(scope)
                    .bind(key)
                    .bind(hash)
                    .bind(self.instance.as_str())
                    .bind(shape.records as i64)
                    .bind(shape.is_array)
                    .bind(now)
                    .bind(expires),
                )
                .await?;
            if inserted == 1 {
                return Ok(Claim::Proceed);
            }
            let Some(row) = self.load(scope, key).await? else {
                continue; // expired and removed meanwhile
            };
            if row.expires_at < now {
                self.db
                    .execute(
                        Query::new(
                            "DELETE FROM ingest_idempotency WHERE scope = $1 AND idempotency_key = $2 \
                             AND expires_at < $3",
                        )
                        .bind(scope)
                        .bind(key)
                        .bind(now),
                    )
                    .await?;
                continue;
            }
            if row.request_hash != hash {
                return Err(IngestError::Unprocessable(
                    "Idempotency-Key was already used for a different request".into(),
                ));
            }
            match row.state.as_str() {
                "done" => {
                    return Ok(Claim::Replay {
                        status: row.status.unwrap_or(201) as u16,
                        body: row.response.unwrap_or_default(),
                    });
                }
                "writing" => {
                    let landed = match row.s3_key.as_deref() {
                        Some(object) => self
                            .store
                            .exists(object)
                            .await
                            .map_err(IngestError::Store)?,
                        None => false,
                    };
                    if let (true, Some(object)) = (landed, row.s3_key.as_deref()) {
                        let shape = RequestShape {
                            records: row.record_count as usize,
                            is_array: row.is_array,
                        };
                        let body = (self.answer_from_key)(scope, object, shape).unwrap_or_default();
                        self.db
                            .execute(
                                Query::new(
                                    "UPDATE ingest_idempotency SET state = 'done', status = 201, response = $1, \
                                     updated_at = $2 WHERE scope = $3 AND idempotency_key = $4 AND state = 'writing'",
                                )
                                .bind(body.as_str())
                                .bind(now)
                                .bind(scope)
                                .bind(key),
                            )
                            .await?;
                        return Ok(Claim::Replay { status: 201, body });
                    }
                }
                _ => {}
            }
            // pending, or writing with no object yet: in progress unless abandoned.
            let abandoned = row.updated_at < ago(self.rules.stale_after)
                || (row.owner != self.instance && self.owner_dead(&row.owner).await?);
            if !abandoned {
                return Err(IngestError::Conflict(
                    "A request with this Idempotency-Key is in progress; retry later",
                ));
            }
            let taken = self
                .db
                .execute(
                    Query::new(
                        "UPDATE ingest_idempotency SET owner = $1, state = 'pending', s3_key = NULL, \
                         updated_at = $2 WHERE scope = $3 AND idempotency_key = $4 AND owner = $5 \
                         AND state = $6 AND updated_at = $7",
                    )
                    .bind(self.instance.as_str())
                    .bind(now)
                    .bind(scope)
                    .bind(key)
                    .bind(row.owner.as_str())
                    .bind(row.state.as_str())
                    .bind(row.updated_at),
                )
                .await?;
            if taken == 1 {
                tracing::info!(scope, previous_owner = %row.owner, "took over an abandoned Idempotency-Key");
                return Ok(Claim::Proceed);
            }
        }
        Err(IngestError::Conflict(
            "A request with this Idempotency-Key is in progress; retry later",
        ))
    }

    async fn load(&self, scope: &str, key: &str) -> Result<Option<Row>, DbError> {
        let rows = self
            .db
            .fetch_all(Query::new(SELECT_ROW).bind(scope).bind(key))
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(Row {
            request_hash: rows.get_string(0, "request_hash")?.unwrap_or_default(),
            owner: rows.get_string(0, "owner")?.unwrap_or_default(),
            state: rows.get_string(0, "state")?.unwrap_or_default(),
            s3_key: rows.get_string(0, "s3_key")?,
            status: rows.get_i64(0, "status")?,
            response: rows.get_string(0, "response")?,
            record_count: rows.get_i64(0, "record_count")?.unwrap_or(0),
            is_array: rows.get_bool(0, "is_array")?.unwrap_or(false),
            updated_at: rows.get_timestamp(0, "updated_at")?.unwrap_or_default(),
            expires_at: rows.get_timestamp(0, "expires_at")?.unwrap_or_default(),
        }))
    }

    async fn owner_dead(&self, owner: &str) -> Result<bool, DbError> {
        let rows = self
            .db
            .fetch_all(
                Query::new("SELECT heartbeat_at FROM ingest_instances WHERE instance_id = $1")
                    .bind(owner),
            )
            .await?;
        Ok(match rows.get_timestamp(0, "heartbeat_at")? {
            Some(beat) => beat < ago(self.rules.dead_after),
            None => true,
        })
    }

    /// Records the answer of a finished request.
    pub async fn complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), DbError> {
        self.db
            .execute(
                Query::new(
                    "UPDATE ingest_idempotency SET state = 'done', status = $1, response = $2, updated_at = $3 \
                     WHERE scope = $4 AND idempotency_key = $5 AND owner = $6",
                )
                .bind(i64::from(status))
                .bind(body)
                .bind(now())
                .bind(scope)
                .bind(key)
                .bind(self.instance.as_str()),
            )
            .await
            .map(|_| ())
    }

    /// Forgets a claim whose request failed before anything was written, so the
    /// client's retry can proceed. A claim in `writing` stays: its PUT may have landed
    /// even though the answer was lost (see [`FlushHooks::after_failure`]).
    pub async fn release(&self, scope: &str, key: &str) {
        let result = self
            .db
            .execute(
                Query::new(
                    "DELETE FROM ingest_idempotency WHERE scope = $1 AND idempotency_key = $2 \
                     AND owner = $3 AND state = 'pending'",
                )
                .bind(scope)
                .bind(key)
                .bind(self.instance.as_str()),
            )
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not release an Idempotency-Key; it frees itself when stale");
        }
    }

    /// [`Self::release`] in the background: the failed request's answer (a 503 during
    /// a database outage) is not held up by one more wait for a connection.
    pub fn release_later(&self, scope: &'static str, key: String) {
        let this = self.clone();
        tokio::spawn(async move { this.release(scope, &key).await });
    }

    /// Heartbeats this instance every second and deletes expired keys every minute,
    /// until `stop` resolves; then removes the instance's heartbeat.
    pub async fn maintain(self, stop: impl std::future::Future<Output = ()>) {
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = beat.tick() => {
                    let result = self.db.execute(
                        Query::new(
                            "INSERT INTO ingest_instances (instance_id, heartbeat_at) VALUES ($1, $2) \
                             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                        )
                        .bind(self.instance.as_str())
                        .bind(now()),
                    ).await;
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "heartbeat failed");
                    }
                }
                _ = sweep.tick() => {
                    let _ = self.db.execute(
                        Query::new("DELETE FROM ingest_idempotency WHERE expires_at < $1").bind(now()),
                    ).await;
                    let _ = self.db.execute(
                        Query::new("DELETE FROM ingest_instances WHERE heartbeat_at < $1")
                            .bind(ago(Duration::from_secs(3600))),
                    ).await;
                }
            }
        }
        let _ = self
            .db
            .execute(
                Query::new("DELETE FROM ingest_instances WHERE instance_id = $1")
                    .bind(self.instance.as_str()),
            )
            .await;
    }
}

impl FlushHooks for Idempotency {
    fn before_put<'a>(
        &'a self,
        object_key: &'a str,
        keys: &'a [IdempotencyRef],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut query =
                Query::new("UPDATE ingest_idempotency SET state = 'writing', s3_key = ");
            query
                .push_bind(object_key)
                .push(", updated_at = ")
                .push_bind(now())
                .push(" WHERE owner = ")
                .push_bind(self.instance.as_str())
                .push(" AND state = 'pending' AND (");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    query.push(" OR ");
                }
                query
                    .push("(scope = ")
                    .push_bind(k.scope)
                    .push(" AND idempotency_key = ")
                    .push_bind(k.key.as_str())
                    .push(")");
            }
            query.push(")");
            self.db
                .execute(query)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// A failed PUT may still have landed (the store wrote the object and the answer
    /// was lost, or the attempt timed out after the write). Deleting the claim here let
    /// the client's retry write the records a second time (found by the resilience
    /// rig's object-store outage). Instead the claim keeps its object key and is marked
    /// abandoned once `failed_write_grace` has passed: a retry asks the store whether
    /// that object landed and answers from it if so; otherwise it is told to retry
    /// (409) until the grace is over, then takes the claim over and writes. (Taking
    /// over at once lost the race with a slow PUT that landed after the check.)
    ///
    /// The bookkeeping runs in the background, so the failed requests are answered at
    /// once: during a database outage each statement waits out the acquire timeout,
    /// and doing them inline held a 503 until the request timeout (found by the rig).
    fn after_failure<'a>(&'a self, keys: &'a [IdempotencyRef]) -> BoxFuture<'a, ()> {
        let this = self.clone();
        let keys = keys.to_vec();
        tokio::spawn(async move { this.mark_failed(&keys).await });
        Box::pin(std::future::ready(()))
    }
}

impl Idempotency {
    /// Marks failed writes' claims as abandoned after the grace; forgets claims that
    /// never reached `writing`.
    async fn mark_failed(&self, keys: &[IdempotencyRef]) {
        {
            let grace = chrono::Duration::from_std(self.rules.failed_write_grace)
                .unwrap_or(chrono::Duration::seconds(20));
            let abandoned = ago(self.rules.stale_after) + grace;
            for k in keys {
                let result = self
                    .db
                    .execute(
                        Query::new(
                            "UPDATE ingest_idempotency SET updated_at = $1 WHERE scope = $2 \
                             AND idempotency_key = $3 AND owner = $4 AND state = 'writing'",
                        )
                        .bind(abandoned)
                        .bind(k.scope)
                        .bind(k.key.as_str())
                        .bind(self.instance.as_str()),
                    )
                    .await;
                if let Err(err) = result {
                    tracing::warn!(error = %err, "could not mark a failed write's Idempotency-Key; it frees itself when stale");
                }
                self.release(k.scope, &k.key).await;
            }
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ingest".into())
        .chars()
        .take(24)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        use axum::http::HeaderValue;
        assert!(parse_key(&HeaderValue::from_static("robot-7:seq-42")).is_ok());
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        assert!(parse_key(&HeaderValue::from_static("has space")).is_err());
        let long = "k".repeat(256);
        assert!(parse_key(&HeaderValue::from_str(&long).expect("header")).is_err());
    }

    #[test]
    fn hashes_depend_on_scope_and_body() {
        let a = request_hash("telemetry", b"{}");
        assert_eq!(a.len(), 64);
        assert_eq!(a, request_hash("telemetry", b"{}"));
        assert_ne!(a, request_hash("batch", b"{}"));
        assert_ne!(a, request_hash("telemetry", b"{ }"));
    }
}
