//! `GET /ingest/stats`: what the procedures table holds.

use axum::Json;
use axum::extract::State;
use chrono::{NaiveDateTime, SecondsFormat};
use common::Query;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::Result;
use crate::openapi::{ErrorBody, Stats};

const STATS: &str = "SELECT COUNT(*) AS total_procedures, COUNT(DISTINCT robot_id) AS unique_robots, \
     MAX(start_time) AS latest_procedure FROM surgical_procedures";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingestion_stats))
}

/// Counts of procedures and robots, and the latest start time (RFC 3339, UTC; null
/// on an empty table).
#[utoipa::path(
    get,
    path = "/ingest/stats",
    tag = "stats",
    responses(
        (status = 200, description = "Statistics", body = Stats),
        (status = 503, description = "Database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn ingestion_stats(State(state): State<AppState>) -> Result<Json<Value>> {
    let rows = state.db.fetch_all(Query::new(STATS)).await?;
    let latest: Option<NaiveDateTime> = rows.get_timestamp(0, "latest_procedure")?;
    Ok(Json(json!({
        "total_procedures": rows.get_i64(0, "total_procedures")?.unwrap_or(0),
        "unique_robots": rows.get_i64(0, "unique_robots")?.unwrap_or(0),
        "latest_procedure": latest.map(|t| t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    })))
}
