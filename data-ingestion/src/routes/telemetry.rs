//! `POST /ingest/telemetry`: one record, an array, or NDJSON, for one procedure.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Caller, counted, ingest_grouped, telemetry_answer};
use crate::AppState;
use crate::content_type::JsonOrNdjsonBody;
use crate::error::{IngestError, Result};
use crate::openapi::{ErrorBody, TelemetryAck, TelemetryBody};
use crate::telemetry::{parse_records, validate_telemetry};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest_telemetry))
}

/// Stores telemetry. Acknowledged (201) only once the object store confirmed the
/// object holding the records; records arriving close together for the same
/// procedure share one object.
#[utoipa::path(
    post,
    path = "/ingest/telemetry",
    tag = "telemetry",
    request_body(content = TelemetryBody, description = "One record or an array (also gzip, and NDJSON as application/x-ndjson)"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed")),
    responses(
        (status = 201, description = "Stored", body = TelemetryAck),
        (status = 400, description = "A record is missing a field or has a bad value (index and field named)", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is in progress", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type (accepted: application/json, application/*+json, application/x-ndjson) or Content-Encoding", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused by the same caller for a different body", body = ErrorBody),
        (status = 503, description = "Store or database unavailable, overloaded, or the Idempotency-Key was taken over by another request; see Retry-After", body = ErrorBody),
    )
)]
pub async fn ingest_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: std::result::Result<JsonOrNdjsonBody, IngestError>,
) -> Result<Response> {
    let body = match body {
        Ok(body) => body.0,
        Err(err) => return counted(&state, "telemetry", Err(err), 1),
    };
    let records = match parse_records(&body.bytes, body.ndjson) {
        Ok(records) => records,
        Err(err) => return counted(&state, "telemetry", Err(err), 1),
    };
    let procedure = match validate_telemetry(&records) {
        Ok(procedure) => procedure,
        Err(err) => return counted(&state, "telemetry", Err(err), records.len()),
    };
    let prefix = format!("telemetry/{procedure}/");
    ingest_grouped(
        &state,
        "telemetry",
        &caller,
        &prefix,
        &records,
        &headers,
        &body.bytes,
        telemetry_answer,
    )
    .await
}
