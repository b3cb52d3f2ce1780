use crate::helpers::{Backend, spawn_app};

async fn outcomes_are_newest_procedure_first_with_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    app.load_small_fleet().await;

    let body = app.get("/api/outcomes").await.json();
    assert_eq!(body["count"], 3);
    let outcomes = body["outcomes"].as_array().expect("array");
    let order: Vec<&str> = outcomes
        .iter()
        .map(|o| &o["outcome_id"].as_str().expect("id")[34..])
        .collect();
    assert_eq!(order, ["02", "01", "04"]);
    assert_eq!(outcomes[0]["procedure_type"], "Radical Prostatectomy");
    assert_eq!(outcomes[0]["start_time"], "Sat, 02 Mar 2024 10:00:00 GMT");
    assert_eq!(outcomes[0]["readmission_30day"], true);
    assert_eq!(outcomes[2]["blood_loss_ml"], 0);

    let successful = app
        .get("/api/outcomes?success_status=successful")
        .await
        .json();
    assert_eq!(successful["count"], 2);
    let limited = app.get("/api/outcomes?limit=1").await.json();
    assert_eq!(limited["count"], 1);
    let paged = app.get("/api/outcomes?limit=1&offset=2").await.json();
    assert_eq!(
        paged["outcomes"][0]["outcome_id"],
        "bbbbbbbb-0000-4000-8000-000000000004"
    );
    let none = app.get("/api/outcomes?success_status=failed").await.json();
    assert_eq!(none["count"], 0);
    assert_eq!(none["outcomes"], serde_json::json!([]));

    for query in ["limit=x", "limit=-2", "offset=-1"] {
        let reply = app.get(&format!("/api/outcomes?{query}")).await;
        assert_eq!(reply.status, 400, "{query}");
    }
}
on_both_backends!(outcomes_are_newest_procedure_first_with_filters);
