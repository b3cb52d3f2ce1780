use common::Query;
use serde_json::json;

use crate::helpers::{Backend, TestApp, completed_procedure, procedure, spawn};

async fn stored(app: &TestApp, id: &str) -> (String, i64, String) {
    let rows = app
        .db
        .fetch_all(
            Query::new("SELECT status, duration_minutes, procedure_type FROM surgical_procedures WHERE procedure_id = $1")
                .bind(uuid::Uuid::parse_str(id).expect("uuid")),
        )
        .await
        .expect("select");
    (
        rows.get_string(0, "status").expect("status").expect("row"),
        rows.get_i64(0, "duration_minutes")
            .expect("duration")
            .expect("row"),
        rows.get_string(0, "procedure_type")
            .expect("type")
            .expect("row"),
    )
}

async fn procedures_are_upserted(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    let id = "aaaaaaaa-0000-4000-8000-000000000001";
    let reply = app.post_procedure(&procedure(id)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"status": "success", "message": "Procedure data ingested", "procedure_id": id})
    );
    assert_eq!(
        stored(&app, id).await,
        ("in_progress".into(), 0, "Hysterectomy".into())
    );

    let reply = app.post_procedure(&completed_procedure(id)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        stored(&app, id).await,
        ("completed".into(), 150, "Hysterectomy".into()),
        "a conflict updates status, end_time and duration_minutes only"
    );

    let stats = app.get("/ingest/stats").await.json();
    assert_eq!(stats["total_procedures"], 1);
    assert_eq!(stats["unique_robots"], 1);
    assert_eq!(stats["latest_procedure"], "2026-11-28T09:00:00");
}

async fn bad_procedures_name_the_field_and_never_echo_rows(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    let id = "aaaaaaaa-0000-4000-8000-000000000002";

    let mut unknown_robot = procedure(id);
    unknown_robot["robot_id"] = json!("99999999-9999-4999-8999-999999999999");
    let reply = app.post_procedure(&unknown_robot).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.error().contains("robot_id"));

    for (field, value, status) in [
        ("patient_age", json!(130), 400),
        ("complexity_score", json!(7), 400),
        ("status", json!("finished"), 400),
        ("start_time", json!("2026-02-30 10:00:00"), 400),
        ("procedure_id", json!("not-a-uuid"), 400),
        ("surgeon_name", json!(12), 400),
    ] {
        let mut body = procedure(id);
        body[field] = value.clone();
        let reply = app.post_procedure(&body).await;
        assert_eq!(reply.status, status, "{field}={value}: {}", reply.text);
        assert!(reply.error().contains(field), "{field}: {}", reply.text);
        assert!(
            !reply.text.contains("PAT-SECRET"),
            "no row content in errors"
        );
    }
    let mut missing = procedure(id);
    missing
        .as_object_mut()
        .expect("object")
        .remove("surgeon_id");
    let reply = app.post_procedure(&missing).await;
    assert_eq!(reply.error(), "Missing required field: surgeon_id");
    assert_eq!(
        app.post_raw("/ingest/procedure", "", &[]).await.error(),
        "No data provided"
    );

    // A conflict that would move start_time (and so end_time before the stored
    // start_time) changes nothing and names the field.
    assert_eq!(app.post_procedure(&procedure(id)).await.status, 201);
    let mut earlier = procedure(id);
    earlier["start_time"] = json!("2026-11-20 07:00:00");
    earlier["end_time"] = json!("2026-11-20 08:00:00");
    let reply = app.post_procedure(&earlier).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert!(reply.error().starts_with("Conflicting start_time"));
    assert!(!reply.text.contains("PAT-SECRET"));
}

on_both_backends!(
    procedures_are_upserted,
    bad_procedures_name_the_field_and_never_echo_rows
);

#[tokio::test]
async fn stats_on_an_empty_table() {
    let app = spawn(Backend::Postgres).await;
    assert_eq!(
        app.get("/ingest/stats").await.json(),
        json!({"total_procedures": 0, "unique_robots": 0, "latest_procedure": null})
    );
}
