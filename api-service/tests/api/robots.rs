use serde_json::json;

use crate::helpers::{Backend, spawn_app};

const ROBOT_1: &str = "11111111-1111-4111-8111-111111111111";

async fn robots_are_listed_in_facility_and_serial_order(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;

    let reply = app.get("/api/robots").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["count"], 3);
    let serials: Vec<&str> = body["robots"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["robot_serial_number"].as_str().expect("serial"))
        .collect();
    assert_eq!(serials, ["SN-A-001", "SN-A-002", "SN-B-001"]);
}

async fn robot_filters_match_exactly(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    for (query, expected) in [
        ("facility_id=FAC-A", 2),
        ("facility_id=FAC-B", 1),
        ("facility_id=FAC", 0),
        ("status=retired", 1),
        ("status=operational&facility_id=FAC-A", 1),
        ("status=operational&facility_id=FAC-B", 0),
        ("status=&facility_id=", 3),
        ("status=unknown", 0),
    ] {
        let body = app.get(&format!("/api/robots?{query}")).await.json();
        assert_eq!(body["count"], expected, "{query}");
        assert_eq!(
            body["robots"].as_array().map(Vec::len),
            Some(expected),
            "{query}"
        );
    }
}

async fn one_robot_carries_its_procedure_count(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;

    let body = app.get_robot(ROBOT_1).await.json();
    assert_eq!(body["procedure_count"], 3);
    assert_eq!(body["robot"]["robot_id"], ROBOT_1);

    let uppercase = app.get_robot(&ROBOT_1.to_uppercase()).await;
    assert_eq!(uppercase.status, 200, "UUIDs are case-insensitive");

    let retired = app
        .get_robot("33333333-3333-4333-8333-333333333333")
        .await
        .json();
    assert_eq!(retired["procedure_count"], 0);
}

async fn missing_and_malformed_robot_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;

    let missing = app.get_robot("99999999-9999-4999-8999-999999999999").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error": "Robot not found"}));

    for bad in [
        "not-a-uuid",
        "1234",
        "11111111-1111-4111-8111-11111111111Z",
        "%27%3B%20DROP%20TABLE%20x",
    ] {
        let reply = app.get_robot(bad).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(
            reply.json(),
            json!({"error": "Invalid robot_id: expected a UUID"}),
            "{bad}"
        );
    }
}

on_both_backends!(
    robots_are_listed_in_facility_and_serial_order,
    robot_filters_match_exactly,
    one_robot_carries_its_procedure_count,
    missing_and_malformed_robot_ids,
);

/// The exact bytes the Flask service sent: sorted keys, HTTP-dates, nulls kept.
async fn robot_wire_format_is_the_flask_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    let reply = app.get_robot(ROBOT_1).await;
    assert_eq!(
        reply.text,
        concat!(
            r#"{"procedure_count":3,"robot":{"created_at":"Sun, 03 Oct 2021 08:15:30 GMT","#,
            r#""facility_id":"FAC-A","facility_name":"Alpha Hospital","firmware_version":"4.2.1","#,
            r#""installation_date":"Sun, 03 Oct 2021 00:00:00 GMT","#,
            r#""last_maintenance_date":"Mon, 06 May 2024 00:00:00 GMT","manufacturer":"Intuitive Surgical","#,
            r#""robot_id":"11111111-1111-4111-8111-111111111111","robot_model":"da Vinci Xi","#,
            r#""robot_serial_number":"SN-A-001","status":"operational","total_procedures":3,"#,
            r#""updated_at":"Mon, 06 May 2024 09:00:00 GMT"}}"#,
            "\n"
        )
    );
    let other = app
        .get_robot("22222222-2222-4222-8222-222222222222")
        .await
        .json();
    assert_eq!(
        other["robot"]["last_maintenance_date"],
        serde_json::Value::Null
    );
    assert_eq!(other["robot"]["firmware_version"], serde_json::Value::Null);
}
on_both_backends!(robot_wire_format_is_the_flask_one);
