//! Exactly-once across replicas when one looks dead: a stalled heartbeat, a claim
//! taken over under its owner, a `writing` claim whose owner went silent, and the
//! counters that tell database failures from object-store failures.

use std::time::Duration;

use common::Query;
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, Reply, TestApp, record, spawn_with};

/// What a trigger does to heartbeats (`ingest_instances` writes).
#[derive(Clone, Copy)]
enum Heartbeats {
    /// Silently dropped: the replica lives on but its heartbeat stops (a stall).
    Stalled,
    /// Refused with an error.
    Failing,
}

async fn break_heartbeats(app: &TestApp, backend: Backend, how: Heartbeats) {
    let sql = match (backend, how) {
        (Backend::Postgres, how) => format!(
            "CREATE FUNCTION break_heartbeats() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {} END $$; \
             CREATE TRIGGER break_heartbeats BEFORE INSERT OR UPDATE ON ingest_instances \
             FOR EACH ROW EXECUTE FUNCTION break_heartbeats(); DELETE FROM ingest_instances;",
            match how {
                Heartbeats::Stalled => "RETURN NULL;",
                Heartbeats::Failing => "RAISE EXCEPTION 'heartbeat refused';",
            }
        ),
        (Backend::Sqlite, how) => {
            let action = match how {
                Heartbeats::Stalled => "RAISE(IGNORE)",
                Heartbeats::Failing => "RAISE(ABORT, 'heartbeat refused')",
            };
            format!(
                "CREATE TRIGGER break_heartbeats_i BEFORE INSERT ON ingest_instances BEGIN SELECT {action}; END; \
                 CREATE TRIGGER break_heartbeats_u BEFORE UPDATE ON ingest_instances BEGIN SELECT {action}; END; \
                 DELETE FROM ingest_instances;"
            )
        }
    };
    app.db.execute_script(&sql).await.expect("trigger");
}

