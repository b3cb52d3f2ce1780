//! Schemas of the response bodies for the OpenAPI 3.1 document. The handlers render
//! rows dynamically (every column, as the Flask service did); these types describe
//! that output and a test validates live responses against them.

#![allow(dead_code)]

use utoipa::ToSchema;

/// A DATE or TIMESTAMP as the Flask service sent it: an HTTP-date in GMT.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$",
    example = "Sun, 03 Oct 2021 00:00:00 GMT"
)]
pub struct HttpDate(String);

/// A NUMERIC value (or an average) as a decimal string with PostgreSQL's digits.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?(E[+-][0-9]+)?$", example = "3.06")]
pub struct DecimalString(String);

/// A row of `surgical_robots`.
#[derive(ToSchema)]
pub struct Robot {
    #[schema(format = Uuid)]
    robot_id: String,
    robot_serial_number: String,
    robot_model: String,
    manufacturer: String,
    installation_date: HttpDate,
    facility_id: String,
    facility_name: String,
    /// `operational`, `maintenance` or `retired`.
    status: String,
    #[schema(required = true)]
    last_maintenance_date: Option<HttpDate>,
    #[schema(required = true)]
    total_procedures: Option<i64>,
    #[schema(required = true)]
    firmware_version: Option<String>,
    created_at: HttpDate,
    updated_at: HttpDate,
}

/// A row of `surgical_procedures`.
#[derive(ToSchema)]
pub struct Procedure {
    #[schema(format = Uuid)]
    procedure_id: String,
    #[schema(format = Uuid)]
    robot_id: String,
    procedure_type: String,
    procedure_category: String,
    start_time: HttpDate,
    end_time: HttpDate,
    duration_minutes: i64,
    surgeon_id: String,
    surgeon_name: String,
    patient_id: String,
    patient_age: i64,
    #[schema(required = true)]
    patient_gender: Option<String>,
    #[schema(required = true)]
    complexity_score: Option<DecimalString>,
    /// `completed`, `in_progress`, `aborted` or `cancelled`.
    status: String,
    created_at: HttpDate,
}

/// A procedure with its robot's model and facility.
#[derive(ToSchema)]
pub struct ProcedureWithRobot {
    #[schema(inline)]
    #[serde(flatten)]
    procedure: Procedure,
    robot_model: String,
    facility_name: String,
}

/// A row of `procedure_outcomes`.
#[derive(ToSchema)]
pub struct Outcome {
    #[schema(format = Uuid)]
    outcome_id: String,
    #[schema(format = Uuid)]
    procedure_id: String,
    /// `successful`, `complicated` or `failed`.
    success_status: String,
    #[schema(required = true)]
    blood_loss_ml: Option<i64>,
    #[schema(required = true)]
    complications: Option<String>,
    #[schema(required = true)]
    hospital_stay_days: Option<i64>,
    #[schema(required = true)]
    readmission_30day: Option<bool>,
    #[schema(required = true)]
    patient_satisfaction_score: Option<i64>,
    #[schema(required = true)]
    surgeon_notes: Option<String>,
    #[schema(required = true)]
    recovery_score: Option<i64>,
    #[schema(required = true)]
    follow_up_required: Option<bool>,
    created_at: HttpDate,
    updated_at: HttpDate,
}

/// An outcome with its procedure's type and start time.
#[derive(ToSchema)]
pub struct OutcomeWithProcedure {
    #[schema(inline)]
    #[serde(flatten)]
    outcome: Outcome,
    procedure_type: String,
    start_time: HttpDate,
}

/// A row of the `vw_robot_utilization` view.
#[derive(ToSchema)]
pub struct RobotUtilization {
    #[schema(format = Uuid)]
    robot_id: String,
    robot_serial_number: String,
    robot_model: String,
    facility_name: String,
    status: String,
    procedure_count: i64,
    #[schema(required = true)]
    avg_procedure_duration: Option<DecimalString>,
    #[schema(required = true)]
    last_procedure_date: Option<HttpDate>,
}

/// Outcome figures for one `success_status`.
#[derive(ToSchema)]
pub struct OutcomeSummary {
    success_status: String,
    count: i64,
    #[schema(required = true)]
    avg_blood_loss: Option<DecimalString>,
    #[schema(required = true)]
    avg_stay_days: Option<DecimalString>,
    #[schema(required = true)]
    avg_satisfaction: Option<DecimalString>,
}

/// Procedure figures for one category.
#[derive(ToSchema)]
pub struct CategoryStats {
    procedure_category: String,
    count: i64,
    #[schema(required = true)]
    avg_duration: Option<DecimalString>,
    #[schema(required = true)]
    avg_complexity: Option<DecimalString>,
}

/// `GET /api/robots`.
#[derive(ToSchema)]
pub struct RobotList {
    count: i64,
    robots: Vec<Robot>,
}

/// `GET /api/robots/{robot_id}`.
#[derive(ToSchema)]
pub struct RobotDetail {
    procedure_count: i64,
    robot: Robot,
}

/// `GET /api/procedures`.
#[derive(ToSchema)]
pub struct ProcedureList {
    count: i64,
    /// The limit applied (requests above the cap get the cap).
    limit: i64,
    offset: i64,
    procedures: Vec<Procedure>,
}

/// `GET /api/procedures/{procedure_id}`.
#[derive(ToSchema)]
pub struct ProcedureDetail {
    #[schema(required = true)]
    outcome: Option<Outcome>,
    procedure: ProcedureWithRobot,
}

/// `GET /api/outcomes`.
#[derive(ToSchema)]
pub struct OutcomeList {
    count: i64,
    outcomes: Vec<OutcomeWithProcedure>,
}

/// `GET /api/analytics/robot-utilization`.
#[derive(ToSchema)]
pub struct UtilizationReport {
    count: i64,
    utilization: Vec<RobotUtilization>,
}

/// `GET /api/analytics/outcomes-summary`.
#[derive(ToSchema)]
pub struct OutcomesSummaryReport {
    summary: Vec<OutcomeSummary>,
}

/// `GET /api/analytics/procedures-by-category`.
#[derive(ToSchema)]
pub struct CategoryReport {
    categories: Vec<CategoryStats>,
    days: i64,
}

/// Every error: a human-readable message, never SQL or driver text.
#[derive(ToSchema)]
pub struct ErrorBody {
    error: String,
}
