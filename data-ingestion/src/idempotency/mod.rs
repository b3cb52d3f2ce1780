//! `Idempotency-Key`: a retry with the same key, to any replica, gets the first
//! answer and writes nothing. The database decides: inserting the `(scope, key)` row
//! succeeds for exactly one request (a unique constraint, not a check-then-insert).
//! Keys belong to the caller: with authentication on, the stored key is prefixed with
//! the API key's name ([`caller_key`]), so two callers never collide.
//!
//! A row moves `pending` (claimed) -> `writing` (the object key it will be written
//! to, recorded before the PUT) -> `done` (the answer). Every claim and takeover
//! writes a fresh `claim_token`; every later change of the row (before the PUT, the
//! answer, a release, a failed write) names owner and token and checks that it
//! changed the row, so an owner whose claim was taken over writes nothing and is not
//! acknowledged (fenced, 503).
//!
//! Every time comparison uses the database clock (`now()`, or SQLite's clock), never
//! a replica's own: a replica whose clock is off cannot declare a live peer dead. A
//! `pending` claim is taken over when its owner's heartbeat (`ingest_instances`) is
//! older than `dead_after` or the claim is stale. A `writing` claim is taken over
//! only when its PUT can no longer land: the failed-write grace has passed since the
//! owner reported the failure (or since the write began, if the owner is dead), or
//! the claim is stale; heartbeat silence alone is not enough. Before taking over a
//! `writing` claim the retry asks the store whether the object landed, and if so
//! answers from it instead of writing again. Keys expire after the configured time.

use std::sync::Arc;
use std::time::Duration;

use common::config::DatabaseTarget;
use common::storage::ObjectStore;
use common::{Db, DbError, Query, Rows};

use crate::error::IngestError;
use crate::metrics::IngestMetrics;

mod keys;
mod upkeep;

pub use keys::{caller_key, parse_key, request_hash};

/// The outcome of claiming a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: do the work, naming `token` in every later change.
    Proceed {
        /// The fencing token of this claim.
        token: String,
    },
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
    /// An owner whose heartbeat is older than this (database clock) is dead.
    pub dead_after: Duration,
    /// A claim older than this can be taken over even from a live owner (its request
    /// and write have timed out by then).
    pub stale_after: Duration,
    /// A claim whose write failed can be taken over this long after the failure: by
    /// then every attempt of that PUT has ended, so an object that has not landed
    /// will not land later and the retry can write without doubling the records.
    pub failed_write_grace: Duration,
}

/// A database statement of the idempotency row, the `op` label of
/// `ingest_idempotency_db_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Claiming or taking over a key (and answering from a landed object).
    Claim,
    /// Marking the group's claims `writing` before the PUT.
    BeforePut,
    /// Recording the answer.
    Complete,
    /// This instance's heartbeat.
    Heartbeat,
    /// Forgetting a failed request's claim, or marking its write failed.
    Release,
}

impl Op {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::BeforePut => "before_put",
            Op::Complete => "complete",
            Op::Heartbeat => "heartbeat",
            Op::Release => "release",
        }
    }
}

/// The idempotency store.
#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    store: Arc<dyn ObjectStore>,
    instance: String,
    rules: IdempotencyRules,
    answer_from_key: AnswerFromKey,
    metrics: IngestMetrics,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The database clock in SQL: timestamps are UTC without time zone, as stored.
#[derive(Debug, Clone, Copy)]
struct Clock {
    postgres: bool,
}

