//! `/api/procedures`: surgical procedures.

use axum::extract::State;
use common::Query;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::JsonBody;
use crate::AppState;
use crate::error::{ApiError, Result};
use crate::openapi::{ErrorBody, ProcedureDetail, ProcedureList};
use crate::params::{PathText, QueryParams, parse_uuid};
use crate::wire::JsonOut;

const LIST_PROCEDURES: &str = "SELECT * FROM surgical_procedures WHERE 1=1";

const GET_PROCEDURE: &str = "SELECT p.*, r.robot_model, r.facility_name \
     FROM surgical_procedures p JOIN surgical_robots r ON p.robot_id = r.robot_id \
     WHERE p.procedure_id = $1";

const GET_OUTCOME: &str = "SELECT * FROM procedure_outcomes WHERE procedure_id = $1";

/// The status listed when the client names none (the Flask default).
const DEFAULT_STATUS: &str = "completed";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_procedures))
        .routes(routes!(get_procedure))
}

/// Lists procedures, newest first. `status` defaults to `completed`; an empty
/// `status=` lists every status.
#[utoipa::path(
    get,
    path = "/api/procedures",
    tag = "procedures",
    params(
        ("robot_id" = Option<uuid::Uuid>, Query, description = "Only this robot's procedures"),
        ("category" = Option<String>, Query, description = "Exact procedure_category"),
        ("status" = Option<String>, Query, description = "Exact status; default `completed`; empty means every status"),
        ("limit" = Option<i64>, Query, description = "Rows to return, default 100; values above 1000 are capped to 1000", minimum = 0),
        ("offset" = Option<i64>, Query, description = "Rows to skip, default 0", minimum = 0, maximum = 1_000_000_000),
    ),
    responses(
        (status = 200, description = "Procedures", body = ProcedureList),
        (status = 400, description = "A parameter is malformed or out of range", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn list_procedures(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<JsonBody> {
    let robot_id = params.uuid("robot_id")?;
    let limit = params.limit()?;
    let offset = params.offset()?;
    let mut query = Query::new(LIST_PROCEDURES);
    if let Some(robot_id) = robot_id {
        query.push(" AND robot_id = ").push_bind(robot_id);
    }
    if let Some(category) = params.text("category")? {
        query.push(" AND procedure_category = ").push_bind(category);
    }
    match params.raw("status")? {
        None => {
            query.push(" AND status = ").push_bind(DEFAULT_STATUS);
        }
        Some("") => {}
        Some(status) => {
            query.push(" AND status = ").push_bind(status);
        }
    }
    query
        .push(" ORDER BY start_time DESC, procedure_id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let rows = state.db.fetch_all(query).await?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("count")
        .int(rows.len() as i64)
        .key("limit")
        .int(limit)
        .key("offset")
        .int(offset)
        .key("procedures")
        .rows(&rows)?
        .end_object();
    Ok(JsonBody(out.finish()))
}

/// One procedure with its robot's model and facility, and its outcome (or null).
#[utoipa::path(
    get,
    path = "/api/procedures/{procedure_id}",
    tag = "procedures",
    params(("procedure_id" = uuid::Uuid, Path, description = "Procedure id")),
    responses(
        (status = 200, description = "The procedure", body = ProcedureDetail),
        (status = 400, description = "procedure_id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such procedure", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn get_procedure(
    State(state): State<AppState>,
    PathText(id): PathText,
) -> Result<JsonBody> {
    let id = parse_uuid("procedure_id", &id)?;
    let procedure = state
        .db
        .fetch_all(Query::new(GET_PROCEDURE).bind(id))
        .await?;
    if procedure.is_empty() {
        return Err(ApiError::NotFound("Procedure not found"));
    }
    let outcome = state.db.fetch_all(Query::new(GET_OUTCOME).bind(id)).await?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("outcome")
        .first_row(&outcome, &[])?
        .key("procedure")
        .first_row(&procedure, &[])?
        .end_object();
    Ok(JsonBody(out.finish()))
}
