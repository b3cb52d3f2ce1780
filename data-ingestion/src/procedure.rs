//! Procedure records: parsed at the boundary into [`NewProcedure`] (every field
//! checked against the schema's types, lengths and CHECK constraints, so a bad
//! value is a 400 naming the field), then upserted: a conflict on `procedure_id`
//! updates `status`, `end_time` and `duration_minutes`, as the Flask service did.

use chrono::NaiveDateTime;
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

const UPSERT: &str = "INSERT INTO surgical_procedures (procedure_id, robot_id, procedure_type, \
     procedure_category, start_time, end_time, duration_minutes, surgeon_id, surgeon_name, patient_id, \
     patient_age, patient_gender, complexity_score, status) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (procedure_id) DO UPDATE SET status = excluded.status, \
     end_time = excluded.end_time, duration_minutes = excluded.duration_minutes";

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
        let Value::Object(map) = value else {
            return Err(IngestError::BadRequest("Body must be a JSON object".into()));
        };
        if map.is_empty() {
            return Err(crate::telemetry::no_data());
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

    /// Inserts or updates the row.
    pub async fn upsert(&self, db: &Db) -> Result<(), IngestError> {
        let query = Query::new(UPSERT)
            .bind(self.procedure_id)
            .bind(self.robot_id)
            .bind(self.procedure_type.as_str())
            .bind(self.procedure_category.as_str())
            .bind(self.start_time)
            .bind(self.end_time)
            .bind(self.duration_minutes)
            .bind(self.surgeon_id.as_str())
            .bind(self.surgeon_name.as_str())
            .bind(self.patient_id.as_str())
            .bind(self.patient_age)
            .bind(self.patient_gender.clone())
            .bind(self.complexity_score)
            .bind(self.status.as_str());
        db.execute(query)
            .await
            .map(|_| ())
            .map_err(constraint_error)
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
        assert_eq!(
            NewProcedure::parse(b"").expect_err("empty").to_string(),
            "No data provided"
        );
    }
}
