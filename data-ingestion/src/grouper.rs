//! Grouped object writes. Records for the same object prefix (one procedure's
//! telemetry, or one batch type) that arrive within the group window go into one
//! object, a JSON array; every request in the group is acknowledged when that one
//! PUT is confirmed, and every request fails (503) when it is not. The window is the
//! only latency added; a group is written early when it reaches the record or byte
//! cap. Pending bytes are bounded: past the bound, submissions are refused at once.
//!
//! Object keys are `<prefix><UTC YYYYmmddHHMMSS>-<UUIDv7>.json`: unique across
//! replicas, sorted by time, never overwritten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use common::storage::{ObjectStore, StorageError};
use futures::future::BoxFuture;
use tokio::sync::{Notify, oneshot};

use crate::metrics::IngestMetrics;

/// Grouping limits.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// How long a group waits for more requests after its first.
    pub window: Duration,
    /// A group holding this many records is written at once.
    pub max_records: usize,
    /// A group this large (bytes) is written at once.
    pub max_bytes: usize,
    /// Memory bound over every pending group.
    pub max_pending_bytes: usize,
}

/// An idempotency entry riding in a group: marked `writing` with the object key
/// before the PUT, so a retry after a crash can find out whether it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRef {
    /// `telemetry`, `batch` or `procedure`.
    pub scope: &'static str,
    /// The key as stored (in the caller's namespace).
    pub key: String,
    /// The fencing token of the claim this request holds.
    pub token: String,
}

/// What the grouper tells the idempotency store around a PUT.
pub trait FlushHooks: Send + Sync {
    /// Called before the PUT with the object key and the keys riding in the group.
    /// Returns the keys whose claim moved to another owner (fenced): their records
    /// are left out of the object and their requests answered [`GroupError::Fenced`].
    /// An error fails the group without writing.
    fn before_put<'a>(
        &'a self,
        object_key: &'a str,
        keys: &'a [IdempotencyRef],
    ) -> BoxFuture<'a, Result<Vec<IdempotencyRef>, String>>;
    /// Called when the PUT failed, so the keys can be retried.
    fn after_failure<'a>(&'a self, keys: &'a [IdempotencyRef]) -> BoxFuture<'a, ()>;
}

/// Why a submission was not acknowledged.
#[derive(Debug, thiserror::Error, Clone)]
pub enum GroupError {
    /// Too many bytes pending.
    #[error("too much data pending")]
    Overloaded,
    /// The store did not confirm the PUT.
    #[error("object store: {0}")]
    Store(String),
    /// The idempotency store could not be updated before the PUT.
    #[error("idempotency store: {0}")]
    Idempotency(String),
    /// The request's `Idempotency-Key` claim moved to another owner: not written.
    #[error("idempotency claim taken over")]
    Fenced,
}

struct Member {
    done: oneshot::Sender<Result<String, GroupError>>,
    idempotency: Option<IdempotencyRef>,
    /// Where its records sit in the group's body, and how many.
    span: std::ops::Range<usize>,
    records: usize,
}

struct Pending {
    id: u64,
    body: Vec<u8>,
    records: usize,
    reserved: usize,
    members: Vec<Member>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    hooks: Option<Arc<dyn FlushHooks>>,
    limits: GroupLimits,
    groups: Mutex<HashMap<String, Pending>>,
    pending_bytes: AtomicUsize,
    next_id: AtomicU64,
    flushing: AtomicUsize,
    idle: Notify,
    closing: AtomicBool,
    metrics: IngestMetrics,
}

