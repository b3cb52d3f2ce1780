//! The wire contract against the old Flask service (DESIGN.md, data-ingestion
//! table): every key of the old insert required, an upsert that cannot apply is a
//! 409, empty bodies are "No data provided", an empty batch is stored, the stats
//! timestamp keeps Python's form, and JSON routes refuse other content types.

use std::io::Write;

use common::Query;
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, ROBOT, TestApp, record, spawn, spawn_with};

const OTHER_ROBOT: &str = "22222222-2222-4222-8222-222222222222";
const JSON: (&str, &str) = ("content-type", "application/json");

fn procedure(id: &str) -> Value {
    json!({
        "procedure_id": id, "robot_id": ROBOT, "procedure_type": "Hysterectomy",
        "procedure_category": "Gynecology", "start_time": "2026-11-28 09:00:00",
        "end_time": "2026-11-28 09:00:00", "duration_minutes": 0, "surgeon_id": "SURG-001",
        "surgeon_name": "Dr. Amelia Hart", "patient_id": "PAT-000001", "patient_age": 54,
        "patient_gender": "female", "complexity_score": 3.5, "status": "in_progress"
    })
}

/// Every column of the stored row as text (`None` when there is no row).
async fn row(app: &TestApp, id: &str) -> Option<Vec<Option<String>>> {
    let columns = [
        "robot_id",
        "procedure_type",
        "procedure_category",
        "start_time",
        "end_time",
        "duration_minutes",
        "surgeon_id",
        "surgeon_name",
        "patient_id",
        "patient_age",
        "patient_gender",
        "complexity_score",
        "status",
    ];
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST({c} AS TEXT) AS {c}"))
        .collect();
    let rows = app
        .db
        .fetch_all(
            Query::new(&format!(
                "SELECT {} FROM surgical_procedures WHERE procedure_id = $1",
                select.join(", ")
            ))
            .bind(uuid::Uuid::parse_str(id).expect("uuid")),
        )
        .await
        .expect("select");
    if rows.is_empty() {
        return None;
    }
    Some(
        columns
            .iter()
            .map(|c| rows.get_string(0, c).expect("text"))
            .collect(),
    )
}

async fn procedure_count(app: &TestApp) -> i64 {
    app.db
        .fetch_all(Query::new("SELECT COUNT(*) AS n FROM surgical_procedures"))
        .await
        .expect("count")
        .get_i64(0, "n")
        .expect("n")
        .expect("row")
}

async fn add_other_robot(app: &TestApp) {
    app.db
        .execute_script(&format!(
            "INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, \
             installation_date, facility_id, facility_name, status) VALUES ('{OTHER_ROBOT}', 'SN-2', \
             'da Vinci Xi', 'Intuitive Surgical', '2022-01-10', 'FAC-B', 'Beta Hospital', 'operational')"
        ))
        .await
        .expect("robot");
}

/// Item 1: the 14 keys of the old insert are required (first missing named, in the
/// insert's order, before any value is judged); `null` where the column allows it;
/// extra keys ignored.
async fn procedures_need_every_key_of_the_old_insert(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    let id = "aaaaaaaa-0000-4000-8000-000000000101";
    let keys: Vec<String> = procedure(id)
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 14);
    for key in &keys {
        let mut body = procedure(id);
        body.as_object_mut().expect("object").remove(key);
        let reply = app.post_json("/ingest/procedure", &body).await;
        assert_eq!(reply.status, 400, "without {key}: {}", reply.text);
        assert_eq!(
            reply.json(),
            json!({"error": format!("Missing required field: {key}")})
        );
    }
    let mut several = procedure(id);
    let map = several.as_object_mut().expect("object");
    map.remove("patient_gender");
    map.remove("complexity_score");
    map.insert("procedure_type".into(), json!(""));
    let reply = app.post_json("/ingest/procedure", &several).await;
    assert_eq!(
        reply.error(),
        "Missing required field: patient_gender",
        "the first missing key in the insert's order, before values are judged"
    );
    assert_eq!(procedure_count(&app).await, 0, "nothing stored on a 400");

    let mut nulls = procedure(id);
    nulls["patient_gender"] = Value::Null;
    nulls["complexity_score"] = Value::Null;
    nulls["firmware_note"] = json!("extra keys are ignored");
    let reply = app.post_json("/ingest/procedure", &nulls).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let stored = row(&app, id).await.expect("stored");
    assert_eq!((&stored[10], &stored[11]), (&None, &None));

    let mut null_required = procedure("aaaaaaaa-0000-4000-8000-000000000102");
    null_required["surgeon_id"] = Value::Null;
    let reply = app.post_json("/ingest/procedure", &null_required).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.error().contains("surgeon_id"), "{}", reply.text);
    assert_eq!(procedure_count(&app).await, 1);
}

