use serde_json::{Value, json};

use crate::helpers::{Backend, ROBOT, record, spawn};

async fn probes_answer(backend: Backend) {
    let app = spawn(backend).await;
    for path in ["/health", "/ingest/health"] {
        let reply = app.get(path).await;
        assert_eq!(
            reply.json(),
            json!({"status": "healthy", "service": "data-ingestion"})
        );
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(
        ready.json()["checks"],
        json!({"database": "ok", "object_store": "ok"})
    );
}
on_both_backends!(probes_answer);

#[tokio::test]
async fn ingestion_metrics_are_exported() {
    let app = spawn(Backend::Postgres).await;
    app.post_telemetry(&json!([record(1), record(2)])).await;
    app.post_telemetry(&json!({"procedure_id": "x"})).await;
    let text = app.get("/metrics").await.text;
    for expected in [
        r#"ingest_records_total{outcome="accepted",reason="stored"} 2"#,
        r#"ingest_records_total{outcome="rejected",reason="invalid"} 1"#,
        "ingest_objects_written_total 1",
        "ingest_object_records_sum 2.0",
        "ingest_group_requests_count 1",
        "ingest_put_duration_seconds_count 1",
        "ingest_pending_bytes 0",
        "ingest_idempotent_replays_total 0",
        r#"http_requests_total{method="POST",route="/ingest/telemetry",status="201"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
}

#[tokio::test]
async fn the_openapi_document_matches_the_live_routes() {
    let app = spawn(Backend::Postgres).await;
    app.add_robot().await;
    let doc = app.get("/ingest/openapi.json").await.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let mut paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/ingest/batch",
            "/ingest/procedure",
            "/ingest/stats",
            "/ingest/telemetry"
        ]
    );

    let validate = |path: &str, method: &str, status: &str, body: &Value| {
        let schema_ref = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} {status} schema"))
            .to_owned();
        let schema = json!({"$ref": schema_ref, "components": doc["components"].clone()});
        let v = jsonschema::validator_for(&schema).expect("schema");
        let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{path} {status}: {errors:?} in {body}");
    };
    let t = app.post_telemetry(&json!([record(1)])).await;
    validate("/ingest/telemetry", "post", "201", &t.json());
    let b = app
        .post_json("/ingest/batch", &json!({"records": [record(2)]}))
        .await;
    validate("/ingest/batch", "post", "201", &b.json());
    let p = app
        .post_json(
            "/ingest/procedure",
            &json!({"procedure_id": "aaaaaaaa-0000-4000-8000-000000000009", "robot_id": ROBOT,
                    "procedure_type": "T", "procedure_category": "C", "start_time": "2026-11-28 09:00:00",
                    "end_time": "2026-11-28 10:00:00", "duration_minutes": 60, "surgeon_id": "S",
                    "surgeon_name": "Dr. S", "patient_id": "P", "patient_age": 40, "patient_gender": null,
                    "complexity_score": null, "status": "completed"}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text);
    validate("/ingest/procedure", "post", "201", &p.json());
    validate(
        "/ingest/stats",
        "get",
        "200",
        &app.get("/ingest/stats").await.json(),
    );
    let bad = app.post_json("/ingest/telemetry", &json!({})).await;
    validate("/ingest/telemetry", "post", "400", &bad.json());
}

async fn ingestion_routes_need_an_ingest_key(backend: Backend) {
    let (app, _keys) = crate::helpers::spawn_with_keys(
        backend,
        &[
            ("robots-fac-001", "ingest", "mrk_robot_key"),
            ("dashboard", "read", "mrk_read_key"),
        ],
    )
    .await;
    let body = json!([record(1)]);
    assert_eq!(app.post_telemetry(&body).await.status, 401);
    let read_only = app
        .send(
            app.post("/ingest/telemetry")
                .bearer_auth("mrk_read_key")
                .json(&body),
        )
        .await;
    assert_eq!(read_only.status, 403);
    let robot = app
        .send(
            app.post("/ingest/telemetry")
                .bearer_auth("mrk_robot_key")
                .json(&body),
        )
        .await;
    assert_eq!(robot.status, 201, "{}", robot.text);
    assert_eq!(robot.header("cache-control"), Some("no-store"));
    for path in ["/health", "/ingest/health", "/ready", "/metrics"] {
        assert_eq!(app.get(path).await.status, 200, "{path} stays open");
    }
    assert_eq!(
        app.stored_records("telemetry/").await.0.len(),
        1,
        "rejected requests wrote nothing"
    );
    // Refused before a handler ran, and still counted (issue 21).
    let text = app.get("/metrics").await.text;
    for expected in [
        r#"ingest_records_total{outcome="rejected",reason="unauthorized"} 1"#,
        r#"ingest_records_total{outcome="rejected",reason="forbidden"} 1"#,
        r#"ingest_records_total{outcome="accepted",reason="stored"} 1"#,
        r#"ingest_requests_total{route="/ingest/telemetry",outcome="rejected"} 2"#,
        r#"ingest_requests_total{route="/ingest/telemetry",outcome="accepted"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
}
on_both_backends!(ingestion_routes_need_an_ingest_key);
