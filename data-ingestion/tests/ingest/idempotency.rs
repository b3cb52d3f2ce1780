use chrono::Utc;
use common::Query;
use serde_json::{Value, json};

use crate::helpers::{Backend, PROCEDURE, TestApp, record, spawn};

async fn post_with_key(app: &TestApp, body: &Value, key: &str) -> crate::helpers::Reply {
    app.send(
        app.post("/ingest/telemetry")
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

async fn a_retry_replays_the_first_answer_and_writes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let body = json!([record(1), record(2)]);
    let first = post_with_key(&app, &body, "robot-7:seq-1").await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);

    let retry = post_with_key(&app, &body, "robot-7:seq-1").await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.text, first.text, "the same answer, same object key");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));

    let (records, objects) = app.stored_records("telemetry/").await;
    assert_eq!((records.len(), objects), (2, 1));

    let reused = post_with_key(&app, &json!([record(3)]), "robot-7:seq-1").await;
    assert_eq!(reused.status, 422);
    assert!(
        reused.error().contains("different request"),
        "{}",
        reused.text
    );

    let bad = post_with_key(&app, &body, "has spaces").await;
    assert_eq!(bad.status, 400);
}

async fn concurrent_requests_with_one_key_write_once(backend: Backend) {
    let app = spawn(backend).await;
    let body = json!([record(7)]);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            app.post("/ingest/telemetry")
                .header("Idempotency-Key", "same-key")
                .json(&body)
        })
        .map(|req| tokio::spawn(async move { req.send().await.expect("send").status().as_u16() }))
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.expect("join"));
    }
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201));
    let (records, _) = app.stored_records("telemetry/").await;
    assert_eq!(records.len(), 1, "exactly one write: {statuses:?}");
}

/// Two facilities (API keys) reusing one `Idempotency-Key` each store their own
/// records: neither a 422 nor a replay of the other's answer.
async fn keys_belong_to_the_caller(backend: Backend) {
    let (app, _keys) = crate::helpers::spawn_with_keys(
        backend,
        &[
            ("robots-fac-001", "ingest", "mrk_fac_one"),
            ("robots-fac-002", "ingest", "mrk_fac_two"),
        ],
    )
    .await;
    let send = |token: &'static str, body: Value| {
        app.send(
            app.post("/ingest/telemetry")
                .bearer_auth(token)
                .header("Idempotency-Key", "robot-7:seq-42")
                .json(&body),
        )
    };
    let one = send("mrk_fac_one", json!([record(1)])).await;
    assert_eq!(one.status, 201, "{}", one.text);
    let two = send("mrk_fac_two", json!([record(2)])).await;
    assert_eq!(two.status, 201, "another caller's key space: {}", two.text);
    let same_body = send("mrk_fac_two", json!([record(1)])).await;
    assert_eq!(
        same_body.status, 422,
        "reused by the same caller: {}",
        same_body.text
    );
    assert_eq!(two.header("idempotent-replayed"), None);
    assert_ne!(one.json()["s3_key"], two.json()["s3_key"]);
    let (mut records, _) = app.stored_records("telemetry/").await;
    records.sort_by_key(|r| r["seq"].as_u64());
    let seqs: Vec<_> = records.iter().map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs, [Some(1), Some(2)], "each caller's own records");
    let replay = send("mrk_fac_one", json!([record(1)])).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json()["s3_key"], one.json()["s3_key"]);

    // The same body under one key from both callers: each stored, neither replayed.
    let mut objects = Vec::new();
    for token in ["mrk_fac_one", "mrk_fac_two"] {
        let reply = app
            .send(
                app.post("/ingest/telemetry")
                    .bearer_auth(token)
                    .header("Idempotency-Key", "same-body")
                    .json(&json!([record(5)])),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.header("idempotent-replayed"), None, "{token}");
        objects.push(reply.json()["s3_key"].clone());
    }
    assert_ne!(objects[0], objects[1]);
    assert_eq!(app.stored_records("telemetry/").await.0.len(), 4);
}

