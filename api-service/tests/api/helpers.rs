//! Test harness: a fresh database per test (PostgreSQL or SQLite), the app on port 0,
//! typed request helpers, and a TCP proxy that can cut the app's database link.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api_service::Application;
use common::config::DatabaseTarget;
use common::{Db, Service, Settings};
use serde_json::Value;
use tokio::sync::oneshot;

/// Which database backs the app under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub use common::testing::{Proxy as DbProxy, ProxyMode, create_pg_database};

/// Settings for a test app: port 0, small pool, short timeouts, no drain delay.
pub fn test_settings(db_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("APP_SERVER__HOST", "127.0.0.1"),
        ("APP_SERVER__PORT", "0"),
        ("APP_SERVER__DRAIN_DELAY_SECS", "0"),
        ("APP_SERVER__SHUTDOWN_TIMEOUT_SECS", "10"),
        ("APP_DATABASE__MAX_CONNECTIONS", "4"),
        ("APP_DATABASE__ACQUIRE_TIMEOUT_MS", "1500"),
        ("APP_DATABASE__READY_TIMEOUT_MS", "500"),
        ("APP_DATABASE__MIGRATE_ON_START", "true"),
        ("APP_LOG__LEVEL", "warn"),
        ("APP_AUTH__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("DATABASE_URL".into(), db_url.to_owned());
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::from_env(Service::Api, &env).expect("test settings")
}

/// A running app and a direct handle on its database.
pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// A response with its body read.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> Reply {
        let res = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request");
        Self::reply(res).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> Reply {
        let res = self
            .client
            .request(method, format!("{}{path}", self.address))
            .send()
            .await
            .expect("request");
        Self::reply(res).await
    }

    pub async fn reply(res: reqwest::Response) -> Reply {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        Reply {
            status,
            headers,
            text,
        }
    }

    pub async fn get_robot(&self, id: &str) -> Reply {
        self.get(&format!("/api/robots/{id}")).await
    }

    pub async fn get_procedure(&self, id: &str) -> Reply {
        self.get(&format!("/api/procedures/{id}")).await
    }

    /// Loads the small known fleet (tests/fixtures/small_fleet.sql).
    pub async fn load_small_fleet(&self) {
        self.db
            .execute_script(include_str!("../fixtures/small_fleet.sql"))
            .await
            .expect("fixtures load");
    }

    /// Runs SQL directly against the app's database.
    pub async fn sql(&self, sql: &str) {
        self.db.execute_script(sql).await.expect("sql");
    }

    /// Triggers the app's graceful shutdown (what SIGTERM does).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Spawns the app on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Spawns the app with extra settings (environment names).
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let (db_url, dir) = match backend {
        Backend::Postgres => (create_pg_database().await, None),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite:{}", dir.path().join("test.db").display());
            (url, Some(Arc::new(dir)))
        }
    };
    spawn_on(backend, &db_url, &db_url, extra, dir).await
}

/// Spawns the app whose database URL is `app_url` (for example through a proxy),
/// with the test's own handle on `direct_url`.
pub async fn spawn_on(
    backend: Backend,
    app_url: &str,
    direct_url: &str,
    extra: &[(&str, &str)],
    dir: Option<Arc<tempfile::TempDir>>,
) -> TestApp {
    let settings = test_settings(app_url, extra);
    let direct = test_settings(direct_url, &[]);
    let db = Db::connect(&direct.database, "tests")
        .await
        .expect("direct db");
    db.migrate().await.expect("migrate");
    assert_eq!(
        db.backend(),
        if backend == Backend::Postgres {
            DatabaseTarget::Postgres
        } else {
            DatabaseTarget::Sqlite
        }
    );
    let app = Application::build(settings).await.expect("app builds");
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        db,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

/// The proxied form of a PostgreSQL URL.
pub fn via_proxy(url: &str, port: u16) -> String {
    common::testing::via_proxy(url, port)
}

/// The socket address of the PostgreSQL server in `url`.
pub fn pg_addr(url: &str) -> std::net::SocketAddr {
    common::testing::socket_addr(url)
}

/// The real binary as the pod runs it, on `port`, with an SQLite file in `dir`, JSON logs
/// on a piped stdout and nothing from the caller's environment.
pub fn binary_command(port: u16, dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_api-service"));
    cmd.env_clear()
        .env("PORT", port.to_string())
        .env("APP_SERVER__HOST", "127.0.0.1")
        .env("APP_SERVER__DRAIN_DELAY_SECS", "0")
        .env("APP_DATABASE__SQLITE_PATH", dir.join("db.sqlite"))
        .env("APP_LOG__FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    cmd
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr").port()
}

/// Sends SIGTERM to a child process.
pub fn kill_term(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}
