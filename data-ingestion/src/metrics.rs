//! Ingestion metrics: records and requests accepted, rejected (the client must change
//! something) or refused while unavailable (a retry can succeed), by reason; requests per object
//! and records per object, objects written, PUT latency and failures, pending bytes,
//! idempotent replays and overload rejections, and the idempotency row's database
//! failures (by statement) and fenced writes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `ingest_records_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    /// `accepted`, `rejected` (4xx: the client must change the request) or
    /// `unavailable` (503, or 409 while the same `Idempotency-Key` is in progress).
    pub outcome: &'static str,
    /// `stored`; `invalid`, `conflict`, `too_large`, `unsupported_media_type`,
    /// `unauthorized`, `forbidden`, `rate_limited`;
    /// `overloaded`, `store_unavailable`, `db_unavailable`, `in_progress`, `fenced`, `internal`
    /// (see [`crate::error::IngestError::outcome`]).
    pub reason: &'static str,
}

/// Labels of `ingest_idempotency_db_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `claim`, `before_put`, `complete`, `heartbeat` or `release`.
    pub op: &'static str,
}

/// Labels of `ingest_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template, `/ingest/telemetry`, `/ingest/batch` or `/ingest/procedure`.
    pub route: &'static str,
    /// As in [`RecordLabels::outcome`].
    pub outcome: &'static str,
}

/// Handles on every ingestion metric.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    records: Family<RecordLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    /// Requests whose records went into one object.
    pub group_requests: Histogram,
    /// Records in one object.
    pub object_records: Histogram,
    /// Objects written.
    pub objects_written: Counter,
    /// PUT latency.
    pub put_duration: Histogram,
    /// Object-store PUTs that failed (database failures around them are not counted
    /// here but in `idempotency_db_failures`).
    pub put_failures: Counter,
    idempotency_db_failures: Family<OpLabels, Counter>,
    /// Writes refused because their `Idempotency-Key` claim moved to another owner.
    pub idempotency_fenced: Counter,
    /// Bytes of records waiting to be written.
    pub pending_bytes: Gauge,
    /// Answers replayed for a repeated `Idempotency-Key`.
    pub idempotent_replays: Counter,
    /// Requests refused because too much was pending.
    pub overload_rejections: Counter,
}

impl IngestMetrics {
    /// Registers every ingestion metric.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records: Family::default(),
            requests: Family::default(),
            group_requests: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            object_records: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            objects_written: Counter::default(),
            put_duration: common::metrics::latency_histogram(),
            put_failures: Counter::default(),
            idempotency_db_failures: Family::default(),
            idempotency_fenced: Counter::default(),
            pending_bytes: Gauge::default(),
            idempotent_replays: Counter::default(),
            overload_rejections: Counter::default(),
        };
        registry.register(
            "ingest_records",
            "Records accepted, rejected or refused while unavailable, by reason; a request \
             whose body held no parseable record counts as one",
            m.records.clone(),
        );
        registry.register(
            "ingest_requests",
            "Ingestion requests accepted, rejected or refused while unavailable, by route",
            m.requests.clone(),
        );
        registry.register(
            "ingest_group_requests",
            "Requests acknowledged by one object write",
            m.group_requests.clone(),
        );
        registry.register(
            "ingest_object_records",
            "Records in one written object",
            m.object_records.clone(),
        );
        registry.register(
            "ingest_objects_written",
            "Objects written to the store",
            m.objects_written.clone(),
        );
        registry.register(
            "ingest_put_duration_seconds",
            "Object store PUT latency",
            m.put_duration.clone(),
        );
        registry.register(
            "ingest_put_failures",
            "Object store PUTs that failed (object store errors only)",
            m.put_failures.clone(),
        );
        registry.register(
            "ingest_idempotency_db_failures",
            "Database failures of the Idempotency-Key row, by statement",
            m.idempotency_db_failures.clone(),
        );
        registry.register(
            "ingest_idempotency_fenced",
            "Writes refused because their Idempotency-Key claim moved to another owner",
            m.idempotency_fenced.clone(),
        );
        registry.register(
            "ingest_pending_bytes",
            "Bytes of records waiting to be written",
            m.pending_bytes.clone(),
        );
        registry.register(
            "ingest_idempotent_replays",
            "Answers replayed for a repeated Idempotency-Key",
            m.idempotent_replays.clone(),
        );
        registry.register(
            "ingest_overload_rejections",
            "Requests refused because too much data was pending",
            m.overload_rejections.clone(),
        );
        m
    }

    /// Counts a failed database statement of the idempotency row.
    pub fn idempotency_db_failure(&self, op: &'static str) {
        self.idempotency_db_failures
            .get_or_create(&OpLabels { op })
            .inc();
    }

    /// Counts `n` records with an outcome.
    pub fn records(&self, outcome: &'static str, reason: &'static str, n: usize) {
        self.records
            .get_or_create(&RecordLabels { outcome, reason })
            .inc_by(n as u64);
    }

    /// Counts one request to `route` with an outcome.
    pub fn request(&self, route: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { route, outcome })
            .inc();
    }
}
