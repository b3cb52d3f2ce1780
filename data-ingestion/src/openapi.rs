//! Request and response schemas for the OpenAPI 3.1 document.

#![allow(dead_code)]

use utoipa::ToSchema;

/// One telemetry record: the three required fields, and anything else the robot
/// sends, stored as sent.
#[derive(ToSchema)]
pub struct TelemetryRecord {
    #[schema(format = Uuid)]
    procedure_id: String,
    #[schema(format = Uuid)]
    robot_id: String,
    /// RFC 3339; the robots' `YYYY-MM-DD HH:MM:SS[.fff]` (taken as UTC) is accepted too.
    #[schema(format = DateTime, example = "2026-11-28T13:45:00.250Z")]
    timestamp: String,
}

/// One record, or an array of records of one procedure.
#[derive(ToSchema)]
pub enum TelemetryBody {
    /// One record.
    One(TelemetryRecord),
    /// Several records of the same procedure.
    Many(Vec<TelemetryRecord>),
}

/// Answer to a telemetry post.
#[derive(ToSchema)]
pub struct TelemetryAck {
    /// Present when the body was an array.
    count: Option<i64>,
    #[schema(example = "Telemetry data ingested")]
    message: String,
    /// The object holding the records.
    #[schema(
        example = "telemetry/5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10/20261128134500-019ac9b0e4f07c3e8e3c3c0f8a1b2c3d.json"
    )]
    s3_key: String,
    #[schema(example = "success")]
    status: String,
}

/// A batch of records.
#[derive(ToSchema)]
pub struct BatchBody {
    /// JSON objects; for `telemetry`, each checked like a telemetry record. An empty
    /// array is a batch of none: stored as an empty array and answered with count 0.
    records: Vec<serde_json::Value>,
    /// Object key segment, default `telemetry`; `[a-z0-9_-]{1,64}`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Answer to a batch post.
#[derive(ToSchema)]
pub struct BatchAck {
    count: i64,
    #[schema(example = "Batch of 100 records ingested")]
    message: String,
    s3_key: String,
    #[schema(example = "success")]
    status: String,
}

/// One `surgical_procedures` row: all 14 keys are required (as by the old
/// service's insert); `patient_gender` and `complexity_score` may be `null`.
#[derive(ToSchema)]
pub struct ProcedureBody {
    #[schema(format = Uuid)]
    procedure_id: String,
    #[schema(format = Uuid)]
    robot_id: String,
    #[schema(max_length = 100)]
    procedure_type: String,
    #[schema(max_length = 50)]
    procedure_category: String,
    /// RFC 3339; `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) is accepted too.
    #[schema(format = DateTime)]
    start_time: String,
    /// Not before `start_time`.
    #[schema(format = DateTime)]
    end_time: String,
    #[schema(minimum = 0)]
    duration_minutes: i64,
    #[schema(max_length = 50)]
    surgeon_id: String,
    #[schema(max_length = 200)]
    surgeon_name: String,
    #[schema(max_length = 50)]
    patient_id: String,
    #[schema(minimum = 0, maximum = 120)]
    patient_age: i64,
    #[schema(max_length = 20, required = true)]
    patient_gender: Option<String>,
    #[schema(minimum = 1.0, maximum = 5.0, required = true)]
    complexity_score: Option<f64>,
    /// `completed`, `in_progress`, `aborted` or `cancelled`.
    status: String,
}

/// Answer to a procedure post.
#[derive(ToSchema)]
pub struct ProcedureAck {
    #[schema(example = "Procedure data ingested")]
    message: String,
    #[schema(format = Uuid)]
    procedure_id: String,
    #[schema(example = "success")]
    status: String,
}

/// `GET /ingest/stats`.
#[derive(ToSchema)]
pub struct Stats {
    total_procedures: i64,
    unique_robots: i64,
    /// Latest `start_time` in Python's `isoformat()` form of the naive (UTC)
    /// timestamp, `YYYY-MM-DDTHH:MM:SS[.ffffff]` (microseconds only when non-zero),
    /// as the old service sent it; null on an empty table.
    #[schema(required = true, example = "2025-12-31T15:25:00")]
    latest_procedure: Option<String>,
}

/// Every error: a human-readable message, never SQL, driver text or row values.
#[derive(ToSchema)]
pub struct ErrorBody {
    error: String,
}
