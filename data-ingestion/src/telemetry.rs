//! Telemetry records: parsed and validated at the boundary, kept byte for byte as
//! the robot sent them. Every record needs `procedure_id` and `robot_id` (UUIDs) and
//! a `timestamp` (RFC 3339 or the robots' `YYYY-MM-DD HH:MM:SS.fff`); everything else
//! is stored as sent. A bad record rejects the whole request, naming its index and
//! field, before anything is written.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::IngestError;

/// The fields every telemetry record must carry (others are skipped unparsed).
#[derive(Deserialize)]
struct Required<'a> {
    #[serde(borrow, default)]
    procedure_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    robot_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
}

/// Records of one request, validated, as raw JSON text.
#[derive(Debug)]
pub struct Records<'a> {
    /// Each record's JSON text, exactly as received.
    pub raw: Vec<&'a RawValue>,
    /// Whether the body was an array (or NDJSON): the answer then carries `count`.
    pub is_array: bool,
}

impl Records<'_> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The records joined with commas: the inside of a JSON array.
    pub fn joined(&self) -> Vec<u8> {
        let size = self.raw.iter().map(|r| r.get().len() + 1).sum();
        let mut out = Vec::with_capacity(size);
        for (i, r) in self.raw.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(r.get().as_bytes());
        }
        out
    }
}

/// Parses a body of one JSON object, a JSON array of objects, or NDJSON.
pub fn parse_records(body: &[u8], ndjson: bool) -> Result<Records<'_>, IngestError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| IngestError::BadRequest("Body is not valid UTF-8".into()))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(no_data());
    }
    let (raw, is_array) = if ndjson {
        let mut raw = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: &RawValue = serde_json::from_str(line).map_err(|e| {
                IngestError::BadRequest(format!("Invalid JSON on line {}: {e}", line_no + 1))
            })?;
            raw.push(record);
        }
        (raw, true)
    } else if trimmed.starts_with('[') {
        let raw: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| IngestError::BadRequest(format!("Invalid JSON: {e}")))?;
        (raw, true)
    } else if trimmed.starts_with('{') {
        let one: &RawValue = serde_json::from_str(text)
            .map_err(|e| IngestError::BadRequest(format!("Invalid JSON: {e}")))?;
        // `{}` is no data (the Flask answer), not a record missing its fields.
        if one.get().bytes().all(|b| b"{} \t\r\n".contains(&b)) {
            return Err(no_data());
        }
        (vec![one], false)
    } else {
        return Err(IngestError::BadRequest(
            "Body must be a JSON object or an array of objects".into(),
        ));
    };
    if raw.is_empty() {
        return Err(no_data());
    }
    Ok(Records { raw, is_array })
}

/// `{"error": "No data provided"}`, the Flask message.
pub fn no_data() -> IngestError {
    IngestError::BadRequest("No data provided".into())
}

/// Where a message points: the whole body, or record `n` of an array.
fn at(index: usize, is_array: bool) -> String {
    if is_array {
        format!(" in record {index}")
    } else {
        String::new()
    }
}

/// Checks that `raw` is a JSON object.
pub fn require_object(raw: &RawValue, index: usize, is_array: bool) -> Result<(), IngestError> {
    if raw.get().trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(IngestError::BadRequest(format!(
            "Record {index} must be a JSON object{}",
            if is_array { "" } else { " (body)" }
        )))
    }
}

