//! Building and running the service: bind first, then serve until the caller's
//! shutdown future resolves, then write every pending group before exiting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::FromRef;
use common::app::{Server, Surface, assemble};
use common::auth::{Auth, Scope};
use common::health::{Readiness, ReadinessCheck};
use common::metrics::MetricsBuilder;
use common::storage::{ObjectStore, StoreCheck};
use common::{Db, Service, Settings};

use crate::body::BodyLimit;
use crate::grouper::{FlushHooks, GroupLimits, Grouper};
use crate::idempotency::{Idempotency, IdempotencyRules};
use crate::metrics::IngestMetrics;
use crate::routes;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database pool.
    pub db: Db,
    /// The grouping engine in front of the object store.
    pub grouper: Grouper,
    /// The idempotency store.
    pub idempotency: Idempotency,
    /// Ingestion metrics.
    pub metrics: IngestMetrics,
    /// The body size limit.
    pub body_limit: BodyLimit,
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        state.body_limit
    }
}

/// A bound, ready-to-run data-ingestion service.
pub struct Application {
    server: Server,
    settings: Settings,
    state: AppState,
}

const SURFACE: Surface = Surface {
    service: Service::Ingestion,
    health_alias: "/ingest/health",
    openapi_path: "/ingest/openapi.json",
};

impl Application {
    /// Connects the pool and the store, applies migrations when configured to, and
    /// binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database, Service::Ingestion.name())
            .await
            .context("opening the database")?;
        if settings.database.migrate_on_start() {
            db.migrate().await.context("applying migrations")?;
        }
        let store = common::storage::from_settings(&settings.storage)
            .await
            .context("opening the object store")?;
        Self::build_with(settings, db, store).await
    }

    /// Like [`Application::build`] with the database and store given.
    pub async fn build_with(
        settings: Settings,
        db: Db,
        store: Arc<dyn ObjectStore>,
    ) -> anyhow::Result<Self> {
        let mut metrics = MetricsBuilder::new();
        db.register_metrics(&mut metrics.registry);
        let ingest_metrics = IngestMetrics::register(&mut metrics.registry);
        let auth = Auth::start(&settings.auth, &mut metrics.registry, Scope::Ingest)?;
        let metrics = metrics.finish();

        let ingest = &settings.ingest;
        let window = Duration::from_millis(ingest.group_window_ms);
        let rules = IdempotencyRules {
            ttl: Duration::from_secs(ingest.idempotency_ttl_secs),
            dead_after: Duration::from_secs(5),
            stale_after: settings.server.request_timeout()
                + window
                + Duration::from_millis(2 * settings.storage.operation_timeout_ms)
                + Duration::from_secs(5),
            // The SDK's bound on one PUT, all attempts (see storage.operation_timeout_ms).
            failed_write_grace: Duration::from_millis(2 * settings.storage.operation_timeout_ms),
        };
        let idempotency = Idempotency::new(
            db.clone(),
            Arc::clone(&store),
            rules,
            routes::answer_from_key,
            ingest_metrics.clone(),
        );
        let hooks: Arc<dyn FlushHooks> = Arc::new(idempotency.clone());
        let grouper = Grouper::new(
            Arc::clone(&store),
            Some(hooks),
            GroupLimits {
                window,
                max_records: ingest.group_max_records,
                max_bytes: ingest.group_max_bytes,
                max_pending_bytes: ingest.max_pending_bytes,
            },
            ingest_metrics.clone(),
        );
        let state = AppState {
            db: db.clone(),
            grouper,
            idempotency,
            metrics: ingest_metrics,
            body_limit: BodyLimit(settings.server.body_limit_bytes),
        };
        let checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(db), Arc::new(StoreCheck(store))];
        let readiness = Arc::new(Readiness::new(checks));

        let (api, openapi) = routes::router().split_for_parts();
        let api = auth
            .protect(api)
            .route_layer(axum::middleware::from_fn_with_state(
                state.metrics.clone(),
                routes::count_refusals,
            ))
            .with_state(state.clone());
        let router = assemble(
            api,
            &openapi,
            SURFACE,
            Arc::clone(&readiness),
            &metrics,
            &settings.server,
        );
        let server = Server::bind(&settings.server, router, readiness).await?;
        Ok(Self {
            server,
            settings,
            state,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves until `shutdown` resolves; drains in-flight requests, writes every
    /// pending group, stops the heartbeat and closes the pool, all within the
    /// shutdown timeout.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(
            port = self.port(),
            backend = ?self.state.db.backend(),
            store = %self.state.grouper.store().describe(),
            window_ms = self.settings.ingest.group_window_ms,
            "data-ingestion listening"
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let maintenance = tokio::spawn(self.state.idempotency.clone().maintain(async move {
            let _ = stop_rx.await;
        }));
        let ends = self.server.serve(shutdown).await?;
        // The final flush and the rest get what is left of the shutdown timeout, so the
        // whole shutdown stays within drain delay + shutdown timeout (the grace period
        // the charts check). Groups still unwritten then were never acknowledged: their
        // clients got no 201 and send them again.
        let finish = async {
            self.state.grouper.flush_all().await;
            let _ = stop_tx.send(());
            let _ = maintenance.await;
            self.state.db.close().await;
        };
        if tokio::time::timeout_at(ends, finish).await.is_err() {
            tracing::error!(
                pending_bytes = self.state.grouper.pending_bytes(),
                "shutdown timeout reached before every pending group was written; \
                 their requests were not acknowledged"
            );
            return Ok(());
        }
        tracing::info!("data-ingestion stopped; every pending group written");
        Ok(())
    }
}
