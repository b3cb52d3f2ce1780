//! Procedure records: parsed at the boundary into [`NewProcedure`] (all 14 keys of the
//! old service's insert required, every value checked against the schema's types,
//! lengths and CHECK constraints, so a bad value is a 400 naming the field), then
//! upserted: a conflict on `procedure_id` updates `status`, `end_time` and
//! `duration_minutes`, as the Flask service did, but only when every other field
//! equals the stored row. Otherwise nothing changes and the answer is a 409 naming
//! the first field that differs (the old service answered 201 and kept the old row).
//! The comparison is part of the upsert statement (`ON CONFLICT ... DO UPDATE ...
//! WHERE`), so it runs on the locked row and two racing requests cannot both win; it
//! compares typed column values, so `2026-01-01T09:00:00Z` equals
//! `2026-01-01 09:00:00` and `3.5` equals `"3.50"`.

use chrono::NaiveDateTime;
use common::db::Arg;
use common::db::ConstraintKind;
use common::{Db, DbError, Query};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::IngestError;
use crate::telemetry::parse_timestamp;

/// The statuses the schema allows.
pub const STATUSES: [&str; 4] = ["completed", "in_progress", "aborted", "cancelled"];

/// A validated procedure row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProcedure {
    procedure_id: Uuid,
    robot_id: Uuid,
    procedure_type: String,
    procedure_category: String,
    start_time: NaiveDateTime,
    end_time: NaiveDateTime,
    duration_minutes: i64,
    surgeon_id: String,
    surgeon_name: String,
    patient_id: String,
    patient_age: i64,
    patient_gender: Option<String>,
    complexity_score: Option<f64>,
    status: String,
}

/// The keys of the old service's insert, in its order: all required.
pub const FIELDS: [&str; 14] = [
    "procedure_id",
    "robot_id",
    "procedure_type",
    "procedure_category",
    "start_time",
    "end_time",
    "duration_minutes",
    "surgeon_id",
    "surgeon_name",
    "patient_id",
    "patient_age",
    "patient_gender",
    "complexity_score",
    "status",
];

/// What a conflict updates.
const UPDATED: [&str; 3] = ["status", "end_time", "duration_minutes"];

/// The fields a conflict must match, in [`FIELDS`] order.
fn compared() -> impl Iterator<Item = &'static str> {
    FIELDS[1..].iter().copied().filter(|f| !UPDATED.contains(f))
}

/// SQL equality of column `stored` and value `new` that holds for two NULLs (the
/// same on both backends; `excluded` values and casts make it typed).
fn same(stored: &str, new: &str) -> String {
    format!("COALESCE({stored} = {new}, {stored} IS NULL AND {new} IS NULL)")
}

/// Inserts, or on conflict updates the row only when every compared field is
/// equal; returns the id when a row was written, nothing when the stored row
/// differs (and stays as it was).
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let placeholders: Vec<String> = (1..=FIELDS.len()).map(|i| format!("${i}")).collect();
    let guard: Vec<String> = compared()
        .map(|f| {
            same(
                &format!("surgical_procedures.{f}"),
                &format!("excluded.{f}"),
            )
        })
        .collect();
    format!(
        "INSERT INTO surgical_procedures ({}) VALUES ({}) \
         ON CONFLICT (procedure_id) DO UPDATE SET {} WHERE {} RETURNING procedure_id",
        FIELDS.join(", "),
        placeholders.join(", "),
        UPDATED.map(|f| format!("{f} = excluded.{f}")).join(", "),
        guard.join(" AND "),
    )
});

/// The first compared field in which the stored row differs from `$2..`, with each
/// value cast to its column's type as the insert would store it.
static FIRST_DIFFERENCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let cases: Vec<String> = compared()
        .enumerate()
        .map(|(i, f)| {
            let value = match f {
                "complexity_score" => format!("CAST(${} AS NUMERIC(3, 2))", i + 2),
                _ => format!("${}", i + 2),
            };
            format!("WHEN NOT {} THEN '{f}'", same(f, &value))
        })
        .collect();
    format!(
        "SELECT CASE {} ELSE '' END AS field FROM surgical_procedures WHERE procedure_id = $1",
        cases.join(" ")
    )
});

fn missing(field: &str) -> IngestError {
    IngestError::BadRequest(format!("Missing required field: {field}"))
}

