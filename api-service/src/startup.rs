//! Building and running the service: bind first (tests pass port 0 and read the
//! port back), then serve until the caller's shutdown future resolves.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use common::app::{Server, Surface, assemble};
use common::auth::{Auth, Scope};
use common::health::{Readiness, ReadinessCheck};
use common::metrics::MetricsBuilder;
use common::{Db, Service, Settings};

use crate::routes;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
}

const SURFACE: Surface = Surface {
    service: Service::Api,
    health_alias: "/api/health",
    openapi_path: "/api/openapi.json",
};

/// A bound, ready-to-run api-service.
pub struct Application {
    server: Server,
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
    let auth = Auth::start(&settings.auth, &mut metrics.registry, Scope::Read)?;
    let metrics = metrics.finish();
    let (api, openapi) = routes::router().split_for_parts();
    let api = auth.protect(api).with_state(AppState { db });
    Ok(assemble(
        api,
        &openapi,
        SURFACE,
        readiness,
        &metrics,
        &settings.server,
    ))
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
        let server = Server::bind(&settings.server, router, readiness).await?;
        Ok(Self { server, db })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves until `shutdown` resolves, drains, and closes the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(port = self.port(), backend = ?self.db.backend(), "api-service listening");
        let ends = self.server.serve(shutdown).await?;
        // Inside the shutdown timeout: a request still holding a connection past it
        // must not keep the process alive into the kubelet's SIGKILL.
        if tokio::time::timeout_at(ends, self.db.close())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached while closing the database pool");
        }
        tracing::info!("api-service stopped");
        Ok(())
    }
}
