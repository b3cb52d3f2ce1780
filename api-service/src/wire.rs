//! The Flask service's wire format, which existing clients parse. Rows are rendered
//! the way `psycopg2`'s `RealDictCursor` plus Flask's `jsonify` sent them:
//!
//! | column type | JSON |
//! |---|---|
//! | `date`, `timestamp`, `timestamptz` | HTTP-date string in GMT, `"Sun, 03 Oct 2021 00:00:00 GMT"` (a date gets midnight, sub-seconds dropped) |
//! | `numeric` (and `AVG`, `SUM` over it) | string with the digits PostgreSQL renders, as Python's `str(Decimal)` shows them (`"3.06"`, `"115.3426966292134831"`, `"0E-20"`) |
//! | integers | numbers |
//! | `uuid`, text | strings |
//! | `boolean` | `true`/`false` |
//! | NULL | `null` |
//!
//! Objects have their keys sorted and bodies are compact with a trailing newline,
//! as `jsonify` produced them. On the embedded SQLite database the same rules give
//! the same shapes (SQLite's REAL columns and averages are the NUMERIC ones).

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use common::Rows;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{Column, Decode, Postgres, Row, Sqlite, TypeInfo, ValueRef};
use uuid::Uuid;

type DecodeError = sqlx::error::BoxDynError;

/// A row could not be rendered (a type the schema does not use, or corrupt data).
#[derive(Debug, thiserror::Error)]
#[error("cannot render column {column}: {source}")]
pub struct RenderError {
    column: String,
    #[source]
    source: DecodeError,
}

/// A JSON document under construction, written straight into its bytes.
pub struct JsonOut {
    buf: Vec<u8>,
    first: Vec<bool>,
}

impl Default for JsonOut {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonOut {
    /// An empty document.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            first: Vec::with_capacity(4),
        }
    }

    /// `{`
    pub fn begin_object(&mut self) -> &mut Self {
        self.buf.push(b'{');
        self.first.push(true);
        self
    }

    /// `}`
    pub fn end_object(&mut self) -> &mut Self {
        self.buf.push(b'}');
        self.first.pop();
        self
    }

    /// `"key":` (callers write keys in sorted order, as `jsonify` did).
    pub fn key(&mut self, key: &str) -> &mut Self {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.buf.push(b',');
            }
            *first = false;
        }
        write_str(&mut self.buf, key);
        self.buf.push(b':');
        self
    }

    /// An integer value.
    pub fn int(&mut self, v: i64) -> &mut Self {
        let _ = write!(ByteWriter(&mut self.buf), "{v}");
        self
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(b"null");
        self
    }

    /// Every row as an object, in an array.
    pub fn rows(&mut self, rows: &Rows) -> Result<&mut Self, RenderError> {
        match rows {
            Rows::Postgres(rows) => write_array(rows, &mut self.buf)?,
            Rows::Sqlite(rows) => write_array(rows, &mut self.buf)?,
        }
        Ok(self)
    }

    /// The first row as an object without the `except` columns, or `null`.
    pub fn first_row(&mut self, rows: &Rows, except: &[&str]) -> Result<&mut Self, RenderError> {
        match rows {
            Rows::Postgres(rows) => write_first(rows, except, &mut self.buf)?,
            Rows::Sqlite(rows) => write_first(rows, except, &mut self.buf)?,
        }
        Ok(self)
    }

    /// The finished body, with `jsonify`'s trailing newline.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'\n');
        self.buf
    }
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A JSON string literal (escaping as `json.dumps` with `ensure_ascii` off would not:
/// serde_json escapes only what JSON requires, which every client accepts).
fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// `Sun, 03 Oct 2021 00:00:00 GMT`, as `werkzeug.http.http_date` formats.
pub fn http_date(ts: NaiveDateTime) -> String {
    let mut out = String::with_capacity(29);
    push_http_date(&mut out, ts);
    out
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Appends [`http_date`] without chrono's `strftime` (parsing the format string per
/// cell was a fifth of the CPU of `GET /api/robots` in the benchmark's profile).
fn push_http_date(out: &mut String, ts: NaiveDateTime) {
    use chrono::{Datelike, Timelike};
    if !(0..=9999).contains(&ts.year()) {
        let _ = write!(out, "{}", ts.format("%a, %d %b %Y %H:%M:%S GMT"));
        return;
    }
    let _ = write!(
        out,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[ts.weekday().num_days_from_monday() as usize],
        ts.day(),
        MONTHS[ts.month0() as usize],
        ts.year(),
        ts.hour(),
        ts.minute(),
        ts.second()
    );
}

/// Writes [`http_date`] as a JSON string (its characters need no escaping).
fn write_http_date(buf: &mut Vec<u8>, ts: NaiveDateTime) {
    let mut s = String::with_capacity(31);
    s.push('"');
    push_http_date(&mut s, ts);
    s.push('"');
    buf.extend_from_slice(s.as_bytes());
}

/// The text PostgreSQL renders for a NUMERIC (`numeric_out`), from its binary form:
/// `ndigits, weight, sign, dscale` then base-10000 digits.
pub fn pg_numeric_text(bytes: &[u8]) -> Result<String, DecodeError> {
    let word = |i: usize| -> Result<u16, DecodeError> {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => return Err("bad numeric sign".into()),
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i).map(i32::from))
        .collect::<Result<Vec<i32>, _>>()?;
    let group = |k: i32| -> i32 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut out = String::with_capacity(8 + 4 * ndigits + dscale);
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                let _ = write!(out, "{}", group(k));
            } else {
                let _ = write!(out, "{:04}", group(k));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut j = 1;
        while out.len() - start < dscale {
            let _ = write!(out, "{:04}", group(weight + j));
            j += 1;
        }
        out.truncate(start + dscale);
    }
    Ok(out)
}

