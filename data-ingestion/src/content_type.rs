//! Which `Content-Type` each JSON route takes, checked before the body is read.
//!
//! Every POST route takes `application/json` (parameters such as `; charset=utf-8`
//! are ignored) and any `application/*+json` type, the set Flask's
//! `request.is_json` accepted; `/ingest/telemetry` also takes NDJSON
//! (`application/x-ndjson`, `application/jsonl`). Any other type is a 415 naming the
//! accepted ones. A missing `Content-Type` is refused the same way when the request
//! carries a body, as the old service's `request.get_json()` refused it; a request
//! with no body at all goes on to the route's "No data provided".

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;

use crate::body::{BodyLimit, IngestBody};
use crate::error::IngestError;

/// The media types of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// `application/json` and `application/*+json`.
    Json,
    /// JSON, or NDJSON (`application/x-ndjson`, `application/jsonl`).
    JsonOrNdjson,
}

impl Accepts {
    fn expected(self) -> &'static str {
        match self {
            Accepts::Json => "application/json (or an application/*+json type)",
            Accepts::JsonOrNdjson => {
                "application/json (or an application/*+json type) or application/x-ndjson"
            }
        }
    }
}

/// What a request's `Content-Type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// An accepted type.
    Accepted,
    /// No `Content-Type` header: fine only for an empty body.
    Missing,
}

/// Checks the `Content-Type` header against what a route accepts.
pub fn check(headers: &HeaderMap, accepts: Accepts) -> Result<Declared, IngestError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(Declared::Missing);
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.len() > "+json".len() && sub.ends_with("+json"));
    let ndjson = matches!(
        essence.as_str(),
        "application/x-ndjson" | "application/jsonl"
    );
    if json || (ndjson && accepts == Accepts::JsonOrNdjson) {
        Ok(Declared::Accepted)
    } else {
        Err(unsupported(Some(&essence), accepts))
    }
}

/// The 415 answer. Only a well-formed `type/subtype` is echoed back.
fn unsupported(essence: Option<&str>, accepts: Accepts) -> IngestError {
    let printable = |s: &&str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/+-.!#$&^_".contains(&b))
    };
    let got = match essence {
        None => "no Content-Type".to_owned(),
        Some(e) => Some(e)
            .filter(printable)
            .map_or_else(|| "this Content-Type".to_owned(), str::to_owned),
    };
    IngestError::UnsupportedMediaType(format!(
        "Unsupported Media Type: {got}; expected {}",
        accepts.expected()
    ))
}

/// The media types a route takes, as a type: see [`Negotiated`].
pub trait MediaTypes: Send + Sync {
    /// What the route accepts.
    const ACCEPTS: Accepts;
}

/// `application/json` and `application/*+json`.
#[derive(Debug)]
pub enum JsonOnly {}

impl MediaTypes for JsonOnly {
    const ACCEPTS: Accepts = Accepts::Json;
}

/// JSON or NDJSON.
#[derive(Debug)]
pub enum JsonOrNdjson {}

impl MediaTypes for JsonOrNdjson {
    const ACCEPTS: Accepts = Accepts::JsonOrNdjson;
}

/// A request body whose `Content-Type` is one of `M`'s, read as an [`IngestBody`]
/// (the type is checked before the body is read).
#[derive(Debug)]
pub struct Negotiated<M>(pub IngestBody, PhantomData<M>);

/// A body sent as JSON (`application/json` or `application/*+json`).
pub type JsonBody = Negotiated<JsonOnly>;

/// A body sent as JSON or NDJSON.
pub type JsonOrNdjsonBody = Negotiated<JsonOrNdjson>;

impl<S, M> FromRequest<S> for Negotiated<M>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    M: MediaTypes,
{
    type Rejection = IngestError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = check(req.headers(), M::ACCEPTS)?;
        let body = IngestBody::from_request(req, state).await?;
        if declared == Declared::Missing && !body.bytes.is_empty() {
            return Err(unsupported(None, M::ACCEPTS));
        }
        Ok(Self(body, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).expect("header"));
        h
    }

    #[test]
    fn json_with_parameters_and_json_suffixes_are_accepted() {
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            " application/json ",
            "application/vnd.medrobotics.telemetry+json",
            "application/merge-patch+json; charset=utf-8",
        ] {
            for accepts in [Accepts::Json, Accepts::JsonOrNdjson] {
                assert_eq!(check(&with(ct), accepts).expect(ct), Declared::Accepted);
            }
        }
        assert_eq!(
            check(&HeaderMap::new(), Accepts::Json).expect("none"),
            Declared::Missing
        );
    }

    #[test]
    fn ndjson_only_where_the_route_takes_it() {
        for ct in ["application/x-ndjson", "application/jsonl; charset=utf-8"] {
            assert!(check(&with(ct), Accepts::JsonOrNdjson).is_ok(), "{ct}");
            let msg = check(&with(ct), Accepts::Json).expect_err(ct).to_string();
            assert!(
                msg.ends_with("; expected application/json (or an application/*+json type)"),
                "{msg}"
            );
        }
    }

    #[test]
    fn other_types_are_named_and_refused() {
        for ct in [
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/+json",
            "application/jsonx",
            "",
        ] {
            let err = check(&with(ct), Accepts::JsonOrNdjson).expect_err(ct);
            assert!(
                matches!(&err, IngestError::UnsupportedMediaType(m)
                    if m.starts_with("Unsupported Media Type: ")
                        && m.ends_with("expected application/json (or an application/*+json type) or application/x-ndjson")),
                "{ct}: {err}"
            );
        }
        assert_eq!(
            check(&with("text/plain; charset=utf-8"), Accepts::Json)
                .expect_err("text")
                .to_string(),
            "Unsupported Media Type: text/plain; expected application/json (or an application/*+json type)"
        );
        let hostile = check(&with("text/<script>"), Accepts::Json).expect_err("hostile");
        assert!(!hostile.to_string().contains('<'), "{hostile}");
    }
}
