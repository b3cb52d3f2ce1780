//! Graceful shutdown: SIGTERM or SIGINT turns readiness off, the process keeps
//! serving for the drain delay (the load balancer deregisters the pod meanwhile; the
//! image has no shell for a `sleep` preStop), then stops accepting and lets in-flight
//! requests finish, bounded by the shutdown timeout.

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::ServerSettings;
use crate::health::Readiness;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains as described in
/// the module docs. Returns when every connection closed or the timeout passed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    readiness: Arc<Readiness>,
    server: &ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain_delay = server.drain_delay();
    let timeout = server.shutdown_timeout();
    let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
    let graceful = async move {
        shutdown.await;
        readiness.begin_shutdown();
        tracing::info!(
            drain_delay_secs = drain_delay.as_secs(),
            "readiness off; still serving while the load balancer deregisters"
        );
        tokio::time::sleep(drain_delay).await;
        tracing::info!(
            timeout_secs = timeout.as_secs(),
            "no longer accepting connections; finishing in-flight requests"
        );
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server.into_future() => result,
        () = deadline => {
            tracing::warn!("shutdown timeout reached with requests still in flight; exiting");
            Ok(())
        }
    }
}