/// The value of one sample in `/metrics` (`name{labels}`), if present.
pub async fn metric(app: &TestApp, sample: &str) -> Option<f64> {
    let text = app.get("/metrics").await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

async fn post_keyed(app: &TestApp, body: &Value, key: &str) -> Reply {
    app.send(
        app.post("/ingest/telemetry")
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

/// Waits (bounded) until the claim of `key` is in the database.
async fn claimed(app: &TestApp, key: &str) {
    for _ in 0..250 {
        let rows = app
            .db
            .fetch_all(
                Query::new("SELECT owner FROM ingest_idempotency WHERE idempotency_key = $1")
                    .bind(key),
            )
            .await
            .expect("select");
        if !rows.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the claim of {key} never appeared");
}

async fn slow_replica(backend: Backend) -> TestApp {
    let options = Options {
        env: &[("APP_INGEST__GROUP_WINDOW_MS", "2500")],
        ..Default::default()
    };
    spawn_with(backend, options).await
}

/// Replica A holds the key's records in its group window; its heartbeat stalls, so
/// replica B takes the key over and writes. A must not write them again nor answer
/// 201 (today both wrote: two objects, the records twice).
async fn a_stalled_owner_is_fenced_and_the_records_are_stored_once(backend: Backend) {
    let a = slow_replica(backend).await;
    let b = a.sibling(&[("APP_INGEST__GROUP_WINDOW_MS", "50")]).await;
    break_heartbeats(&a, backend, Heartbeats::Stalled).await;
    let body = json!([record(1), record(2)]);
    let first = tokio::spawn({
        let req = a
            .post("/ingest/telemetry")
            .header("Idempotency-Key", "skew-test-1")
            .json(&body);
        async move { req.send().await.expect("send").status().as_u16() }
    });
    claimed(&a, "skew-test-1").await;
    let retry = post_keyed(&b, &body, "skew-test-1").await;
    assert_eq!(
        retry.status, 201,
        "A has no heartbeat: B takes over: {}",
        retry.text
    );
    let fenced = first.await.expect("join");
    assert_eq!(fenced, 503, "A's claim moved on: not acknowledged");
    let (records, objects) = a.stored_records("telemetry/").await;
    assert_eq!((records.len(), objects), (2, 1), "stored exactly once");
    assert_eq!(
        metric(&a, "ingest_idempotency_fenced_total").await,
        Some(1.0)
    );
    let again = post_keyed(&a, &body, "skew-test-1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["s3_key"], retry.json()["s3_key"]);
}

/// A peer takes one claim over while the owner still holds the records in a group
/// with another request (what a replica does when its clock or a stalled heartbeat
/// makes the owner look dead): that member is neither written nor acknowledged, the
/// other is stored alone.
async fn a_claim_that_moved_on_is_neither_written_nor_acknowledged(backend: Backend) {
    let a = slow_replica(backend).await;
    let send = |key: &str, seq: u64| {
        let req = a
            .post("/ingest/telemetry")
            .header("Idempotency-Key", key)
            .json(&json!([record(seq)]));
        tokio::spawn(async move { req.send().await.expect("send").status().as_u16() })
    };
    let (moved, kept) = (send("moved-1", 1), send("kept-1", 2));
    claimed(&a, "moved-1").await;
    claimed(&a, "kept-1").await;
    a.db.execute(
        Query::new("UPDATE ingest_idempotency SET owner = 'replica-b' WHERE idempotency_key = $1")
            .bind("moved-1"),
    )
    .await
    .expect("take over");
    assert_eq!(moved.await.expect("join"), 503, "fenced: not acknowledged");
    assert_eq!(kept.await.expect("join"), 201);
    let (records, objects) = a.stored_records("telemetry/").await;
    let seqs: Vec<_> = records.iter().map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        (seqs, objects),
        (vec![Some(2)], 1),
        "only the kept request's records"
    );
    assert_eq!(
        metric(&a, "ingest_idempotency_fenced_total").await,
        Some(1.0)
    );
}

/// A `writing` claim whose owner has no heartbeat is not taken over before the
/// failed-write grace (its PUT may still land); after a reported failure plus the
/// grace it is.
async fn a_silent_writer_keeps_its_claim_until_the_grace_is_over(backend: Backend) {
    let app = spawn_with(backend, Options::default()).await;
    let body = json!([record(1)]);
    let hash = data_ingestion::idempotency::request_hash("telemetry", body.to_string().as_bytes());
    let object = format!(
        "telemetry/{}/20261128100000-inflight.json",
        crate::helpers::PROCEDURE
    );
    crate::idempotency::claim_row(&app, "k-inflight", "writing", Some(&object), &hash).await;
    let reply = post_keyed(&app, &body, "k-inflight").await;
    assert_eq!(reply.status, 409, "heartbeat silence alone: {}", reply.text);
    assert_eq!(app.stored_records("telemetry/").await.1, 0);

    // The owner reported the failure long enough ago: the PUT cannot land anymore.
    let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(5);
    app.db
        .execute(
            Query::new("UPDATE ingest_idempotency SET failed_at = $1 WHERE idempotency_key = $2")
                .bind(past)
                .bind("k-inflight"),
        )
        .await
        .expect("failed_at");
    let reply = post_keyed(&app, &body, "k-inflight").await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(app.stored_records("telemetry/").await.0.len(), 1);
}

/// Heartbeat failures are counted; a failed database update before the PUT is a
/// database failure, not an object-store PUT failure.
async fn database_failures_are_counted_apart_from_put_failures(backend: Backend) {
    let app = spawn_with(backend, Options::default()).await;
    break_heartbeats(&app, backend, Heartbeats::Failing).await;
    let refuse_writing = match backend {
        Backend::Postgres => {
            "CREATE FUNCTION refuse_writing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.state = 'writing' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_writing BEFORE UPDATE ON ingest_idempotency \
             FOR EACH ROW EXECUTE FUNCTION refuse_writing();"
        }
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_writing BEFORE UPDATE ON ingest_idempotency \
             WHEN NEW.state = 'writing' BEGIN SELECT RAISE(ABORT, 'refused'); END;"
        }
    };
    app.db
        .execute_script(refuse_writing)
        .await
        .expect("trigger");
    let reply = post_keyed(&app, &json!([record(1)]), "db-down-1").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(
        metric(
            &app,
            r#"ingest_idempotency_db_failures_total{op="before_put"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(metric(&app, "ingest_put_failures_total").await, Some(0.0));
    for _ in 0..150 {
        let beats = metric(
            &app,
            r#"ingest_idempotency_db_failures_total{op="heartbeat"}"#,
        )
        .await;
        if beats.is_some_and(|n| n >= 1.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a failing heartbeat was never counted");
}

on_both_backends!(
    a_stalled_owner_is_fenced_and_the_records_are_stored_once,
    a_claim_that_moved_on_is_neither_written_nor_acknowledged,
    a_silent_writer_keeps_its_claim_until_the_grace_is_over,
    database_failures_are_counted_apart_from_put_failures,
);
