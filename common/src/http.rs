//! The HTTP layer stack both services share, readable top to bottom in
//! [`finish_router`]: request id, one log line and the RED metrics per request, panic
//! catching, the body limit and JSON 404/405 fallbacks for everything; load shedding
//! and the request timeout for the service's own routes only. Also the
//! `{"error": ...}` body every failure uses.
//!
//! Load shedding is one limit for the whole process: `Router::layer` clones a layer
//! onto every route, so the limit is a [`GlobalConcurrencyLimitLayer`] whose clones
//! share one semaphore (a plain `ConcurrencyLimitLayer` there would give each route
//! its own). Probes and `/metrics` are merged in after it, so liveness, readiness and
//! scrapes answer while the service sheds load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::timeout::error::Elapsed;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::Instrument;

use crate::config::{ServerSettings, Service};
use crate::health::{Readiness, health_body, ready_handler};
use crate::metrics::{HttpMetrics, Metrics, metrics_handler};

/// `X-Request-Id`, taken from the request or generated, and echoed back.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request (in request extensions).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The cause chain of a failed request, attached to the response so the request log
/// line carries it once; it never reaches the client.
#[derive(Clone, Debug)]
pub struct ErrorReport(pub Arc<String>);

impl ErrorReport {
    /// Formats `err` and its sources as `outer: inner: root`.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        Self(Arc::new(chain))
    }
}

/// A JSON body `{"error": message}` (plus a newline, as Flask's `jsonify` sent).
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let mut body = serde_json::to_vec(&serde_json::json!({ "error": message }))
        .unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
    body.push(b'\n');
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A 503 telling the client when to retry.
pub fn unavailable_response(message: &str, retry_after_secs: u64) -> Response {
    let mut res = error_response(StatusCode::SERVICE_UNAVAILABLE, message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    res
}

/// What the per-request middleware needs.
#[derive(Clone)]
struct Observer {
    http: HttpMetrics,
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn incoming_request_id(req: &Request) -> Option<String> {
    let value = req.headers().get(&X_REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

/// Why a request was answered 503 without running to completion (in response
/// extensions, for the request log line and the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// Refused at once: `server.max_concurrent_requests` requests were in flight.
    Overloaded,
    /// Cut off after `server.request_timeout_secs`.
    Timeout,
}

impl Shed {
    /// The `cause` label of `http_requests_shed_total`.
    pub fn cause(self) -> &'static str {
        match self {
            Shed::Overloaded => "overloaded",
            Shed::Timeout => "timeout",
        }
    }
}

/// The route label of load-shed requests: they never ran, whatever route they asked for.
pub const SHED_ROUTE: &str = "shed";

/// Outermost middleware: request id, span, metrics and the one log line. Added with
/// `Router::layer`, so it runs after routing and reads the matched route template
/// from the request.
async fn observe(State(obs): State<Observer>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = method_label(req.method());
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    // Probes get their own target, which the trace exporter leaves out (telemetry_otel).
    macro_rules! request_span {
        ($target:expr) => {
            tracing::info_span!(
                target: $target,
                "request",
                request_id = %request_id,
                http.method = method,
                http.route = tracing::field::Empty,
                auth.key = tracing::field::Empty,
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            )
        };
    }
    let span = if crate::telemetry_otel::is_probe_path(req.uri().path()) {
        request_span!(crate::telemetry_otel::PROBE_TARGET)
    } else {
        request_span!(module_path!())
    };
    span.record("http.route", matched.as_str());
    if matched != "unmatched" {
        crate::telemetry_otel::name_request(&span, req.method(), &matched);
    }
    crate::telemetry_otel::accept_parent(&span, req.headers());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let mut res = next.run(req).instrument(span.clone()).await;

    let shed = res.extensions().get::<Shed>().copied();
    let route = match shed {
        Some(Shed::Overloaded) => SHED_ROUTE,
        Some(Shed::Timeout) | None => matched.as_str(),
    };
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    obs.http.record(method, route, status, elapsed);
    crate::telemetry_otel::finish_request(&span, method, route, status);

    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let quiet = crate::telemetry_otel::is_probe_path(route);
    if let Some(shed) = shed {
        obs.http.record_shed(shed.cause());
        tracing::warn!(
            parent: &span,
            status,
            latency_ms,
            cause = shed.cause(),
            "request shed"
        );
    } else if let Some(report) = res.extensions().get::<ErrorReport>() {
        tracing::error!(parent: &span, status, latency_ms, error = %report.0, "request failed");
    } else if status >= 500 {
        tracing::warn!(parent: &span, status, latency_ms, "request completed");
    } else if quiet {
        tracing::debug!(parent: &span, status, latency_ms, "request completed");
    } else {
        tracing::info!(parent: &span, status, latency_ms, "request completed");
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    res
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// Turns the limit's and the timeout's errors into 503s marked with their [`Shed`]
/// cause, for the request log line and the metrics.
async fn handle_layer_error(err: tower::BoxError) -> Response {
    let (shed, mut res) = if err.is::<Elapsed>() {
        (Shed::Timeout, unavailable_response("Request timed out", 1))
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        (
            Shed::Overloaded,
            unavailable_response("Server is overloaded, retry later", 1),
        )
    } else {
        let mut res = error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        res.extensions_mut()
            .insert(ErrorReport(Arc::new(err.to_string())));
        return res;
    };
    res.extensions_mut().insert(shed);
    res
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let mut res = error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    res.extensions_mut()
        .insert(ErrorReport(Arc::new("handler panicked".into())));
    res
}

/// The probe and metrics routes: `/health` (plus the service's own health aliases),
/// `/ready` and `/metrics`.
pub fn probe_router(
    service: Service,
    health_aliases: &[&str],
    readiness: Arc<Readiness>,
    metrics: Metrics,
) -> Router {
    let name = service.name();
    let health = move || async move { axum::Json(health_body(name)) };
    let mut router = Router::new().route("/health", get(health));
    for alias in health_aliases {
        router = router.route(alias, get(health));
    }
    router
        .route("/ready", get(ready_handler).with_state(readiness))
        .route("/metrics", get(metrics_handler).with_state(metrics))
}

/// Wraps the service's routes and the probe routes in the shared layer stack.
/// Outermost first, for every route: observe (request id, log, metrics), catch
/// panics, `no-store`/`nosniff` headers, cap bodies at `body_limit_bytes`; JSON 404
/// and 405 for everything unrouted. For the service's routes only (`api`, not
/// `probes`): shed load past `max_concurrent_requests` requests in flight in the
/// whole process, and time out after `request_timeout_secs`.
pub fn finish_router(
    api: Router,
    probes: Router,
    server: &ServerSettings,
    metrics: &Metrics,
) -> Router {
    let observer = Observer {
        http: metrics.http.clone(),
    };
    // One semaphore for every route: `Router::layer` clones the layer onto each route
    // and the clones share it.
    let limit = GlobalConcurrencyLimitLayer::new(server.max_concurrent_requests);
    let api = api.method_not_allowed_fallback(method_not_allowed).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_layer_error))
            .load_shed()
            .layer(limit)
            .timeout(server.request_timeout()),
    );
    api.merge(probes.method_not_allowed_fallback(method_not_allowed))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        // Bodies carry patient-linked data: never cached, never sniffed.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(observer, observe))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
}

/// The `Retry-After` seconds for database-unavailable answers.
pub const DB_RETRY_AFTER: Duration = Duration::from_secs(2);
