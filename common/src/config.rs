//! Typed settings, layered: built-in defaults, then an optional TOML file
//! (`APP_CONFIG_FILE`), then the environment.
//!
//! Environment names: every setting is `APP_<SECTION>__<KEY>` (for example
//! `APP_DATABASE__MAX_CONNECTIONS`). The names the Flask services and the existing
//! ConfigMap/Secret use keep working and are applied first, so an explicit `APP_*`
//! value wins over them: `PORT`, `DATABASE_URL`, `RDS_HOST`, `RDS_PORT`,
//! `RDS_DBNAME`, `RDS_USER`, `RDS_PASSWORD`, `S3_RAW_BUCKET`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
//!
//! Text settings stay text: a database name `007` or a digit-only password is used as
//! written (numbers and booleans are converted only where a setting is one). An
//! `APP_*` variable that names no setting stops startup like a bad value does (see
//! [`Settings::from_env`]).
//!
//! Nothing here writes a file. Secrets are [`SecretString`], so `Debug` (what
//! `print-config` prints: every setting) never shows them.

mod load;

pub use load::SettingsError;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Which service is loading its settings: decides the defaults that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The read API (port 5000).
    Api,
    /// The ingestion service (port 8080).
    Ingestion,
}

impl Service {
    /// The service name used in logs, health bodies and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::Api => "api-service",
            Service::Ingestion => "data-ingestion",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Service::Api => 5000,
            Service::Ingestion => 8080,
        }
    }

    fn default_body_limit(self) -> usize {
        match self {
            // The read API takes no bodies; a small limit is a free defence.
            Service::Api => 64 * 1024,
            Service::Ingestion => 8 * 1024 * 1024,
        }
    }
}

/// All settings of one process. `Serialize` (secrets redacted) lists the setting
/// names, so an unknown `APP_*` variable can be told apart from a setting.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener, timeouts and shutdown.
    pub server: ServerSettings,
    /// PostgreSQL (production) or the embedded SQLite file.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// S3 bucket (production) or the embedded local directory.
    #[serde(default)]
    pub storage: StorageSettings,
    /// Log format and level.
    #[serde(default)]
    pub log: LogSettings,
    /// Telemetry grouping, back-pressure and idempotency (data-ingestion).
    #[serde(default)]
    pub ingest: IngestSettings,
    /// API keys.
    #[serde(default)]
    pub auth: AuthSettings,
}

/// API-key authentication (see `common::auth`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// On or off. Unset: on when keys are configured. On without keys refuses to
    /// start; off is announced at startup. The charts set it on.
    pub enabled: Option<bool>,
    /// Keys as a JSON array of `{name, scopes, sha256}` (secret).
    #[serde(serialize_with = "redacted")]
    pub keys: Option<SecretString>,
    /// A file holding that JSON array (a mounted Secret); re-read while running.
    pub keys_file: Option<PathBuf>,
    /// How often the keys file is re-read.
    pub reload_secs: u64,
    /// Requests per second per key (per replica); 0 turns rate limiting off.
    pub rate_limit_per_sec: f64,
    /// Requests a key may send at once above its rate.
    pub rate_limit_burst: f64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: None,
            keys: None,
            keys_file: None,
            reload_secs: 10,
            rate_limit_per_sec: 100.0,
            rate_limit_burst: 200.0,
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("enabled", &self.enabled)
            .field("keys", &self.keys.as_ref().map(|_| "[REDACTED]"))
            .field("keys_file", &self.keys_file)
            .field("reload_secs", &self.reload_secs)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .finish()
    }
}

