//! `POST /ingest/batch`: `{"records": [...], "type": "telemetry"}` into `batch/{type}/`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Caller, batch_answer, counted, ingest_grouped};
use crate::AppState;
use crate::content_type::JsonBody;
use crate::error::{IngestError, Result};
use crate::openapi::{BatchAck, BatchBody, ErrorBody};
use crate::telemetry::{Records, require_object, validate_record};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest_batch))
}

#[derive(Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow, default)]
    records: Option<&'a RawValue>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// A batch type is a path segment of the object key: short, lowercase, safe.
fn valid_type(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses a batch envelope into its type and records. `"records": []` is a batch
/// of none (written as an empty array, as the old service did).
fn parse_batch(body: &[u8]) -> Result<(String, Records<'_>)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::BadRequest("No records provided".into()));
    }
    let envelope: BatchEnvelope<'_> = serde_json::from_slice(body)
        .map_err(|e| IngestError::BadRequest(format!("Invalid JSON: {e}")))?;
    let kind = envelope.kind.unwrap_or_else(|| "telemetry".into());
    if !valid_type(&kind) {
        return Err(IngestError::BadRequest(
            "Invalid type: expected 1 to 64 characters of a-z, 0-9, _ or -".into(),
        ));
    }
    let raw = envelope
        .records
        .filter(|r| r.get() != "null")
        .ok_or_else(|| IngestError::BadRequest("No records provided".into()))?;
    let records: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
        IngestError::BadRequest("Invalid records: expected an array of objects".into())
    })?;
    Ok((
        kind,
        Records {
            raw: records,
            is_array: true,
        },
    ))
}

/// Checks every record: an object; telemetry records like `/ingest/telemetry` (but
/// they may mix procedures).
fn validate_batch(kind: &str, records: &Records<'_>) -> Result<()> {
    for (i, record) in records.raw.iter().enumerate() {
        if kind == "telemetry" {
            validate_record(record, i, true)?;
        } else {
            require_object(record, i, true)?;
        }
    }
    Ok(())
}

/// Stores a batch of records as (part of) one JSON-array object under
/// `batch/{type}/`, acknowledged once the store confirmed it.
#[utoipa::path(
    post,
    path = "/ingest/batch",
    tag = "telemetry",
    request_body(content = BatchBody, description = "Records and their type (default telemetry)"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed")),
    responses(
        (status = 201, description = "Stored", body = BatchAck),
        (status = 400, description = "No records, or a bad record (index and field named)", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is in progress", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type (accepted: application/json, application/*+json) or Content-Encoding", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused by the same caller for a different body", body = ErrorBody),
        (status = 503, description = "Store or database unavailable, overloaded, or the Idempotency-Key was taken over by another request; see Retry-After", body = ErrorBody),
    )
)]
pub async fn ingest_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: std::result::Result<JsonBody, IngestError>,
) -> Result<Response> {
    let body = match body {
        Ok(body) => body.0,
        Err(err) => return counted(&state, "batch", Err(err), 1),
    };
    let (kind, records) = match parse_batch(&body.bytes) {
        Ok(ok) => ok,
        Err(err) => return counted(&state, "batch", Err(err), 1),
    };
    if let Err(err) = validate_batch(&kind, &records) {
        return counted(&state, "batch", Err(err), records.len());
    }
    let prefix = format!("batch/{kind}/");
    ingest_grouped(
        &state,
        "batch",
        &caller,
        &prefix,
        &records,
        &headers,
        &body.bytes,
        batch_answer,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_need_records_and_a_safe_type() {
        for body in ["", "{}", r#"{"records":null}"#, r#"{"type":"telemetry"}"#] {
            assert_eq!(
                parse_batch(body.as_bytes()).expect_err(body).to_string(),
                "No records provided",
                "{body}"
            );
        }
        let check = |body: &[u8]| parse_batch(body).and_then(|(k, r)| validate_batch(&k, &r));
        for body in [
            r#"{"records":5}"#,
            r#"{"records":[1]}"#,
            r#"{"records":[{}],"type":"../x"}"#,
            r#"{"records":[{}],"type":"A"}"#,
        ] {
            assert!(check(body.as_bytes()).is_err(), "{body}");
        }
        let (kind, records) =
            parse_batch(br#"{"records":[{"a":1},{"b":2}],"type":"maintenance"}"#).expect("ok");
        assert_eq!((kind.as_str(), records.len()), ("maintenance", 2));
        let (_, none) = parse_batch(br#"{"records":[]}"#).expect("an empty batch");
        assert!(none.is_empty() && none.joined().is_empty());
        let err = check(br#"{"records":[{"a":1}]}"#).expect_err("telemetry checked");
        assert_eq!(
            err.to_string(),
            "Missing required field: procedure_id in record 0"
        );
    }
}
