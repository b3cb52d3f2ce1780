//! The route table: one router per resource, merged here, plus the idempotency
//! wrapper every POST goes through and the answers' JSON shapes.

use std::future::Future;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::{IngestError, Result};
use crate::grouper::{GroupError, IdempotencyRef};
use crate::idempotency::{Claim, RequestShape, caller_key, parse_key, request_hash};
use crate::metrics::IngestMetrics;
use crate::telemetry::Records;
use common::storage::StorageError;

pub mod batch;
pub mod procedure;
pub mod stats;
pub mod telemetry;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medrobotics data-ingestion",
        description = "Telemetry into the raw bucket (grouped, lossless, idempotent) and procedure \
                       records into PostgreSQL. Send `Idempotency-Key` to make retries safe.",
    ),
    tags(
        (name = "telemetry", description = "Robot telemetry"),
        (name = "procedures", description = "Procedure records"),
        (name = "stats", description = "Ingestion statistics"),
    ),
    components(schemas(crate::openapi::ErrorBody)),
)]
struct ApiDoc;

/// Every ingestion route with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(telemetry::router())
        .merge(batch::router())
        .merge(procedure::router())
        .merge(stats::router())
}

/// A JSON response with a pre-rendered body.
pub fn json(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// Escapes a string for JSON.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `201` body for telemetry (keys sorted, as Flask sent them).
pub fn telemetry_answer(s3_key: &str, shape: RequestShape) -> String {
    let count = if shape.is_array {
        format!("\"count\":{},", shape.records)
    } else {
        String::new()
    };
    format!(
        "{{{count}\"message\":\"Telemetry data ingested\",\"s3_key\":{},\"status\":\"success\"}}\n",
        quote(s3_key)
    )
}

/// `201` body for a batch.
pub fn batch_answer(s3_key: &str, shape: RequestShape) -> String {
    let count = shape.records;
    format!(
        "{{\"count\":{count},\"message\":\"Batch of {count} records ingested\",\"s3_key\":{},\"status\":\"success\"}}\n",
        quote(s3_key)
    )
}

/// Rebuilds a grouped answer from the object key after a crash (see idempotency).
pub fn answer_from_key(scope: &str, s3_key: &str, shape: RequestShape) -> Option<String> {
    match scope {
        "telemetry" => Some(telemetry_answer(s3_key, shape)),
        "batch" => Some(batch_answer(s3_key, shape)),
        _ => None,
    }
}

/// The API key that authenticated the request (none with authentication off): its
/// `Idempotency-Key` values live in their own namespace.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Caller(
            parts
                .extensions
                .get::<common::auth::KeyName>()
                .map(|k| k.0.clone()),
        ))
    }
}

/// Runs `work` once per `Idempotency-Key` of the caller: the first request does it,
/// retries replay its answer; without the header it simply runs. A request whose
/// claim was taken over meanwhile is answered 503 (fenced), never 201.
pub async fn idempotent<F, Fut>(
    state: &AppState,
    scope: &'static str,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    shape: RequestShape,
    work: F,
) -> Result<Response>
where
    F: FnOnce(Option<IdempotencyRef>) -> Fut,
    Fut: Future<Output = Result<String>>,
{
    let Some(value) = headers.get("idempotency-key") else {
        return work(None).await.map(|b| json(StatusCode::CREATED, b));
    };
    let key = caller_key(caller.0.as_deref(), &parse_key(value)?);
    let claim = state
        .idempotency
        .claim(scope, &key, &request_hash(scope, body), shape)
        .await?;
    let token = match claim {
        Claim::Proceed { token } => token,
        Claim::Replay { status, body } => {
            state.metrics.idempotent_replays.inc();
            let mut res = json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
                body,
            );
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(res);
        }
    };
    let riding = IdempotencyRef {
        scope,
        key: key.clone(),
        token: token.clone(),
    };
    match work(Some(riding)).await {
        Ok(answer) => match state
            .idempotency
            .complete(scope, &key, &token, 201, &answer)
            .await
        {
            Ok(true) => Ok(json(StatusCode::CREATED, answer)),
            Ok(false) => Err(IngestError::Fenced),
            Err(err) => {
                // The data is stored; a retry finds the object and replays from it.
                tracing::warn!(error = %err, "could not record an idempotent answer");
                Ok(json(StatusCode::CREATED, answer))
            }
        },
        Err(err) => {
            state.idempotency.release_later(scope, key, token);
            Err(err)
        }
    }
}

/// Writes validated `records` through the grouper under `prefix` (once per
/// `Idempotency-Key`) and answers with `answer`. Counts the request and its records.
#[allow(clippy::too_many_arguments)]
pub async fn ingest_grouped(
    state: &AppState,
    scope: &'static str,
    caller: &Caller,
    prefix: &str,
    records: &Records<'_>,
    headers: &HeaderMap,
    body: &[u8],
    answer: fn(&str, RequestShape) -> String,
) -> Result<Response> {
    let shape = RequestShape {
        records: records.len(),
        is_array: records.is_array,
    };
    let joined = records.joined();
    let result = idempotent(state, scope, caller, headers, body, shape, |riding| async {
        let key = state
            .grouper
            .submit(prefix, &joined, shape.records, riding)
            .await
            .map_err(group_error)?;
        Ok(answer(&key, shape))
    })
    .await;
    counted(state, scope, result, shape.records)
}

/// The ingestion routes by idempotency scope: the `route` label values.
const INGEST_ROUTES: [(&str, &str); 3] = [
    ("telemetry", "/ingest/telemetry"),
    ("batch", "/ingest/batch"),
    ("procedure", "/ingest/procedure"),
];

/// Middleware around the authentication layer: counts the ingest requests it
/// refused before a handler ran (401, 403, 429) as `rejected`, one record each.
/// Handlers never answer these statuses, so nothing is counted twice.
pub async fn count_refusals(
    State(metrics): State<IngestMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| INGEST_ROUTES.iter().find(|(_, r)| *r == p.as_str()))
        .map(|(_, r)| *r)
    else {
        return next.run(req).await;
    };
    let res = next.run(req).await;
    let reason = match res.status() {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        _ => return res,
    };
    metrics.records("rejected", reason, 1);
    metrics.request(route, "rejected");
    res
}

/// Counts a finished request to the route of `scope` in `ingest_requests_total`, and
/// its `records` in `ingest_records_total` (at least one when rejected: a body that
/// could not be split into records counts as one).
pub fn counted(
    state: &AppState,
    scope: &'static str,
    result: Result<Response>,
    records: usize,
) -> Result<Response> {
    let route = INGEST_ROUTES
        .iter()
        .find(|(s, _)| *s == scope)
        .map_or("/ingest/procedure", |(_, r)| r);
    match &result {
        Ok(_) => {
            state.metrics.records("accepted", "stored", records);
            state.metrics.request(route, "accepted");
        }
        Err(err) => {
            let (outcome, reason) = err.outcome();
            state.metrics.records(outcome, reason, records.max(1));
            state.metrics.request(route, outcome);
        }
    }
    result
}

/// Maps a grouping failure to the answer.
pub(crate) fn group_error(err: GroupError) -> IngestError {
    match err {
        GroupError::Overloaded => IngestError::Overloaded,
        GroupError::Fenced => IngestError::Fenced,
        GroupError::Store(msg) => IngestError::Store(StorageError::Unavailable(msg)),
        GroupError::Idempotency(msg) => IngestError::Store(StorageError::Unavailable(format!(
            "idempotency store: {msg}"
        ))),
    }
}