/// HTTP listener, timeouts and shutdown.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind (`0.0.0.0` in a container).
    #[serde(default = "default_host")]
    pub host: String,
    /// Port to bind; `PORT` sets it too. 0 picks a free port (tests).
    pub port: u16,
    /// Seconds to keep serving after SIGTERM with readiness off, so the load balancer
    /// deregisters the pod before connections are refused.
    #[serde(default = "default_drain_delay")]
    pub drain_delay_secs: u64,
    /// Upper bound, after the drain delay, for in-flight requests (and pending
    /// ingestion writes) to finish before the process exits anyway.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Whole-request timeout; a request running longer answers 503.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// A connection that has not delivered a complete request head within this many
    /// seconds (a slow client, or an idle keep-alive connection) is closed. Longer
    /// than the ALB's 60 s idle timeout, so the pod never closes a keep-alive
    /// connection the ALB is about to reuse.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Largest request body accepted (bytes, after decompression); larger answers 413.
    pub body_limit_bytes: usize,
    /// Requests handled at once; beyond it new requests get a fast 503.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrent_requests: usize,
}

fn default_host() -> String {
    "0.0.0.0".into()
}
fn default_drain_delay() -> u64 {
    5
}
fn default_shutdown_timeout() -> u64 {
    20
}
fn default_request_timeout() -> u64 {
    30
}
fn default_header_read_timeout() -> u64 {
    65
}
fn default_max_concurrency() -> usize {
    1024
}

impl ServerSettings {
    /// Drain delay as a duration.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }
    /// Shutdown timeout as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
    /// Request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
    /// Header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
}

/// Settings that take one of a few words: (de)serialized as text so a wrong word
/// is reported with the accepted ones.
macro_rules! word_setting {
    ($ty:ident { $($variant:ident => $word:literal),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = String::deserialize(d)?;
                match word.as_str() {
                    $($word => Ok($ty::$variant),)*
                    other => Err(serde::de::Error::custom(format!(
                        concat!("found {:?}, expected one of:" $(, " ", $word)*),
                        other
                    ))),
                }
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match self {
                    $($ty::$variant => $word,)*
                })
            }
        }
    };
}

word_setting!(SslMode { Disable => "disable", Prefer => "prefer", Require => "require", VerifyCa => "verify-ca", VerifyFull => "verify-full" });
word_setting!(ServerSideEncryption { Aes256 => "AES256", AwsKms => "aws:kms" });
word_setting!(LogFormat { Auto => "auto", Json => "json", Text => "text" });

/// TLS mode for PostgreSQL connections (libpq names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

/// Database settings. With neither `url` nor `host` set the service uses the
/// embedded SQLite file at `sqlite_path`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Full connection URL (`postgres://...` or `sqlite:...`); wins over the parts.
    #[serde(serialize_with = "redacted")]
    pub url: Option<SecretString>,
    /// PostgreSQL host (`RDS_HOST`).
    pub host: Option<String>,
    /// PostgreSQL port (`RDS_PORT`).
    pub port: u16,
    /// Database name (`RDS_DBNAME`).
    pub name: String,
    /// User name (`RDS_USER`).
    pub user: String,
    /// Password (`RDS_PASSWORD`).
    #[serde(serialize_with = "redacted")]
    pub password: Option<SecretString>,
    /// TLS mode for PostgreSQL; unset keeps the URL's `sslmode` (default `prefer`).
    pub ssl_mode: Option<SslMode>,
    /// CA bundle for `verify-ca` / `verify-full` (the RDS CA bundle).
    pub ssl_root_cert: Option<PathBuf>,
    /// Embedded database file, created on first start.
    pub sqlite_path: PathBuf,
    /// Pool size per process.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// Server-side statement timeout (PostgreSQL `statement_timeout`).
    pub statement_timeout_ms: u64,
    /// Idle connections are closed after this long.
    pub idle_timeout_secs: u64,
    /// Connections are recycled after this long (RDS fail-over, credential rotation).
    pub max_lifetime_secs: u64,
    /// How long `/ready` waits for the database.
    pub ready_timeout_ms: u64,
    /// Apply migrations at startup. Unset: on for the embedded SQLite database,
    /// off for PostgreSQL (the Helm chart runs `api-service migrate` as a Job).
    pub migrate_on_start: Option<bool>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            host: None,
            port: 5432,
            name: "medrobotics".into(),
            user: "dbadmin".into(),
            password: None,
            ssl_mode: None,
            ssl_root_cert: None,
            sqlite_path: PathBuf::from("data/medrobotics.db"),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_ms: 3000,
            statement_timeout_ms: 5000,
            idle_timeout_secs: 300,
            max_lifetime_secs: 1800,
            ready_timeout_ms: 1000,
            migrate_on_start: None,
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_ref().map(|_| "[REDACTED]"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("sqlite_path", &self.sqlite_path)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .field("ready_timeout_ms", &self.ready_timeout_ms)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// Where the database lives, decided from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A PostgreSQL server.
    Postgres,
    /// The embedded SQLite file (or a `sqlite:` URL).
    Sqlite,
}

