//! API keys: 401/403/429, rotation, probes open, headers on patient-linked data.

use std::time::{Duration, Instant};

use common::auth::hash_key;

use crate::helpers::{Backend, TestApp, spawn_app_with};

const READ_KEY: &str = "mrk_read_key_for_the_dashboard_0000000000000";
const INGEST_KEY: &str = "mrk_ingest_key_for_robots_000000000000000000";
const NEW_KEY: &str = "mrk_rotated_dashboard_key_111111111111111111";

fn entry(name: &str, scope: &str, key: &str) -> String {
    format!(
        r#"{{"name":"{name}","scopes":["{scope}"],"sha256":"{}"}}"#,
        hash_key(key)
    )
}

async fn get_with(app: &TestApp, path: &str, key: Option<&str>) -> crate::helpers::Reply {
    let mut req = app.client.get(format!("{}{path}", app.address));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    TestApp::reply(req.send().await.expect("request")).await
}

async fn keyed_app(keys_file: &std::path::Path, extra: &[(&str, &str)]) -> TestApp {
    let file = keys_file.to_str().expect("utf-8");
    let mut env = vec![
        ("APP_AUTH__ENABLED", "true"),
        ("APP_AUTH__KEYS_FILE", file),
        ("APP_AUTH__RELOAD_SECS", "1"),
    ];
    env.extend_from_slice(extra);
    spawn_app_with(Backend::Postgres, &env).await
}

#[tokio::test]
async fn keys_scopes_and_open_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.json");
    std::fs::write(
        &file,
        format!(
            "[{},{}]",
            entry("dashboard", "read", READ_KEY),
            entry("robots", "ingest", INGEST_KEY)
        ),
    )
    .expect("keys");
    let app = keyed_app(&file, &[]).await;

    let missing = get_with(&app, "/api/robots", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="medrobotics""#)
    );
    assert!(
        missing.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer"))
    );

    let wrong = get_with(&app, "/api/robots", Some("mrk_not_a_key")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some(r#"Bearer realm="medrobotics", error="invalid_token""#)
    );
    assert_eq!(wrong.json()["error"], "Invalid API key");

    let forbidden = get_with(&app, "/api/robots", Some(INGEST_KEY)).await;
    assert_eq!(forbidden.status, 403);
    assert!(
        forbidden.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("read"))
    );

    let ok = get_with(&app, "/api/robots", Some(READ_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
    let detail = get_with(
        &app,
        "/api/procedures/aaaaaaaa-0000-4000-8000-000000000001",
        Some(READ_KEY),
    )
    .await;
    assert_eq!(detail.header("cache-control"), Some("no-store"));

    for path in [
        "/health",
        "/api/health",
        "/ready",
        "/metrics",
        "/api/openapi.json",
    ] {
        assert_eq!(
            get_with(&app, path, None).await.status,
            200,
            "{path} stays open"
        );
    }
    let metrics = get_with(&app, "/metrics", None).await.text;
    for expected in [
        r#"auth_requests_total{key="dashboard",outcome="allowed"} 2"#,
        r#"auth_requests_total{key="robots",outcome="forbidden"} 1"#,
        r#"auth_requests_total{key="",outcome="missing"} 1"#,
        r#"auth_requests_total{key="",outcome="invalid"} 1"#,
    ] {
        assert!(metrics.contains(expected), "missing {expected}");
    }
    assert!(!metrics.contains(READ_KEY) && !metrics.contains(&hash_key(READ_KEY)));
}

#[tokio::test]
async fn keys_rotate_without_downtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.json");
    std::fs::write(&file, format!("[{}]", entry("dashboard", "read", READ_KEY))).expect("keys");
    let app = keyed_app(&file, &[]).await;
    assert_eq!(
        get_with(&app, "/api/robots", Some(READ_KEY)).await.status,
        200
    );
    assert_eq!(
        get_with(&app, "/api/robots", Some(NEW_KEY)).await.status,
        401
    );

    // Step 1: the new key is added beside the old one; both work.
    std::fs::write(
        &file,
        format!(
            "[{},{}]",
            entry("dashboard", "read", READ_KEY),
            entry("dashboard-2", "read", NEW_KEY)
        ),
    )
    .expect("keys");
    wait_until(&app, NEW_KEY, 200).await;
    assert_eq!(
        get_with(&app, "/api/robots", Some(READ_KEY)).await.status,
        200
    );

    // Step 2: the old key is removed; only the new one works.
    std::fs::write(
        &file,
        format!("[{}]", entry("dashboard-2", "read", NEW_KEY)),
    )
    .expect("keys");
    wait_until(&app, READ_KEY, 401).await;
    assert_eq!(
        get_with(&app, "/api/robots", Some(NEW_KEY)).await.status,
        200
    );
}