/// `str(Decimal(text))` in Python: plain notation unless the value has more than six
/// leading fractional zeros (then `1.2E-7`, and a zero with scale >= 7 is `0E-7`).
pub fn python_decimal_str(text: &str) -> String {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return text.to_owned(); // NaN, Infinity
    }
    let all: String = [int_part, frac_part].concat();
    let coefficient = all.trim_start_matches('0');
    let coefficient = if coefficient.is_empty() {
        "0"
    } else {
        coefficient
    };
    let exp = -(frac_part.len() as i64);
    let leftdigits = exp + coefficient.len() as i64;
    let dotplace = if exp <= 0 && leftdigits > -6 {
        leftdigits
    } else {
        1
    };
    let n = coefficient.len() as i64;
    let (intpart, fracpart) = if dotplace <= 0 {
        (
            "0".to_owned(),
            format!(".{}{}", "0".repeat((-dotplace) as usize), coefficient),
        )
    } else if dotplace >= n {
        (
            format!("{coefficient}{}", "0".repeat((dotplace - n) as usize)),
            String::new(),
        )
    } else {
        let (a, b) = coefficient.split_at(dotplace as usize);
        (a.to_owned(), format!(".{b}"))
    };
    let exponent = if leftdigits == dotplace {
        String::new()
    } else {
        format!("E{:+}", leftdigits - dotplace)
    };
    format!(
        "{}{intpart}{fracpart}{exponent}",
        if negative { "-" } else { "" }
    )
}

/// How to render one PostgreSQL column.
#[derive(Clone, Copy)]
enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
    Text,
    Unsupported,
}

fn pg_kind(ty: &PgTypeInfo) -> PgKind {
    match ty.name() {
        "BOOL" => PgKind::Bool,
        "INT2" => PgKind::Int2,
        "INT4" => PgKind::Int4,
        "INT8" => PgKind::Int8,
        "FLOAT4" => PgKind::Float4,
        "FLOAT8" => PgKind::Float8,
        "NUMERIC" => PgKind::Numeric,
        "UUID" => PgKind::Uuid,
        "DATE" => PgKind::Date,
        "TIMESTAMP" => PgKind::Timestamp,
        "TIMESTAMPTZ" => PgKind::TimestampTz,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => PgKind::Text,
        _ => PgKind::Unsupported,
    }
}

