//! API keys: `Authorization: Bearer <key>`. Keys are named entries with scopes
//! (`read` for the api-service, `ingest` for data-ingestion), stored only as SHA-256
//! hashes (a Secret-mounted JSON file, reloaded while running, or an environment
//! variable); a presented key is compared with every stored hash in constant time.
//! Several keys can be valid at once, so a key is rotated by adding the new one,
//! moving clients, then removing the old one, without a restart.
//!
//! Missing or unknown key: 401 with `WWW-Authenticate`; a key without the route's
//! scope: 403; over the key's rate: 429 with `Retry-After`. Probes and `/metrics` are
//! never behind this layer. Each request's log line names the key (never the key
//! itself), and `auth_requests_total{key,outcome}` counts them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::http::error_response;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The api-service's read routes.
    Read,
    /// data-ingestion's routes.
    Ingest,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            other => Err(format!("unknown scope {other:?}: expected read or ingest")),
        }
    }
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
        }
    }
}

/// One stored key, as written in the keys file or variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds the key (`dashboard`, `robots-fac-001`); appears in logs and metrics.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Requests per second for this key (default: the configured rate).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
    /// Burst for this key (default: the configured burst).
    #[serde(default)]
    pub burst: Option<f64>,
}

struct StoredKey {
    entry: KeyEntry,
    hash: [u8; 32],
}

/// The valid keys.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<StoredKey>,
}

