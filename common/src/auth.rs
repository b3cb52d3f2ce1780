//! API keys: `Authorization: Bearer <key>`. Keys are named entries with scopes
//! (`read` for the api-service, `ingest` for data-ingestion), stored only as SHA-256
//! hashes (a Secret-mounted JSON file, reloaded while running, or an environment
//! variable); a presented key is compared with every stored hash in constant time.
//! Several keys can be valid at once, so a key is rotated by adding the new one,
//! moving clients, then removing the old one, without a restart.
//!
//! Revocation fails closed: a reload applies every valid entry of the file and skips
//! (logs, counts) the invalid ones, so a typo next to an emergency removal cannot keep
//! the removed key alive; `[]` means no key is valid. Only a file that cannot be read
//! or is not a JSON array keeps the last good set. A removed key answers 401 and is
//! counted as `outcome="revoked"` under its former name.
//!
//! Missing or unknown key: 401 with `WWW-Authenticate`; a key without the route's
//! scope: 403; over the key's rate: 429 with `Retry-After`. Probes and `/metrics` are
//! never behind this layer. Each request's log line names the key (never the key
//! itself), and `auth_requests_total{key,outcome}` counts them.

mod keys;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;

use keys::KeyState;
pub use keys::{KeyEntry, KeySet, Scope, create_key_text, generate_key, hash_key};

use crate::config::AuthSettings;
use crate::http::error_response;

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

/// The key-file metrics.
#[derive(Clone, Debug, Default)]
struct KeyMetrics {
    requests: Family<AuthLabels, Counter>,
    loaded: Gauge,
    reload_errors: Counter,
    last_success: Gauge<f64, AtomicU64>,
}

impl KeyMetrics {
    fn register(registry: &mut Registry) -> Self {
        let me = Self::default();
        registry.register(
            "auth_requests",
            "Authenticated requests by key and outcome",
            me.requests.clone(),
        );
        registry.register(
            "auth_keys_loaded",
            "API keys in force (valid entries of the keys file)",
            me.loaded.clone(),
        );
        registry.register(
            "auth_keys_reload_errors",
            "Keys-file problems: each invalid entry skipped, and each load of a file that \
             could not be read or was not a JSON array (the last good keys stay)",
            me.reload_errors.clone(),
        );
        registry.register(
            "auth_keys_last_reload_success_timestamp_seconds",
            "When the keys were last read and applied (Unix time)",
            me.last_success.clone(),
        );
        me
    }

