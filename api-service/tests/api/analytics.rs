use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, spawn_app};

async fn utilization_is_busiest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    let body = app.get("/api/analytics/robot-utilization").await.json();
    assert_eq!(body["count"], 3);
    let rows = body["utilization"].as_array().expect("rows");
    let counts: Vec<i64> = rows
        .iter()
        .map(|r| r["procedure_count"].as_i64().expect("count"))
        .collect();
    assert_eq!(counts, [3, 2, 0]);
    assert_eq!(
        rows[0]["last_procedure_date"],
        "Sun, 03 Mar 2024 08:00:00 GMT"
    );
    assert_eq!(rows[2]["avg_procedure_duration"], Value::Null);
    assert_eq!(rows[2]["last_procedure_date"], Value::Null);
    assert!(
        rows[0]["avg_procedure_duration"].is_string(),
        "averages are decimal strings"
    );
}

async fn outcomes_summary_groups_by_status(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    let body = app.get("/api/analytics/outcomes-summary").await.json();
    let summary = body["summary"].as_array().expect("summary");
    let statuses: Vec<&str> = summary
        .iter()
        .map(|s| s["success_status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["complicated", "successful"]);
    assert_eq!(summary[1]["count"], 2);
    assert!(summary[1]["avg_blood_loss"].is_string());
}

async fn procedures_by_category_uses_the_window(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    let empty = app
        .get("/api/analytics/procedures-by-category")
        .await
        .json();
    assert_eq!(
        empty,
        json!({"categories": [], "days": 30}),
        "fixtures are from 2024"
    );

    let now = Utc::now().naive_utc();
    for (n, age_days, category, minutes) in [
        (1, 2, "Urology", 100),
        (2, 3, "Urology", 150),
        (3, 20, "Orthopedics", 90),
    ] {
        let start = now - Duration::days(age_days);
        let end = start + Duration::minutes(minutes);
        app.sql(&format!(
            "INSERT INTO surgical_procedures (procedure_id, robot_id, procedure_type, procedure_category, \
             start_time, end_time, duration_minutes, surgeon_id, surgeon_name, patient_id, patient_age, \
             complexity_score, status) VALUES ('cccccccc-0000-4000-8000-00000000000{n}', \
             '11111111-1111-4111-8111-111111111111', 'Type', '{category}', '{}', '{}', {minutes}, 'S', 'Dr. S', \
             'P', 50, 2.00, 'completed')",
            start.format("%Y-%m-%d %H:%M:%S"),
            end.format("%Y-%m-%d %H:%M:%S")
        ))
        .await;
    }
    let month = app
        .get("/api/analytics/procedures-by-category")
        .await
        .json();
    let categories = month["categories"].as_array().expect("categories");
    assert_eq!(categories.len(), 2);
    assert_eq!(categories[0]["procedure_category"], "Urology");
    assert_eq!(categories[0]["count"], 2);
    assert_eq!(categories[1]["count"], 1);

    let week = app
        .get("/api/analytics/procedures-by-category?days=7")
        .await
        .json();
    assert_eq!(week["days"], 7);
    assert_eq!(week["categories"].as_array().map(Vec::len), Some(1));

    for bad in ["days=abc", "days=-1", "days=100000", "days="] {
        let reply = app
            .get(&format!("/api/analytics/procedures-by-category?{bad}"))
            .await;
        assert_eq!(reply.status, 400, "{bad}");
        assert!(
            reply.json()["error"]
                .as_str()
                .expect("error")
                .contains("days")
        );
    }
}

on_both_backends!(
    utilization_is_busiest_first,
    outcomes_summary_groups_by_status,
    procedures_by_category_uses_the_window,
);

#[tokio::test]
async fn averages_carry_postgres_digits() {
    let app = spawn_app(Backend::Postgres).await;
    app.load_small_fleet().await;
    let util = app.get("/api/analytics/robot-utilization").await.json();
    assert_eq!(
        util["utilization"][0]["avg_procedure_duration"],
        "116.6666666666666667"
    );
    assert_eq!(
        util["utilization"][1]["avg_procedure_duration"],
        "92.5000000000000000"
    );

    let summary = app.get("/api/analytics/outcomes-summary").await;
    assert_eq!(
        summary.text,
        concat!(
            r#"{"summary":[{"avg_blood_loss":"450.0000000000000000","avg_satisfaction":"6.0000000000000000","#,
            r#""avg_stay_days":"5.0000000000000000","count":1,"success_status":"complicated"},"#,
            r#"{"avg_blood_loss":"60.0000000000000000","avg_satisfaction":"9.5000000000000000","#,
            r#""avg_stay_days":"1.5000000000000000","count":2,"success_status":"successful"}]}"#,
            "\n"
        )
    );

    // An average of zeros has scale 20: Python's Decimal printed it as 0E-20.
    app.sql("UPDATE procedure_outcomes SET blood_loss_ml = 0")
        .await;
    let zeros = app.get("/api/analytics/outcomes-summary").await.json();
    assert_eq!(zeros["summary"][1]["avg_blood_loss"], "0E-20");
}