/// Item 2: a conflict that differs in a field the upsert does not update is a 409
/// naming the first such field, and changes nothing; the same record in another
/// textual form is the same record.
async fn an_upsert_that_cannot_apply_is_a_409(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    add_other_robot(&app).await;
    let id = "aaaaaaaa-0000-4000-8000-000000000201";
    assert_eq!(
        app.post_json("/ingest/procedure", &procedure(id))
            .await
            .status,
        201
    );
    let first = row(&app, id).await.expect("stored");

    // The robots' retry, and the same values written differently: still the same.
    let mut same = procedure(id);
    same["start_time"] = json!("2026-11-28T10:00:00+01:00");
    same["end_time"] = json!("2026-11-28T09:00:00.000Z");
    same["complexity_score"] = json!("3.50");
    same["patient_age"] = json!("54");
    same["robot_id"] = json!(ROBOT.to_uppercase());
    for body in [procedure(id), same] {
        let reply = app.post_json("/ingest/procedure", &body).await;
        assert_eq!(reply.status, 201, "{body}: {}", reply.text);
    }
    assert_eq!(row(&app, id).await.expect("stored"), first);

    for (field, value) in [
        ("robot_id", json!(OTHER_ROBOT)),
        ("robot_id", json!("99999999-9999-4999-8999-999999999999")),
        ("procedure_type", json!("Cholecystectomy")),
        ("procedure_category", json!("General Surgery")),
        ("start_time", json!("2026-11-28 08:59:59")),
        ("surgeon_id", json!("SURG-002")),
        ("surgeon_name", json!("Dr. Other")),
        ("patient_id", json!("PAT-000002")),
        ("patient_age", json!(55)),
        ("patient_gender", json!("Female")),
        ("patient_gender", Value::Null),
        ("complexity_score", json!(3.51)),
        ("complexity_score", Value::Null),
    ] {
        let mut body = procedure(id);
        body[field] = value.clone();
        // Also try to update what a conflict may update: that must not happen either.
        body["status"] = json!("completed");
        body["end_time"] = json!("2026-11-28 12:00:00");
        body["duration_minutes"] = json!(180);
        let reply = app.post_json("/ingest/procedure", &body).await;
        assert_eq!(reply.status, 409, "{field}={value}: {}", reply.text);
        assert!(
            reply.error().starts_with(&format!("Conflicting {field}: ")),
            "{field}: {}",
            reply.text
        );
        assert!(reply.header("retry-after").is_none(), "no retry helps");
        assert!(
            !reply.text.contains("PAT-"),
            "no row content: {}",
            reply.text
        );
        assert_eq!(row(&app, id).await.expect("stored"), first, "{field}");
    }
    let mut two = procedure(id);
    two["surgeon_name"] = json!("Dr. Other");
    two["procedure_category"] = json!("Urology");
    let reply = app.post_json("/ingest/procedure", &two).await;
    assert!(
        reply
            .error()
            .starts_with("Conflicting procedure_category: "),
        "the first differing field in the insert's order: {}",
        reply.text
    );

    // What the upsert updates still updates.
    let mut done = procedure(id);
    done["status"] = json!("completed");
    done["end_time"] = json!("2026-11-28T11:30:00Z");
    done["duration_minutes"] = json!(150);
    let reply = app.post_json("/ingest/procedure", &done).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let updated = row(&app, id).await.expect("stored");
    assert_eq!(updated[12].as_deref(), Some("completed"));
    assert_eq!(updated[5].as_deref(), Some("150"));
    assert_eq!(&updated[..4], &first[..4]);

    // NULLs compare equal to NULLs.
    let nulls_id = "aaaaaaaa-0000-4000-8000-000000000202";
    let mut nulls = procedure(nulls_id);
    nulls["patient_gender"] = Value::Null;
    nulls["complexity_score"] = Value::Null;
    for expected in [201, 201] {
        assert_eq!(
            app.post_json("/ingest/procedure", &nulls).await.status,
            expected
        );
    }
    nulls["complexity_score"] = json!(2);
    let reply = app.post_json("/ingest/procedure", &nulls).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert!(reply.error().starts_with("Conflicting complexity_score: "));
}