/// A backend's row, rendered column by column.
trait RenderRow: Row {
    /// How a column is rendered, decided once per result set.
    type Kind: Copy;
    /// The kind of a column.
    fn kind(column: &<Self::Database as sqlx::Database>::Column) -> Self::Kind;
    /// Writes column `index` as JSON.
    fn cell(&self, index: usize, kind: Self::Kind, buf: &mut Vec<u8>) -> Result<(), DecodeError>;
}

impl RenderRow for PgRow {
    type Kind = PgKind;
    fn kind(column: &sqlx::postgres::PgColumn) -> PgKind {
        pg_kind(column.type_info())
    }
    fn cell(&self, index: usize, kind: PgKind, buf: &mut Vec<u8>) -> Result<(), DecodeError> {
        pg_cell(self.try_get_raw(index)?, kind, buf)
    }
}

impl RenderRow for SqliteRow {
    type Kind = SqliteDecl;
    fn kind(column: &sqlx::sqlite::SqliteColumn) -> SqliteDecl {
        match column.type_info().name() {
            "BOOLEAN" => SqliteDecl::Bool,
            "DATE" => SqliteDecl::Date,
            "DATETIME" => SqliteDecl::Datetime,
            "NULL" => SqliteDecl::Expression,
            _ => SqliteDecl::Other,
        }
    }
    fn cell(&self, index: usize, kind: SqliteDecl, buf: &mut Vec<u8>) -> Result<(), DecodeError> {
        sqlite_cell(self.try_get_raw(index)?, kind, buf)
    }
}

/// Column order (sorted by name, as `jsonify` sorted keys) and kinds, computed once
/// per result set.
struct Layout<K> {
    columns: Vec<(usize, String, K)>,
}

impl<K: Copy> Layout<K> {
    fn of<R: RenderRow<Kind = K>>(row: &R, except: &[&str]) -> Self {
        let mut columns: Vec<(usize, String, K)> = row
            .columns()
            .iter()
            .filter(|c| !except.contains(&c.name()))
            .map(|c| (c.ordinal(), c.name().to_owned(), R::kind(c)))
            .collect();
        columns.sort_by(|a, b| a.1.cmp(&b.1));
        Self { columns }
    }

    fn write<R: RenderRow<Kind = K>>(&self, row: &R, buf: &mut Vec<u8>) -> Result<(), RenderError> {
        buf.push(b'{');
        for (n, (i, name, kind)) in self.columns.iter().enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            write_str(buf, name);
            buf.push(b':');
            row.cell(*i, *kind, buf).map_err(|source| RenderError {
                column: name.clone(),
                source,
            })?;
        }
        buf.push(b'}');
        Ok(())
    }
}

fn write_array<R: RenderRow>(rows: &[R], buf: &mut Vec<u8>) -> Result<(), RenderError> {
    buf.push(b'[');
    if let Some(first) = rows.first() {
        let layout = Layout::of(first, &[]);
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            layout.write(row, buf)?;
        }
    }
    buf.push(b']');
    Ok(())
}

