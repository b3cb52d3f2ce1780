//! Loading: defaults, then the optional TOML file, then the legacy environment
//! names, then the `APP_*` variables; validation; one-line errors naming the setting.

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::{ServerSideEncryption, Service, Settings};

/// Settings could not be loaded: one line naming the setting and what it accepts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// Legacy environment names and the setting each one feeds.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("PORT", "server.port"),
    ("DATABASE_URL", "database.url"),
    ("RDS_HOST", "database.host"),
    ("RDS_PORT", "database.port"),
    ("RDS_DBNAME", "database.name"),
    ("RDS_USER", "database.user"),
    ("RDS_PASSWORD", "database.password"),
    ("S3_RAW_BUCKET", "storage.bucket"),
    ("AWS_REGION", "storage.region"),
    ("AWS_ENDPOINT_URL", "storage.endpoint"),
    ("AWS_ENDPOINT_URL_S3", "storage.endpoint"),
];

const ENV_PREFIX: &str = "APP";

impl Settings {
    /// Loads the settings of `service` from the process environment.
    pub fn load(service: Service) -> Result<Self, SettingsError> {
        Self::from_env(service, &std::env::vars().collect())
    }

    /// Loads the settings from an explicit environment (tests use this instead of
    /// mutating the process environment).
    ///
    /// Every setting is `APP_<SECTION>__<KEY>`. An `APP_` variable with `__` in its
    /// name that names no setting (`APP_DATABSE__PORT`, `APP_SERVER__PORTT`), or a
    /// setting's name with `_` for `__` (`APP_LOG_LEVEL`), is refused like a bad
    /// value, naming the closest setting: a typo would otherwise leave the setting at
    /// its default without a word. Other `APP_` names without `__` cannot be settings
    /// and are left alone (another program's variable, or the service-link variables
    /// Kubernetes injects for a Service named `app`, such as `APP_SERVICE_HOST`).
    pub fn from_env(
        service: Service,
        env: &HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let app_env = setting_variables(service, env)?;
        let settings = build(service, env, app_env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The `APP_*` name of every setting (`APP_SERVER__PORT`, ...).
    pub fn setting_env_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(self) {
            for (section, fields) in sections {
                if let serde_json::Value::Object(fields) = fields {
                    for key in fields.keys() {
                        names.push(format!("{ENV_PREFIX}_{section}__{key}").to_uppercase());
                    }
                }
            }
        }
        names
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let db = &self.database;
        check(
            db.max_connections >= 1,
            "database.max_connections",
            "an integer >= 1",
        )?;
        check(
            db.min_connections <= db.max_connections,
            "database.min_connections",
            "an integer <= database.max_connections",
        )?;
        check(
            db.acquire_timeout_ms >= 1,
            "database.acquire_timeout_ms",
            "milliseconds >= 1",
        )?;
        check(
            db.ready_timeout_ms >= 1,
            "database.ready_timeout_ms",
            "milliseconds >= 1",
        )?;
        if let Some(url) = &db.url {
            let url = url.expose_secret();
            check(
                url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"),
                "database.url",
                "a postgres://user:password@host:port/dbname or sqlite:path URL",
            )?;
        }
        check(
            self.server.body_limit_bytes >= 1024,
            "server.body_limit_bytes",
            "bytes >= 1024",
        )?;
        check(
            self.server.max_concurrent_requests >= 1,
            "server.max_concurrent_requests",
            "an integer >= 1",
        )?;
        check(
            self.server.request_timeout_secs >= 1,
            "server.request_timeout_secs",
            "seconds >= 1",
        )?;
        check(
            self.server.header_read_timeout_secs >= 1,
            "server.header_read_timeout_secs",
            "seconds >= 1",
        )?;
        if self.storage.sse == ServerSideEncryption::AwsKms {
            check(
                self.storage
                    .kms_key_id
                    .as_deref()
                    .is_some_and(|k| !k.is_empty()),
                "storage.kms_key_id",
                "a KMS key id or ARN (required when storage.sse = aws:kms)",
            )?;
        }
        let ingest = &self.ingest;
        check(
            (1..=10_000).contains(&ingest.group_window_ms),
            "ingest.group_window_ms",
            "milliseconds between 1 and 10000",
        )?;
        check(
            ingest.group_max_records >= 1,
            "ingest.group_max_records",
            "an integer >= 1",
        )?;
        check(
            ingest.group_max_bytes >= 1024,
            "ingest.group_max_bytes",
            "bytes >= 1024",
        )?;
        check(
            ingest.max_pending_bytes >= ingest.group_max_bytes,
            "ingest.max_pending_bytes",
            "bytes >= ingest.group_max_bytes",
        )?;
        check(
            ingest.idempotency_ttl_secs >= 1,
            "ingest.idempotency_ttl_secs",
            "seconds >= 1",
        )?;
        Ok(())
    }
}

/// Layers the defaults, the optional TOML file, the legacy names and the `APP_*`
/// variables in `app_env`. Values stay text until a setting asks for a number or a
/// boolean (`try_parsing` off), so `RDS_DBNAME=007` stays `007`.
fn build(
    service: Service,
    env: &HashMap<String, String>,
    app_env: config::Map<String, String>,
) -> Result<Settings, SettingsError> {
    let mut builder = config::Config::builder()
        .set_default("server.port", i64::from(service.default_port()))
        .and_then(|b| {
            b.set_default(
                "server.body_limit_bytes",
                service.default_body_limit() as i64,
            )
        })
        .map_err(|e| SettingsError(e.to_string()))?;

    if let Some(path) = env.get("APP_CONFIG_FILE").filter(|p| !p.is_empty()) {
        builder = builder.add_source(config::File::new(path, config::FileFormat::Toml));
    }

    // Legacy names first (AWS_ENDPOINT_URL_S3 after AWS_ENDPOINT_URL, as the SDK
    // prefers the service-specific one), then the APP_* names on top.
    let mut legacy = config::Map::new();
    for (name, key) in LEGACY_ENV {
        if let Some(value) = env.get(*name).filter(|v| !v.is_empty()) {
            legacy.insert((*key).to_owned(), value.clone());
        }
    }
    builder = builder.add_source(
        config::Environment::default()
            .separator(".")
            .source(Some(legacy)),
    );
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .source(Some(app_env)),
    );
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(describe_error)
}