/// Item 2, raced: two requests creating the same procedure for different robots
/// at the same moment. Exactly one wins; the other is a 409 and the row is the
/// winner's.
async fn racing_conflicting_inserts_have_one_winner(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    add_other_robot(&app).await;
    for round in 0..12 {
        let id = format!("aaaaaaaa-0000-4000-8000-{round:012}");
        let mut a = procedure(&id);
        let mut b = procedure(&id);
        a["robot_id"] = json!(ROBOT);
        b["robot_id"] = json!(OTHER_ROBOT);
        let (ra, rb) = tokio::join!(
            app.post_json("/ingest/procedure", &a),
            app.post_json("/ingest/procedure", &b)
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: {} / {}",
            ra.text,
            rb.text
        );
        let winner = if ra.status == 201 { ROBOT } else { OTHER_ROBOT };
        let stored = row(&app, &id).await.expect("stored");
        assert_eq!(stored[0].as_deref(), Some(winner), "round {round}");
    }
}

/// Item 3: `{}`, `[]`, and a missing or empty body are "No data provided".
async fn empty_bodies_are_no_data(backend: Backend) {
    let app = spawn(backend).await;
    for path in ["/ingest/telemetry", "/ingest/procedure"] {
        for (body, headers) in [
            ("{}", &[JSON][..]),
            ("[]", &[JSON][..]),
            (" { }\n", &[JSON][..]),
            ("[ ]", &[JSON][..]),
            ("", &[JSON][..]),
            ("", &[][..]),
        ] {
            let reply = app.post_raw(path, body, headers).await;
            assert_eq!(reply.status, 400, "{path} {body:?}: {}", reply.text);
            assert_eq!(
                reply.json(),
                json!({"error": "No data provided"}),
                "{path} {body:?}"
            );
        }
        let bare = app.send(app.post(path)).await;
        assert_eq!(
            (bare.status, bare.error().as_str()),
            (400, "No data provided"),
            "{path} without a body"
        );
    }
    assert!(app.stored_records("").await.0.is_empty());
}

/// Item 4: an empty batch is a 201 with count 0, and its object exists (`[]`).
async fn an_empty_batch_is_stored_and_acknowledged(backend: Backend) {
    let app = spawn(backend).await;
    for (body, prefix) in [
        (
            json!({"type": "telemetry", "records": []}),
            "batch/telemetry/",
        ),
        (
            json!({"type": "maintenance", "records": []}),
            "batch/maintenance/",
        ),
    ] {
        let reply = app.post_json("/ingest/batch", &body).await;
        assert_eq!(reply.status, 201, "{body}: {}", reply.text);
        let answer = reply.json();
        let key = answer["s3_key"].as_str().expect("s3_key").to_owned();
        assert!(key.starts_with(prefix) && key.ends_with(".json"), "{key}");
        assert_eq!(
            answer,
            json!({"status": "success", "message": "Batch of 0 records ingested",
                   "s3_key": key, "count": 0})
        );
        let object = app.store.get(&key).await.expect("get");
        assert_eq!(
            object.as_deref(),
            Some(&b"[]"[..]),
            "the named object exists"
        );
    }
    let reply = app
        .post_json("/ingest/batch", &json!({"type": "telemetry"}))
        .await;
    assert_eq!(
        (reply.status, reply.json()),
        (400, json!({"error": "No records provided"}))
    );
}

