//! The process's one `prometheus-client` registry: HTTP RED metrics by method,
//! matched route template and status; process CPU and memory read from `/proc` at
//! scrape time; and the `/metrics` handler (OpenMetrics text).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets (seconds) shared by every duration histogram: 0.5 ms to 10 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// Labels of the HTTP metrics: a closed set (the route is a template, `unmatched`
/// for unrouted paths, or `shed` for requests the concurrency limit refused).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Request method (`other` for non-standard ones).
    pub method: &'static str,
    /// Matched route template such as `/api/robots/{robot_id}`, `unmatched` or `shed`.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Builds a histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Labels of `http_requests_shed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    /// `overloaded` (concurrency limit) or `timeout` (request timeout).
    cause: &'static str,
}

/// Request counter, duration histogram and the count of shed requests.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: HistogramFamily<HttpLabels>,
    shed: Family<ShedLabels, Counter>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        let duration = HistogramFamily::<HttpLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests by method, matched route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, matched route and status",
            duration.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "http_requests_shed",
            "Requests answered 503 by the process-wide concurrency limit (cause overloaded) \
             or the request timeout (cause timeout)",
            shed.clone(),
        );
        // Both series exist from the start, so rate() and alerts see a zero.
        for cause in ["overloaded", "timeout"] {
            let _ = shed.get_or_create(&ShedLabels { cause });
        }
        Self {
            requests,
            duration,
            shed,
        }
    }

    /// Counts one request shed for `cause` (`overloaded` or `timeout`).
    pub fn record_shed(&self, cause: &'static str) {
        self.shed.get_or_create(&ShedLabels { cause }).inc();
    }

    /// Records one finished request.
    pub fn record(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels {
            method,
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// A registry with the HTTP and process metrics registered; services add theirs and
/// then freeze it with [`MetricsBuilder::finish`].
pub struct MetricsBuilder {
    /// Register service metrics here before `finish`.
    pub registry: Registry,
    http: HttpMetrics,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsBuilder {
    /// A registry with HTTP and process metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        registry.register_collector(Box::new(ProcessCollector));
        Self { registry, http }
    }

    /// Freezes the registry for sharing (the metric types are atomic: no lock).
    pub fn finish(self) -> Metrics {
        Metrics {
            registry: Arc::new(self.registry),
            http: self.http,
        }
    }
}

/// The frozen registry plus the HTTP metric handles.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Everything `/metrics` shows.
    pub registry: Arc<Registry>,
    /// HTTP request metrics.
    pub http: HttpMetrics,
}

impl Metrics {
    /// Encodes the registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String cannot fail; an error would mean a bug in a collector.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

/// `GET /metrics`.
pub async fn metrics_handler(State(metrics): State<Metrics>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], metrics.encode()).into_response()
}

/// Process CPU, memory, threads and file descriptors from `/proc/self`.
#[derive(Debug)]
struct ProcessCollector;

/// `USER_HZ`, the unit of `/proc/<pid>/stat` CPU times: 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    threads: i64,
    start_ticks: u64,
    virtual_bytes: i64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so field N is fields[N - 3].
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / USER_HZ,
        threads: num(20)? as i64,
        start_ticks: num(22)?,
        virtual_bytes: num(23)? as i64,
    })
}

/// `VmRSS` from `/proc/self/status`, in bytes.
fn parse_rss(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(parse_rss)
        {
            let g = ConstGauge::new(rss);
            g.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                g.metric_type(),
            )?)?;
        }
        let g = ConstGauge::new(stat.virtual_bytes);
        g.encode(encoder.encode_descriptor(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(stat.threads);
        g.encode(encoder.encode_descriptor(
            "process_threads",
            "OS threads",
            None,
            g.metric_type(),
        )?)?;
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let g = ConstGauge::new(fds.count() as i64);
            g.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(boot) = boot_time() {
            let g = ConstGauge::new(boot as f64 + stat.start_ticks as f64 / USER_HZ);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (api service) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2000 18446744073709551615";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat.cpu_seconds, 3.0);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_ticks, 12345);
        assert_eq!(stat.virtual_bytes, 104_857_600);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t  1234 kB\n"),
            Some(1234 * 1024)
        );
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn the_live_process_reports_cpu_and_memory() {
        let metrics = MetricsBuilder::new().finish();
        metrics
            .http
            .record("GET", "/api/robots", 200, Duration::from_millis(3));
        let text = metrics.encode();
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/api/robots",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
