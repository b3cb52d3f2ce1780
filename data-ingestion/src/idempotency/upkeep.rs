//! The idempotency store's side of a group write (claims to `writing` before the
//! PUT, failed writes marked after it) and its background upkeep (heartbeat, sweep).

use std::time::Duration;

use common::Query;
use futures::future::BoxFuture;

use super::{Idempotency, Op};
use crate::grouper::{FlushHooks, IdempotencyRef};

impl Idempotency {
    /// Heartbeats this instance every second (database clock) and deletes expired
    /// keys every minute, until `stop` resolves; then removes the instance's
    /// heartbeat. A failed heartbeat is logged at warn and counted: a peer declares
    /// this instance dead after `dead_after` without one and takes its `pending`
    /// claims over (they are fenced here, not written twice).
    pub async fn maintain(self, stop: impl std::future::Future<Output = ()>) {
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        let clock = self.clock();
        let heartbeat = format!(
            "INSERT INTO ingest_instances (instance_id, heartbeat_at) VALUES ($1, {}) \
             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            clock.now()
        );
        let expired = format!(
            "DELETE FROM ingest_idempotency WHERE expires_at < {}",
            clock.now()
        );
        let gone = format!(
            "DELETE FROM ingest_instances WHERE heartbeat_at < {}",
            clock.shifted("$1")
        );
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = beat.tick() => {
                    let query = Query::new(&heartbeat).bind(self.instance.as_str());
                    if let Err(err) = self.execute(Op::Heartbeat, query).await {
                        tracing::warn!(error = %err, instance = %self.instance, "heartbeat failed; peers may take over this instance's pending Idempotency-Keys");
                    }
                }
                _ = sweep.tick() => {
                    if let Err(err) = self.db.execute(Query::new(&expired)).await {
                        tracing::debug!(error = %err, "could not delete expired Idempotency-Keys");
                    }
                    if let Err(err) = self.db.execute(Query::new(&gone).bind(-3600.0_f64)).await {
                        tracing::debug!(error = %err, "could not delete old heartbeats");
                    }
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

    /// Marks failed writes' claims (failure time, database clock) so a retry can take
    /// them over after the grace; forgets claims that never reached `writing`.
    async fn mark_failed(&self, keys: &[IdempotencyRef]) {
        let sql = format!(
            "UPDATE ingest_idempotency SET failed_at = {} WHERE scope = $1 \
             AND idempotency_key = $2 AND owner = $3 AND COALESCE(claim_token, '') = $4 \
             AND state = 'writing'",
            self.clock().now()
        );
        for k in keys {
            let query = Query::new(&sql)
                .bind(k.scope)
                .bind(k.key.as_str())
                .bind(self.instance.as_str())
                .bind(k.token.as_str());
            if let Err(err) = self.execute(Op::Release, query).await {
                tracing::warn!(error = %err, "could not mark a failed write's Idempotency-Key; it frees itself when stale");
            }
            self.release(k.scope, &k.key, &k.token).await;
        }
    }
}

impl FlushHooks for Idempotency {
    /// Moves the group's claims to `writing` with the object key, each only if this
    /// instance still holds it with the same token (`RETURNING` names those that
    /// moved). The others were taken over: they are returned as fenced, counted, and
    /// left out of the object.
    fn before_put<'a>(
        &'a self,
        object_key: &'a str,
        keys: &'a [IdempotencyRef],
    ) -> BoxFuture<'a, Result<Vec<IdempotencyRef>, String>> {
        Box::pin(async move {
            let mut query =
                Query::new("UPDATE ingest_idempotency SET state = 'writing', s3_key = ");
            query
                .push_bind(object_key)
                .push(", failed_at = NULL, updated_at = ")
                .push(self.clock().now())
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
                    .push(" AND COALESCE(claim_token, '') = ")
                    .push_bind(k.token.as_str())
                    .push(")");
            }
            query.push(") RETURNING scope, idempotency_key");
            let rows = self
                .fetch(Op::BeforePut, query)
                .await
                .map_err(|e| e.to_string())?;
            let mut moved = Vec::with_capacity(rows.len());
            for i in 0..rows.len() {
                let scope = rows.get_string(i, "scope").map_err(|e| e.to_string())?;
                let key = rows
                    .get_string(i, "idempotency_key")
                    .map_err(|e| e.to_string())?;
                moved.push((scope.unwrap_or_default(), key.unwrap_or_default()));
            }
            let fenced: Vec<IdempotencyRef> = keys
                .iter()
                .filter(|k| !moved.iter().any(|(s, key)| s == k.scope && *key == k.key))
                .cloned()
                .collect();
            if !fenced.is_empty() {
                self.metrics.idempotency_fenced.inc_by(fenced.len() as u64);
                tracing::warn!(
                    fenced = fenced.len(),
                    object_key,
                    "Idempotency-Keys taken over by another owner; their records are left out of the write and answered 503"
                );
            }
            Ok(fenced)
        })
    }

    /// A failed PUT may still have landed (the store wrote the object and the answer
    /// was lost, or the attempt timed out after the write). Deleting the claim here let
    /// the client's retry write the records a second time (found by the resilience
    /// rig's object-store outage). Instead the claim keeps its object key and records
    /// when the write failed: a retry asks the store whether that object landed and
    /// answers from it if so; otherwise it is told to retry (409) until
    /// `failed_write_grace` has passed, then takes the claim over and writes. (Taking
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