/// Item 5: `latest_procedure` in Python's `isoformat()` of the naive timestamp.
async fn stats_keep_the_python_isoformat(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(
        app.get("/ingest/stats").await.json(),
        json!({"total_procedures": 0, "unique_robots": 0, "latest_procedure": null})
    );
    app.add_robot().await;
    let mut p = procedure("aaaaaaaa-0000-4000-8000-000000000501");
    p["start_time"] = json!("2025-12-31T15:25:00Z");
    p["end_time"] = json!("2025-12-31T16:25:00Z");
    assert_eq!(app.post_json("/ingest/procedure", &p).await.status, 201);
    assert_eq!(
        app.get("/ingest/stats").await.json()["latest_procedure"],
        "2025-12-31T15:25:00"
    );
    let mut later = procedure("aaaaaaaa-0000-4000-8000-000000000502");
    later["start_time"] = json!("2026-01-01 08:00:00.25");
    later["end_time"] = json!("2026-01-01 09:00:00");
    assert_eq!(app.post_json("/ingest/procedure", &later).await.status, 201);
    assert_eq!(
        app.get("/ingest/stats").await.json(),
        json!({"total_procedures": 2, "unique_robots": 1,
               "latest_procedure": "2026-01-01T08:00:00.250000"})
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

/// Item 6: JSON routes take `application/json` (with parameters), `+json` types,
/// NDJSON on telemetry, gzip; everything else, and a body without a type, is 415.
async fn json_routes_refuse_other_content_types(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    let bodies = |n: u64| {
        [
            ("/ingest/telemetry", record(n).to_string()),
            ("/ingest/batch", json!({"records": [record(n)]}).to_string()),
            (
                "/ingest/procedure",
                procedure(&format!("aaaaaaaa-0000-4000-8000-{n:012}")).to_string(),
            ),
        ]
    };
    let json_only = "expected application/json (or an application/*+json type)";
    for (path, body) in bodies(1) {
        let expected = if path == "/ingest/telemetry" {
            format!("{json_only} or application/x-ndjson")
        } else {
            json_only.to_owned()
        };
        for (headers, got) in [
            (&[("content-type", "text/plain")][..], "text/plain"),
            (
                &[("content-type", "text/plain; charset=utf-8")][..],
                "text/plain",
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded")][..],
                "application/x-www-form-urlencoded",
            ),
            (&[("content-type", "text/json")][..], "text/json"),
            (&[][..], "no Content-Type"),
            (&[("content-encoding", "gzip")][..], "no Content-Type"),
        ] {
            let payload = if headers.iter().any(|(k, _)| *k == "content-encoding") {
                gzip(body.as_bytes())
            } else {
                body.clone().into_bytes()
            };
            let reply = app.post_raw(path, payload, headers).await;
            assert_eq!(reply.status, 415, "{path} {headers:?}: {}", reply.text);
            assert_eq!(
                reply.json(),
                json!({"error": format!("Unsupported Media Type: {got}; {expected}")}),
                "{path} {headers:?}"
            );
        }
        if path != "/ingest/telemetry" {
            let reply = app
                .post_raw(
                    path,
                    body.clone(),
                    &[("content-type", "application/x-ndjson")],
                )
                .await;
            assert_eq!(
                reply.status, 415,
                "NDJSON only on telemetry: {}",
                reply.text
            );
        }
    }
    assert!(app.stored_records("").await.0.is_empty(), "nothing stored");
    assert_eq!(procedure_count(&app).await, 0);

    for (n, content_type) in [
        (10, "application/json"),
        (11, "application/json; charset=utf-8"),
        (12, "Application/JSON;charset=UTF-8"),
        (13, "application/vnd.medrobotics.record+json"),
    ] {
        for (path, body) in bodies(n) {
            let reply = app
                .post_raw(path, body, &[("content-type", content_type)])
                .await;
            assert_eq!(reply.status, 201, "{path} {content_type}: {}", reply.text);
        }
    }
    for (path, body) in bodies(20) {
        let reply = app
            .post_raw(
                path,
                gzip(body.as_bytes()),
                &[JSON, ("content-encoding", "gzip")],
            )
            .await;
        assert_eq!(reply.status, 201, "{path} gzip: {}", reply.text);
    }
    for content_type in ["application/x-ndjson", "application/jsonl; charset=utf-8"] {
        let ndjson = format!("{}\n{}\n", record(30), record(31));
        let reply = app
            .post_raw(
                "/ingest/telemetry",
                ndjson,
                &[("content-type", content_type)],
            )
            .await;
        assert_eq!(reply.status, 201, "{content_type}: {}", reply.text);
        assert_eq!(reply.json()["count"], 2);
    }
    assert_eq!(procedure_count(&app).await, 5);
    let (telemetry, _) = app.stored_records("telemetry/").await;
    assert_eq!(telemetry.len(), 5 + 4);
}

/// Issue 21: `ingest_records_total` counts records on both sides (a body that
/// could not be split into records counts one) and `ingest_requests_total`
/// counts requests, with outcome accepted | rejected | unavailable.
async fn records_and_requests_are_counted(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    let array = |n: u64| Value::Array((0..n).map(record).collect());
    assert_eq!(app.post_telemetry(&array(3)).await.status, 201);
    let mut bad = array(4);
    bad[2]["timestamp"] = json!("yesterday");
    assert_eq!(app.post_telemetry(&bad).await.status, 400);
    let unparsable = app
        .post_raw("/ingest/telemetry", "{not json", &[JSON])
        .await;
    assert_eq!(unparsable.status, 400);
    let plain = app
        .post_raw(
            "/ingest/batch",
            json!({"records": array(5)}).to_string(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(plain.status, 415);
    let empty = app
        .post_json("/ingest/batch", &json!({"records": []}))
        .await;
    assert_eq!(empty.status, 201);
    let id = "aaaaaaaa-0000-4000-8000-000000000601";
    assert_eq!(
        app.post_json("/ingest/procedure", &procedure(id))
            .await
            .status,
        201
    );
    let mut other = procedure(id);
    other["surgeon_id"] = json!("SURG-009");
    assert_eq!(app.post_json("/ingest/procedure", &other).await.status, 409);

    let overloaded = spawn_with(
        backend,
        Options {
            env: &[
                ("APP_INGEST__GROUP_MAX_BYTES", "1024"),
                ("APP_INGEST__MAX_PENDING_BYTES", "1024"),
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(overloaded.post_telemetry(&array(20)).await.status, 503);

    let text = app.get("/metrics").await.text;
    for expected in [
        r#"ingest_records_total{outcome="accepted",reason="stored"} 4"#,
        r#"ingest_records_total{outcome="rejected",reason="invalid"} 5"#,
        r#"ingest_records_total{outcome="rejected",reason="unsupported_media_type"} 1"#,
        r#"ingest_records_total{outcome="rejected",reason="conflict"} 1"#,
        r#"ingest_requests_total{route="/ingest/telemetry",outcome="accepted"} 1"#,
        r#"ingest_requests_total{route="/ingest/telemetry",outcome="rejected"} 2"#,
        r#"ingest_requests_total{route="/ingest/batch",outcome="accepted"} 1"#,
        r#"ingest_requests_total{route="/ingest/batch",outcome="rejected"} 1"#,
        r#"ingest_requests_total{route="/ingest/procedure",outcome="accepted"} 1"#,
        r#"ingest_requests_total{route="/ingest/procedure",outcome="rejected"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    let text = overloaded.get("/metrics").await.text;
    for expected in [
        r#"ingest_records_total{outcome="unavailable",reason="overloaded"} 20"#,
        r#"ingest_requests_total{route="/ingest/telemetry",outcome="unavailable"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
}

on_both_backends!(
    procedures_need_every_key_of_the_old_insert,
    an_upsert_that_cannot_apply_is_a_409,
    racing_conflicting_inserts_have_one_winner,
    empty_bodies_are_no_data,
    an_empty_batch_is_stored_and_acknowledged,
    stats_keep_the_python_isoformat,
    json_routes_refuse_other_content_types,
    records_and_requests_are_counted,
);
