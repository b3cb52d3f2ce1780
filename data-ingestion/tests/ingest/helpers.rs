//! Test harness: a fresh database (PostgreSQL or SQLite) and a fresh bucket on the
//! real S3-protocol server the test command starts (`TEST_S3_ENDPOINT`), or the local
//! directory store on SQLite; the app on port 0; typed helpers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::storage::{LocalStore, ObjectStore, S3Store};
use common::testing::{Proxy, ProxyMode, create_pg_database, socket_addr, via_proxy};
use common::{Db, Query, Service, Settings};
use data_ingestion::Application;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const PROCEDURE: &str = "5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10";
pub const ROBOT: &str = "11111111-1111-4111-8111-111111111111";

/// Which database and store back the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL and the S3 server.
    Postgres,
    /// The embedded defaults: SQLite and the local directory store.
    Sqlite,
}

/// How to spawn.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra settings (environment names).
    pub env: &'a [(&'a str, &'a str)],
    /// Put a switchable proxy in front of the S3 server.
    pub store_proxy: bool,
}

pub fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT")
        .expect("TEST_S3_ENDPOINT: run the tests with scripts/test, which starts an S3 server")
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub store: Arc<dyn ObjectStore>,
    pub s3: Option<S3Store>,
    pub client: reqwest::Client,
    pub store_proxy: Option<Proxy>,
    /// The settings it was built from (see [`TestApp::sibling`]).
    pub env: HashMap<String, String>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

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
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// A complete procedure row (all 14 keys of the old insert) for [`ROBOT`].
pub fn procedure(id: &str) -> Value {
    json!({
        "procedure_id": id, "robot_id": ROBOT, "procedure_type": "Hysterectomy",
        "procedure_category": "Gynecology", "start_time": "2026-11-28 09:00:00",
        "end_time": "2026-11-28 09:00:00", "duration_minutes": 0, "surgeon_id": "SURG-001",
        "surgeon_name": "Dr. Amelia Hart", "patient_id": "PAT-SECRET-991", "patient_age": 54,
        "patient_gender": "female", "complexity_score": 3.06, "status": "in_progress"
    })
}

/// [`procedure`] as its robot reports it at the end: completed after 150 minutes
/// (what a conflict updates).
pub fn completed_procedure(id: &str) -> Value {
    let mut done = procedure(id);
    done["status"] = json!("completed");
    done["end_time"] = json!("2026-11-28T11:30:00Z");
    done["duration_minutes"] = json!(150);
    done
}

pub fn record(seq: u64) -> Value {
    json!({"procedure_id": PROCEDURE, "robot_id": ROBOT, "timestamp": "2026-11-28 10:00:00.250",
           "seq": seq, "arm": {"x": 1.25, "y": -3.5}, "note": "ünïcode ok"})
}

