//! `GET /ingest/stats`: what the procedures table holds.

use axum::Json;
use axum::extract::State;
use chrono::{NaiveDateTime, Timelike};
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

/// Counts of procedures and robots, and the latest start time (Python `isoformat()`
/// of the naive timestamp, as the old service sent it; null on an empty table).
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
        "latest_procedure": latest.map(isoformat),
    })))
}

/// Python's `datetime.isoformat()` of a naive timestamp: `YYYY-MM-DDTHH:MM:SS`, plus
/// `.ffffff` only when the microseconds are not zero (finer digits are dropped:
/// Python and PostgreSQL keep microseconds).
fn isoformat(t: NaiveDateTime) -> String {
    let micros = t.nanosecond() / 1000 % 1_000_000;
    let seconds = t.format("%Y-%m-%dT%H:%M:%S");
    if micros == 0 {
        seconds.to_string()
    } else {
        format!("{seconds}.{micros:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_like_python_isoformat() {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect(s);
        for (input, python) in [
            ("2025-12-31 15:25:00", "2025-12-31T15:25:00"),
            ("2025-12-31 15:25:00.5", "2025-12-31T15:25:00.500000"),
            ("2025-12-31 15:25:00.000001", "2025-12-31T15:25:00.000001"),
            ("2025-12-31 15:25:00.000000999", "2025-12-31T15:25:00"),
            (
                "0999-01-02 03:04:05.123456789",
                "0999-01-02T03:04:05.123456",
            ),
        ] {
            assert_eq!(isoformat(at(input)), python, "{input}");
        }
    }
}