on_both_backends!(
    a_retry_replays_the_first_answer_and_writes_nothing,
    concurrent_requests_with_one_key_write_once,
    keys_belong_to_the_caller,
);

pub(crate) async fn claim_row(
    app: &TestApp,
    key: &str,
    state: &str,
    s3_key: Option<&str>,
    hash: &str,
) {
    let now = Utc::now().naive_utc();
    app.db
        .execute(
            Query::new(
                "INSERT INTO ingest_idempotency (scope, idempotency_key, request_hash, owner, state, \
                 record_count, is_array, s3_key, created_at, updated_at, expires_at) \
                 VALUES ('telemetry', $1, $2, 'dead-replica', $3, 1, TRUE, $4, $5, $5, $6)",
            )
            .bind(key)
            .bind(hash)
            .bind(state)
            .bind(s3_key.map(str::to_owned))
            .bind(now)
            .bind(now + chrono::Duration::hours(1)),
        )
        .await
        .expect("insert claim");
}

#[tokio::test]
async fn a_dead_replicas_unwritten_claim_is_taken_over() {
    let app = spawn(Backend::Postgres).await;
    let body = json!([record(1)]);
    let hash = data_ingestion::idempotency::request_hash("telemetry", body.to_string().as_bytes());
    claim_row(&app, "k-pending", "pending", None, &hash).await;
    let reply = post_with_key(&app, &body, "k-pending").await;
    assert_eq!(
        reply.status, 201,
        "the owner has no heartbeat: {}",
        reply.text
    );
    assert_eq!(app.stored_records("telemetry/").await.0.len(), 1);
}

#[tokio::test]
async fn a_dead_replicas_landed_write_is_answered_not_repeated() {
    let app = spawn(Backend::Postgres).await;
    // The dead replica wrote the object and died before answering.
    let object = format!("telemetry/{PROCEDURE}/20261128100000-deadbeef.json");
    app.store
        .put(&object, bytes::Bytes::from(json!([record(1)]).to_string()))
        .await
        .expect("put");
    let body = json!([record(1)]);
    let hash = data_ingestion::idempotency::request_hash("telemetry", body.to_string().as_bytes());
    claim_row(&app, "k-writing", "writing", Some(&object), &hash).await;

    let reply = post_with_key(&app, &body, "k-writing").await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json()["s3_key"], object.as_str());
    assert_eq!(reply.json()["count"], 1);
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        app.stored_records("telemetry/").await.0.len(),
        1,
        "not written twice"
    );
}

#[tokio::test]
async fn a_live_owners_claim_is_in_progress() {
    let app = spawn(Backend::Postgres).await;
    let body = json!([record(1)]);
    let hash = data_ingestion::idempotency::request_hash("telemetry", body.to_string().as_bytes());
    claim_row(&app, "k-live", "pending", None, &hash).await;
    app.db
        .execute(
            Query::new("INSERT INTO ingest_instances (instance_id, heartbeat_at) VALUES ('dead-replica', $1)")
                .bind(Utc::now().naive_utc()),
        )
        .await
        .expect("heartbeat");
    let reply = post_with_key(&app, &body, "k-live").await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn expired_keys_are_forgotten() {
    let app = spawn(Backend::Postgres).await;
    let body = json!([record(1)]);
    assert_eq!(post_with_key(&app, &body, "old-key").await.status, 201);
    app.db
        .execute(
            Query::new("UPDATE ingest_idempotency SET expires_at = $1")
                .bind(Utc::now().naive_utc() - chrono::Duration::seconds(1)),
        )
        .await
        .expect("expire");
    let again = post_with_key(&app, &body, "old-key").await;
    assert_eq!(again.status, 201);
    assert_eq!(
        again.header("idempotent-replayed"),
        None,
        "processed anew after expiry"
    );
    assert_eq!(app.stored_records("telemetry/").await.0.len(), 2);
}