fn write_first<R: RenderRow>(
    rows: &[R],
    except: &[&str],
    buf: &mut Vec<u8>,
) -> Result<(), RenderError> {
    match rows.first() {
        Some(row) => Layout::of(row, except).write(row, buf),
        None => {
            buf.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn pg_cell(value: PgValueRef<'_>, kind: PgKind, buf: &mut Vec<u8>) -> Result<(), DecodeError> {
    if value.is_null() {
        buf.extend_from_slice(b"null");
        return Ok(());
    }
    let mut w = ByteWriter(buf);
    match kind {
        PgKind::Bool => {
            let v = <bool as Decode<Postgres>>::decode(value)?;
            w.0.extend_from_slice(if v { b"true" } else { b"false" });
        }
        PgKind::Int2 => write!(w, "{}", <i16 as Decode<Postgres>>::decode(value)?)?,
        PgKind::Int4 => write!(w, "{}", <i32 as Decode<Postgres>>::decode(value)?)?,
        PgKind::Int8 => write!(w, "{}", <i64 as Decode<Postgres>>::decode(value)?)?,
        PgKind::Float4 => write_float(w.0, f64::from(<f32 as Decode<Postgres>>::decode(value)?)),
        PgKind::Float8 => write_float(w.0, <f64 as Decode<Postgres>>::decode(value)?),
        PgKind::Numeric => {
            let text = pg_numeric_text(value.as_bytes()?)?;
            write_str(w.0, &python_decimal_str(&text));
        }
        PgKind::Uuid => {
            let v = <Uuid as Decode<Postgres>>::decode(value)?;
            write!(w, "\"{}\"", v.hyphenated())?;
        }
        PgKind::Date => {
            let d = <NaiveDate as Decode<Postgres>>::decode(value)?;
            write_http_date(w.0, d.and_time(chrono::NaiveTime::MIN));
        }
        PgKind::Timestamp => {
            let ts = <NaiveDateTime as Decode<Postgres>>::decode(value)?;
            write_http_date(w.0, ts);
        }
        PgKind::TimestampTz => {
            let ts = <DateTime<Utc> as Decode<Postgres>>::decode(value)?;
            write_http_date(w.0, ts.naive_utc());
        }
        PgKind::Text => write_str(w.0, <&str as Decode<Postgres>>::decode(value)?),
        PgKind::Unsupported => {
            return Err(format!("unsupported column type {}", value.type_info().name()).into());
        }
    }
    Ok(())
}

fn write_float(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *buf, &v);
    } else {
        buf.extend_from_slice(b"null");
    }
}

/// How to render one SQLite column, from its declared type.
#[derive(Clone, Copy, PartialEq)]
enum SqliteDecl {
    Bool,
    Date,
    Datetime,
    Other,
    /// An expression (aggregate): no declared type.
    Expression,
}

fn sqlite_cell(
    value: SqliteValueRef<'_>,
    decl: SqliteDecl,
    buf: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    if value.is_null() {
        buf.extend_from_slice(b"null");
        return Ok(());
    }
    let storage = value.type_info().name().to_owned();
    match storage.as_str() {
        "INTEGER" => {
            let v = <i64 as Decode<Sqlite>>::decode(value)?;
            if decl == SqliteDecl::Bool {
                buf.extend_from_slice(if v != 0 { b"true" } else { b"false" });
            } else {
                let _ = write!(ByteWriter(buf), "{v}");
            }
        }
        "REAL" => {
            // REAL columns are PostgreSQL's NUMERIC ones: strings on the wire.
            let v = <f64 as Decode<Sqlite>>::decode(value)?;
            write_str(buf, &sqlite_real(v));
        }
        "TEXT" => {
            let text = <&str as Decode<Sqlite>>::decode(value)?;
            let as_time = match decl {
                SqliteDecl::Date | SqliteDecl::Datetime | SqliteDecl::Expression => {
                    parse_sqlite_time(text)
                }
                _ => None,
            };
            match as_time {
                Some(ts) => write_http_date(buf, ts),
                None => write_str(buf, text),
            }
        }
        _ => buf.extend_from_slice(b"null"),
    }
    Ok(())
}

/// A REAL as a decimal string: ten places at most (float sums carry noise such as
/// `3.3316000000000003`), trailing zeros trimmed, at least one decimal.
fn sqlite_real(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let mut s = format!("{v:.10}");
    while s.ends_with('0') && !s.ends_with(".0") {
        s.pop();
    }
    s
}

/// Dates and timestamps as SQLite stores them (`YYYY-MM-DD[ HH:MM:SS[.f]]`).
fn parse_sqlite_time(text: &str) -> Option<NaiveDateTime> {
    if text.len() == 10 {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|d| d.and_time(chrono::NaiveTime::MIN));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_binary_renders_like_postgres() {
        assert_eq!(
            pg_numeric_text(&numeric(0, 0, 2, &[3, 600])).expect("ok"),
            "3.06"
        );
        // 115.3426966292134831 = 115 | 3426 9662 9213 4831
        assert_eq!(
            pg_numeric_text(&numeric(0, 0, 16, &[115, 3426, 9662, 9213, 4831])).expect("ok"),
            "115.3426966292134831"
        );
        assert_eq!(
            pg_numeric_text(&numeric(1, 0x4000, 0, &[12, 3456])).expect("ok"),
            "-123456"
        );
        assert_eq!(
            pg_numeric_text(&numeric(0, 0, 20, &[])).expect("ok"),
            "0.00000000000000000000"
        );
        // 0.00001234: weight -2, digits [1234], dscale 8
        assert_eq!(
            pg_numeric_text(&numeric(-2, 0, 8, &[1234])).expect("ok"),
            "0.00001234"
        );
        assert_eq!(
            pg_numeric_text(&numeric(2, 0, 2, &[1])).expect("ok"),
            "100000000.00"
        );
        assert_eq!(
            pg_numeric_text(&numeric(0, 0xC000, 0, &[])).expect("ok"),
            "NaN"
        );
        assert!(pg_numeric_text(&[0, 1]).is_err());
    }

    #[test]
    fn decimal_strings_follow_python() {
        for (pg, py) in [
            ("3.06", "3.06"),
            ("115.3426966292134831", "115.3426966292134831"),
            ("0.50", "0.50"),
            ("-0.50", "-0.50"),
            ("100", "100"),
            ("0", "0"),
            ("0.00", "0.00"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1E-7"),
            ("0.0000012", "0.0000012"),
            ("0.00000000000000000000", "0E-20"),
            ("0.000000123", "1.23E-7"),
            ("1500.00", "1500.00"),
            ("NaN", "NaN"),
        ] {
            assert_eq!(python_decimal_str(pg), py, "{pg}");
        }
    }

    #[test]
    fn http_dates_match_werkzeug() {
        let d = NaiveDate::from_ymd_opt(2021, 10, 3).expect("date");
        assert_eq!(
            http_date(d.and_time(chrono::NaiveTime::MIN)),
            "Sun, 03 Oct 2021 00:00:00 GMT"
        );
        let ts = NaiveDateTime::parse_from_str("2024-02-29 13:05:09.987", "%Y-%m-%d %H:%M:%S%.f")
            .expect("ts");
        assert_eq!(http_date(ts), "Thu, 29 Feb 2024 13:05:09 GMT");
        // the hand-written formatter agrees with strftime on every weekday and month
        let mut day = NaiveDate::from_ymd_opt(1999, 12, 25).expect("date");
        for _ in 0..800 {
            let ts = day.and_hms_opt(7, 8, 9).expect("time");
            assert_eq!(
                http_date(ts),
                ts.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
            );
            day = day.succ_opt().expect("next day");
        }
        let mut buf = Vec::new();
        write_http_date(&mut buf, ts);
        assert_eq!(buf, b"\"Thu, 29 Feb 2024 13:05:09 GMT\"");
    }

    #[test]
    fn sqlite_reals_drop_float_noise() {
        assert_eq!(sqlite_real(3.3316000000000003), "3.3316");
        assert_eq!(sqlite_real(3.0), "3.0");
        assert_eq!(sqlite_real(455.734_020_618_556_7), "455.7340206186");
        assert_eq!(sqlite_real(-0.5), "-0.5");
    }

    #[test]
    fn sqlite_times_parse_in_every_stored_form() {
        assert!(parse_sqlite_time("2024-01-02").is_some());
        assert!(parse_sqlite_time("2024-01-02 03:04:05").is_some());
        assert!(parse_sqlite_time("2024-01-02 03:04:05.123456").is_some());
        assert!(parse_sqlite_time("2024-01-02T03:04:05").is_some());
        assert!(parse_sqlite_time("Dr. Smith").is_none());
    }

    #[test]
    fn objects_are_compact_and_end_with_a_newline() {
        let mut out = JsonOut::new();
        out.begin_object();
        out.key("count").int(2);
        out.key("robots").null();
        out.end_object();
        assert_eq!(
            String::from_utf8(out.finish()).expect("utf-8"),
            "{\"count\":2,\"robots\":null}\n"
        );
    }
}
