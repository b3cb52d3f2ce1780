//! The real binary, as the pod runs it: JSON logs naming the key (never the key),
//! SIGTERM exits 0; and `create-key`.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::auth::hash_key;

use crate::helpers::{binary_command, free_port, kill_term};

const BIN: &str = env!("CARGO_BIN_EXE_api-service");

#[test]
fn create_key_prints_the_key_once_and_its_hash() {
    let out = Command::new(BIN)
        .args(["create-key", "--name", "dashboard", "--scope", "read"])
        .env("APP_LOG__LEVEL", "warn")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("mrk_"))
        .expect("key printed");
    assert!(
        text.contains(&hash_key(key)),
        "the entry carries the key's hash: {text}"
    );
    assert_eq!(text.matches(key).count(), 1, "the key appears once");

    let bad = Command::new(BIN)
        .args(["create-key", "--name", "x", "--scope", "admin"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
}

#[test]
fn request_logs_name_the_key_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "mrk_process_test_key_000000000000000000000000";
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        format!(
            r#"[{{"name":"ops-dashboard","scopes":["read"],"sha256":"{}"}}]"#,
            hash_key(key)
        ),
    )
    .expect("keys");
    let port = free_port();
    let mut child = binary_command(port, dir.path())
        .env("APP_AUTH__ENABLED", "true")
        .env("APP_AUTH__KEYS_FILE", &keys)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("log line").expect("utf-8");
        if line.contains("api-service listening") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never listened"
        );
    }
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .arg(format!("http://127.0.0.1:{port}/api/robots"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let status = status.unwrap_or_default();
    assert_eq!(status, "200");

    kill_term(child.id());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit 0 after SIGTERM: {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let request_line = rest
        .iter()
        .find(|l| l.contains("request completed") && l.contains("/api/robots"))
        .unwrap_or_else(|| panic!("request logged: {rest:?}"));
    let json: serde_json::Value = serde_json::from_str(request_line).expect("JSON log line");
    assert_eq!(json["span"]["auth.key"], "ops-dashboard", "{request_line}");
    assert_eq!(json["span"]["http.route"], "/api/robots");
    assert!(json["span"]["request_id"].is_string());
    assert!(
        rest.iter().all(|l| !l.contains(key)),
        "the key itself is never logged"
    );
}
