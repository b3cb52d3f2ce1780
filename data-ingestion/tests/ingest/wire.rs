//! The wire contract of `POST /ingest/procedure` and `GET /ingest/stats` against the
//! old Flask service (DESIGN.md, data-ingestion table): every key of the old insert
//! required, an upsert that cannot apply is a 409 (also when raced), and the stats
//! timestamp keeps Python's form. Bodies and content types: `bodies.rs`.

use common::Query;
use data_ingestion::procedure::FIELDS;
use serde_json::{Value, json};

use crate::helpers::{Backend, ROBOT, TestApp, completed_procedure, procedure, spawn};

const OTHER_ROBOT: &str = "22222222-2222-4222-8222-222222222222";

async fn row(app: &TestApp, id: &str) -> Option<Vec<Option<String>>> {
    let columns = &FIELDS[1..];
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
        let reply = app.post_procedure(&body).await;
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
    let reply = app.post_procedure(&several).await;
    assert_eq!(
        reply.error(),
        "Missing required field: patient_gender",
        "the first missing key in the insert's order, before values are judged"
    );
    assert_eq!(app.procedure_count().await, 0, "nothing stored on a 400");

    let mut nulls = procedure(id);
    nulls["patient_gender"] = Value::Null;
    nulls["complexity_score"] = Value::Null;
    nulls["firmware_note"] = json!("extra keys are ignored");
    let reply = app.post_procedure(&nulls).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let stored = row(&app, id).await.expect("stored");
    assert_eq!((&stored[10], &stored[11]), (&None, &None));

    let mut null_required = procedure("aaaaaaaa-0000-4000-8000-000000000102");
    null_required["surgeon_id"] = Value::Null;
    let reply = app.post_procedure(&null_required).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.error().contains("surgeon_id"), "{}", reply.text);
    assert_eq!(app.procedure_count().await, 1);
}
/// Item 2: a conflict that differs in a field the upsert does not update is a 409
/// naming the first such field, and changes nothing; the same record in another
/// textual form is the same record.
async fn an_upsert_that_cannot_apply_is_a_409(backend: Backend) {
    let app = spawn(backend).await;
    app.add_robot().await;
    add_other_robot(&app).await;
    let id = "aaaaaaaa-0000-4000-8000-000000000201";
    assert_eq!(app.post_procedure(&procedure(id)).await.status, 201);
    let first = row(&app, id).await.expect("stored");

    // The robots' retry, and the same values written differently: still the same.
    let mut same = procedure(id);
    same["start_time"] = json!("2026-11-28T10:00:00+01:00");
    same["end_time"] = json!("2026-11-28T09:00:00.000Z");
    same["complexity_score"] = json!("3.060");
    same["patient_age"] = json!("54");
    same["robot_id"] = json!(ROBOT.to_uppercase());
    for body in [procedure(id), same] {
        let reply = app.post_procedure(&body).await;
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
        ("complexity_score", json!(3.07)),
        ("complexity_score", Value::Null),
    ] {
        // Also trying to update what a conflict may update: that must not happen either.
        let mut body = completed_procedure(id);
        body[field] = value.clone();
        let reply = app.post_procedure(&body).await;
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
    let reply = app.post_procedure(&two).await;
    assert!(
        reply
            .error()
            .starts_with("Conflicting procedure_category: "),
        "the first differing field in the insert's order: {}",
        reply.text
    );

    // What the upsert updates still updates.
    let reply = app.post_procedure(&completed_procedure(id)).await;
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
        assert_eq!(app.post_procedure(&nulls).await.status, expected);
    }
    nulls["complexity_score"] = json!(2);
    let reply = app.post_procedure(&nulls).await;
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
        let (ra, rb) = tokio::join!(app.post_procedure(&a), app.post_procedure(&b));
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
    assert_eq!(app.post_procedure(&p).await.status, 201);
    assert_eq!(
        app.get("/ingest/stats").await.json()["latest_procedure"],
        "2025-12-31T15:25:00"
    );
    let mut later = procedure("aaaaaaaa-0000-4000-8000-000000000502");
    later["start_time"] = json!("2026-01-01 08:00:00.25");
    later["end_time"] = json!("2026-01-01 09:00:00");
    assert_eq!(app.post_procedure(&later).await.status, 201);
    assert_eq!(
        app.get("/ingest/stats").await.json(),
        json!({"total_procedures": 2, "unique_robots": 1,
               "latest_procedure": "2026-01-01T08:00:00.250000"})
    );
}
on_both_backends!(
    procedures_need_every_key_of_the_old_insert,
    an_upsert_that_cannot_apply_is_a_409,
    racing_conflicting_inserts_have_one_winner,
    stats_keep_the_python_isoformat,
);
