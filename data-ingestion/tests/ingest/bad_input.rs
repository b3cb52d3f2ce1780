use std::io::Write;

use serde_json::json;

use crate::helpers::{Backend, PROCEDURE, ROBOT, spawn, spawn_with};

#[tokio::test]
async fn every_bad_telemetry_body_is_a_named_4xx_and_nothing_is_stored() {
    let app = spawn(Backend::Postgres).await;
    let rec =
        |extra: &str| format!(r#"{{"procedure_id":"{PROCEDURE}","robot_id":"{ROBOT}"{extra}}}"#);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(String, u16, &str)> = vec![
        (String::new(), 400, "No data provided"),
        ("{}".into(), 400, "Missing required field: procedure_id"),
        ("[]".into(), 400, "No data provided"),
        ("{not json".into(), 400, "Invalid JSON"),
        ("42".into(), 400, "JSON object"),
        (rec(""), 400, "Missing required field: timestamp"),
        (rec(r#","timestamp":"tomorrow""#), 400, "Invalid timestamp"),
        (
            format!("[{}, 7]", rec(r#","timestamp":"2026-01-01 00:00:00""#)),
            400,
            "Record 1 must be a JSON object",
        ),
        (
            format!(
                "[{}, {}]",
                rec(r#","timestamp":"2026-01-01 00:00:00""#),
                rec("")
            ),
            400,
            "Missing required field: timestamp in record 1",
        ),
        (
            r#"{"procedure_id":"x","robot_id":"y","timestamp":"2026-01-01 00:00:00"}"#.into(),
            400,
            "Invalid procedure_id",
        ),
        (deep, 400, ""),
    ];
    for (body, status, message) in cases {
        let reply = app
            .post_raw(
                "/ingest/telemetry",
                body.clone(),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(reply.status, status, "{body:.60}: {}", reply.text);
        assert!(
            reply.error().contains(message),
            "{body:.60}: {}",
            reply.text
        );
    }
    let invalid_utf8 = app
        .post_raw("/ingest/telemetry", vec![b'{', 0xff, 0xfe, b'}'], &[])
        .await;
    assert_eq!(invalid_utf8.status, 400);
    assert!(
        app.stored_records("").await.0.is_empty(),
        "nothing of a rejected request is stored"
    );
}

#[tokio::test]
async fn oversized_bombs_and_unknown_encodings_are_refused() {
    let app = spawn_with(
        Backend::Postgres,
        crate::helpers::Options {
            env: &[("APP_SERVER__BODY_LIMIT_BYTES", "65536")],
            ..Default::default()
        },
    )
    .await;
    let big = vec![b' '; 70_000];
    let reply = app.post_raw("/ingest/telemetry", big, &[]).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert!(reply.error().contains("65536"));

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 10 * 1024 * 1024]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 65536);
    let reply = app
        .post_raw("/ingest/telemetry", bomb, &[("content-encoding", "gzip")])
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text);

    let reply = app
        .post_raw("/ingest/telemetry", "x", &[("content-encoding", "gzip")])
        .await;
    assert_eq!(reply.status, 400);
    let reply = app
        .post_raw("/ingest/telemetry", "{}", &[("content-encoding", "br")])
        .await;
    assert_eq!(reply.status, 415);
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let app = spawn(Backend::Sqlite).await;
    let reply = app.get("/ingest/telemetry").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json(), json!({"error": "Method not allowed"}));
    let reply = app.get("/ingest/nothing").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json(), json!({"error": "Not found"}));
}