fn invalid(field: &str, expected: &str) -> IngestError {
    IngestError::BadRequest(format!("Invalid {field}: expected {expected}"))
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn present(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn text(&self, name: &str, max: usize) -> Result<String, IngestError> {
        let value = self.0.get(name).ok_or_else(|| missing(name))?;
        let expected = format!("a non-empty string of at most {max} characters");
        match value.as_str() {
            Some(s) if !s.trim().is_empty() && s.chars().count() <= max => Ok(s.to_owned()),
            _ => Err(invalid(name, &expected)),
        }
    }

    fn optional_text(&self, name: &str, max: usize) -> Result<Option<String>, IngestError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
            Some(_) => Err(invalid(
                name,
                &format!("a string of at most {max} characters or null"),
            )),
        }
    }

    fn uuid(&self, name: &str) -> Result<Uuid, IngestError> {
        let value = self.0.get(name).ok_or_else(|| missing(name))?;
        value
            .as_str()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| invalid(name, "a UUID string"))
    }

    fn time(&self, name: &str) -> Result<NaiveDateTime, IngestError> {
        let value = self.0.get(name).ok_or_else(|| missing(name))?;
        value
            .as_str()
            .and_then(parse_timestamp)
            .ok_or_else(|| invalid(name, "an RFC 3339 time or YYYY-MM-DD HH:MM:SS[.fff]"))
    }

    /// An integer, as a JSON integer or a string of digits (psycopg2 accepted both).
    fn int(&self, name: &str, min: i64, max: i64) -> Result<i64, IngestError> {
        let value = self.0.get(name).ok_or_else(|| missing(name))?;
        let n = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.filter(|n| (min..=max).contains(n))
            .ok_or_else(|| invalid(name, &format!("an integer between {min} and {max}")))
    }

    fn optional_number(&self, name: &str, min: f64, max: f64) -> Result<Option<f64>, IngestError> {
        let Some(value) = self.present(name) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.filter(|n| n.is_finite() && (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    name,
                    &format!("a number between {min:.1} and {max:.1} or null"),
                )
            })
    }
}

impl NewProcedure {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, IngestError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(crate::telemetry::no_data());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| IngestError::BadRequest(format!("Invalid JSON: {e}")))?;
        let map = match value {
            Value::Object(map) => map,
            Value::Array(items) if items.is_empty() => return Err(crate::telemetry::no_data()),
            _ => return Err(IngestError::BadRequest("Body must be a JSON object".into())),
        };
        if map.is_empty() {
            return Err(crate::telemetry::no_data());
        }
        if let Some(name) = FIELDS.iter().find(|f| !map.contains_key(**f)) {
            return Err(missing(name));
        }
        let f = Fields(&map);
        let procedure = Self {
            procedure_id: f.uuid("procedure_id")?,
            robot_id: f.uuid("robot_id")?,
            procedure_type: f.text("procedure_type", 100)?,
            procedure_category: f.text("procedure_category", 50)?,
            start_time: f.time("start_time")?,
            end_time: f.time("end_time")?,
            duration_minutes: f.int("duration_minutes", 0, i64::from(i32::MAX))?,
            surgeon_id: f.text("surgeon_id", 50)?,
            surgeon_name: f.text("surgeon_name", 200)?,
            patient_id: f.text("patient_id", 50)?,
            patient_age: f.int("patient_age", 0, 120)?,
            patient_gender: f.optional_text("patient_gender", 20)?,
            complexity_score: f.optional_number("complexity_score", 1.0, 5.0)?,
            status: {
                let status = f.text("status", 20)?;
                if !STATUSES.contains(&status.as_str()) {
                    return Err(invalid(
                        "status",
                        "one of completed, in_progress, aborted, cancelled",
                    ));
                }
                status
            },
        };
        if procedure.end_time < procedure.start_time {
            return Err(IngestError::BadRequest(
                "Invalid end_time: must not be before start_time".into(),
            ));
        }
        Ok(procedure)
    }

    /// The procedure id.
    pub fn id(&self) -> Uuid {
        self.procedure_id
    }

    /// The value of `field` (one of [`FIELDS`]) as bound to the database.
    fn arg(&self, field: &str) -> Arg {
        match field {
            "procedure_id" => self.procedure_id.into(),
            "robot_id" => self.robot_id.into(),
            "procedure_type" => self.procedure_type.as_str().into(),
            "procedure_category" => self.procedure_category.as_str().into(),
            "start_time" => self.start_time.into(),
            "end_time" => self.end_time.into(),
            "duration_minutes" => self.duration_minutes.into(),
            "surgeon_id" => self.surgeon_id.as_str().into(),
            "surgeon_name" => self.surgeon_name.as_str().into(),
            "patient_id" => self.patient_id.as_str().into(),
            "patient_age" => self.patient_age.into(),
            "patient_gender" => self.patient_gender.clone().into(),
            "complexity_score" => self.complexity_score.into(),
            _ => self.status.as_str().into(),
        }
    }

    /// Inserts the row, or updates `status`, `end_time` and `duration_minutes` of
    /// the stored one when every other field is equal. A stored row that differs
    /// is left as it is: 409 naming the first differing field.
    pub async fn upsert(&self, db: &Db) -> Result<(), IngestError> {
        // A second round only when the stored row vanished between the two
        // statements (its robot deleted): then the insert goes through.
        for _ in 0..3 {
            let upsert = FIELDS
                .iter()
                .fold(Query::new(&UPSERT), |q, f| q.bind(self.arg(f)));
            let written = db.fetch_all(upsert).await.map_err(constraint_error)?;
            if !written.is_empty() {
                return Ok(());
            }
            let probe = compared().fold(
                Query::new(&FIRST_DIFFERENCE).bind(self.procedure_id),
                |q, f| q.bind(self.arg(f)),
            );
            let rows = db.fetch_all(probe).await?;
            if let Some(field) = rows.get_string(0, "field")?.filter(|f| !f.is_empty()) {
                return Err(IngestError::Mismatch(format!(
                    "Conflicting {field}: procedure {} is stored with a different {field}; \
                     only status, end_time and duration_minutes can change",
                    self.procedure_id
                )));
            }
        }
        Err(IngestError::Conflict(
            "The procedure changed while it was being stored, retry",
        ))
    }
}

