//! The key space: the header's validation, the caller's namespace and the request
//! fingerprint.

use sha2::{Digest, Sha256};

use crate::error::IngestError;

/// Validates the header value: 1 to 255 visible ASCII characters.
pub fn parse_key(value: &axum::http::HeaderValue) -> Result<String, IngestError> {
    let text = value.to_str().unwrap_or("");
    if !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(IngestError::BadRequest(
            "Invalid Idempotency-Key: expected 1 to 255 visible ASCII characters".into(),
        ))
    }
}

/// The key as stored: the client's key in the caller's namespace. Without a caller
/// (authentication off) every client shares one namespace, the key as sent. With
/// one, `"<key name> <key>"`: names and keys are visible ASCII, so the space makes
/// the pair unambiguous and never equal to an unscoped key. A pair longer than the
/// column (255) is stored as its SHA-256, still prefixed with the caller's name
/// hashed in, so it stays unique per caller.
pub fn caller_key(caller: Option<&str>, key: &str) -> String {
    let Some(caller) = caller else {
        return key.to_owned();
    };
    let scoped = format!("{caller} {key}");
    if scoped.len() <= 255 {
        return scoped;
    }
    let mut h = Sha256::new();
    h.update(caller.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!(" sha256 {hex}")
}

/// A fingerprint of the request, so a key reused for a different body is refused.
pub fn request_hash(scope: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        use axum::http::HeaderValue;
        assert!(parse_key(&HeaderValue::from_static("robot-7:seq-42")).is_ok());
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        assert!(parse_key(&HeaderValue::from_static("has space")).is_err());
        let long = "k".repeat(256);
        assert!(parse_key(&HeaderValue::from_str(&long).expect("header")).is_err());
    }

    #[test]
    fn hashes_depend_on_scope_and_body() {
        let a = request_hash("telemetry", b"{}");
        assert_eq!(a.len(), 64);
        assert_eq!(a, request_hash("telemetry", b"{}"));
        assert_ne!(a, request_hash("batch", b"{}"));
        assert_ne!(a, request_hash("telemetry", b"{ }"));
    }

    #[test]
    fn keys_are_scoped_by_caller() {
        assert_eq!(caller_key(None, "robot-7:seq-42"), "robot-7:seq-42");
        let a = caller_key(Some("fac-001"), "robot-7:seq-42");
        let b = caller_key(Some("fac-002"), "robot-7:seq-42");
        assert_eq!(a, "fac-001 robot-7:seq-42");
        assert_ne!(a, b);
        // Names and keys have no spaces, so no pair equals another or an unscoped key.
        assert_ne!(caller_key(Some("a"), "b:c"), caller_key(Some("a:b"), "c"));
        let long = "k".repeat(255);
        let (x, y) = (
            caller_key(Some("fac-001"), &long),
            caller_key(Some("fac-002"), &long),
        );
        assert!(x.len() <= 255 && y.len() <= 255, "fits the column");
        assert_ne!(x, y);
        assert_ne!(x, caller_key(None, &long));
    }
}
