//! The process-wide concurrency limit and the request timeout, attacked with real
//! stalls: a PostgreSQL session holds a lock on `surgical_robots`, so requests that
//! read it wait inside the app.

use std::time::{Duration, Instant};

use crate::helpers::{Backend, TestApp, create_pg_database, spawn_on, test_settings};
use crate::resilience::{lock_table_until, wait_for_waiters, wait_until_locked};

const ROBOT_1: &str = "11111111-1111-4111-8111-111111111111";

/// The app on a fresh PostgreSQL database with the small fleet, plus the test's own
/// handle on that database.
async fn app_with(extra: &[(&str, &str)]) -> (TestApp, String, common::Db) {
    let url = create_pg_database().await;
    let app = spawn_on(Backend::Postgres, &url, &url, extra, None).await;
    app.load_small_fleet().await;
    let watcher = common::Db::connect(&test_settings(&url, &[]).database, "watcher")
        .await
        .expect("watcher");
    (app, url, watcher)
}

fn spawn_get(app: &TestApp, path: &str) -> tokio::task::JoinHandle<u16> {
    let client = app.client.clone();
    let url = format!("{}{path}", app.address);
    tokio::spawn(async move {
        client
            .get(url)
            .send()
            .await
            .expect("held request")
            .status()
            .as_u16()
    })
}

fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

/// Found by the security review: the limit was added with `Router::layer`, which gives
/// every route its own semaphore, so with a limit of 2 two requests per route ran at
/// once. Now two requests held on two different routes fill the one limit: a third
/// request on a third route is refused at once, while the probes and `/metrics`
/// (outside the limit) keep answering.
#[tokio::test]
async fn one_limit_for_the_whole_process_and_probes_answer_under_overload() {
    let (app, url, watcher) = app_with(&[
        ("APP_SERVER__MAX_CONCURRENT_REQUESTS", "2"),
        ("APP_DATABASE__STATEMENT_TIMEOUT_MS", "60000"),
    ])
    .await;
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let lock = tokio::spawn(lock_table_until(url.clone(), hold));
    wait_until_locked(&watcher).await;

    let list = spawn_get(&app, "/api/robots");
    let detail = spawn_get(&app, &format!("/api/robots/{ROBOT_1}"));
    // Both are inside the app, waiting for the lock in PostgreSQL.
    wait_for_waiters(&watcher, 2).await;

    let started = Instant::now();
    let third = app.get("/api/procedures").await;
    let took = started.elapsed();
    assert_eq!(third.status, 503, "{}", third.text);
    assert_eq!(third.json()["error"], "Server is overloaded, retry later");
    assert_eq!(third.header("retry-after"), Some("1"));
    assert!(took < Duration::from_secs(1), "shed after {took:?}");

    for probe in ["/health", "/api/health", "/ready", "/metrics"] {
        let reply = app.get(probe).await;
        assert_eq!(reply.status, 200, "{probe} under overload: {}", reply.text);
    }
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="shed",status="503"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        metric_line(&metrics, r#"http_requests_shed_total{cause="overloaded"}"#),
        Some(r#"http_requests_shed_total{cause="overloaded"} 1"#)
    );
    assert!(
        !metrics.contains(r#"route="unmatched",status="503""#),
        "{metrics}"
    );

    let _ = release.send(());
    lock.await.expect("lock task");
    assert_eq!(list.await.expect("join"), 200);
    assert_eq!(detail.await.expect("join"), 200);
    // The permits came back: the next request runs.
    assert_eq!(app.get("/api/procedures").await.status, 200);
}

/// Found by the ops review: a timed-out request was labelled `route="unmatched"`, so
/// "errors by route" could not name the slow route. It keeps its route template and
/// is counted as shed for `timeout`.
#[tokio::test]
async fn a_timed_out_request_keeps_its_route_and_is_counted_as_a_timeout() {
    let (app, url, watcher) = app_with(&[
        ("APP_SERVER__REQUEST_TIMEOUT_SECS", "1"),
        ("APP_DATABASE__STATEMENT_TIMEOUT_MS", "60000"),
    ])
    .await;
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let lock = tokio::spawn(lock_table_until(url.clone(), hold));
    wait_until_locked(&watcher).await;

    let reply = app.get("/api/robots").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.json()["error"], "Request timed out");

    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"http_requests_total{method="GET",route="/api/robots",status="503"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        metric_line(&metrics, r#"http_requests_shed_total{cause="timeout"}"#),
        Some(r#"http_requests_shed_total{cause="timeout"} 1"#)
    );
    assert_eq!(
        metric_line(&metrics, r#"http_requests_shed_total{cause="overloaded"}"#),
        Some(r#"http_requests_shed_total{cause="overloaded"} 0"#)
    );
    let _ = release.send(());
    lock.await.expect("lock task");
}