/// Maps a constraint violation to a 4xx naming the field; never echoes row values.
pub fn constraint_error(err: DbError) -> IngestError {
    let DbError::Constraint {
        kind,
        constraint,
        column,
        ..
    } = &err
    else {
        return err.into();
    };
    let name = constraint.as_deref().unwrap_or_default();
    match kind {
        ConstraintKind::ForeignKey => {
            IngestError::Unprocessable("Unknown robot_id: no robot has this id".into())
        }
        ConstraintKind::NotNull => missing(column.as_deref().unwrap_or("a required field")),
        ConstraintKind::Check if name.contains("end_after_start") => IngestError::BadRequest(
            "Invalid end_time: must not be before the stored start_time of this procedure".into(),
        ),
        ConstraintKind::Check => {
            let field = ["patient_age", "complexity_score", "status"]
                .into_iter()
                .find(|f| name.contains(f))
                .unwrap_or("field");
            IngestError::BadRequest(format!("Invalid {field}: violates the schema's constraint"))
        }
        ConstraintKind::InvalidValue | ConstraintKind::Unique => {
            IngestError::BadRequest("Invalid value for a procedure field".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "procedure_id": "aaaaaaaa-0000-4000-8000-000000000001",
            "robot_id": "11111111-1111-4111-8111-111111111111",
            "procedure_type": "Hysterectomy",
            "procedure_category": "Gynecology",
            "start_time": "2024-03-01 09:00:00",
            "end_time": "2024-03-01T11:30:00Z",
            "duration_minutes": 150,
            "surgeon_id": "SURG-001",
            "surgeon_name": "Dr. Amelia Hart",
            "patient_id": "PAT-000001",
            "patient_age": "54",
            "patient_gender": null,
            "complexity_score": 3.06,
            "status": "completed"
        })
    }

    fn parse(v: &Value) -> Result<NewProcedure, IngestError> {
        NewProcedure::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_valid_record_parses() {
        let p = parse(&valid()).expect("valid");
        assert_eq!(p.patient_age, 54);
        assert_eq!(p.complexity_score, Some(3.06));
        assert_eq!(p.patient_gender, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        for (field, value) in [
            ("procedure_id", json!("x")),
            ("robot_id", json!(7)),
            ("procedure_type", json!("")),
            ("procedure_category", json!("c".repeat(51))),
            ("start_time", json!("soon")),
            ("duration_minutes", json!(-1)),
            ("duration_minutes", json!(1.5)),
            ("patient_age", json!(121)),
            ("patient_age", json!("old")),
            ("patient_gender", json!(1)),
            ("complexity_score", json!(5.5)),
            ("complexity_score", json!(0.9)),
            ("status", json!("done")),
        ] {
            let mut body = valid();
            body[field] = value.clone();
            let msg = parse(&body).expect_err(field).to_string();
            assert!(
                msg.starts_with(&format!("Invalid {field}")),
                "{field}={value}: {msg}"
            );
        }
        for field in ["procedure_id", "status", "patient_age", "end_time"] {
            let mut body = valid();
            body.as_object_mut().expect("object").remove(field);
            assert_eq!(
                parse(&body).expect_err(field).to_string(),
                format!("Missing required field: {field}")
            );
        }
        let mut backwards = valid();
        backwards["end_time"] = json!("2024-03-01 08:00:00");
        assert!(
            parse(&backwards)
                .expect_err("order")
                .to_string()
                .contains("end_time")
        );
    }

    #[test]
    fn bodies_that_are_not_objects() {
        for body in ["", "[]", "{}", "null", "\"x\"", "{oops"] {
            assert!(
                matches!(
                    NewProcedure::parse(body.as_bytes()),
                    Err(IngestError::BadRequest(_))
                ),
                "{body}"
            );
        }
        for body in ["", "{}", "[]", " [ ] "] {
            assert_eq!(
                NewProcedure::parse(body.as_bytes())
                    .expect_err(body)
                    .to_string(),
                "No data provided"
            );
        }
    }
}
