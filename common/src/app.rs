//! What both services assemble and run: the HTTP surface (API routes, OpenAPI
//! document, probes, metrics, the shared layer stack) and the bound server.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::{ServerSettings, Service};
use crate::health::Readiness;
use crate::http::{finish_router, probe_router};
use crate::metrics::Metrics;

/// Where a service's own documents and health aliases live.
#[derive(Debug, Clone, Copy)]
pub struct Surface {
    /// Which service.
    pub service: Service,
    /// `/api/health` or `/ingest/health`, besides `/health`.
    pub health_alias: &'static str,
    /// `/api/openapi.json` or `/ingest/openapi.json`.
    pub openapi_path: &'static str,
}

/// The whole HTTP surface: `api` (routes with their state applied) and the OpenAPI
/// document behind the process-wide concurrency limit, the probes and `/metrics`
/// outside it, all wrapped in the shared layer stack.
pub fn assemble(
    api: Router,
    openapi: &utoipa::openapi::OpenApi,
    surface: Surface,
    readiness: Arc<Readiness>,
    metrics: &Metrics,
    server: &ServerSettings,
) -> Router {
    let doc: Arc<str> = Arc::from(openapi.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let api = api.route(
        surface.openapi_path,
        get(move || {
            let doc = Arc::clone(&doc);
            async move { ([(CONTENT_TYPE, "application/json")], doc.to_string()) }
        }),
    );
    let probes = probe_router(
        surface.service,
        &[surface.health_alias],
        readiness,
        metrics.clone(),
    );
    finish_router(api, probes, server, metrics)
}

/// A bound listener with its router: bind first (port 0 in tests), then serve.
pub struct Server {
    listener: TcpListener,
    router: Router,
    readiness: Arc<Readiness>,
    settings: ServerSettings,
}

impl Server {
    /// Binds the configured address.
    pub async fn bind(
        settings: &ServerSettings,
        router: Router,
        readiness: Arc<Readiness>,
    ) -> anyhow::Result<Self> {
        let listener = crate::bind(settings)
            .await
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        Ok(Self {
            listener,
            router,
            readiness,
            settings: settings.clone(),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then drains (see [`crate::shutdown`]); returns
    /// the instant the shutdown timeout ends, the bound for the work left after serving.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<tokio::time::Instant> {
        crate::shutdown::serve(
            self.listener,
            self.router,
            self.readiness,
            &self.settings,
            shutdown,
        )
        .await
    }
}
