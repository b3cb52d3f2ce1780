//! Liveness and readiness. `/health` answers from the process alone and never
//! touches a dependency; `/ready` asks every registered check (database, object
//! store) with a short timeout and turns 503 the moment shutdown begins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, join_all};
use serde_json::{Map, Value, json};

/// One dependency readiness depends on.
pub trait ReadinessCheck: Send + Sync {
    /// Short name shown in the `/ready` body (`database`, `object_store`).
    fn name(&self) -> &'static str;
    /// `Ok` when the dependency answers; the error is logged, never shown.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl ReadinessCheck for crate::db::Db {
    fn name(&self) -> &'static str {
        "database"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.ping().await.map_err(|e| {
                let mut chain = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                chain
            })
        })
    }
}

/// Readiness state shared by the probes and the shutdown sequence.
#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
    checks: Vec<Arc<dyn ReadinessCheck>>,
}

impl Readiness {
    /// Readiness over these checks.
    pub fn new(checks: Vec<Arc<dyn ReadinessCheck>>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            checks,
        }
    }

    /// Turns readiness off for good (shutdown began).
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Liveness body: `{"service":..., "status":"healthy"}`.
pub fn health_body(service: &'static str) -> Value {
    json!({"status": "healthy", "service": service})
}

/// `GET /ready`.
pub async fn ready_handler(State(readiness): State<Arc<Readiness>>) -> Response {
    if readiness.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    let results = join_all(
        readiness
            .checks
            .iter()
            .map(|c| async move { (c.name(), c.check().await) }),
    )
    .await;
    let mut checks = Map::new();
    let mut ready = true;
    for (name, result) in results {
        let state = match result {
            Ok(()) => "ok",
            Err(reason) => {
                tracing::warn!(check = name, reason = %reason, "readiness check failed");
                ready = false;
                "unavailable"
            }
        };
        checks.insert(name.to_owned(), Value::from(state));
    }
    let (status, word) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (status, Json(json!({"status": word, "checks": checks}))).into_response()
}
