//! The api-service error type: every failure a handler can return, each with its
//! status. Internal causes are attached to the response for the request log line and
//! never reach the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::DbError;
use common::http::{DB_RETRY_AFTER, ErrorReport, error_response, unavailable_response};

use crate::wire::RenderError;

/// `Result` with [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is malformed or out of range; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the addressed row does not exist (`Robot not found`).
    #[error("{0}")]
    NotFound(&'static str),
    /// 503 with `Retry-After`: the database is down, restarting or the pool is exhausted.
    #[error("database unavailable")]
    Unavailable(#[source] DbError),
    /// 500: a bug or a schema the service does not understand.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(_) => ApiError::Unavailable(err),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<RenderError> for ApiError {
    fn from(err: RenderError) -> Self {
        ApiError::Internal(Box::new(err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::BadRequest(msg) => error_response(StatusCode::BAD_REQUEST, msg),
            ApiError::NotFound(msg) => error_response(StatusCode::NOT_FOUND, msg),
            ApiError::Unavailable(err) => {
                let mut res = unavailable_response(
                    "Database temporarily unavailable, retry later",
                    DB_RETRY_AFTER.as_secs(),
                );
                res.extensions_mut().insert(ErrorReport::from_error(err));
                res
            }
            ApiError::Internal(err) => {
                let mut res =
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
                res.extensions_mut()
                    .insert(ErrorReport::from_error(err.as_ref()));
                res
            }
        }
    }
}