impl DatabaseSettings {
    /// PostgreSQL when a URL with a postgres scheme or a host is configured.
    pub fn target(&self) -> DatabaseTarget {
        match &self.url {
            Some(url) if url.expose_secret().starts_with("sqlite:") => DatabaseTarget::Sqlite,
            Some(_) => DatabaseTarget::Postgres,
            None if self.host.is_some() => DatabaseTarget::Postgres,
            None => DatabaseTarget::Sqlite,
        }
    }

    /// Whether migrations run at startup.
    pub fn migrate_on_start(&self) -> bool {
        self.migrate_on_start
            .unwrap_or(self.target() == DatabaseTarget::Sqlite)
    }

    /// Acquire timeout as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

/// Server-side encryption requested on every PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerSideEncryption {
    /// SSE-S3.
    #[default]
    Aes256,
    /// SSE-KMS with `kms_key_id` (or the bucket's default key).
    AwsKms,
}

/// Object store settings. With no bucket configured the service writes to the local
/// directory `local_dir` with the same key layout.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Raw bucket (`S3_RAW_BUCKET`).
    pub bucket: Option<String>,
    /// Embedded store directory when no bucket is set.
    pub local_dir: PathBuf,
    /// AWS region (`AWS_REGION`); the SDK's chain decides when unset.
    pub region: Option<String>,
    /// Custom endpoint for S3-compatible servers (`AWS_ENDPOINT_URL[_S3]`).
    pub endpoint: Option<String>,
    /// Path-style addressing; defaults to on when a custom endpoint is set.
    pub force_path_style: Option<bool>,
    /// `AES256` or `aws:kms`.
    pub sse: ServerSideEncryption,
    /// KMS key for `aws:kms`.
    pub kms_key_id: Option<String>,
    /// TCP connect timeout to the object store.
    pub connect_timeout_ms: u64,
    /// Whole-operation timeout (including retries) for one PUT/GET.
    pub operation_timeout_ms: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            bucket: None,
            local_dir: PathBuf::from("data/bucket"),
            region: None,
            endpoint: None,
            force_path_style: None,
            sse: ServerSideEncryption::default(),
            kms_key_id: None,
            connect_timeout_ms: 3000,
            operation_timeout_ms: 10_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// JSON lines unless stdout is a terminal.
    #[default]
    Auto,
    /// One JSON object a line.
    Json,
    /// Human-readable text.
    Text,
}

/// Logging settings; `RUST_LOG` overrides `level`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `auto`, `json` or `text`.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `info,sqlx=warn`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// Telemetry ingestion settings (data-ingestion only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// How long the first request of a group waits for others to join it.
    pub group_window_ms: u64,
    /// A group is written as soon as it holds this many records.
    pub group_max_records: usize,
    /// A group is written as soon as its body reaches this size.
    pub group_max_bytes: usize,
    /// Memory bound for records waiting to be written; past it requests get 503.
    pub max_pending_bytes: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_secs: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            group_window_ms: 50,
            group_max_records: 10_000,
            group_max_bytes: 4 * 1024 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            idempotency_ttl_secs: 24 * 3600,
        }
    }
}

/// Serializes a secret as `[REDACTED]` (or nothing when unset).
fn redacted<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("[REDACTED]"),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