impl KeySet {
    /// Parses a JSON array of [`KeyEntry`].
    pub fn parse(json: &str) -> Result<Self, String> {
        let entries: Vec<KeyEntry> = serde_json::from_str(json)
            .map_err(|e| format!("expected a JSON array of {{name, scopes, sha256}}: {e}"))?;
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let hash = decode_hex32(&entry.sha256)
                .ok_or_else(|| format!("key {:?}: sha256 must be 64 hex characters", entry.name))?;
            if entry.name.is_empty()
                || entry.name.len() > 64
                || !entry.name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "key {:?}: name must be 1 to 64 visible ASCII characters",
                    entry.name
                ));
            }
            if entry.scopes.is_empty() {
                return Err(format!(
                    "key {:?}: needs at least one scope (read, ingest)",
                    entry.name
                ));
            }
            keys.push(StoredKey { entry, hash });
        }
        Ok(Self { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The entry whose hash matches `presented`. Every stored hash is compared, in
    /// constant time, so timing tells nothing about which keys exist.
    fn find(&self, presented: &str) -> Option<&KeyEntry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&digest, &key.hash) {
                found = Some(&key.entry);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a key: what is stored.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key (`mrk_` + 43 characters of base64url: 256 bits).
pub fn generate_key() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut out = String::from("mrk_");
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// The text `create-key` prints: the key once, and the entry to store.
pub fn create_key_text(name: &str, scopes: &[Scope]) -> Result<String, String> {
    let key = generate_key();
    let entry = serde_json::json!({
        "name": name,
        "scopes": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "sha256": hash_key(&key),
    });
    KeySet::parse(&format!("[{entry}]"))?;
    Ok(format!(
        "API key for {name:?} (shown once; give it to the client, store it nowhere else):\n\n  {key}\n\n\
         Add this entry to the keys file (a JSON array; the Helm chart's auth Secret) and keep the old \
         entries until their clients have moved:\n\n  {entry}\n"
    ))
}

/// Labels of `auth_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    key: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    File(PathBuf),
    Inline(String),
}

/// The authenticator shared by the request layer.
pub struct Auth {
    enabled: bool,
    source: Option<KeySource>,
    keys: RwLock<Arc<KeySet>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    rate_per_sec: f64,
    burst: f64,
    requests: Family<AuthLabels, Counter>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the keys. Authentication is on when keys are configured or it is
    /// enabled explicitly (the Helm charts and manifests do both); on without keys
    /// the service refuses to start; off, it says so at startup.
    pub fn from_settings(
        settings: &AuthSettings,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, String> {
        let configured = settings.keys_file.is_some() || settings.keys.is_some();
        let enabled = settings.enabled.unwrap_or(configured);
        let source = match (&settings.keys_file, &settings.keys) {
            (Some(path), _) => Some(KeySource::File(path.clone())),
            (None, Some(inline)) => Some(KeySource::Inline(inline.expose_secret().to_owned())),
            (None, None) => None,
        };
        let keys = match &source {
            Some(source) => load(source)?,
            None => KeySet::default(),
        };
        if enabled && keys.is_empty() {
            return Err(
                "authentication is on but no API keys are configured: set auth.keys_file \
                 (APP_AUTH__KEYS_FILE) or auth.keys (APP_AUTH__KEYS), or auth.enabled=false \
                 (APP_AUTH__ENABLED) to run without authentication"
                    .into(),
            );
        }
        let requests = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_requests",
            "Authenticated requests by key and outcome",
            requests.clone(),
        );
        if enabled {
            tracing::info!(keys = keys.len(), "API key authentication on");
        } else {
            tracing::warn!(
                "API key authentication is OFF (no keys configured, or auth.enabled=false): every \
                 client may call every route; production sets APP_AUTH__ENABLED=true and mounts the keys"
            );
        }
        Ok(Arc::new(Self {
            enabled,
            source,
            keys: RwLock::new(Arc::new(keys)),
            buckets: Mutex::new(HashMap::new()),
            rate_per_sec: settings.rate_limit_per_sec,
            burst: settings.rate_limit_burst,
            requests,
        }))
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Re-reads the keys file; a broken file keeps the previous keys.
    pub fn reload(&self) {
        let Some(source) = &self.source else { return };
        match load(source) {
            Ok(keys) if self.enabled && keys.is_empty() => {
                tracing::error!("keys file is now empty; keeping the previous keys");
            }
            Ok(keys) => {
                let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
                if current.len() != keys.len() {
                    tracing::info!(keys = keys.len(), "API keys reloaded");
                }
                *current = Arc::new(keys);
            }
            Err(err) => {
                tracing::error!(error = %err, "keys file unreadable; keeping the previous keys")
            }
        }
    }

    /// Loads the keys, registers the metrics, starts the file reloader, and returns
    /// the layer state for routes needing `scope`.
    pub fn start(
        settings: &AuthSettings,
        registry: &mut Registry,
        scope: Scope,
    ) -> anyhow::Result<RequireScope> {
        let auth = Self::from_settings(settings, registry).map_err(anyhow::Error::msg)?;
        auth.spawn_reloader(Duration::from_secs(settings.reload_secs));
        Ok(RequireScope { auth, scope })
    }

    /// Reloads the keys file every `every` until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        if !matches!(self.source, Some(KeySource::File(_))) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.reload();
            }
        });
    }

    fn count(&self, key: &str, outcome: &'static str) {
        self.requests
            .get_or_create(&AuthLabels {
                key: key.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Takes a token from the key's bucket; `Err(seconds)` to wait when empty.
    fn take(&self, entry: &KeyEntry) -> Result<(), u64> {
        let rate = entry.rate_per_sec.unwrap_or(self.rate_per_sec);
        let burst = entry.burst.unwrap_or(self.burst).max(1.0);
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(entry.name.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

fn load(source: &KeySource) -> Result<KeySet, String> {
    match source {
        KeySource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
            KeySet::parse(&text).map_err(|e| format!("keys file {}: {e}", path.display()))
        }
        KeySource::Inline(json) => KeySet::parse(json).map_err(|e| format!("auth.keys: {e}")),
    }
}

/// The name of the key that authenticated the request (in request extensions).
#[derive(Debug, Clone)]
pub struct KeyName(pub String);

/// State of the request layer: the authenticator and the scope its routes need.
#[derive(Clone, Debug)]
pub struct RequireScope {
    /// The authenticator.
    pub auth: Arc<Auth>,
    /// The scope every route behind the layer needs.
    pub scope: Scope,
}

fn unauthorized(message: &str, error: Option<&str>) -> Response {
    let mut res = error_response(StatusCode::UNAUTHORIZED, message);
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"medrobotics\", error=\"{e}\""),
        None => "Bearer realm=\"medrobotics\"".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    res
}

impl RequireScope {
    /// Puts every route of `router` behind this check.
    pub fn protect<S: Clone + Send + Sync + 'static>(
        self,
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(self, require_scope))
    }
}

/// Middleware: checks the bearer key, its scope and its rate.
pub async fn require_scope(
    State(rule): State<RequireScope>,
    mut req: Request,
    next: Next,
) -> Response {
    let auth = &rule.auth;
    if !auth.enabled {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(presented) = presented else {
        auth.count("", "missing");
        return unauthorized("Missing API key: send Authorization: Bearer <key>", None);
    };
    let keys = Arc::clone(&auth.keys.read().unwrap_or_else(|p| p.into_inner()));
    let Some(entry) = keys.find(presented) else {
        auth.count("", "invalid");
        return unauthorized("Invalid API key", Some("invalid_token"));
    };
    tracing::Span::current().record("auth.key", entry.name.as_str());
    if !entry.scopes.contains(&rule.scope) {
        auth.count(&entry.name, "forbidden");
        return error_response(
            StatusCode::FORBIDDEN,
            &format!(
                "This API key lacks the {} scope this route needs",
                rule.scope.as_str()
            ),
        );
    }
    if let Err(wait) = auth.take(entry) {
        auth.count(&entry.name, "rate_limited");
        let mut res = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded for this API key",
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return res;
    }
    auth.count(&entry.name, "allowed");
    req.extensions_mut().insert(KeyName(entry.name.clone()));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_json(entries: &[(&str, &str, &str)]) -> String {
        let items: Vec<String> = entries
            .iter()
            .map(|(name, scope, key)| {
                format!(
                    r#"{{"name":"{name}","scopes":["{scope}"],"sha256":"{}"}}"#,
                    hash_key(key)
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn keys_are_found_by_hash_only() {
        let set = KeySet::parse(&keys_json(&[
            ("dash", "read", "k1"),
            ("robots", "ingest", "k2"),
        ]))
        .expect("parses");
        assert_eq!(set.find("k1").map(|e| e.name.as_str()), Some("dash"));
        assert_eq!(set.find("k2").map(|e| e.name.as_str()), Some("robots"));
        assert!(set.find("k3").is_none());
        assert!(set.find("").is_none());
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for (json, reason) in [
            ("{}", "JSON array"),
            (
                r#"[{"name":"a","scopes":["read"],"sha256":"abc"}]"#,
                "64 hex",
            ),
            (r#"[{"name":"a","scopes":[],"sha256":"00"}]"#, "64 hex"),
            (
                r#"[{"name":"a","scopes":["write"],"sha256":"00"}]"#,
                "JSON array",
            ),
            (
                r#"[{"name":"","scopes":["read"],"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]"#,
                "name",
            ),
            (
                r#"[{"name":"a","scopes":[],"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]"#,
                "scope",
            ),
        ] {
            let err = KeySet::parse(json).err().unwrap_or_default();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn generated_keys_are_long_random_and_hash_to_64_hex() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("mrk_") && a.len() == 4 + 43, "{a}");
        assert_eq!(hash_key(&a).len(), 64);
        let text = create_key_text("dashboard", &[Scope::Read]).expect("text");
        assert!(text.contains("\"scopes\":[\"read\"]"), "{text}");
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let mut registry = Registry::default();
        let settings = AuthSettings {
            enabled: Some(true),
            keys: Some(keys_json(&[("k", "read", "secret")]).into()),
            rate_limit_per_sec: 1.0,
            rate_limit_burst: 2.0,
            ..AuthSettings::default()
        };
        let auth = Auth::from_settings(&settings, &mut registry).expect("auth");
        let keys = Arc::clone(&auth.keys.read().expect("lock"));
        let entry = keys.find("secret").expect("key");
        assert!(auth.take(entry).is_ok());
        assert!(auth.take(entry).is_ok());
        assert_eq!(auth.take(entry), Err(1));
    }

    #[test]
    fn on_with_keys_or_when_enabled_and_enabled_without_keys_refuses_to_start() {
        let mut registry = Registry::default();
        let on = AuthSettings {
            enabled: Some(true),
            ..AuthSettings::default()
        };
        let err = Auth::from_settings(&on, &mut registry).expect_err("no keys");
        assert!(err.contains("APP_AUTH__KEYS_FILE"), "{err}");

        let mut registry = Registry::default();
        let keyed = AuthSettings {
            keys: Some(keys_json(&[("k", "read", "s")]).into()),
            ..AuthSettings::default()
        };
        assert!(
            Auth::from_settings(&keyed, &mut registry)
                .expect("keys")
                .enabled()
        );

        let mut registry = Registry::default();
        let off = Auth::from_settings(&AuthSettings::default(), &mut registry).expect("off");
        assert!(!off.enabled());
    }
}