/// The `APP_*` variables that are settings; `Err` naming the first one that looks
/// like a setting but is none (see [`Settings::from_env`]).
pub(super) fn setting_variables(
    service: Service,
    env: &HashMap<String, String>,
) -> Result<config::Map<String, String>, SettingsError> {
    let mut candidates: Vec<(&String, &String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("APP_") && k.as_str() != "APP_CONFIG_FILE")
        .collect();
    if candidates.is_empty() {
        return Ok(config::Map::new());
    }
    candidates.sort();
    let known = build(service, &HashMap::new(), config::Map::new())?.setting_env_names();
    let mut settings = config::Map::new();
    for (name, value) in candidates {
        let upper = name.to_uppercase();
        if known.contains(&upper) {
            settings.insert(name.clone(), value.clone());
        } else if upper.contains("__") || known.iter().any(|k| k.replace("__", "_") == upper) {
            return Err(unknown_setting(name, &known));
        }
    }
    Ok(settings)
}

fn unknown_setting(name: &str, known: &[String]) -> SettingsError {
    let upper = name.to_uppercase();
    let closest = known
        .iter()
        .map(|k| (strsim::levenshtein(k, &upper), k))
        .min()
        .filter(|(distance, _)| *distance <= 4);
    let hint = match closest {
        Some((_, k)) => format!("; did you mean {k}?"),
        None => String::new(),
    };
    SettingsError(format!(
        "unknown setting {name}: no setting has this name{hint} (the README's configuration \
         reference lists every setting)"
    ))
}

fn check(ok: bool, key: &str, accepted: &str) -> Result<(), SettingsError> {
    if ok {
        Ok(())
    } else {
        Err(SettingsError(format!(
            "invalid setting {key} ({}): expected {accepted}",
            env_names(key)
        )))
    }
}

/// The environment names that feed `key`, for error messages.
fn env_names(key: &str) -> String {
    let mut names: Vec<String> = LEGACY_ENV
        .iter()
        .filter(|(_, k)| *k == key)
        .map(|(n, _)| (*n).to_string())
        .collect();
    let app = match key.split_once('.') {
        Some((section, rest)) => format!("{ENV_PREFIX}_{section}__{rest}").to_uppercase(),
        None => format!("{ENV_PREFIX}_{key}").to_uppercase(),
    };
    names.push(app);
    names.join(" or ")
}

fn describe_error(err: config::ConfigError) -> SettingsError {
    use config::ConfigError as E;
    match err {
        E::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => SettingsError(format!(
            "invalid setting {key} ({}): found {unexpected}, expected {expected}",
            env_names(&key)
        )),
        E::At {
            error,
            key: Some(key),
            ..
        } => SettingsError(format!(
            "invalid setting {key} ({}): {}",
            env_names(&key),
            one_line(&error.to_string())
        )),
        E::FileParse { uri, cause } => SettingsError(format!(
            "invalid config file {}: {}",
            uri.unwrap_or_default(),
            one_line(&cause.to_string())
        )),
        other => SettingsError(format!(
            "invalid settings: {}",
            one_line(&other.to_string())
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
