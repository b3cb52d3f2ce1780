//! `/api/robots`: the fleet.

use axum::extract::State;
use common::Query;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::JsonBody;
use crate::AppState;
use crate::error::{ApiError, Result};
use crate::openapi::{ErrorBody, RobotDetail, RobotList};
use crate::params::{PathText, QueryParams, parse_uuid};
use crate::wire::JsonOut;

const LIST_ROBOTS: &str = "SELECT * FROM surgical_robots WHERE 1=1";

const GET_ROBOT: &str = "SELECT r.*, \
     (SELECT COUNT(*) FROM surgical_procedures p WHERE p.robot_id = r.robot_id) AS procedure_count \
     FROM surgical_robots r WHERE r.robot_id = $1";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_robots))
        .routes(routes!(get_robot))
}

/// Lists robots, optionally by facility and status, ordered by facility name and
/// serial number.
#[utoipa::path(
    get,
    path = "/api/robots",
    tag = "robots",
    params(
        ("facility_id" = Option<String>, Query, description = "Exact facility id; empty means all"),
        ("status" = Option<String>, Query, description = "Exact status (`operational`, `maintenance`, `retired`); empty means all"),
    ),
    responses(
        (status = 200, description = "Robots", body = RobotList),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn list_robots(State(state): State<AppState>, params: QueryParams) -> Result<JsonBody> {
    let mut query = Query::new(LIST_ROBOTS);
    if let Some(facility) = params.text("facility_id")? {
        query.push(" AND facility_id = ").push_bind(facility);
    }
    if let Some(status) = params.text("status")? {
        query.push(" AND status = ").push_bind(status);
    }
    query.push(" ORDER BY facility_name, robot_serial_number");
    let rows = state.db.fetch_all(query).await?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("count")
        .int(rows.len() as i64)
        .key("robots")
        .rows(&rows)?
        .end_object();
    Ok(JsonBody(out.finish()))
}

/// One robot and the number of procedures it performed.
#[utoipa::path(
    get,
    path = "/api/robots/{robot_id}",
    tag = "robots",
    params(("robot_id" = uuid::Uuid, Path, description = "Robot id")),
    responses(
        (status = 200, description = "The robot", body = RobotDetail),
        (status = 400, description = "robot_id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such robot", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn get_robot(State(state): State<AppState>, PathText(id): PathText) -> Result<JsonBody> {
    let id = parse_uuid("robot_id", &id)?;
    let rows = state.db.fetch_all(Query::new(GET_ROBOT).bind(id)).await?;
    let count = rows
        .get_i64(0, "procedure_count")?
        .ok_or(ApiError::NotFound("Robot not found"))?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("procedure_count")
        .int(count)
        .key("robot")
        .first_row(&rows, &["procedure_count"])?
        .end_object();
    Ok(JsonBody(out.finish()))
}
