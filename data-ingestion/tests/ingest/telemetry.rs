use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::{Backend, PROCEDURE, ROBOT, record, spawn};

fn assert_key_layout(key: &str, prefix: &str) {
    assert!(key.starts_with(prefix), "{key}");
    let name = &key[prefix.len()..];
    assert!(name.ends_with(".json"), "{key}");
    let stamp = &name[..14];
    assert!(
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").is_ok(),
        "{key}"
    );
    assert!(
        name.len() > 14 + 5 + 8,
        "a unique suffix follows the time: {key}"
    );
}

async fn one_record_is_stored_as_sent(backend: Backend) {
    let app = spawn(backend).await;
    let sent = r#"{"procedure_id":"5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10","robot_id":"11111111-1111-4111-8111-111111111111","timestamp":"2026-11-28T10:00:00.5Z","force":1.50,"big":12345678901234567890,"nested":{"a":[1,2,{"b":null}]}}"#;
    let reply = app
        .post_raw(
            "/ingest/telemetry",
            sent,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["status"], "success");
    assert_eq!(body["message"], "Telemetry data ingested");
    assert!(body.get("count").is_none(), "a single record gets no count");
    let key = body["s3_key"].as_str().expect("key").to_owned();
    assert_key_layout(&key, &format!("telemetry/{PROCEDURE}/"));

    let stored = app
        .store
        .get(&key)
        .await
        .expect("get")
        .expect("object exists");
    assert_eq!(
        stored.as_ref(),
        format!("[{sent}]").as_bytes(),
        "byte for byte, inside an array"
    );
}

async fn arrays_ndjson_and_gzip_are_accepted(backend: Backend) {
    let app = spawn(backend).await;
    let array = Value::Array((0..3).map(record).collect());
    let reply = app.post_telemetry(&array).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json()["count"], 3);

    let ndjson = (10..14)
        .map(|i| record(i).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let reply = app
        .post_raw(
            "/ingest/telemetry",
            ndjson,
            &[("content-type", "application/x-ndjson")],
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json()["count"], 4);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(
        Value::Array((20..25).map(record).collect())
            .to_string()
            .as_bytes(),
    )
    .expect("gzip");
    let reply = app
        .post_raw(
            "/ingest/telemetry",
            gz.finish().expect("gzip"),
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json()["count"], 5);

    let (records, _) = app.stored_records("telemetry/").await;
    let mut seqs: Vec<u64> = records
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [0, 1, 2, 10, 11, 12, 13, 20, 21, 22, 23, 24]);
}

on_both_backends!(
    one_record_is_stored_as_sent,
    arrays_ndjson_and_gzip_are_accepted
);

#[tokio::test]
async fn every_put_requests_server_side_encryption() {
    let app = spawn(Backend::Postgres).await;
    let key = app.post_telemetry(&record(1)).await.json()["s3_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let s3 = app.s3.as_ref().expect("s3");
    let bucket = s3.bucket().to_owned();
    let head = s3
        .client()
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256"),
        "moto echoes the requested encryption"
    );
    assert_eq!(head.content_type(), Some("application/json"));
}

#[tokio::test]
async fn kms_encryption_is_requested_when_configured() {
    let app = crate::helpers::spawn_with(
        Backend::Postgres,
        crate::helpers::Options {
            env: &[
                ("APP_STORAGE__SSE", "aws:kms"),
                ("APP_STORAGE__KMS_KEY_ID", "alias/medrobotics-raw"),
            ],
            ..Default::default()
        },
    )
    .await;
    let reply = app.post_telemetry(&record(1)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let key = reply.json()["s3_key"].as_str().expect("key").to_owned();
    let s3 = app.s3.as_ref().expect("s3");
    let bucket = s3.bucket().to_owned();
    let head = s3
        .client()
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(head.ssekms_key_id(), Some("alias/medrobotics-raw"));
}

#[tokio::test]
async fn records_of_one_procedure_arriving_together_share_an_object() {
    let app = crate::helpers::spawn_with(
        Backend::Postgres,
        crate::helpers::Options {
            env: &[("APP_INGEST__GROUP_WINDOW_MS", "300")],
            ..Default::default()
        },
    )
    .await;
    let posts: Vec<_> = (0..40)
        .map(|i| {
            let req = app
                .post("/ingest/telemetry")
                .json(&json!([record(i * 2), record(i * 2 + 1)]));
            tokio::spawn(async move {
                req.send()
                    .await
                    .expect("send")
                    .json::<Value>()
                    .await
                    .expect("json")
            })
        })
        .collect();
    let mut keys = std::collections::BTreeSet::new();
    for p in posts {
        let body = p.await.expect("join");
        assert_eq!(body["count"], 2);
        keys.insert(body["s3_key"].as_str().expect("key").to_owned());
    }
    let (records, objects) = app.stored_records(&format!("telemetry/{PROCEDURE}/")).await;
    assert_eq!(records.len(), 80);
    assert_eq!(objects, keys.len());
    assert!(
        objects <= 3,
        "40 concurrent posts in one window: {objects} objects"
    );

    // Another procedure never shares an object with this one.
    let other = json!({"procedure_id": "22222222-2222-4222-8222-222222222222", "robot_id": ROBOT, "timestamp": "2026-11-28 10:00:00"});
    let key = app.post_telemetry(&other).await.json()["s3_key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert!(key.starts_with("telemetry/22222222-2222-4222-8222-222222222222/"));
}
