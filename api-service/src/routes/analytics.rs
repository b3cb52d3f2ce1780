//! `/api/analytics/*`: aggregates over the fleet.

use axum::extract::State;
use chrono::Utc;
use common::Query;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::JsonBody;
use crate::AppState;
use crate::error::Result;
use crate::openapi::{CategoryReport, ErrorBody, OutcomesSummaryReport, UtilizationReport};
use crate::params::{DEFAULT_DAYS, MAX_DAYS, QueryParams};
use crate::wire::JsonOut;

const ROBOT_UTILIZATION: &str =
    "SELECT * FROM vw_robot_utilization ORDER BY procedure_count DESC, robot_serial_number";

const OUTCOMES_SUMMARY: &str = "SELECT success_status, COUNT(*) AS count, \
     AVG(blood_loss_ml) AS avg_blood_loss, AVG(hospital_stay_days) AS avg_stay_days, \
     AVG(patient_satisfaction_score) AS avg_satisfaction \
     FROM procedure_outcomes GROUP BY success_status ORDER BY success_status";

const PROCEDURES_BY_CATEGORY: &str = "SELECT procedure_category, COUNT(*) AS count, \
     AVG(duration_minutes) AS avg_duration, AVG(complexity_score) AS avg_complexity \
     FROM surgical_procedures WHERE start_time >= $1 \
     GROUP BY procedure_category ORDER BY count DESC, procedure_category";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(robot_utilization))
        .routes(routes!(outcomes_summary))
        .routes(routes!(procedures_by_category))
}

/// Rows of the `vw_robot_utilization` view, busiest robot first.
#[utoipa::path(
    get,
    path = "/api/analytics/robot-utilization",
    tag = "analytics",
    responses(
        (status = 200, description = "Utilization per robot", body = UtilizationReport),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn robot_utilization(State(state): State<AppState>) -> Result<JsonBody> {
    let rows = state.db.fetch_all(Query::new(ROBOT_UTILIZATION)).await?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("count")
        .int(rows.len() as i64)
        .key("utilization")
        .rows(&rows)?
        .end_object();
    Ok(JsonBody(out.finish()))
}

/// Outcome counts and averages per success status.
#[utoipa::path(
    get,
    path = "/api/analytics/outcomes-summary",
    tag = "analytics",
    responses(
        (status = 200, description = "Summary per success status", body = OutcomesSummaryReport),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn outcomes_summary(State(state): State<AppState>) -> Result<JsonBody> {
    let rows = state.db.fetch_all(Query::new(OUTCOMES_SUMMARY)).await?;
    let mut out = JsonOut::new();
    out.begin_object().key("summary").rows(&rows)?.end_object();
    Ok(JsonBody(out.finish()))
}

/// Procedure counts and averages per category over the last `days` days (by start
/// time, UTC), most frequent first.
#[utoipa::path(
    get,
    path = "/api/analytics/procedures-by-category",
    tag = "analytics",
    params(
        ("days" = Option<i64>, Query, description = "Window in days, default 30", minimum = 0, maximum = 36500),
    ),
    responses(
        (status = 200, description = "Figures per category", body = CategoryReport),
        (status = 400, description = "days is malformed or out of range", body = ErrorBody),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn procedures_by_category(
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<JsonBody> {
    let days = params.int("days", DEFAULT_DAYS, 0, MAX_DAYS)?;
    let since = Utc::now().naive_utc() - chrono::Duration::days(days);
    let rows = state
        .db
        .fetch_all(Query::new(PROCEDURES_BY_CATEGORY).bind(since))
        .await?;
    let mut out = JsonOut::new();
    out.begin_object()
        .key("categories")
        .rows(&rows)?
        .key("days")
        .int(days)
        .end_object();
    Ok(JsonBody(out.finish()))
}