async fn wait_until(app: &TestApp, key: &str, status: u16) {
    let started = Instant::now();
    while get_with(app, "/api/robots", Some(key)).await.status != status {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "key never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one series in the `/metrics` text.
fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Polls `/metrics` until `series` satisfies `ok` (the reload's own signal).
async fn wait_for_metric(app: &TestApp, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let started = Instant::now();
    loop {
        let text = get_with(app, "/metrics", None).await.text;
        if let Some(value) = metric_value(&text, series).filter(|v| ok(*v)) {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{series} never reached the expected value:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that `/metrics` counted a request with the removed key `name`.
fn assert_revoked(metrics: &str, name: &str) {
    let series = format!(r#"auth_requests_total{{key="{name}",outcome="revoked"}}"#);
    assert!(
        metric_value(metrics, &series).is_some_and(|n| n >= 1.0),
        "{series} missing:\n{metrics}"
    );
}

/// Found by the security review: a keys file with one malformed entry, or `[]`, kept
/// the whole previous key set, so a key removed in an emergency kept working. Now a
/// reload applies the valid entries and skips the bad ones; `[]` denies every key;
/// only a file that is not a JSON array keeps the last good set. Each step waits for
/// the reload through the answer or the metrics.
#[tokio::test]
async fn revocation_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.json");
    let dashboard = entry("dashboard", "read", READ_KEY);
    let reports = entry("reports", "read", NEW_KEY);
    std::fs::write(&file, format!("[{dashboard},{reports}]")).expect("keys");
    let app = keyed_app(&file, &[]).await;
    assert_eq!(
        wait_for_metric(&app, "auth_keys_loaded", |v| v == 2.0).await,
        2.0
    );
    let loaded_at = wait_for_metric(
        &app,
        "auth_keys_last_reload_success_timestamp_seconds",
        |v| v > 0.0,
    )
    .await;

    // Not a JSON array (a half-written file): the last good keys stay.
    std::fs::write(&file, format!("[{dashboard},")).expect("keys");
    wait_for_metric(&app, "auth_keys_reload_errors_total", |v| v >= 1.0).await;
    for key in [READ_KEY, NEW_KEY] {
        assert_eq!(get_with(&app, "/api/robots", Some(key)).await.status, 200);
    }
    let metrics = get_with(&app, "/metrics", None).await.text;
    assert_eq!(metric_value(&metrics, "auth_keys_loaded"), Some(2.0));
    assert_eq!(
        metric_value(&metrics, "auth_keys_last_reload_success_timestamp_seconds"),
        Some(loaded_at),
        "a failed reload is not a success"
    );

    // `reports` is removed in the same edit that adds a malformed entry: the removal
    // applies, the bad entry is skipped and counted.
    let typo = r#"{"name":"typo","scopes":["read"],"sha256":"not-a-sha256"}"#;
    std::fs::write(&file, format!("[{dashboard},{typo}]")).expect("keys");
    wait_until(&app, NEW_KEY, 401).await;
    assert_eq!(
        get_with(&app, "/api/robots", Some(READ_KEY)).await.status,
        200
    );
    let metrics = get_with(&app, "/metrics", None).await.text;
    assert_eq!(metric_value(&metrics, "auth_keys_loaded"), Some(1.0));
    assert_revoked(&metrics, "reports");
    assert!(metric_value(&metrics, "auth_keys_reload_errors_total").is_some_and(|n| n >= 2.0));

    // `[]`: no key is valid any more; probes stay open.
    std::fs::write(&file, "[]").expect("keys");
    wait_until(&app, READ_KEY, 401).await;
    assert_eq!(
        wait_for_metric(&app, "auth_keys_loaded", |v| v == 0.0).await,
        0.0
    );
    let denied = get_with(&app, "/api/robots", Some(READ_KEY)).await;
    assert_eq!(denied.json()["error"], "Invalid API key");
    assert_eq!(get_with(&app, "/api/health", None).await.status, 200);
    let metrics = get_with(&app, "/metrics", None).await.text;
    assert_revoked(&metrics, "dashboard");
    assert!(!metrics.contains("not-a-sha256") && !metrics.contains(&hash_key(READ_KEY)));
}

/// A deliberate deny-all: with authentication on, a keys file holding `[]` starts
/// (it used to refuse) and answers 401 to every key until keys are added.
#[tokio::test]
async fn an_empty_keys_file_starts_denying_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.json");
    std::fs::write(&file, "[]").expect("keys");
    let app = keyed_app(&file, &[]).await;
    assert_eq!(
        get_with(&app, "/api/robots", Some(READ_KEY)).await.status,
        401
    );
    assert_eq!(get_with(&app, "/ready", None).await.status, 200);

    std::fs::write(&file, format!("[{}]", entry("dashboard", "read", READ_KEY))).expect("keys");
    wait_until(&app, READ_KEY, 200).await;
}

#[tokio::test]
async fn each_key_is_rate_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.json");
    let limited = format!(
        r#"{{"name":"slow","scopes":["read"],"sha256":"{}","rate_per_sec":0.5,"burst":2}}"#,
        hash_key(NEW_KEY)
    );
    std::fs::write(
        &file,
        format!("[{},{limited}]", entry("dashboard", "read", READ_KEY)),
    )
    .expect("keys");
    let app = keyed_app(&file, &[]).await;
    assert_eq!(
        get_with(&app, "/api/health", Some(NEW_KEY)).await.status,
        200
    );
    assert_eq!(
        get_with(&app, "/api/robots", Some(NEW_KEY)).await.status,
        200
    );
    assert_eq!(
        get_with(&app, "/api/robots", Some(NEW_KEY)).await.status,
        200
    );
    let limited = get_with(&app, "/api/robots", Some(NEW_KEY)).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("2"));
    assert_eq!(
        limited.json()["error"],
        "Rate limit exceeded for this API key"
    );
    assert_eq!(
        get_with(&app, "/api/robots", Some(READ_KEY)).await.status,
        200,
        "other keys unaffected"
    );
}

#[tokio::test]
async fn enabled_without_keys_refuses_to_start() {
    let url = common::testing::create_pg_database().await;
    let mut settings = crate::helpers::test_settings(&url, &[]);
    settings.auth.enabled = Some(true);
    let err = api_service::Application::build(settings)
        .await
        .err()
        .expect("refuses to start without keys");
    assert!(
        format!("{err:#}").contains("APP_AUTH__KEYS_FILE"),
        "{err:#}"
    );
}
