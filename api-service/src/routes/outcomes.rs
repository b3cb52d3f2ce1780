//! `/api/outcomes`: procedure outcomes.

use axum::extract::State;
use common::Query;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::JsonBody;
use crate::AppState;
use crate::error::Result;
use crate::openapi::{ErrorBody, OutcomeList};
use crate::params::QueryParams;
use crate::wire::JsonOut;

const LIST_OUTCOMES: &str = "SELECT o.*, p.procedure_type, p.start_time \
     FROM procedure_outcomes o JOIN surgical_procedures p ON o.procedure_id = p.procedure_id \
     WHERE 1=1";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_outcomes))
}

/// Lists outcomes with their procedure's type and start time, newest procedure first.
#[utoipa::path(
    get,
    path = "/api/outcomes",
    tag = "outcomes",
    params(
        ("success_status" = Option<String>, Query, description = "Exact success_status (`successful`, `complicated`, `failed`)"),
        ("limit" = Option<i64>, Query, description = "Rows to return, default 100; values above 1000 are capped to 1000", minimum = 0),
        ("offset" = Option<i64>, Query, description = "Rows to skip, default 0 (new: the Flask service had no offset here)", minimum = 0, maximum = 1_000_000_000),
    ),
    responses(
        (status = 200, description = "Outcomes", body = OutcomeList),
        (status = 400, description = "A parameter is malformed or out of range", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn list_outcomes(State(state): State<AppState>, params: QueryParams) -> Result<JsonBody> {
    let limit = params.limit()?;
    let offset = params.offset()?;
    let mut query = Query::new(LIST_OUTCOMES);
    if let Some(status) = params.text("success_status")? {
        query.push(" AND o.success_status = ").push_bind(status);
    }
    query
        .push(" ORDER BY p.start_time DESC, o.outcome_id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let rows = state.db.fetch_all(query).await?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("count")
        .int(rows.len() as i64)
        .key("outcomes")
        .rows(&rows)?
        .end_object();
    Ok(JsonBody(out.finish()))
}
