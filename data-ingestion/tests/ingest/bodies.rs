//! The wire contract of the request bodies against the old Flask service (DESIGN.md,
//! data-ingestion table): empty bodies are "No data provided", an empty batch is
//! stored, JSON routes refuse other content types; and the ingest metrics count
//! records and requests in one unit each (issue 21).

use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::{Backend, Options, procedure, record, spawn, spawn_with};

const JSON: (&str, &str) = ("content-type", "application/json");

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
    assert_eq!(app.procedure_count().await, 0);

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
    assert_eq!(app.procedure_count().await, 5);
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
    assert_eq!(app.post_procedure(&procedure(id)).await.status, 201);
    let mut other = procedure(id);
    other["surgeon_id"] = json!("SURG-009");
    assert_eq!(app.post_procedure(&other).await.status, 409);

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
    empty_bodies_are_no_data,
    an_empty_batch_is_stored_and_acknowledged,
    json_routes_refuse_other_content_types,
    records_and_requests_are_counted,
);
