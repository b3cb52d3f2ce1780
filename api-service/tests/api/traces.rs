//! OpenTelemetry: the real binary with `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at an in-test
//! OTLP/HTTP receiver, which decodes the protobuf export requests.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;

use crate::helpers::{binary_command, free_port, kill_term};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// An exported span with the `service.name` of its resource.
type Exported = (Vec<String>, Span);

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Exported>>>,
    notify: Arc<tokio::sync::Notify>,
}

async fn export(State(rx): State<Received>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    let mut spans = rx.spans.lock().expect("lock");
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .filter(|kv| kv.key == "service.name")
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Vec<_>>();
        for ss in rs.scope_spans {
            for span in ss.spans {
                spans.push((service.clone(), span));
            }
        }
    }
    rx.notify.notify_waiters();
    Vec::new() // an empty ExportTraceServiceResponse
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

/// Spans queued for export leave at shutdown: the batch delay is set far beyond the test,
/// so every span the receiver sees was flushed by the SIGTERM path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_continue_the_incoming_trace_with_database_children() {
    let rx = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = binary_command(port, dir.path())
        .env("APP_AUTH__ENABLED", "false")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("api-service listening")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("listening within 30 s")
        .expect("log line");

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // A probe first: its span must never be exported.
    let ready = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let res = http
        .get(format!("{base}/api/robots?status=operational"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .expect("robots");
    assert_eq!(res.status(), 200);
    // A malformed traceparent starts a new trace rather than failing the request.
    let res = http
        .get(format!("{base}/api/robots"))
        .header("traceparent", "00-zzzz-nothex-01")
        .send()
        .await
        .expect("robots");
    assert_eq!(res.status(), 200);

    let notified = rx.notify.notified();
    kill_term(child.id());
    tokio::time::timeout(Duration::from_secs(20), notified)
        .await
        .expect("spans exported at shutdown");
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "exit 0 after SIGTERM: {exit:?}");

    let spans = rx.spans.lock().expect("lock").clone();
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    let servers: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(
        servers.len(),
        2,
        "one span per request, no probe: {names:?}"
    );
    assert!(
        spans
            .iter()
            .all(|(svc, _)| svc == &["api-service".to_owned()])
    );

    let server = servers
        .iter()
        .find(|s| hex(&s.trace_id) == TRACE_ID)
        .unwrap_or_else(|| panic!("the request's span continues the incoming trace: {names:?}"));
    assert_eq!(hex(&server.parent_span_id), PARENT_ID);
    assert_eq!(server.name, "GET /api/robots");
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(server, "http.route").as_deref(), Some("/api/robots"));

    let queries: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Client as i32 && s.trace_id == server.trace_id)
        .collect();
    assert!(!queries.is_empty(), "database spans: {names:?}");
    for q in &queries {
        assert_eq!(q.parent_span_id, server.span_id, "{}", q.name);
        assert_eq!(attr(q, "db.system.name").as_deref(), Some("sqlite"));
        assert!(q.name.starts_with("SELECT"), "{}", q.name);
        assert!(
            q.start_time_unix_nano >= server.start_time_unix_nano
                && q.end_time_unix_nano <= server.end_time_unix_nano
        );
    }

    let other = servers
        .iter()
        .find(|s| hex(&s.trace_id) != TRACE_ID)
        .expect("the second request");
    assert!(
        other.parent_span_id.is_empty(),
        "a malformed traceparent starts a new trace"
    );
}