/// Validates one telemetry record; returns its procedure id.
pub fn validate_record(raw: &RawValue, index: usize, is_array: bool) -> Result<Uuid, IngestError> {
    require_object(raw, index, is_array)?;
    let required: Required<'_> = serde_json::from_str(raw.get()).map_err(|e| {
        IngestError::BadRequest(format!("Invalid record{}: {e}", at(index, is_array)))
    })?;
    let field = |name: &str, value: Option<&RawValue>| -> Result<String, IngestError> {
        let value = value.ok_or_else(|| {
            IngestError::BadRequest(format!(
                "Missing required field: {name}{}",
                at(index, is_array)
            ))
        })?;
        serde_json::from_str::<Cow<'_, str>>(value.get())
            .map(Cow::into_owned)
            .map_err(|_| invalid(name, index, is_array))
    };
    let procedure_id = field("procedure_id", required.procedure_id)?;
    let robot_id = field("robot_id", required.robot_id)?;
    let timestamp = field("timestamp", required.timestamp)?;
    let procedure_id = Uuid::parse_str(procedure_id.trim())
        .map_err(|_| invalid("procedure_id", index, is_array))?;
    Uuid::parse_str(robot_id.trim()).map_err(|_| invalid("robot_id", index, is_array))?;
    parse_timestamp(&timestamp).ok_or_else(|| invalid("timestamp", index, is_array))?;
    Ok(procedure_id)
}

fn invalid(field: &str, index: usize, is_array: bool) -> IngestError {
    let expected = match field {
        "timestamp" => "an RFC 3339 time or YYYY-MM-DD HH:MM:SS[.fff]",
        _ => "a UUID string",
    };
    IngestError::BadRequest(format!(
        "Invalid {field}{}: expected {expected}",
        at(index, is_array)
    ))
}

/// RFC 3339, or a naive `YYYY-MM-DD HH:MM:SS[.fff]` / `YYYY-MM-DDTHH:MM:SS[.fff]`
/// taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.naive_utc());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
}

