//! `POST /ingest/procedure`: upsert one procedure row.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Caller, counted, idempotent};
use crate::AppState;
use crate::content_type::JsonBody;
use crate::error::{IngestError, Result};
use crate::idempotency::RequestShape;
use crate::openapi::{ErrorBody, ProcedureAck, ProcedureBody};
use crate::procedure::NewProcedure;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest_procedure))
}

/// Inserts a procedure, or updates `status`, `end_time` and `duration_minutes` of
/// an existing one whose other fields are equal (409 naming the first that is not).
#[utoipa::path(
    post,
    path = "/ingest/procedure",
    tag = "procedures",
    request_body(content = ProcedureBody, description = "One surgical_procedures row"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed")),
    responses(
        (status = 201, description = "Stored", body = ProcedureAck),
        (status = 400, description = "A field is missing or invalid (named)", body = ErrorBody),
        (status = 409, description = "The procedure is stored with a different value in a field other than status, end_time or duration_minutes (named; nothing changed), or a request with this Idempotency-Key is in progress (with Retry-After)", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type (accepted: application/json, application/*+json) or Content-Encoding", body = ErrorBody),
        (status = 422, description = "Unknown robot_id, or Idempotency-Key reused by the same caller for a different body", body = ErrorBody),
        (status = 503, description = "Database unavailable, or the Idempotency-Key was taken over by another request; see Retry-After", body = ErrorBody),
    )
)]
pub async fn ingest_procedure(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: std::result::Result<JsonBody, IngestError>,
) -> Result<Response> {
    let result = async {
        let body = body?.0;
        let procedure = NewProcedure::parse(&body.bytes)?;
        let shape = RequestShape { records: 1, is_array: false };
        idempotent(&state, "procedure", &caller, &headers, &body.bytes, shape, |_| async {
            procedure.upsert(&state.db).await?;
            Ok(format!(
                "{{\"message\":\"Procedure data ingested\",\"procedure_id\":\"{}\",\"status\":\"success\"}}\n",
                procedure.id()
            ))
        })
        .await
    }
    .await;
    counted(&state, "procedure", result, 1)
}
