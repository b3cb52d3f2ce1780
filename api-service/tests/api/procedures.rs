use serde_json::{Value, json};

use crate::helpers::{Backend, spawn_app};

fn ids(body: &Value) -> Vec<String> {
    body["procedures"]
        .as_array()
        .expect("procedures")
        .iter()
        .map(|p| p["procedure_id"].as_str().expect("id")[34..].to_owned())
        .collect()
}

async fn status_defaults_to_completed_and_empty_means_all(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;

    let body = app.get("/api/procedures").await.json();
    assert_eq!(
        (
            body["count"].clone(),
            body["limit"].clone(),
            body["offset"].clone()
        ),
        (json!(3), json!(100), json!(0))
    );
    assert_eq!(
        ids(&body),
        ["02", "01", "04"],
        "newest first, completed only"
    );

    let all = app.get("/api/procedures?status=").await.json();
    assert_eq!(ids(&all), ["03", "02", "01", "05", "04"]);

    let cancelled = app.get("/api/procedures?status=cancelled").await.json();
    assert_eq!(ids(&cancelled), ["03"]);
}

async fn procedure_filters_combine(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    for (query, expected) in [
        ("category=Gynecology", vec!["01"]),
        ("category=Gynecology&status=", vec!["01", "05"]),
        ("robot_id=22222222-2222-4222-8222-222222222222", vec!["04"]),
        (
            "robot_id=22222222-2222-4222-8222-222222222222&status=aborted",
            vec!["05"],
        ),
        ("robot_id=&category=", vec!["02", "01", "04"]),
        ("category=Cardiothoracic", vec![]),
        ("limit=1&offset=1", vec!["01"]),
        ("limit=0", vec![]),
        ("offset=3", vec![]),
        ("status=&limit=2&offset=2", vec!["01", "05"]),
    ] {
        let body = app.get(&format!("/api/procedures?{query}")).await.json();
        assert_eq!(ids(&body), expected, "{query}");
        assert_eq!(body["count"], expected.len(), "{query}");
    }
}

async fn limits_are_capped_and_bad_numbers_are_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let capped = app.get("/api/procedures?limit=50000").await.json();
    assert_eq!(capped["limit"], 1000);

    for (query, param) in [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=", "limit"),
        ("limit=1e3", "limit"),
        ("offset=-5", "offset"),
        ("offset=x", "offset"),
        ("offset=99999999999999999999", "offset"),
        ("robot_id=robot-7", "robot_id"),
    ] {
        let reply = app.get(&format!("/api/procedures?{query}")).await;
        assert_eq!(reply.status, 400, "{query}");
        let error = reply.json()["error"].as_str().expect("error").to_owned();
        assert!(error.contains(param), "{query}: {error}");
    }
}

async fn one_procedure_with_robot_and_outcome(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;

    let body = app
        .get_procedure("aaaaaaaa-0000-4000-8000-000000000001")
        .await
        .json();
    assert_eq!(body["procedure"]["robot_model"], "da Vinci Xi");
    assert_eq!(body["procedure"]["facility_name"], "Alpha Hospital");
    assert_eq!(body["procedure"]["surgeon_name"], "Dr. Amelia Hart");
    assert_eq!(body["outcome"]["success_status"], "successful");
    assert_eq!(body["outcome"]["readmission_30day"], false);

    let cancelled = app
        .get_procedure("aaaaaaaa-0000-4000-8000-000000000003")
        .await
        .json();
    assert_eq!(cancelled["outcome"], Value::Null);
    assert_eq!(cancelled["procedure"]["complexity_score"], Value::Null);
    assert_eq!(cancelled["procedure"]["patient_gender"], Value::Null);

    let missing = app
        .get_procedure("aaaaaaaa-0000-4000-8000-000000000099")
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error": "Procedure not found"}));

    let bad = app.get_procedure("42").await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json(),
        json!({"error": "Invalid procedure_id: expected a UUID"})
    );
}

on_both_backends!(
    status_defaults_to_completed_and_empty_means_all,
    procedure_filters_combine,
    limits_are_capped_and_bad_numbers_are_400,
    one_procedure_with_robot_and_outcome,
);

#[tokio::test]
async fn procedure_wire_values_are_postgres_digits_and_http_dates() {
    let app = spawn_app(Backend::Postgres).await;
    app.load_small_fleet().await;
    let body = app.get("/api/procedures?status=").await.json();
    let by_id = |suffix: &str| {
        body["procedures"]
            .as_array()
            .expect("array")
            .iter()
            .find(|p| {
                p["procedure_id"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(suffix))
            })
            .cloned()
            .expect("procedure")
    };
    let first = by_id("01");
    assert_eq!(first["complexity_score"], "3.06");
    assert_eq!(first["start_time"], "Fri, 01 Mar 2024 09:00:00 GMT");
    assert_eq!(first["end_time"], "Fri, 01 Mar 2024 11:30:00 GMT");
    assert_eq!(first["duration_minutes"], 150);
    assert_eq!(first["patient_age"], 54);
    assert_eq!(by_id("02")["complexity_score"], "4.50");
    assert_eq!(by_id("04")["complexity_score"], "1.00");

    let detail = app
        .get_procedure("aaaaaaaa-0000-4000-8000-000000000002")
        .await;
    assert_eq!(
        detail.text,
        concat!(
            r#"{"outcome":{"blood_loss_ml":450,"complications":"Minor bleeding","#,
            r#""created_at":"Sat, 02 Mar 2024 14:00:00 GMT","follow_up_required":true,"#,
            r#""hospital_stay_days":5,"outcome_id":"bbbbbbbb-0000-4000-8000-000000000002","#,
            r#""patient_satisfaction_score":6,"procedure_id":"aaaaaaaa-0000-4000-8000-000000000002","#,
            r#""readmission_30day":true,"recovery_score":60,"success_status":"complicated","#,
            r#""surgeon_notes":null,"updated_at":"Sat, 02 Mar 2024 14:00:00 GMT"},"#,
            r#""procedure":{"complexity_score":"4.50","created_at":"Sat, 02 Mar 2024 13:21:00 GMT","#,
            r#""duration_minutes":200,"end_time":"Sat, 02 Mar 2024 13:20:00 GMT","#,
            r#""facility_name":"Alpha Hospital","patient_age":67,"patient_gender":"male","#,
            r#""patient_id":"PAT-000002","procedure_category":"Urology","#,
            r#""procedure_id":"aaaaaaaa-0000-4000-8000-000000000002","#,
            r#""procedure_type":"Radical Prostatectomy","robot_id":"11111111-1111-4111-8111-111111111111","#,
            r#""robot_model":"da Vinci Xi","start_time":"Sat, 02 Mar 2024 10:00:00 GMT","#,
            r#""status":"completed","surgeon_id":"SURG-002","surgeon_name":"Dr. Rajiv Menon"}}"#,
            "\n"
        )
    );
}