impl TestApp {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        Reply {
            status,
            headers,
            text,
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.address))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.address)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.post(path).json(body)).await
    }

    pub async fn post_procedure(&self, body: &Value) -> Reply {
        self.post_json("/ingest/procedure", body).await
    }

    pub async fn post_telemetry(&self, body: &Value) -> Reply {
        self.post_json("/ingest/telemetry", body).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.post(path).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    /// Every record in every object under `prefix`, with the object count.
    pub async fn stored_records(&self, prefix: &str) -> (Vec<Value>, usize) {
        let keys = self.store.list(prefix).await.expect("list");
        let mut records = Vec::new();
        for key in &keys {
            let body = self
                .store
                .get(key)
                .await
                .expect("get")
                .expect("listed object exists");
            match serde_json::from_slice::<Value>(&body).expect("objects are JSON") {
                Value::Array(items) => records.extend(items),
                one => records.push(one),
            }
        }
        (records, keys.len())
    }

    /// Rows in `surgical_procedures`.
    pub async fn procedure_count(&self) -> i64 {
        self.db
            .fetch_all(Query::new("SELECT COUNT(*) AS n FROM surgical_procedures"))
            .await
            .expect("count")
            .get_i64(0, "n")
            .expect("n")
            .expect("row")
    }

    /// Loads one robot so procedures can reference it.
    pub async fn add_robot(&self) {
        self.db
            .execute_script(&format!(
                "INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, \
                 installation_date, facility_id, facility_name, status) VALUES ('{ROBOT}', 'SN-1', 'da Vinci Xi', \
                 'Intuitive Surgical', '2021-10-03', 'FAC-A', 'Alpha Hospital', 'operational')"
            ))
            .await
            .expect("robot");
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn cut_store(&self, mode: ProxyMode) {
        self.store_proxy
            .as_ref()
            .expect("spawned with store_proxy")
            .set(mode);
    }
}

fn settings(env: HashMap<String, String>) -> Settings {
    Settings::from_env(Service::Ingestion, &env).expect("test settings")
}

/// The app with authentication on and these `(name, scope, key)` entries; keep the
/// returned directory (the keys file) while the app runs.
pub async fn spawn_with_keys(
    backend: Backend,
    keys: &[(&str, &str, &str)],
) -> (TestApp, tempfile::TempDir) {
    let entries: Vec<String> = keys
        .iter()
        .map(|(name, scope, key)| {
            format!(
                r#"{{"name":"{name}","scopes":["{scope}"],"sha256":"{}"}}"#,
                common::auth::hash_key(key)
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys.json");
    std::fs::write(&file, format!("[{}]", entries.join(","))).expect("keys");
    let file = file.to_str().expect("utf-8");
    let env = [("APP_AUTH__ENABLED", "true"), ("APP_AUTH__KEYS_FILE", file)];
    let options = Options {
        env: &env,
        ..Default::default()
    };
    (spawn_with(backend, options).await, dir)
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, Options::default()).await
}

pub async fn spawn_with(backend: Backend, options: Options<'_>) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env: HashMap<String, String> = [
        ("APP_SERVER__HOST", "127.0.0.1"),
        ("APP_SERVER__PORT", "0"),
        ("APP_SERVER__DRAIN_DELAY_SECS", "0"),
        ("APP_SERVER__SHUTDOWN_TIMEOUT_SECS", "10"),
        ("APP_DATABASE__MAX_CONNECTIONS", "5"),
        ("APP_DATABASE__ACQUIRE_TIMEOUT_MS", "2000"),
        ("APP_DATABASE__MIGRATE_ON_START", "true"),
        ("APP_STORAGE__CONNECT_TIMEOUT_MS", "1000"),
        ("APP_STORAGE__OPERATION_TIMEOUT_MS", "2000"),
        ("APP_INGEST__GROUP_WINDOW_MS", "50"),
        ("APP_LOG__LEVEL", "warn"),
        ("APP_AUTH__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut store_proxy = None;
    let mut s3 = None;
    let store: Arc<dyn ObjectStore> = match backend {
        Backend::Postgres => {
            env.insert("DATABASE_URL".into(), create_pg_database().await);
            let endpoint = s3_endpoint();
            let bucket = format!(
                "ingest-test-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let mut direct_env = env.clone();
            direct_env.insert("S3_RAW_BUCKET".into(), bucket.clone());
            direct_env.insert("AWS_ENDPOINT_URL".into(), endpoint.clone());
            direct_env.insert("AWS_REGION".into(), "us-east-1".into());
            let direct = settings(direct_env.clone());
            let s3_store = S3Store::new(&direct.storage, bucket.clone()).await;
            s3_store
                .client()
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("create bucket");
            let app_endpoint = if options.store_proxy {
                let proxy = Proxy::start(socket_addr(&endpoint)).await;
                let url = via_proxy(&endpoint, proxy.port);
                store_proxy = Some(proxy);
                url
            } else {
                endpoint
            };
            env = direct_env;
            env.insert("AWS_ENDPOINT_URL".into(), app_endpoint);
            s3 = Some(s3_store.clone());
            Arc::new(s3_store)
        }
        Backend::Sqlite => {
            env.insert(
                "APP_DATABASE__SQLITE_PATH".into(),
                dir.path().join("test.db").display().to_string(),
            );
            env.insert(
                "APP_STORAGE__LOCAL_DIR".into(),
                dir.path().join("bucket").display().to_string(),
            );
            Arc::new(LocalStore::new(&dir.path().join("bucket")).expect("local store"))
        }
    };
    for (k, v) in options.env {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    launch(env, store, s3, store_proxy, dir).await
}

impl TestApp {
    /// A second replica on the same database and bucket, with `overrides`.
    pub async fn sibling(&self, overrides: &[(&str, &str)]) -> TestApp {
        let mut env = self.env.clone();
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        launch(env, Arc::clone(&self.store), self.s3.clone(), None, dir).await
    }
}

async fn launch(
    env: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
    s3: Option<S3Store>,
    store_proxy: Option<Proxy>,
    dir: tempfile::TempDir,
) -> TestApp {
    let settings = settings(env.clone());
    let db = Db::connect(&settings.database, "tests").await.expect("db");
    db.migrate().await.expect("migrate");
    let app = Application::build(settings).await.expect("app builds");
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        db,
        store,
        s3,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        store_proxy,
        env,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}
