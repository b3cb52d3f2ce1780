use std::time::{Duration, Instant};

use crate::helpers::{
    Backend, DbProxy, ProxyMode, create_pg_database, pg_addr, spawn_app, spawn_on, via_proxy,
};

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/health", "/api/health"] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.json(),
            serde_json::json!({"status": "healthy", "service": "api-service"})
        );
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json()["checks"]["database"], "ok");
}
on_both_backends!(health_and_readiness_answer);

#[tokio::test]
async fn liveness_never_touches_the_database() {
    let url = create_pg_database().await;
    let proxy = DbProxy::start(pg_addr(&url)).await;
    let app = spawn_on(
        Backend::Postgres,
        &via_proxy(&url, proxy.port),
        &url,
        &[],
        None,
    )
    .await;
    proxy.set(ProxyMode::Blackhole);

    let started = Instant::now();
    let health = app.get("/health").await;
    assert_eq!(health.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json()["checks"]["database"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "readiness must answer within its timeout"
    );
    assert!(
        !ready.text.contains("timed out"),
        "no internal text: {}",
        ready.text
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app
        .client
        .get(format!("{}/api/health", app.address))
        .header("X-Request-Id", "trace-abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");

    let generated = app.get("/api/robots").await;
    let id = generated.header("x-request-id").expect("generated id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let other = app.get("/api/robots").await;
    assert_ne!(other.header("x-request-id"), Some(id));
}
