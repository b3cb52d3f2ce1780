//! Database outages, pool exhaustion and the shutdown drain, with a real PostgreSQL
//! behind a proxy the test controls.

use std::time::{Duration, Instant};

use crate::helpers::{
    Backend, DbProxy, ProxyMode, TestApp, create_pg_database, pg_addr, spawn_on, via_proxy,
};

/// Polls `path` until it answers `status`, failing after `within`.
async fn wait_for_status(app: &TestApp, path: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.get(path).await.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{path} never answered {status} within {within:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn proxied_app(extra: &[(&str, &str)]) -> (TestApp, DbProxy) {
    let url = create_pg_database().await;
    let proxy = DbProxy::start(pg_addr(&url)).await;
    let app = spawn_on(
        Backend::Postgres,
        &via_proxy(&url, proxy.port),
        &url,
        extra,
        None,
    )
    .await;
    app.load_small_fleet().await;
    (app, proxy)
}

async fn outage_answers_503_then_recovers(mode: ProxyMode) {
    let (app, proxy) = proxied_app(&[]).await;
    assert_eq!(app.get("/api/robots").await.status, 200);
    assert_eq!(app.get("/ready").await.status, 200);

    proxy.set(mode);
    let turned = wait_for_status(&app, "/ready", 503, Duration::from_secs(5)).await;
    println!("{mode:?}: readiness 503 after {turned:?}");
    assert_eq!(app.get("/health").await.status, 200, "liveness stays up");

    for path in [
        "/api/robots",
        "/api/procedures",
        "/api/analytics/outcomes-summary",
    ] {
        let started = Instant::now();
        let reply = app.get(path).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{path}: {}", reply.text);
        assert_eq!(reply.header("retry-after"), Some("2"));
        assert_eq!(
            reply.json()["error"],
            "Database temporarily unavailable, retry later"
        );
        assert!(
            took < Duration::from_millis(3000),
            "{path} took {took:?}: bounded by the acquire timeout"
        );
    }

    proxy.set(ProxyMode::Forward);
    let recovered = wait_for_status(&app, "/ready", 200, Duration::from_secs(10)).await;
    println!("{mode:?}: ready again {recovered:?} after restore");
    let _ = wait_for_status(&app, "/api/robots", 200, Duration::from_secs(10)).await;
    assert_eq!(app.get("/api/robots").await.json()["count"], 3);
}

#[tokio::test]
async fn database_refusing_connections_is_503_and_recovers() {
    outage_answers_503_then_recovers(ProxyMode::Refuse).await;
}

#[tokio::test]
async fn database_partition_is_503_within_the_acquire_timeout_and_recovers() {
    outage_answers_503_then_recovers(ProxyMode::Blackhole).await;
}

#[tokio::test]
async fn pool_exhaustion_answers_503_instead_of_hanging() {
    let url = create_pg_database().await;
    let app = spawn_on(
        Backend::Postgres,
        &url,
        &url,
        &[("APP_DATABASE__MAX_CONNECTIONS", "1")],
        None,
    )
    .await;
    app.load_small_fleet().await;

    // Another session locks the table, so the app's only connection blocks on it.
    let locker = common::Db::connect(&crate::helpers::test_settings(&url, &[]).database, "locker")
        .await
        .expect("locker");
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let lock = tokio::spawn(lock_table_until(url.clone(), hold));
    wait_until_locked(&locker).await;

    let slow = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/api/robots", app.address);
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    wait_until_waiting(&locker).await;

    let started = Instant::now();
    let reply = app.get("/api/procedures").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let _ = release.send(());
    lock.await.expect("lock task");
    assert_eq!(slow.await.expect("join").expect("response"), 200);
    assert_eq!(app.get("/api/procedures").await.status, 200);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let url = create_pg_database().await;
    let mut app = spawn_on(
        Backend::Postgres,
        &url,
        &url,
        &[("APP_SERVER__DRAIN_DELAY_SECS", "1")],
        None,
    )
    .await;
    app.load_small_fleet().await;
    let locker = common::Db::connect(&crate::helpers::test_settings(&url, &[]).database, "locker")
        .await
        .expect("locker");
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let lock = tokio::spawn(lock_table_until(url.clone(), hold));
    wait_until_locked(&locker).await;

    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/api/robots", app.address);
        async move {
            let res = client.get(url).send().await.expect("in-flight request");
            (res.status().as_u16(), res.text().await.expect("body"))
        }
    });
    wait_until_waiting(&locker).await;

    app.begin_shutdown();
    // During the drain delay the pod still serves but reports not ready.
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "shutting down");
    assert_eq!(app.get("/health").await.status, 200);

    // After the delay new connections are refused; the in-flight one still completes.
    let started = Instant::now();
    while reqwest::Client::new()
        .get(format!("{}/health", app.address))
        .send()
        .await
        .is_ok()
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = release.send(());
    lock.await.expect("lock task");
    let (status, body) = in_flight.await.expect("join");
    assert_eq!(status, 200);
    assert!(body.contains("\"count\":3"));
    let server = app.server.take().expect("server");
    server.await.expect("join").expect("clean exit");
}

/// Holds `ACCESS EXCLUSIVE` on surgical_robots until `hold` resolves.
pub(crate) async fn lock_table_until(url: String, hold: tokio::sync::oneshot::Receiver<()>) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("lock connection");
    conn.execute("BEGIN; LOCK TABLE surgical_robots IN ACCESS EXCLUSIVE MODE; SELECT 1")
        .await
        .expect("lock");
    let _ = hold.await;
    conn.execute("COMMIT").await.expect("commit");
}

async fn count(db: &common::Db, sql: &str) -> i64 {
    db.fetch_all(common::Query::new(sql))
        .await
        .expect("query")
        .get_i64(0, "n")
        .expect("decode")
        .unwrap_or(0)
}

pub(crate) async fn wait_until_locked(db: &common::Db) {
    let sql = "SELECT COUNT(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
               WHERE c.relname = 'surgical_robots' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    poll(db, sql, 1).await;
}

async fn wait_until_waiting(db: &common::Db) {
    wait_for_waiters(db, 1).await;
}

/// Waits until `n` sessions wait for the lock on `surgical_robots`.
pub(crate) async fn wait_for_waiters(db: &common::Db, n: i64) {
    let sql = "SELECT COUNT(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
               WHERE c.relname = 'surgical_robots' AND NOT l.granted";
    poll(db, sql, n).await;
}

async fn poll(db: &common::Db, sql: &str, at_least: i64) {
    let started = Instant::now();
    while count(db, sql).await < at_least {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "condition never held: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Found by the resilience rig: a client trickling its request head a byte at a time,
/// or connecting and sending nothing, held its connection (and a file descriptor) for
/// ever. Now such connections are closed after `server.header_read_timeout_secs`,
/// while normal requests on other connections are served as usual.
#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = crate::helpers::spawn_app_with(
        Backend::Sqlite,
        &[("APP_SERVER__HEADER_READ_TIMEOUT_SECS", "1")],
    )
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut trickle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    trickle
        .write_all(b"GET /api/robots HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // The trickling client keeps sending; the server must close it anyway.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a trickling client held its connection for 10 s"
        );
        if trickle.write_all(b"X").await.is_err() {
            break started.elapsed();
        }
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut buf)).await
        {
            break started.elapsed();
        }
        // Meanwhile everyone else is served.
        assert_eq!(app.get("/health").await.status, 200);
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent connection is closed too")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert_eq!(app.get("/api/robots").await.status, 200);
}
