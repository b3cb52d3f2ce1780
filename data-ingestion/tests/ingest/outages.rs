use std::time::{Duration, Instant};

use common::testing::ProxyMode;
use serde_json::json;

use crate::helpers::{Backend, Options, TestApp, record, spawn_with};

/// The app on PostgreSQL with its object store reached through a proxy the test can cut.
async fn spawn_behind_store_proxy() -> TestApp {
    spawn_with(
        Backend::Postgres,
        Options {
            store_proxy: true,
            ..Default::default()
        },
    )
    .await
}

/// Waits until records wait in a group (the requests are inside the app).
async fn wait_until_pending(app: &TestApp) {
    while app
        .get("/metrics")
        .await
        .text
        .contains("ingest_pending_bytes 0\n")
    {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn store_outage_answers_503_loses_nothing_and_recovers() {
    let app = spawn_behind_store_proxy().await;
    assert_eq!(app.post_telemetry(&json!([record(1)])).await.status, 201);

    for mode in [ProxyMode::Refuse, ProxyMode::Blackhole] {
        app.cut_store(mode);
        let started = Instant::now();
        let reply = app.post_telemetry(&json!([record(100)])).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{mode:?}: {}", reply.text);
        assert!(reply.header("retry-after").is_some());
        assert_eq!(
            reply.error(),
            "Object store temporarily unavailable, retry later"
        );
        assert!(
            took < Duration::from_secs(10),
            "{mode:?}: bounded by the store timeouts, took {took:?}"
        );
        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 503, "{mode:?}");
        assert_eq!(ready.json()["checks"]["object_store"], "unavailable");
        println!("{mode:?}: 503 after {took:?}");
        app.cut_store(ProxyMode::Forward);
    }

    let started = Instant::now();
    loop {
        let reply = app.post_telemetry(&json!([record(2)])).await;
        if reply.status == 201 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("recovered {:?} after the store returned", started.elapsed());
    assert_eq!(app.get("/ready").await.status, 200);
    let (records, _) = app.stored_records("telemetry/").await;
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.contains(&1) && seqs.contains(&2), "{seqs:?}");
    assert!(
        !seqs.contains(&100),
        "nothing unacknowledged claims to be stored: {seqs:?}"
    );
}

#[tokio::test]
async fn sigterm_completes_requests_waiting_in_a_group() {
    let mut app = spawn_with(
        Backend::Postgres,
        Options {
            env: &[
                ("APP_INGEST__GROUP_WINDOW_MS", "3000"),
                ("APP_SERVER__DRAIN_DELAY_SECS", "1"),
            ],
            ..Default::default()
        },
    )
    .await;
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let req = app.post("/ingest/telemetry").json(&json!([record(i)]));
            tokio::spawn(async move {
                let res = req.send().await.expect("in-flight request");
                res.status().as_u16()
            })
        })
        .collect();
    wait_until_pending(&app).await;
    let started = Instant::now();
    app.begin_shutdown();
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "readiness off at once");
    for r in in_flight {
        assert_eq!(r.await.expect("join"), 201);
    }
    app.server
        .take()
        .expect("server")
        .await
        .expect("join")
        .expect("clean exit");
    println!(
        "shutdown with 5 waiting requests took {:?}",
        started.elapsed()
    );
    assert_eq!(app.stored_records("telemetry/").await.0.len(), 5);
}

/// Found by the security review: the final flush at shutdown had no bound, so with the
/// object store hanging the process outlived drain delay + shutdown timeout (and the
/// pod's grace period) by up to two store timeouts. Now everything after serving gets
/// what is left of the shutdown timeout; the unwritten group was never acknowledged.
#[tokio::test]
async fn the_final_flush_ends_with_the_shutdown_timeout() {
    let mut app = spawn_with(
        Backend::Postgres,
        Options {
            env: &[
                ("APP_SERVER__SHUTDOWN_TIMEOUT_SECS", "1"),
                ("APP_STORAGE__OPERATION_TIMEOUT_MS", "30000"),
            ],
            store_proxy: true,
        },
    )
    .await;
    app.cut_store(ProxyMode::Blackhole);
    let req = app.post("/ingest/telemetry").json(&json!([record(1)]));
    let in_flight = tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    wait_until_pending(&app).await;

    let started = Instant::now();
    app.begin_shutdown();
    let server = app.server.take().expect("server");
    let exit = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap_or_else(|_| panic!("still running {:?} after SIGTERM", started.elapsed()));
    exit.expect("join").expect("clean exit");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_ne!(
        in_flight.await.expect("join").ok(),
        Some(201),
        "the unwritten records were never acknowledged"
    );
}

#[tokio::test]
async fn pending_memory_is_bounded_with_fast_503s() {
    let app = spawn_with(
        Backend::Postgres,
        Options {
            env: &[
                ("APP_INGEST__MAX_PENDING_BYTES", "8192"),
                ("APP_INGEST__GROUP_MAX_BYTES", "4096"),
            ],
            store_proxy: true,
        },
    )
    .await;
    app.cut_store(ProxyMode::Blackhole);
    let big = json!((0..20).map(record).collect::<Vec<_>>());
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let req = app.post("/ingest/telemetry").json(&big);
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let started = Instant::now();
    let mut refused = None;
    while started.elapsed() < Duration::from_secs(5) {
        let reply = app.post_telemetry(&big).await;
        if reply.status == 503 && reply.error().contains("Too much data") {
            refused = Some(started.elapsed());
            break;
        }
    }
    assert!(refused.is_some(), "never refused past the bound");
    app.cut_store(ProxyMode::Forward);
    for s in slow {
        let _ = s.await;
    }
    assert_eq!(
        app.post_telemetry(&json!([record(1)])).await.status,
        201,
        "fine afterwards"
    );
}

/// Found by the resilience rig's object-store outage: a PUT that landed while its
/// answer was lost was answered 503 and its Idempotency-Key forgotten, so the client's
/// retry wrote the records a second time. Now the retry finds the object the claim
/// names, answers 201 from it, and the records are stored exactly once.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_repeated_by_the_retry() {
    let app = spawn_behind_store_proxy().await;
    let body = json!([record(7), record(8)]);
    let post = || {
        app.send(
            app.post("/ingest/telemetry")
                .header("idempotency-key", "lost-answer-1")
                .json(&body),
        )
    };
    app.cut_store(ProxyMode::DropReplies);
    let first = post().await;
    assert_eq!(first.status, 503, "{}", first.text);
    let (stored, _) = app.stored_records("telemetry/").await;
    assert_eq!(stored.len(), 2, "the PUT itself landed");

    app.cut_store(ProxyMode::Forward);
    let started = Instant::now();
    let retry = loop {
        let reply = post().await;
        if reply.status != 503 && reply.status != 409 {
            break reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.json()["count"], 2);
    let (stored, _) = app.stored_records("telemetry/").await;
    let mut seqs: Vec<u64> = stored.iter().filter_map(|r| r["seq"].as_u64()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![7, 8], "stored exactly once");
    // Later retries replay the same answer.
    let again = post().await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["s3_key"], retry.json()["s3_key"]);
}