impl Clock {
    /// The database's current UTC time.
    fn now(self) -> &'static str {
        if self.postgres {
            "(now() AT TIME ZONE 'UTC')"
        } else {
            "strftime('%Y-%m-%d %H:%M:%f', 'now')"
        }
    }

    /// The database's current UTC time plus the seconds (a float, may be negative)
    /// bound to placeholder `p`.
    fn shifted(self, p: &str) -> String {
        if self.postgres {
            format!("((now() AT TIME ZONE 'UTC') + make_interval(secs => {p}))")
        } else {
            format!("strftime('%Y-%m-%d %H:%M:%f', 'now', {p} || ' seconds')")
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
    token: String,
}

const SELECT_ROW: &str = "SELECT request_hash, owner, state, s3_key, status, response, record_count, \
     is_array, COALESCE(claim_token, '') AS claim_token FROM ingest_idempotency \
     WHERE scope = $1 AND idempotency_key = $2";

const IN_PROGRESS: &str = "A request with this Idempotency-Key is in progress; retry later";

impl Idempotency {
    /// An idempotency store for this process (`instance` identifies it in heartbeats).
    pub fn new(
        db: Db,
        store: Arc<dyn ObjectStore>,
        rules: IdempotencyRules,
        answer_from_key: AnswerFromKey,
        metrics: IngestMetrics,
    ) -> Self {
        Self {
            db,
            store,
            instance: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
            rules,
            answer_from_key,
            metrics,
        }
    }

    /// This process's owner id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn clock(&self) -> Clock {
        Clock {
            postgres: matches!(self.db.backend(), DatabaseTarget::Postgres),
        }
    }

    /// Runs a statement, counting a failure under `op`.
    async fn execute(&self, op: Op, query: Query) -> Result<u64, DbError> {
        let result = self.db.execute(query).await;
        if result.is_err() {
            self.metrics.idempotency_db_failure(op.label());
        }
        result
    }

    /// Runs a query, counting a failure under `op`.
    async fn fetch(&self, op: Op, query: Query) -> Result<Rows, DbError> {
        let result = self.db.fetch_all(query).await;
        if result.is_err() {
            self.metrics.idempotency_db_failure(op.label());
        }
        result
    }

    /// Claims `key` (already in the caller's namespace, see [`caller_key`]) for a
    /// request, or tells how to answer without doing the work.
    pub async fn claim(
        &self,
        scope: &'static str,
        key: &str,
        hash: &str,
        shape: RequestShape,
    ) -> Result<Claim, IngestError> {
        let clock = self.clock();
        for _ in 0..4 {
            let token = new_token();
            let insert = format!(
                "INSERT INTO ingest_idempotency (scope, idempotency_key, request_hash, owner, state, \
                 record_count, is_array, created_at, updated_at, expires_at, claim_token) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, {now}, {now}, {expires}, $8) \
                 ON CONFLICT (scope, idempotency_key) DO NOTHING",
                now = clock.now(),
                expires = clock.shifted("$7"),
            );
            let inserted = self
                .execute(
                    Op::Claim,
                    Query::new(&insert)
                        .bind(scope)
                        .bind(key)
                        .bind(hash)
                        .bind(self.instance.as_str())
                        .bind(shape.records as i64)
                        .bind(shape.is_array)
                        .bind(secs(self.rules.ttl))
                        .bind(token.as_str()),
                )
                .await?;
            if inserted == 1 {
                return Ok(Claim::Proceed { token });
            }
            let expired = format!(
                "DELETE FROM ingest_idempotency WHERE scope = $1 AND idempotency_key = $2 \
                 AND expires_at < {}",
                clock.now()
            );
            if self
                .execute(Op::Claim, Query::new(&expired).bind(scope).bind(key))
                .await?
                > 0
            {
                continue;
            }
            let Some(row) = self.load(scope, key).await? else {
                continue; // expired and removed meanwhile
            };
            if row.request_hash != hash {
                return Err(IngestError::Unprocessable(
                    "Idempotency-Key was already used for a different request".into(),
                ));
            }
            if let Some(replay) = self.answered(scope, key, &row).await? {
                return Ok(replay);
            }
            return self.take_over(scope, key, &row).await;
        }
        Err(IngestError::Conflict(IN_PROGRESS))
    }

    /// The answer of a finished request: a `done` row, or a `writing` row whose
    /// object landed (the owner died, or has not recorded the answer yet).
    async fn answered(
        &self,
        scope: &'static str,
        key: &str,
        row: &Row,
    ) -> Result<Option<Claim>, IngestError> {
        match (row.state.as_str(), row.s3_key.as_deref()) {
            ("done", _) => Ok(Some(Claim::Replay {
                status: row.status.unwrap_or(201) as u16,
                body: row.response.clone().unwrap_or_default(),
            })),
            ("writing", Some(object)) => {
                if !self
                    .store
                    .exists(object)
                    .await
                    .map_err(IngestError::Store)?
                {
                    return Ok(None);
                }
                let shape = RequestShape {
                    records: row.record_count as usize,
                    is_array: row.is_array,
                };
                let body = (self.answer_from_key)(scope, object, shape).unwrap_or_default();
                let done = format!(
                    "UPDATE ingest_idempotency SET state = 'done', status = 201, response = $1, \
                     updated_at = {} WHERE scope = $2 AND idempotency_key = $3 AND state = 'writing' \
                     AND s3_key = $4",
                    self.clock().now()
                );
                self.execute(
                    Op::Claim,
                    Query::new(&done)
                        .bind(body.as_str())
                        .bind(scope)
                        .bind(key)
                        .bind(object),
                )
                .await?;
                Ok(Some(Claim::Replay { status: 201, body }))
            }
            _ => Ok(None),
        }
    }

    /// Takes over an unfinished claim if the database says it is abandoned (see the
    /// module docs); otherwise the request is in progress (409). This instance is
    /// alive by definition: its own claims are never taken over for a missing
    /// heartbeat (the first one may not be written yet).
    async fn take_over(
        &self,
        scope: &'static str,
        key: &str,
        row: &Row,
    ) -> Result<Claim, IngestError> {
        let clock = self.clock();
        let alive = format!(
            "EXISTS (SELECT 1 FROM ingest_instances WHERE instance_id = $5 AND heartbeat_at >= {})",
            clock.shifted("$9")
        );
        let sql = format!(
            "UPDATE ingest_idempotency SET owner = $1, claim_token = $2, state = 'pending', \
             s3_key = NULL, failed_at = NULL, updated_at = {now} \
             WHERE scope = $3 AND idempotency_key = $4 AND owner = $5 \
             AND COALESCE(claim_token, '') = $6 AND state = $7 \
             AND (updated_at < {stale} \
               OR (state = 'pending' AND owner <> $1 AND NOT {alive}) \
               OR (state = 'writing' AND failed_at IS NOT NULL AND failed_at < {grace}) \
               OR (state = 'writing' AND updated_at < {grace_dead} AND owner <> $1 AND NOT {alive}))",
            now = clock.now(),
            stale = clock.shifted("$8"),
            grace = clock.shifted("$10"),
            grace_dead = clock.shifted("$11"),
        );
        let token = new_token();
        let taken = self
            .execute(
                Op::Claim,
                Query::new(&sql)
                    .bind(self.instance.as_str())
                    .bind(token.as_str())
                    .bind(scope)
                    .bind(key)
                    .bind(row.owner.as_str())
                    .bind(row.token.as_str())
                    .bind(row.state.as_str())
                    .bind(-secs(self.rules.stale_after))
                    .bind(-secs(self.rules.dead_after))
                    .bind(-secs(self.rules.failed_write_grace))
                    .bind(-secs(self.rules.failed_write_grace + self.rules.dead_after)),
            )
            .await?;
        if taken == 1 {
            tracing::info!(scope, previous_owner = %row.owner, state = %row.state, "took over an abandoned Idempotency-Key");
            return Ok(Claim::Proceed { token });
        }
        Err(IngestError::Conflict(IN_PROGRESS))
    }

    async fn load(&self, scope: &str, key: &str) -> Result<Option<Row>, DbError> {
        let rows = self
            .fetch(Op::Claim, Query::new(SELECT_ROW).bind(scope).bind(key))
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
            token: rows.get_string(0, "claim_token")?.unwrap_or_default(),
        }))
    }

    /// Records the answer of a finished request. `Ok(false)`: the claim moved to
    /// another owner meanwhile (fenced, counted); the caller must not acknowledge.
    pub async fn complete(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        status: u16,
        body: &str,
    ) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE ingest_idempotency SET state = 'done', status = $1, response = $2, updated_at = {} \
             WHERE scope = $3 AND idempotency_key = $4 AND owner = $5 AND COALESCE(claim_token, '') = $6",
            self.clock().now()
        );
        let changed = self
            .execute(
                Op::Complete,
                Query::new(&sql)
                    .bind(i64::from(status))
                    .bind(body)
                    .bind(scope)
                    .bind(key)
                    .bind(self.instance.as_str())
                    .bind(token),
            )
            .await?;
        if changed == 0 {
            self.metrics.idempotency_fenced.inc();
            tracing::warn!(
                scope,
                "an Idempotency-Key was taken over before its answer was recorded; the request is answered 503"
            );
        }
        Ok(changed == 1)
    }

    /// Forgets a claim whose request failed before anything was written, so the
    /// client's retry can proceed. A claim in `writing` stays: its PUT may have landed
    /// even though the answer was lost (see [`crate::grouper::FlushHooks::after_failure`]).
    pub async fn release(&self, scope: &str, key: &str, token: &str) {
        let result = self
            .execute(
                Op::Release,
                Query::new(
                    "DELETE FROM ingest_idempotency WHERE scope = $1 AND idempotency_key = $2 \
                     AND owner = $3 AND COALESCE(claim_token, '') = $4 AND state = 'pending'",
                )
                .bind(scope)
                .bind(key)
                .bind(self.instance.as_str())
                .bind(token),
            )
            .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not release an Idempotency-Key; it frees itself when stale");
        }
    }

    /// [`Self::release`] in the background: the failed request's answer (a 503 during
    /// a database outage) is not held up by one more wait for a connection.
    pub fn release_later(&self, scope: &'static str, key: String, token: String) {
        let this = self.clone();
        tokio::spawn(async move { this.release(scope, &key, &token).await });
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
