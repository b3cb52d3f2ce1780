//! Building and running the service: bind first (tests pass port 0 and read the
//! port back), then serve until the caller's shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::{Router, middleware};
use common::auth::{Auth, RequireScope, Scope, require_scope};
use common::config::DatabaseTarget;
use common::health::{Readiness, ReadinessCheck};
use common::http::{finish_router, probe_router};
use common::metrics::MetricsBuilder;
use common::{Db, Service, Settings};
use tokio::net::TcpListener;

use crate::routes;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
}

/// A bound, ready-to-run api-service.
pub struct Application {
    listener: TcpListener,
    router: Router,
    readiness: Arc<Readiness>,
    settings: Settings,
    db: Db,
}

/// The whole HTTP surface for `db`: API routes (behind API keys with the `read`
/// scope), OpenAPI document, probes, metrics, and the shared layer stack.
pub fn build_router(
    settings: &Settings,
    db: Db,
    readiness: Arc<Readiness>,
) -> anyhow::Result<Router> {
    let mut metrics = MetricsBuilder::new();
    db.register_metrics(&mut metrics.registry);
    let embedded = db.backend() == DatabaseTarget::Sqlite;
    let auth = Auth::from_settings(&settings.auth, embedded, &mut metrics.registry)
        .map_err(anyhow::Error::msg)?;
    auth.spawn_reloader(Duration::from_secs(settings.auth.reload_secs));
    let metrics = metrics.finish();

    let (api, openapi) = routes::router().split_for_parts();
    let api = api.route_layer(middleware::from_fn_with_state(
        RequireScope {
            auth,
            scope: Scope::Read,
        },
        require_scope,
    ));
    let openapi = Arc::new(openapi.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let app = api
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = Arc::clone(&openapi);
                async move {
                    (
                        [(CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .with_state(AppState { db })
        .merge(probe_router(
            Service::Api,
            &["/api/health"],
            readiness,
            metrics.clone(),
        ));
    Ok(finish_router(app, &settings.server, &metrics))
}

impl Application {
    /// Connects the pool (lazily for PostgreSQL), applies migrations when configured
    /// to, and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database, Service::Api.name())
            .await
            .context("opening the database")?;
        if settings.database.migrate_on_start() {
            db.migrate().await.context("applying migrations")?;
        }
        let checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(db.clone())];
        let readiness = Arc::new(Readiness::new(checks));
        let router = build_router(&settings, db.clone(), Arc::clone(&readiness))?;
        let listener = common::bind(&settings.server).await.with_context(|| {
            format!("binding {}:{}", settings.server.host, settings.server.port)
        })?;
        Ok(Self {
            listener,
            router,
            readiness,
            settings,
            db,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, drains, and closes the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(
            port = self.port(),
            backend = ?self.db.backend(),
            "api-service listening"
        );
        let result = common::shutdown::serve(
            self.listener,
            self.router,
            self.readiness,
            &self.settings.server,
            shutdown,
        )
        .await;
        self.db.close().await;
        tracing::info!("api-service stopped");
        result
    }
}
