//! The OpenAPI document matches the live routes: every documented path answers, and
//! every live body validates against the documented schema.

use serde_json::{Value, json};

use crate::helpers::{Backend, spawn_app};

fn validator(doc: &Value, schema_ref: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": schema_ref,
        "components": doc["components"].clone(),
    });
    jsonschema::validator_for(&schema).expect("valid schema")
}

fn response_ref(doc: &Value, path: &str, status: &str) -> String {
    doc["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} {status} has a schema ref"))
        .to_owned()
}

async fn documented_routes_match_live_responses(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;
    let reply = app.get("/api/openapi.json").await;
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );

    let samples = [
        ("/api/robots", "/api/robots".to_owned()),
        (
            "/api/robots/{robot_id}",
            "/api/robots/11111111-1111-4111-8111-111111111111".to_owned(),
        ),
        ("/api/procedures", "/api/procedures?status=".to_owned()),
        (
            "/api/procedures/{procedure_id}",
            "/api/procedures/aaaaaaaa-0000-4000-8000-000000000002".to_owned(),
        ),
        (
            "/api/procedures/{procedure_id}",
            "/api/procedures/aaaaaaaa-0000-4000-8000-000000000003".to_owned(),
        ),
        ("/api/outcomes", "/api/outcomes".to_owned()),
        (
            "/api/analytics/robot-utilization",
            "/api/analytics/robot-utilization".to_owned(),
        ),
        (
            "/api/analytics/outcomes-summary",
            "/api/analytics/outcomes-summary".to_owned(),
        ),
        (
            "/api/analytics/procedures-by-category",
            "/api/analytics/procedures-by-category?days=36500".to_owned(),
        ),
    ];
    let documented: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    assert_eq!(documented.len(), 8, "{documented:?}");
    for (template, _) in &samples {
        assert!(
            documented.iter().any(|p| p == template),
            "{template} undocumented"
        );
    }
    for (template, live) in samples {
        let reply = app.get(&live).await;
        assert_eq!(reply.status, 200, "{live}");
        let body = reply.json();
        let v = validator(&doc, &response_ref(&doc, template, "200"));
        let errors: Vec<String> = v
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{live}: {errors:?}");
    }

    // The validator is not vacuous: a wrong type deep inside a row is caught.
    let mut broken = app.get("/api/robots").await.json();
    broken["robots"][0]["installation_date"] = json!("2021-10-03");
    assert!(!validator(&doc, &response_ref(&doc, "/api/robots", "200")).is_valid(&broken));
    broken["robots"][0]["installation_date"] = json!(20211003);
    assert!(!validator(&doc, &response_ref(&doc, "/api/robots", "200")).is_valid(&broken));

    let error_schema = validator(&doc, &response_ref(&doc, "/api/robots/{robot_id}", "404"));
    for live in [
        "/api/robots/99999999-9999-4999-8999-999999999999",
        "/api/robots/bad",
    ] {
        let body = app.get(live).await.json();
        assert!(error_schema.is_valid(&body), "{live}: {body}");
    }
}
on_both_backends!(documented_routes_match_live_responses);
