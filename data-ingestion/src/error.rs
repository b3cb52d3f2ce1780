//! The data-ingestion error type: every failure a handler can return, each with its
//! status. Internal causes go to the request log line, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::DbError;
use common::http::{DB_RETRY_AFTER, ErrorReport, error_response, unavailable_response};
use common::storage::StorageError;

/// `Result` with [`IngestError`].
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// 400: the body or a field is missing or malformed; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// 409 with `Retry-After`: a request with the same `Idempotency-Key` is in progress.
    #[error("{0}")]
    Conflict(&'static str),
    /// 409: the procedure is stored with a different value in a field the upsert
    /// does not update; the message names the field. Nothing was changed.
    #[error("{0}")]
    Mismatch(String),
    /// 413: the body (after decompression) exceeds the limit.
    #[error("request body too large")]
    TooLarge(usize),
    /// 415: a `Content-Encoding` other than gzip or identity.
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    /// 415: a `Content-Type` the route does not take; the message names the accepted ones.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but refers to something that does not exist, or an
    /// `Idempotency-Key` reused for a different request.
    #[error("{0}")]
    Unprocessable(String),
    /// 503 with `Retry-After`: too much data is waiting to be written.
    #[error("overloaded")]
    Overloaded,
    /// 503 with `Retry-After`: this request's `Idempotency-Key` claim was taken over
    /// by another request (this replica looked dead to a peer); nothing was written
    /// for it. The retry gets the other request's answer.
    #[error("idempotency claim taken over")]
    Fenced,
    /// 503 with `Retry-After`: the object store did not confirm the write.
    #[error("object store unavailable")]
    Store(#[source] StorageError),
    /// 503 with `Retry-After`: the database is down or the pool exhausted.
    #[error("database unavailable")]
    DbUnavailable(#[source] DbError),
    /// 500: a bug.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<DbError> for IngestError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(_) => IngestError::DbUnavailable(err),
            other => IngestError::Internal(Box::new(other)),
        }
    }
}

impl IngestError {
    /// The `outcome` and `reason` labels of `ingest_records_total` and
    /// `ingest_requests_total`: `rejected` for what the client must change,
    /// `unavailable` for what the service refused and a retry can fix.
    pub fn outcome(&self) -> (&'static str, &'static str) {
        match self {
            IngestError::BadRequest(_) | IngestError::Unprocessable(_) => ("rejected", "invalid"),
            IngestError::Mismatch(_) => ("rejected", "conflict"),
            IngestError::UnsupportedEncoding | IngestError::UnsupportedMediaType(_) => {
                ("rejected", "unsupported_media_type")
            }
            IngestError::TooLarge(_) => ("rejected", "too_large"),
            IngestError::Overloaded => ("unavailable", "overloaded"),
            IngestError::Store(_) => ("unavailable", "store_unavailable"),
            IngestError::DbUnavailable(_) => ("unavailable", "db_unavailable"),
            IngestError::Conflict(_) => ("unavailable", "in_progress"),
            IngestError::Fenced => ("unavailable", "fenced"),
            IngestError::Internal(_) => ("unavailable", "internal"),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let mut res = match &self {
            IngestError::BadRequest(msg) => error_response(StatusCode::BAD_REQUEST, msg),
            IngestError::Conflict(msg) => {
                let mut res = error_response(StatusCode::CONFLICT, msg);
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                res
            }
            IngestError::Mismatch(msg) => error_response(StatusCode::CONFLICT, msg),
            IngestError::UnsupportedMediaType(msg) => {
                error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg)
            }
            IngestError::TooLarge(limit) => error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "Request body too large: the limit is {limit} bytes (after decompression)"
                ),
            ),
            IngestError::UnsupportedEncoding => error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Content-Encoding: send gzip or identity",
            ),
            IngestError::Unprocessable(msg) => {
                error_response(StatusCode::UNPROCESSABLE_ENTITY, msg)
            }
            IngestError::Overloaded => {
                unavailable_response("Too much data waiting to be written, retry later", 1)
            }
            IngestError::Fenced => unavailable_response(
                "Another request took over this Idempotency-Key; retry to get its answer",
                1,
            ),
            IngestError::Store(_) => {
                unavailable_response("Object store temporarily unavailable, retry later", 2)
            }
            IngestError::DbUnavailable(_) => unavailable_response(
                "Database temporarily unavailable, retry later",
                DB_RETRY_AFTER.as_secs(),
            ),
            IngestError::Internal(_) => {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        };
        match &self {
            IngestError::Store(e) => {
                res.extensions_mut().insert(ErrorReport::from_error(e));
            }
            IngestError::DbUnavailable(e) => {
                res.extensions_mut().insert(ErrorReport::from_error(e));
            }
            IngestError::Internal(e) => {
                res.extensions_mut()
                    .insert(ErrorReport::from_error(e.as_ref()));
            }
            _ => {}
        }
        res
    }
}
