//! Request bodies: read within the limit, gzip-decoded with the same limit applied to
//! the decoded size (a gzip bomb stops at the limit), JSON or NDJSON, nested at most
//! [`MAX_JSON_DEPTH`] levels.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};

use crate::error::IngestError;

/// A request body ready to parse.
#[derive(Debug)]
pub struct IngestBody {
    /// The decoded bytes.
    pub bytes: Bytes,
    /// Newline-delimited JSON (`application/x-ndjson` or `application/jsonl`).
    pub ndjson: bool,
}

/// The deepest nesting of objects and arrays a body may have. Robots send flat
/// records; a body nested deeper is refused with a 400 before anything parses it, so
/// no stored object is deeper than 65 levels (the array around the records), well
/// inside what the warehouse ETL's and the services' own JSON readers accept
/// (serde_json stops at 128, which the service would otherwise have stored and
/// later failed to read back).
pub const MAX_JSON_DEPTH: usize = 64;

/// The decoded-size limit, shared with the layer stack's body limit.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

impl<S> FromRequest<S> for IngestBody
where
    S: Send + Sync,
    BodyLimit: axum::extract::FromRef<S>,
{
    type Rejection = IngestError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let BodyLimit(limit) = axum::extract::FromRef::from_ref(state);
        let headers = req.headers();
        let ndjson = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl")
            });
        let gzip = match headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
            None => false,
            Some(enc) => match enc.trim().to_ascii_lowercase().as_str() {
                "" | "identity" => false,
                "gzip" | "x-gzip" => true,
                _ => return Err(IngestError::UnsupportedEncoding),
            },
        };
        let raw = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(ref inner)
                if inner.to_string().contains("length limit") =>
            {
                IngestError::TooLarge(limit)
            }
            _ => IngestError::BadRequest("Could not read the request body".into()),
        })?;
        let bytes = if gzip { gunzip(&raw, limit)? } else { raw };
        check_depth(&bytes, ndjson, MAX_JSON_DEPTH)?;
        Ok(Self { bytes, ndjson })
    }
}

/// Decodes gzip, refusing output beyond `limit` bytes.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|_| IngestError::BadRequest("Body is not valid gzip".into()))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// Refuses JSON (or NDJSON, each line a document) nested deeper than `max` levels of
/// objects and arrays. One pass over the bytes, strings skipped; malformed JSON is
/// left to the parser.
pub fn check_depth(body: &[u8], ndjson: bool, max: usize) -> Result<(), IngestError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(IngestError::BadRequest(format!(
                        "JSON nested deeper than {max} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'\n' if ndjson => depth = 0,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("write");
        enc.finish().expect("finish")
    }

    #[test]
    fn gzip_round_trips_within_the_limit() {
        let body = br#"{"a":1}"#;
        assert_eq!(gunzip(&gzip(body), 1024).expect("ok").as_ref(), body);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "compresses well: {}", bomb.len());
        assert!(matches!(
            gunzip(&bomb, 1024 * 1024),
            Err(IngestError::TooLarge(_))
        ));
    }

    #[test]
    fn nesting_is_bounded_and_strings_do_not_count() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(deep(64).as_bytes(), false, 64).is_ok());
        assert!(matches!(
            check_depth(deep(65).as_bytes(), false, 64),
            Err(IngestError::BadRequest(m)) if m.contains("64")
        ));
        let quoted = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(check_depth(quoted.as_bytes(), false, 2).is_ok());
        // NDJSON lines are separate documents; in JSON a newline is only whitespace.
        let lines = format!("{}\n{}\n", deep(40), deep(40));
        assert!(check_depth(lines.as_bytes(), true, 64).is_ok());
        let pretty = format!("{}\n{}", "[".repeat(40), "[".repeat(40));
        assert!(check_depth(pretty.as_bytes(), false, 64).is_err());
    }

    #[test]
    fn garbage_is_not_gzip() {
        assert!(matches!(
            gunzip(b"plain text", 1024),
            Err(IngestError::BadRequest(_))
        ));
    }
}