    fn applied(&self, keys: usize) {
        self.loaded.set(keys as i64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
    }
}

/// The authenticator shared by the request layer.
pub struct Auth {
    enabled: bool,
    source: Option<KeySource>,
    keys: RwLock<Arc<KeyState>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    rate_per_sec: f64,
    burst: f64,
    metrics: KeyMetrics,
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
    /// enabled explicitly (the Helm charts and manifests do both). On, it refuses to
    /// start without a key source, with a file it cannot read or that is not a JSON
    /// array, or with entries none of which is valid; `[]` starts deliberately
    /// denying every request. Off, it says so at startup.
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
        let metrics = KeyMetrics::register(registry);
        let keys = match &source {
            Some(source) => {
                let (keys, errors) = load(source)?;
                report_invalid(&metrics, &errors);
                if enabled && keys.is_empty() && !errors.is_empty() {
                    return Err(format!(
                        "no valid API key among {} entries: {}",
                        errors.len(),
                        errors.join("; ")
                    ));
                }
                keys
            }
            None if enabled => {
                return Err(
                    "authentication is on but no API keys are configured: set auth.keys_file \
                     (APP_AUTH__KEYS_FILE) or auth.keys (APP_AUTH__KEYS), or auth.enabled=false \
                     (APP_AUTH__ENABLED) to run without authentication"
                        .into(),
                );
            }
            None => KeySet::default(),
        };
        metrics.applied(keys.len());
        if !enabled {
            tracing::warn!(
                "API key authentication is OFF (no keys configured, or auth.enabled=false): every \
                 client may call every route; production sets APP_AUTH__ENABLED=true and mounts the keys"
            );
        } else if keys.is_empty() {
            tracing::warn!(
                "API key authentication on with an empty key list: every request to a protected \
                 route answers 401 until keys are added"
            );
        } else {
            tracing::info!(keys = keys.len(), "API key authentication on");
        }
        Ok(Arc::new(Self {
            enabled,
            source,
            keys: RwLock::new(Arc::new(KeyState::default().replaced_by(keys).0)),
            buckets: Mutex::new(HashMap::new()),
            rate_per_sec: settings.rate_limit_per_sec,
            burst: settings.rate_limit_burst,
            metrics,
        }))
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Re-reads the keys file and applies its valid entries (see the module docs);
    /// a file that cannot be read or is not a JSON array keeps the previous keys.
    pub fn reload(&self) {
        let Some(source) = &self.source else { return };
        let next = match load(source) {
            Ok((next, errors)) => {
                report_invalid(&self.metrics, &errors);
                next
            }
            Err(err) => {
                self.metrics.reload_errors.inc();
                tracing::error!(error = %err, "keys file unusable; keeping the previous keys");
                return;
            }
        };
        let count = next.len();
        let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let (state, removed) = current.replaced_by(next);
        let changed = count != current.valid.len() || !removed.is_empty();
        *current = Arc::new(state);
        drop(current);
        self.metrics.applied(count);
        for name in removed {
            tracing::warn!(key = %name, "API key removed from the keys file: it now answers 401");
        }
        if changed {
            tracing::info!(keys = count, "API keys reloaded");
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
        self.metrics
            .requests
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

/// Reads the keys: the valid entries and one message per invalid entry; `Err` when
/// the source cannot be read or is not a JSON array.
fn load(source: &KeySource) -> Result<(KeySet, Vec<String>), String> {
    match source {
        KeySource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read keys file {}: {e}", path.display()))?;
            KeySet::parse_entries(&text).map_err(|e| format!("keys file {}: {e}", path.display()))
        }
        KeySource::Inline(json) => {
            KeySet::parse_entries(json).map_err(|e| format!("auth.keys: {e}"))
        }
    }
}

/// Logs and counts the entries a load skipped.
fn report_invalid(metrics: &KeyMetrics, errors: &[String]) {
    for error in errors {
        metrics.reload_errors.inc();
        tracing::error!(error = %error, "invalid API key entry skipped");
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
    let Some(entry) = keys.valid.find(presented) else {
        match keys.revoked_name(presented) {
            Some(name) => {
                tracing::Span::current().record("auth.key", name);
                auth.count(name, "revoked");
            }
            None => auth.count("", "invalid"),
        }
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
    use super::keys::tests::keys_json;
    use super::*;

    fn auth_with(keys: &str) -> (Arc<Auth>, Registry) {
        let mut registry = Registry::default();
        let settings = AuthSettings {
            enabled: Some(true),
            keys: Some(keys.to_owned().into()),
            rate_limit_per_sec: 1.0,
            rate_limit_burst: 2.0,
            ..AuthSettings::default()
        };
        let auth = Auth::from_settings(&settings, &mut registry).expect("auth");
        (auth, registry)
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let (auth, _registry) = auth_with(&keys_json(&[("k", "read", "secret")]));
        let keys = Arc::clone(&auth.keys.read().expect("lock"));
        let entry = keys.valid.find("secret").expect("key");
        assert!(auth.take(entry).is_ok());
        assert!(auth.take(entry).is_ok());
        assert_eq!(auth.take(entry), Err(1));
    }

    #[test]
    fn startup_refuses_a_key_list_with_no_valid_entry_but_allows_an_empty_one() {
        let mut registry = Registry::default();
        let broken = AuthSettings {
            enabled: Some(true),
            keys: Some(
                r#"[{"name":"a","scopes":["read"],"sha256":"nothex"}]"#
                    .to_owned()
                    .into(),
            ),
            ..AuthSettings::default()
        };
        let err = Auth::from_settings(&broken, &mut registry).expect_err("refused");
        assert!(
            err.contains("no valid API key") && err.contains("64 hex"),
            "{err}"
        );

        let (deny_all, _registry) = auth_with("[]");
        assert!(deny_all.enabled());
        assert!(deny_all.keys.read().expect("lock").valid.is_empty());
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