/// Validates every record of a telemetry request, which must all belong to one
/// procedure (the object key is per procedure); returns that procedure.
pub fn validate_telemetry(records: &Records<'_>) -> Result<Uuid, IngestError> {
    let mut procedure: Option<Uuid> = None;
    for (i, raw) in records.raw.iter().enumerate() {
        let id = validate_record(raw, i, records.is_array)?;
        match procedure {
            None => procedure = Some(id),
            Some(first) if first != id => {
                return Err(IngestError::BadRequest(format!(
                    "Record {i} has procedure_id {id}, record 0 has {first}: send one procedure per \
                     request, or use /ingest/batch for mixed records"
                )));
            }
            Some(_) => {}
        }
    }
    procedure.ok_or_else(no_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10";
    const R: &str = "11111111-1111-4111-8111-111111111111";

    fn record(ts: &str) -> String {
        format!(r#"{{"procedure_id":"{P}","robot_id":"{R}","timestamp":"{ts}","arm":{{"x":1.5}}}}"#)
    }

    fn message(err: IngestError) -> String {
        err.to_string()
    }

    #[test]
    fn one_record_and_arrays_validate_and_keep_their_bytes() {
        let one = record("2024-05-01 10:00:00.123");
        let parsed = parse_records(one.as_bytes(), false).expect("parses");
        assert!(!parsed.is_array);
        assert_eq!(validate_telemetry(&parsed).expect("valid").to_string(), P);
        assert_eq!(parsed.joined(), one.as_bytes());

        let many = format!(
            "[{}, {}]",
            record("2024-05-01T10:00:00Z"),
            record("2024-05-01T12:00:00+02:00")
        );
        let parsed = parse_records(many.as_bytes(), false).expect("parses");
        assert!(parsed.is_array);
        assert_eq!(parsed.len(), 2);
        validate_telemetry(&parsed).expect("valid");
        assert_eq!(
            parsed.joined(),
            format!(
                "{},{}",
                record("2024-05-01T10:00:00Z"),
                record("2024-05-01T12:00:00+02:00")
            )
            .as_bytes()
        );
    }

    #[test]
    fn ndjson_lines_are_records() {
        let body = format!(
            "{}\n\n{}\n",
            record("2024-05-01 10:00:00"),
            record("2024-05-01 10:00:01")
        );
        let parsed = parse_records(body.as_bytes(), true).expect("parses");
        assert_eq!(parsed.len(), 2);
        assert!(parsed.is_array);
    }

    #[test]
    fn missing_and_bad_fields_name_record_and_field() {
        let body = format!(
            r#"[{}, {{"procedure_id":"{P}","robot_id":"{R}"}}]"#,
            record("2024-05-01 10:00:00")
        );
        let parsed = parse_records(body.as_bytes(), false).expect("parses");
        assert_eq!(
            message(validate_telemetry(&parsed).expect_err("bad")),
            "Missing required field: timestamp in record 1"
        );

        let single = format!(r#"{{"robot_id":"{R}","timestamp":"2024-05-01 10:00:00"}}"#);
        let parsed = parse_records(single.as_bytes(), false).expect("parses");
        assert_eq!(
            message(validate_telemetry(&parsed).expect_err("bad")),
            "Missing required field: procedure_id"
        );

        for (bad, field) in [
            (
                format!(
                    r#"{{"procedure_id":"nope","robot_id":"{R}","timestamp":"2024-05-01 10:00:00"}}"#
                ),
                "procedure_id",
            ),
            (
                format!(
                    r#"{{"procedure_id":"{P}","robot_id":42,"timestamp":"2024-05-01 10:00:00"}}"#
                ),
                "robot_id",
            ),
            (
                format!(r#"{{"procedure_id":"{P}","robot_id":"{R}","timestamp":"yesterday"}}"#),
                "timestamp",
            ),
            (
                format!(
                    r#"{{"procedure_id":"{P}","robot_id":"{R}","timestamp":"2024-13-01 10:00:00"}}"#
                ),
                "timestamp",
            ),
        ] {
            let parsed = parse_records(bad.as_bytes(), false).expect("parses");
            let msg = message(validate_telemetry(&parsed).expect_err(&bad));
            assert!(msg.starts_with(&format!("Invalid {field}")), "{bad}: {msg}");
        }
    }

    #[test]
    fn a_null_field_counts_as_missing() {
        let body = format!(r#"{{"procedure_id":"{P}","robot_id":"{R}","timestamp":null}}"#);
        let parsed = parse_records(body.as_bytes(), false).expect("parses");
        assert_eq!(
            message(validate_telemetry(&parsed).expect_err("null")),
            "Missing required field: timestamp"
        );
    }

    #[test]
    fn bodies_that_are_not_records_are_400() {
        for body in ["", "   ", "[]", "{}", " { } ", "[\n]"] {
            assert_eq!(
                message(parse_records(body.as_bytes(), false).expect_err(body)),
                "No data provided",
                "{body:?}"
            );
        }
        for body in ["42", "\"text\"", "null", "[1,2]", "{bad json", "[{}, 3]"] {
            let result = parse_records(body.as_bytes(), false)
                .and_then(|r| validate_telemetry(&r).map(|_| ()));
            assert!(
                matches!(result, Err(IngestError::BadRequest(_))),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_records(&[0xff, 0xfe], false),
            Err(IngestError::BadRequest(_))
        ));
    }

    #[test]
    fn one_request_carries_one_procedure() {
        let other =
            record("2024-05-01 10:00:00").replace(P, "22222222-2222-4222-8222-222222222222");
        let body = format!("[{},{other}]", record("2024-05-01 10:00:00"));
        let parsed = parse_records(body.as_bytes(), false).expect("parses");
        assert!(
            message(validate_telemetry(&parsed).expect_err("mixed"))
                .starts_with("Record 1 has procedure_id")
        );
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        for ts in [
            "2024-05-01 10:00:00",
            "2024-05-01 10:00:00.123",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.5Z",
            "2024-05-01T10:00:00-07:00",
        ] {
            assert!(parse_timestamp(ts).is_some(), "{ts}");
        }
        for ts in [
            "2024-05-01",
            "10:00:00",
            "1714557600",
            "2024/05/01 10:00:00",
        ] {
            assert!(parse_timestamp(ts).is_none(), "{ts}");
        }
    }
}
