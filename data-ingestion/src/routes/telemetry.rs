//! `POST /ingest/telemetry`: one record, an array, or NDJSON, for one procedure.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{idempotent, reason, telemetry_answer};
use crate::AppState;
use crate::body::IngestBody;
use crate::error::{IngestError, Result};
use crate::grouper::GroupError;
use crate::idempotency::RequestShape;
use crate::openapi::{ErrorBody, TelemetryAck, TelemetryBody};
use crate::telemetry::{parse_records, validate_telemetry};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest_telemetry))
}

/// Maps a grouping failure to the answer.
pub(crate) fn group_error(err: GroupError) -> IngestError {
    match err {
        GroupError::Overloaded => IngestError::Overloaded,
        GroupError::Store(msg) => {
            IngestError::Store(common::storage::StorageError::Unavailable(msg))
        }
        GroupError::Idempotency(msg) => IngestError::Store(
            common::storage::StorageError::Unavailable(format!("idempotency store: {msg}")),
        ),
    }
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
        (status = 415, description = "Unsupported Content-Encoding", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused for a different body", body = ErrorBody),
        (status = 503, description = "Store or database unavailable, or overloaded; see Retry-After", body = ErrorBody),
    )
)]
pub async fn ingest_telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: IngestBody,
) -> Result<Response> {
    let result = async {
        let records = parse_records(&body.bytes, body.ndjson)?;
        let procedure = validate_telemetry(&records)?;
        let shape = RequestShape {
            records: records.len(),
            is_array: records.is_array,
        };
        let prefix = format!("telemetry/{procedure}/");
        let joined = records.joined();
        let response = idempotent(
            &state,
            "telemetry",
            &headers,
            &body.bytes,
            shape,
            |riding| async {
                let key = state
                    .grouper
                    .submit(&prefix, &joined, shape.records, riding)
                    .await
                    .map_err(group_error)?;
                Ok(telemetry_answer(&key, shape))
            },
        )
        .await?;
        Ok::<_, IngestError>((response, shape.records))
    }
    .await;
    match result {
        Ok((response, n)) => {
            state.metrics.records("accepted", "stored", n);
            Ok(response)
        }
        Err(err) => {
            state.metrics.records("rejected", reason(&err), 1);
            Err(err)
        }
    }
}
