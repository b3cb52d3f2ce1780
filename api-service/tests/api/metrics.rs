use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn metrics_are_openmetrics_by_route_template() {
    let app = spawn_app(Backend::Postgres).await;
    app.load_small_fleet().await;
    app.get("/api/robots").await;
    app.get_robot("11111111-1111-4111-8111-111111111111").await;
    app.get_robot("99999999-9999-4999-8999-999999999999").await;
    app.get("/no/such/path").await;

    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = &reply.text;
    for expected in [
        r#"http_requests_total{method="GET",route="/api/robots",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/api/robots/{robot_id}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/api/robots/{robot_id}",status="404"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_request_duration_seconds_bucket{le="0.5",method="GET",route="/api/robots",status="200"}"#,
        "db_pool_connections{state=\"idle\"}",
        "db_pool_connections{state=\"in_use\"}",
        "db_pool_max_connections 4",
        "db_pool_acquire_duration_seconds_count",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "# EOF",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert!(
        !text.contains("11111111-1111"),
        "raw paths must not become labels"
    );
    assert!(!text.contains("/no/such/path"));
}
