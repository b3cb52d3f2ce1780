//! Loading settings from defaults, a TOML file and the environment.

use std::collections::HashMap;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_use_the_embedded_database_and_service_port() {
    let api = Settings::from_env(Service::Api, &env(&[])).expect("defaults load");
    assert_eq!(api.server.port, 5000);
    assert_eq!(api.database.target(), DatabaseTarget::Sqlite);
    assert!(api.database.migrate_on_start());
    assert_eq!(api.database.acquire_timeout_ms, 3000);
    let ingest = Settings::from_env(Service::Ingestion, &env(&[])).expect("defaults load");
    assert_eq!(ingest.server.port, 8080);
    assert!(ingest.server.body_limit_bytes > api.server.body_limit_bytes);
}

#[test]
fn legacy_names_configure_postgres_and_the_bucket() {
    let s = Settings::from_env(
        Service::Api,
        &env(&[
            ("PORT", "5050"),
            ("RDS_HOST", "db.internal"),
            ("RDS_PORT", "6543"),
            ("RDS_DBNAME", "prod"),
            ("RDS_USER", "svc"),
            ("RDS_PASSWORD", "hunter2"),
            ("S3_RAW_BUCKET", "raw-bucket"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.server.port, 5050);
    assert_eq!(s.database.target(), DatabaseTarget::Postgres);
    assert_eq!(s.database.host.as_deref(), Some("db.internal"));
    assert_eq!(s.database.port, 6543);
    assert_eq!(s.database.name, "prod");
    assert_eq!(s.database.user, "svc");
    assert_eq!(
        s.database
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_string()),
        Some("hunter2".into())
    );
    assert!(!s.database.migrate_on_start());
    assert_eq!(s.storage.bucket.as_deref(), Some("raw-bucket"));
}

#[test]
fn app_names_win_over_legacy_names() {
    let s = Settings::from_env(
        Service::Api,
        &env(&[
            ("PORT", "5050"),
            ("APP_SERVER__PORT", "6000"),
            ("APP_DATABASE__MAX_CONNECTIONS", "4"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.server.port, 6000);
    assert_eq!(s.database.max_connections, 4);
}

#[test]
fn debug_output_never_shows_secrets() {
    let s = Settings::from_env(
        Service::Api,
        &env(&[
            ("RDS_PASSWORD", "s3cr3t-pw"),
            ("DATABASE_URL", "postgres://u:url-pw-9@h/db"),
        ]),
    )
    .expect("loads");
    let shown = format!("{s:?}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    assert!(!shown.contains("url-pw-9"), "{shown}");
    assert!(shown.contains("REDACTED"));
}

#[test]
fn a_bad_value_names_the_setting_and_accepted_form() {
    let err = Settings::from_env(Service::Api, &env(&[("PORT", "abc")])).expect_err("rejects");
    let msg = err.to_string();
    assert!(msg.contains("server.port") && msg.contains("PORT"), "{msg}");
    assert!(!msg.contains('\n'));

    let err =
        Settings::from_env(Service::Api, &env(&[("APP_LOG__FORMAT", "xml")])).expect_err("rejects");
    assert!(err.to_string().contains("APP_LOG__FORMAT"), "{err}");
    assert!(err.to_string().contains("json"), "{err}");

    let err = Settings::from_env(
        Service::Api,
        &env(&[("APP_DATABASE__MAX_CONNECTIONS", "0")]),
    )
    .expect_err("rejects");
    assert!(
        err.to_string().contains("APP_DATABASE__MAX_CONNECTIONS"),
        "{err}"
    );

    let err = Settings::from_env(Service::Api, &env(&[("DATABASE_URL", "mysql://x")]))
        .expect_err("rejects");
    assert!(err.to_string().contains("database.url"), "{err}");
}

#[test]
fn a_toml_file_sits_between_defaults_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.toml");
    std::fs::write(
        &path,
        "[database]\nmax_connections = 7\nstatement_timeout_ms = 900\n[log]\nformat = \"json\"\n",
    )
    .expect("write");
    let s = Settings::from_env(
        Service::Api,
        &env(&[
            ("APP_CONFIG_FILE", path.to_str().expect("utf-8")),
            ("APP_DATABASE__MAX_CONNECTIONS", "3"),
        ]),
    )
    .expect("loads");
    assert_eq!(
        s.database.max_connections, 3,
        "environment wins over the file"
    );
    assert_eq!(
        s.database.statement_timeout_ms, 900,
        "file wins over defaults"
    );
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn kms_encryption_requires_a_key() {
    let err = Settings::from_env(Service::Ingestion, &env(&[("APP_STORAGE__SSE", "aws:kms")]))
        .expect_err("rejects");
    assert!(err.to_string().contains("kms_key_id"), "{err}");
    let s = Settings::from_env(
        Service::Ingestion,
        &env(&[
            ("APP_STORAGE__SSE", "aws:kms"),
            ("APP_STORAGE__KMS_KEY_ID", "alias/raw"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.storage.sse, ServerSideEncryption::AwsKms);
}

/// Found by the security review: `try_parsing` turned text that looks like a number
/// into a number and back (`RDS_DBNAME=007` became `7`, `RDS_USER=1e3` became `1000`,
/// `S3_RAW_BUCKET=00123` became `123`), and a digit-only password the same way. Every
/// text setting, through its `APP_*` name and its legacy name, keeps what was written.
#[test]
fn text_settings_stay_text() {
    for v in [
        "007",
        "1e3",
        "00123",
        "0x1F",
        "1.50",
        "+5",
        "-0",
        "12345678901234567890",
    ] {
        let s = Settings::from_env(
            Service::Ingestion,
            &env(&[
                ("APP_SERVER__HOST", v),
                ("APP_DATABASE__HOST", v),
                ("APP_DATABASE__NAME", v),
                ("APP_DATABASE__USER", v),
                ("APP_DATABASE__PASSWORD", v),
                ("APP_DATABASE__SSL_ROOT_CERT", v),
                ("APP_DATABASE__SQLITE_PATH", v),
                ("APP_STORAGE__BUCKET", v),
                ("APP_STORAGE__LOCAL_DIR", v),
                ("APP_STORAGE__REGION", v),
                ("APP_STORAGE__ENDPOINT", v),
                ("APP_STORAGE__KMS_KEY_ID", v),
                ("APP_LOG__LEVEL", v),
                ("APP_AUTH__KEYS", v),
                ("APP_AUTH__KEYS_FILE", v),
            ]),
        )
        .unwrap_or_else(|e| panic!("{v}: {e}"));
        let db = &s.database;
        let st = &s.storage;
        let secret = |x: &Option<SecretString>| x.as_ref().map(|p| p.expose_secret().to_owned());
        assert_eq!(s.server.host, v);
        assert_eq!(db.host.as_deref(), Some(v));
        assert_eq!((db.name.as_str(), db.user.as_str()), (v, v));
        assert_eq!(secret(&db.password).as_deref(), Some(v));
        assert_eq!(db.ssl_root_cert, Some(PathBuf::from(v)));
        assert_eq!(db.sqlite_path, PathBuf::from(v));
        assert_eq!(st.bucket.as_deref(), Some(v));
        assert_eq!(st.local_dir, PathBuf::from(v));
        assert_eq!(st.region.as_deref(), Some(v));
        assert_eq!(st.endpoint.as_deref(), Some(v));
        assert_eq!(st.kms_key_id.as_deref(), Some(v));
        assert_eq!(s.log.level, v);
        assert_eq!(secret(&s.auth.keys).as_deref(), Some(v));
        assert_eq!(s.auth.keys_file, Some(PathBuf::from(v)));

        let legacy = Settings::from_env(
            Service::Ingestion,
            &env(&[
                ("RDS_HOST", v),
                ("RDS_DBNAME", v),
                ("RDS_USER", v),
                ("RDS_PASSWORD", v),
                ("S3_RAW_BUCKET", v),
                ("AWS_REGION", v),
                ("AWS_ENDPOINT_URL_S3", v),
            ]),
        )
        .unwrap_or_else(|e| panic!("{v}: {e}"));
        let db = &legacy.database;
        assert_eq!(db.host.as_deref(), Some(v));
        assert_eq!((db.name.as_str(), db.user.as_str()), (v, v));
        assert_eq!(secret(&db.password).as_deref(), Some(v));
        assert_eq!(legacy.storage.bucket.as_deref(), Some(v));
        assert_eq!(legacy.storage.region.as_deref(), Some(v));
        assert_eq!(legacy.storage.endpoint.as_deref(), Some(v));
        let shown = format!("{legacy:#?}");
        assert!(shown.contains(&format!("name: {v:?}")), "{shown}");
    }
}

#[test]
fn numbers_and_booleans_still_parse_from_the_environment() {
    let s = Settings::from_env(
        Service::Ingestion,
        &env(&[
            ("RDS_PORT", "6543"),
            ("APP_SERVER__PORT", "0"),
            ("APP_SERVER__MAX_CONCURRENT_REQUESTS", "7"),
            ("APP_DATABASE__MIGRATE_ON_START", "true"),
            ("APP_STORAGE__FORCE_PATH_STYLE", "false"),
            ("APP_AUTH__ENABLED", "false"),
            ("APP_AUTH__RATE_LIMIT_PER_SEC", "2.5"),
            ("APP_AUTH__RATE_LIMIT_BURST", "10"),
            ("APP_INGEST__MAX_PENDING_BYTES", "134217728"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.database.port, 6543);
    assert_eq!(s.server.port, 0);
    assert_eq!(s.server.max_concurrent_requests, 7);
    assert_eq!(s.database.migrate_on_start, Some(true));
    assert_eq!(s.storage.force_path_style, Some(false));
    assert_eq!(s.auth.enabled, Some(false));
    assert_eq!(s.auth.rate_limit_per_sec, 2.5);
    assert_eq!(s.auth.rate_limit_burst, 10.0);
    assert_eq!(s.ingest.max_pending_bytes, 134_217_728);
    for (name, value) in [
        ("APP_DATABASE__MIGRATE_ON_START", "maybe"),
        ("APP_AUTH__RATE_LIMIT_PER_SEC", "fast"),
    ] {
        let err = Settings::from_env(Service::Api, &env(&[(name, value)])).expect_err(name);
        assert!(err.to_string().contains(name), "{err}");
    }
}

/// An `APP_*` variable that names no setting used to be ignored without a word, so a
/// typo left the setting at its default. It now stops startup with one line naming
/// the variable and the closest setting.
#[test]
fn an_app_variable_that_names_no_setting_is_refused_with_the_closest_name() {
    for (typo, meant) in [
        ("APP_DATABSE__PORT", "APP_DATABASE__PORT"),
        ("APP_SERVER__PORTT", "APP_SERVER__PORT"),
        ("APP_LOG_LEVEL", "APP_LOG__LEVEL"),
        ("APP_AUTH__KEY_FILE", "APP_AUTH__KEYS_FILE"),
    ] {
        let err = Settings::from_env(Service::Api, &env(&[(typo, "1")])).expect_err(typo);
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("unknown setting {typo}")), "{msg}");
        assert!(msg.contains(&format!("did you mean {meant}?")), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    let err = Settings::from_env(Service::Api, &env(&[("APP_WHATEVER__X", "1")]))
        .expect_err("unknown section");
    assert!(err.to_string().contains("APP_WHATEVER__X"), "{err}");

    // Names without `__` that are no setting's name are another program's business,
    // such as the service links Kubernetes injects for a Service named `app`.
    let s = Settings::from_env(
        Service::Api,
        &env(&[
            ("APP_SERVICE_HOST", "10.0.0.1"),
            ("APP_PORT", "tcp://10.0.0.1:80"),
            ("APP_PORT_80_TCP_ADDR", "10.0.0.1"),
            ("APP_NAMESPACE", "medrobotics"),
            ("APP_SERVER__PORT", "5050"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.server.port, 5050);
}

/// Found by the ops review: `print-config` (the `Debug` form) left out five database
/// settings. Every setting appears, secrets redacted.
#[test]
fn print_config_shows_every_setting() {
    let s = Settings::from_env(
        Service::Ingestion,
        &env(&[
            ("RDS_PASSWORD", "pw-0042"),
            ("APP_AUTH__KEYS", "[]"),
            ("DATABASE_URL", "postgres://u:url-pw@h/db"),
        ]),
    )
    .expect("loads");
    let shown = format!("{s:#?}");
    let names = s.setting_env_names();
    assert!(names.len() > 40, "{names:?}");
    for name in names {
        let (section, key) = name
            .strip_prefix("APP_")
            .and_then(|n| n.split_once("__"))
            .expect("APP_SECTION__KEY");
        let (section, key) = (section.to_lowercase(), key.to_lowercase());
        assert!(
            shown.contains(&format!("{section}: ")),
            "{section} missing:\n{shown}"
        );
        assert!(
            shown.contains(&format!("    {key}: ")),
            "{key} missing:\n{shown}"
        );
    }
    for secret in ["pw-0042", "url-pw", "[]"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
}

/// The charts, manifests and scripts set only names the services know (a typo there
/// would now stop the pods).
#[test]
fn deployment_files_set_only_known_settings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let known = Settings::from_env(Service::Ingestion, &env(&[]))
        .expect("defaults")
        .setting_env_names();
    let mut files = vec![root.join("Dockerfile")];
    for dir in [
        "helm",
        "k8s",
        "scripts",
        "deploy",
        "resilience",
        "bench",
        "tests",
    ] {
        collect_files(&root.join(dir), &mut files);
    }
    let mut seen = 0;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for name in app_names(&text) {
            seen += 1;
            if let Some(prefix) = name.strip_suffix("__").map(|p| format!("{p}__")) {
                assert!(
                    known.iter().any(|k| k.starts_with(&prefix)),
                    "{}: {name}",
                    file.display()
                );
                continue;
            }
            let vars = env(&[(name.as_str(), "")]);
            assert!(
                super::load::setting_variables(Service::Ingestion, &vars).is_ok(),
                "{}: {name} names no setting",
                file.display()
            );
        }
    }
    assert!(seen > 20, "found only {seen} APP_ names");
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let skip = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n == "venv" || n == "results");
        if skip {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every `APP_[A-Z0-9_]+` token in `text`.
fn app_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("APP_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end.max(4)..];
    }
    names
}