/// The grouping engine; cheap to clone.
#[derive(Clone)]
pub struct Grouper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Grouper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouper")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Grouper {
    /// A grouper writing to `store`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        hooks: Option<Arc<dyn FlushHooks>>,
        limits: GroupLimits,
        metrics: IngestMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                hooks,
                limits,
                groups: Mutex::new(HashMap::new()),
                pending_bytes: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                flushing: AtomicUsize::new(0),
                idle: Notify::new(),
                closing: AtomicBool::new(false),
                metrics,
            }),
        }
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Adds `records` (the inside of a JSON array: records joined by commas) to the
    /// group of `prefix` and waits until the object holding them is confirmed.
    /// Returns the object key.
    pub async fn submit(
        &self,
        prefix: &str,
        records: &[u8],
        count: usize,
        idempotency: Option<IdempotencyRef>,
    ) -> Result<String, GroupError> {
        let inner = &self.inner;
        let size = records.len() + 1;
        let before = inner.pending_bytes.fetch_add(size, Ordering::SeqCst);
        if before + size > inner.limits.max_pending_bytes {
            inner.pending_bytes.fetch_sub(size, Ordering::SeqCst);
            inner.metrics.overload_rejections.inc();
            return Err(GroupError::Overloaded);
        }
        inner.metrics.pending_bytes.set((before + size) as i64);

        let (tx, rx) = oneshot::channel();
        let (flush_now, new_group) = {
            let mut groups = inner.groups.lock().unwrap_or_else(|p| p.into_inner());
            let group = groups.entry(prefix.to_owned()).or_insert_with(|| Pending {
                id: inner.next_id.fetch_add(1, Ordering::Relaxed),
                body: Vec::with_capacity(inner.limits.max_bytes.min(64 * 1024)),
                records: 0,
                reserved: 0,
                members: Vec::new(),
            });
            let new_group = group.members.is_empty().then_some(group.id);
            // An empty submission (a batch of no records) adds nothing but still
            // waits for, and names, the object.
            if group.body.is_empty() {
                group.body.push(b'[');
            }
            if !records.is_empty() && group.body.len() > 1 {
                group.body.push(b',');
            }
            let start = group.body.len();
            group.body.extend_from_slice(records);
            group.records += count;
            group.reserved += size;
            group.members.push(Member {
                done: tx,
                idempotency,
                span: start..group.body.len(),
                records: count,
            });
            let full = group.records >= inner.limits.max_records
                || group.body.len() >= inner.limits.max_bytes
                || inner.closing.load(Ordering::SeqCst);
            let flush_now = if full {
                // Counted under the lock, so flush_all never misses a write.
                inner.flushing.fetch_add(1, Ordering::SeqCst);
                groups.remove(prefix)
            } else {
                None
            };
            (flush_now, new_group)
        };
        match (flush_now, new_group) {
            (Some(group), _) => self.spawn_counted_flush(prefix.to_owned(), group),
            (None, Some(id)) => {
                let me = self.clone();
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(me.inner.limits.window).await;
                    let due = {
                        let mut groups = me.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
                        match groups.get(&prefix) {
                            Some(g) if g.id == id => {
                                me.inner.flushing.fetch_add(1, Ordering::SeqCst);
                                groups.remove(&prefix)
                            }
                            _ => None,
                        }
                    };
                    if let Some(group) = due {
                        me.flush(prefix, group).await;
                        me.finished_flush();
                    }
                });
            }
            (None, None) => {}
        }
        rx.await
            .unwrap_or_else(|_| Err(GroupError::Store("write task ended unexpectedly".into())))
    }

    /// Spawns the write of a group whose flush was already counted in `flushing`.
    fn spawn_counted_flush(&self, prefix: String, group: Pending) {
        let me = self.clone();
        tokio::spawn(async move {
            me.flush(prefix, group).await;
            me.finished_flush();
        });
    }

    fn finished_flush(&self) {
        if self.inner.flushing.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }

    async fn flush(&self, prefix: String, mut group: Pending) {
        let inner = &self.inner;
        group.body.push(b']');
        let key = format!(
            "{prefix}{}-{}.json",
            Utc::now().format("%Y%m%d%H%M%S"),
            uuid::Uuid::now_v7().simple()
        );
        let keys: Vec<IdempotencyRef> = group
            .members
            .iter()
            .filter_map(|m| m.idempotency.clone())
            .collect();
        let mut result = Ok(());
        let mut fenced = Vec::new();
        if let (Some(hooks), false) = (&inner.hooks, keys.is_empty()) {
            match hooks.before_put(&key, &keys).await {
                Ok(moved_on) => fenced = moved_on,
                Err(err) => result = Err(GroupError::Idempotency(err)),
            }
        }
        let (members, fenced_members): (Vec<Member>, Vec<Member>) =
            std::mem::take(&mut group.members)
                .into_iter()
                .partition(|m| m.idempotency.as_ref().is_none_or(|k| !fenced.contains(k)));
        if !fenced_members.is_empty() {
            group.body = without_fenced(&group.body, &members);
            group.records = members.iter().map(|m| m.records).sum();
        }
        group.members = members;
        let keys: Vec<IdempotencyRef> = keys.into_iter().filter(|k| !fenced.contains(k)).collect();
        if result.is_ok() && !group.members.is_empty() {
            let started = Instant::now();
            let put = inner.store.put(&key, Bytes::from(group.body)).await;
            inner
                .metrics
                .put_duration
                .observe(started.elapsed().as_secs_f64());
            result = put.map_err(|e: StorageError| GroupError::Store(e.to_string()));
        }
        let released = inner
            .pending_bytes
            .fetch_sub(group.reserved, Ordering::SeqCst)
            - group.reserved;
        inner.metrics.pending_bytes.set(released as i64);
        match &result {
            Ok(()) if group.members.is_empty() => {} // every member fenced: nothing written
            Ok(()) => {
                inner.metrics.objects_written.inc();
                inner.metrics.object_records.observe(group.records as f64);
                inner
                    .metrics
                    .group_requests
                    .observe(group.members.len() as f64);
                tracing::debug!(
                    key,
                    records = group.records,
                    requests = group.members.len(),
                    "object written"
                );
            }
            Err(err) => {
                if matches!(err, GroupError::Store(_)) {
                    inner.metrics.put_failures.inc();
                }
                tracing::warn!(key, records = group.records, requests = group.members.len(), error = %err, "object write failed; requests answered 503");
                if let (Some(hooks), false) = (&inner.hooks, keys.is_empty()) {
                    hooks.after_failure(&keys).await;
                }
            }
        }
        for member in group.members {
            let _ = member.done.send(result.clone().map(|()| key.clone()));
        }
        for member in fenced_members {
            let _ = member.done.send(Err(GroupError::Fenced));
        }
    }

    /// Writes every pending group now and waits until no write is in flight (used on
    /// shutdown); from now on submissions are written without waiting for the window.
    pub async fn flush_all(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let due: Vec<(String, Pending)> = {
            let mut groups = self.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
            self.inner
                .flushing
                .fetch_add(groups.len(), Ordering::SeqCst);
            groups.drain().collect()
        };
        for (prefix, group) in due {
            self.spawn_counted_flush(prefix, group);
        }
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.flushing.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Bytes currently waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.inner.pending_bytes.load(Ordering::SeqCst)
    }
}

