//! Query-string and path parameters, parsed at the boundary into typed filters. Bad
//! values answer 400 with a message naming the parameter (the Flask service answered
//! 500 with the driver's text).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::ApiError;

/// The largest `limit` served; larger requests are capped to it (the response's
/// `limit` field says so). Keeps one request from dumping the table.
pub const MAX_LIMIT: i64 = 1000;
/// `limit` when the client sends none.
pub const DEFAULT_LIMIT: i64 = 100;
/// `days` when the client sends none.
pub const DEFAULT_DAYS: i64 = 30;
/// The widest `days` window accepted (100 years).
pub const MAX_DAYS: i64 = 36_500;
/// The largest `offset` accepted.
pub const MAX_OFFSET: i64 = 1_000_000_000;

/// The query string as `name -> first value` (Flask's `request.args.get` took the
/// first of repeated names too).
#[derive(Debug, Default)]
pub struct QueryParams(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let RawQuery(raw) = RawQuery::from_request_parts(parts, state)
            .await
            .unwrap_or(RawQuery(None));
        Ok(Self::parse(raw.as_deref().unwrap_or("")))
    }
}

impl QueryParams {
    /// Parses `a=1&b=2` (percent-decoding; invalid UTF-8 becomes U+FFFD).
    pub fn parse(raw: &str) -> Self {
        let mut map = HashMap::new();
        for (k, v) in form_pairs(raw) {
            map.entry(k).or_insert(v);
        }
        Self(map)
    }

    /// A text filter: absent or empty means no filter. A value PostgreSQL cannot hold
    /// in a text column (a NUL byte, `%00`) is a 400 naming the parameter.
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.raw(name)?.filter(|v| !v.is_empty()).map(str::to_owned))
    }

    /// The raw value, empty included (for `status=`, which means "no filter"); a NUL
    /// byte is a 400 naming the parameter (PostgreSQL refuses it in text, which would
    /// otherwise surface as a 500).
    pub fn raw(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name) {
            Some(v) if v.contains('\0') => Err(ApiError::BadRequest(format!(
                "Invalid value for '{name}': NUL characters are not allowed"
            ))),
            other => Ok(other.map(String::as_str)),
        }
    }

    /// A UUID filter: absent or empty means none; anything else must be a UUID.
    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.text(name)?.map(|v| parse_uuid(name, &v)).transpose()
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(default);
        };
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Invalid value for '{name}': expected an integer between {min} and {max}"
                ))
            })
    }

    /// `limit`: a non-negative integer, capped at [`MAX_LIMIT`].
    pub fn limit(&self) -> Result<i64, ApiError> {
        self.int("limit", DEFAULT_LIMIT, 0, i64::MAX)
            .map(|l| l.min(MAX_LIMIT))
    }

    /// `offset`: a non-negative integer.
    pub fn offset(&self) -> Result<i64, ApiError> {
        self.int("offset", 0, 0, MAX_OFFSET)
    }
}

fn form_pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(raw.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// Parses a UUID parameter, naming it when it is not one.
pub fn parse_uuid(name: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value.trim())
        .map_err(|_| ApiError::BadRequest(format!("Invalid {name}: expected a UUID")))
}

/// One path segment as text; a segment that is not valid percent-encoded UTF-8 is a 400.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| PathText(s))
            .map_err(|_| ApiError::BadRequest("Invalid path parameter".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: ApiError) -> String {
        err.to_string()
    }

    #[test]
    fn limit_defaults_caps_and_rejects() {
        assert_eq!(
            QueryParams::parse("").limit().expect("default"),
            DEFAULT_LIMIT
        );
        assert_eq!(QueryParams::parse("limit=5").limit().expect("ok"), 5);
        assert_eq!(QueryParams::parse("limit=0").limit().expect("ok"), 0);
        assert_eq!(
            QueryParams::parse("limit=50000").limit().expect("capped"),
            MAX_LIMIT
        );
        for bad in [
            "limit=-1",
            "limit=abc",
            "limit=",
            "limit=1.5",
            "limit=99999999999999999999",
        ] {
            let err = QueryParams::parse(bad).limit().expect_err(bad);
            assert!(message(err).contains("'limit'"), "{bad}");
        }
    }

    #[test]
    fn first_value_wins_and_percent_decoding_applies() {
        let q =
            QueryParams::parse("status=in%5Fprogress&status=completed&category=General+Surgery");
        assert_eq!(
            q.text("status").expect("ok").as_deref(),
            Some("in_progress")
        );
        assert_eq!(
            q.text("category").expect("ok").as_deref(),
            Some("General Surgery")
        );
        assert_eq!(
            QueryParams::parse("x=%ZZ%4")
                .text("x")
                .expect("ok")
                .as_deref(),
            Some("%ZZ%4")
        );
        assert_eq!(
            QueryParams::parse("x=%ff")
                .text("x")
                .expect("ok")
                .as_deref(),
            Some("\u{fffd}")
        );
    }

    #[test]
    fn empty_text_means_no_filter_but_raw_keeps_it() {
        let q = QueryParams::parse("status=&facility_id=");
        assert_eq!(q.text("status").expect("ok"), None);
        assert_eq!(q.raw("status").expect("ok"), Some(""));
        assert_eq!(q.raw("missing").expect("ok"), None);
    }

    #[test]
    fn nul_bytes_are_a_400_naming_the_parameter() {
        let q = QueryParams::parse("status=a%00b&category=%00&robot_id=%00");
        assert!(message(q.text("status").expect_err("nul")).contains("'status'"));
        assert!(message(q.raw("category").expect_err("nul")).contains("'category'"));
        assert!(message(q.uuid("robot_id").expect_err("nul")).contains("robot_id"));
    }

    #[test]
    fn uuid_filters_name_the_parameter() {
        let q = QueryParams::parse("robot_id=not-a-uuid");
        assert!(message(q.uuid("robot_id").expect_err("bad")).contains("robot_id"));
        let q = QueryParams::parse("robot_id=5F0C0C6E-54E4-4F3B-9C1B-3A2D8E1E7A10");
        assert!(q.uuid("robot_id").expect("ok").is_some());
    }
}
