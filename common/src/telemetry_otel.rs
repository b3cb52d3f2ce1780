//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; off, and
//! free, when neither is.
//!
//! On: one server span per request (the `request` span of [`crate::http`]), continuing the
//! W3C `traceparent` of the incoming request, with child spans around every database
//! statement and object-store call. The standard `OTEL_*` variables apply
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`/`_TIMEOUT`). Spans leave in batches from a
//! background thread: a slow or absent collector never delays a request, and a full queue
//! drops spans rather than memory.
//!
//! Off: no exporter, no layer, and [`accept_parent`]/[`finish_request`] return at once; the
//! database and object-store spans are at `debug` level under their own target, so the log
//! filter discards them before they are built.

use std::sync::OnceLock;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// Target of the client spans below (database, object store): exported when tracing is on,
/// shown in logs only at `RUST_LOG=medrobotics::otel=debug`.
pub const TARGET: &str = "medrobotics::otel";

/// Target of the request spans of the probe and metrics routes: logged like every request
/// span, never exported (a trace per kubelet probe and scrape would drown the real ones).
pub const PROBE_TARGET: &str = "common::http::probe";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether `path` is one of the probe and metrics routes (`crate::http::probe_router`).
pub fn is_probe_path(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/api/health" | "/ingest/health"
    )
}

/// Whether traces are exported (the layer is installed).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// The exporting layer, when an endpoint is configured: spans of the services' own crates
/// (not of sqlx, hyper or the AWS SDK). `service` names the resource unless
/// `OTEL_SERVICE_NAME` does. An unusable endpoint is a startup error naming the variable.
pub fn layer<S>(service: &str) -> anyhow::Result<Option<impl Layer<S> + use<S>>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !endpoint_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("medrobotics");
    let _ = PROVIDER.set(provider);
    let targets = Targets::new()
        .with_target("common", LevelFilter::INFO)
        .with_target("api_service", LevelFilter::INFO)
        .with_target("data_ingestion", LevelFilter::INFO)
        .with_target(TARGET, LevelFilter::DEBUG)
        .with_target(PROBE_TARGET, LevelFilter::OFF);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            // Spans start when their first child does (not on first entry), so the request
            // span is still unstarted when routing names it (`name_request`).
            .with_context_activation(false)
            .with_filter(targets),
    ))
}

/// Sends what is still queued and stops the exporter (process exit). Blocks up to the
/// export timeout: call it off the async workers.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(err) = provider.shutdown()
    {
        eprintln!("opentelemetry: {err}");
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Marks `span` as the server span of a request and makes it continue the trace of an
/// incoming W3C `traceparent` (and `tracestate`); a missing or malformed header starts a
/// new trace. Before any child span exists: the exported span starts with its first child.
pub fn accept_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !enabled() {
        return;
    }
    span.record("otel.kind", "server");
    if headers.contains_key("traceparent") {
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(cx);
    }
}

/// Names the request span after its route template (`GET /api/robots/{robot_id}`, never
/// the raw path): called once routing matched, before the handler opens child spans.
pub fn name_request(span: &tracing::Span, method: &http::Method, route: &str) {
    if enabled() {
        span.record("otel.name", format!("{method} {route}").as_str());
    }
}

/// Records the status (5xx marks the span as failed) and names a request no route matched.
pub fn finish_request(span: &tracing::Span, method: &str, route: &str, status: u16) {
    if !enabled() {
        return;
    }
    if route == "unmatched" {
        span.record("otel.name", format!("{method} {route}").as_str());
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// A client span around one database statement: the SQL text (parameters are bound, never
/// part of it), not its values.
pub fn db_span(system: &'static str, sql: &str) -> tracing::Span {
    let summary = sql
        .split_whitespace()
        .next()
        .unwrap_or("SQL")
        .to_ascii_uppercase();
    tracing::debug_span!(
        target: TARGET,
        "db",
        otel.name = %format_args!("{summary} {system}"),
        otel.kind = "client",
        db.system.name = system,
        db.query.text = %sql.chars().take(2048).collect::<String>(),
    )
}

/// `fut` inside `span` (the future last, so that call sites keep their layout).
pub fn traced<F: std::future::Future>(
    span: tracing::Span,
    fut: F,
) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(fut, span)
}

/// A client span around one object-store call (`PutObject`, `GetObject`...).
pub fn store_span(operation: &'static str, bucket: &str) -> tracing::Span {
    tracing::debug_span!(
        target: TARGET,
        "object_store",
        otel.name = %format_args!("S3.{operation}"),
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = "S3",
        rpc.method = operation,
        aws.s3.bucket = bucket,
    )
}