/// The group's body (`[` records `,` records ... `]`) rebuilt from the members'
/// spans, leaving out the records of fenced members.
fn without_fenced(body: &[u8], kept: &[Member]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    out.push(b'[');
    for m in kept.iter().filter(|m| !m.span.is_empty()) {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(&body[m.span.clone()]);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::storage::LocalStore;

    fn grouper(
        dir: &std::path::Path,
        window_ms: u64,
        max_records: usize,
        max_pending: usize,
    ) -> Grouper {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir).expect("store"));
        let mut registry = prometheus_client::registry::Registry::default();
        Grouper::new(
            store,
            None,
            GroupLimits {
                window: Duration::from_millis(window_ms),
                max_records,
                max_bytes: 1 << 20,
                max_pending_bytes: max_pending,
            },
            IngestMetrics::register(&mut registry),
        )
    }

    #[tokio::test]
    async fn concurrent_submissions_share_one_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = grouper(dir.path(), 200, 10_000, 1 << 20);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let g = g.clone();
                tokio::spawn(async move {
                    g.submit("telemetry/p/", format!("{{\"n\":{i}}}").as_bytes(), 1, None)
                        .await
                })
            })
            .collect();
        let mut keys = Vec::new();
        for t in tasks {
            keys.push(t.await.expect("join").expect("stored"));
        }
        keys.dedup();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let body = g.store().get(&keys[0]).await.expect("get").expect("exists");
        let records: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("array");
        assert_eq!(records.len(), 20);
        assert_eq!(g.pending_bytes(), 0);
    }

    #[tokio::test]
    async fn empty_submissions_name_a_valid_array() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = grouper(dir.path(), 100, 10_000, 1 << 20);
        let alone = g.submit("batch/e/", b"", 0, None).await.expect("stored");
        let body = g.store().get(&alone).await.expect("get").expect("exists");
        assert_eq!(body.as_ref(), b"[]");

        // Empty submissions before, between and after records in one group.
        let (a, b, c, d) = tokio::join!(
            g.submit("batch/m/", b"", 0, None),
            g.submit("batch/m/", b"{\"a\":1}", 1, None),
            g.submit("batch/m/", b"", 0, None),
            g.submit("batch/m/", b"{\"b\":2},{\"c\":3}", 2, None),
        );
        let key = a.expect("a");
        for other in [b, c, d] {
            assert_eq!(other.expect("stored"), key);
        }
        let body = g.store().get(&key).await.expect("get").expect("exists");
        let records: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("array");
        assert_eq!(records.len(), 3, "{}", String::from_utf8_lossy(&body));
    }

    #[tokio::test]
    async fn the_record_cap_writes_early_and_keys_never_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = grouper(dir.path(), 60_000, 2, 1 << 20);
        let (a, b) = tokio::join!(
            g.submit("batch/x/", b"{\"a\":1}", 1, None),
            g.submit("batch/x/", b"{\"b\":2}", 1, None)
        );
        let a = a.expect("a");
        assert_eq!(
            a,
            b.expect("b"),
            "written together once full, without the 60 s window"
        );
        let c = g
            .submit("batch/x/", b"{\"c\":3},{\"d\":4}", 2, None)
            .await
            .expect("c");
        assert_ne!(c, a);
        assert_eq!(g.store().list("batch/x/").await.expect("list").len(), 2);
    }

    #[tokio::test]
    async fn past_the_pending_bound_submissions_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = grouper(dir.path(), 300, 10_000, 64);
        let first = tokio::spawn({
            let g = g.clone();
            async move { g.submit("telemetry/p/", &[b'1'; 40], 1, None).await }
        });
        tokio::task::yield_now().await;
        while g.pending_bytes() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = g.submit("telemetry/p/", &[b'2'; 40], 1, None).await;
        assert!(matches!(refused, Err(GroupError::Overloaded)));
        first.await.expect("join").expect("the first still lands");
    }

    #[tokio::test]
    async fn flush_all_writes_pending_groups_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = grouper(dir.path(), 60_000, 10_000, 1 << 20);
        let pending = tokio::spawn({
            let g = g.clone();
            async move { g.submit("telemetry/p/", b"1", 1, None).await }
        });
        while g.pending_bytes() == 0 {
            tokio::task::yield_now().await;
        }
        g.flush_all().await;
        pending.await.expect("join").expect("written on flush_all");
    }
}
