use serde_json::{Value, json};

use crate::helpers::{Backend, record, spawn};

async fn batches_land_under_their_type(backend: Backend) {
    let app = spawn(backend).await;
    let reply = app
        .post_json(
            "/ingest/batch",
            &json!({"records": (0..100).map(record).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["count"], 100);
    assert_eq!(body["message"], "Batch of 100 records ingested");
    assert!(
        body["s3_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("batch/telemetry/") && k.ends_with(".json"))
    );

    let reply = app
        .post_json(
            "/ingest/batch",
            &json!({"type": "maintenance", "records": [{"robot": 1}, {"robot": 2}]}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert!(
        reply.json()["s3_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("batch/maintenance/"))
    );

    let (telemetry, _) = app.stored_records("batch/telemetry/").await;
    assert_eq!(telemetry.len(), 100);
    let (maintenance, _) = app.stored_records("batch/maintenance/").await;
    assert_eq!(maintenance, vec![json!({"robot": 1}), json!({"robot": 2})]);

    for (body, message) in [
        (json!({}), "No records provided"),
        (json!({"records": "x"}), "Invalid records"),
        (
            json!({"records": [{"a": 1}]}),
            "Missing required field: procedure_id in record 0",
        ),
        (
            json!({"records": [{}], "type": "../../etc"}),
            "Invalid type",
        ),
    ] {
        let reply = app.post_json("/ingest/batch", &body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert!(reply.error().contains(message), "{body}: {}", reply.text);
    }
    let none: Value = app.stored_records("batch/").await.0.into_iter().collect();
    assert_eq!(
        none.as_array().map(Vec::len),
        Some(102),
        "rejected batches stored nothing"
    );
}

on_both_backends!(batches_land_under_their_type);
