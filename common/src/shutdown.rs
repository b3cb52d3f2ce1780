//! Graceful shutdown: SIGTERM or SIGINT turns readiness off, the process keeps
//! serving for the drain delay (the load balancer deregisters the pod meanwhile; the
//! image has no shell for a `sleep` preStop), then stops accepting and lets in-flight
//! requests finish, bounded by the shutdown timeout. [`serve`] returns when that
//! timeout ends, so the work after serving (data-ingestion's final flush, closing the
//! pool) fits in what is left of it: drain delay + shutdown timeout is the whole
//! shutdown, which the charts keep below `terminationGracePeriodSeconds`.
//!
//! Connections are served by hyper's HTTP/1 server with a header read timeout
//! (`server.header_read_timeout_secs`): `axum::serve` has none, so a client that
//! trickled a request head a byte at a time (or opened a connection and sent nothing)
//! held its connection and file descriptor for ever.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

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
/// the module docs. Returns when every connection closed or the timeout passed, with
/// the instant the shutdown timeout ends: whatever runs after serving must be done by
/// then.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    readiness: Arc<Readiness>,
    server: &ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Instant> {
    let drain_delay = server.drain_delay();
    let timeout = server.shutdown_timeout();
    let ends = Arc::new(OnceLock::<Instant>::new());
    let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
    let ends_at = Arc::clone(&ends);
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
        ends_at.get_or_init(|| Instant::now() + timeout);
        let _ = stopping_tx.send(());
    };
    let server = serve_connections(listener, app, server.header_read_timeout(), graceful);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result?,
        () = deadline => {
            tracing::warn!("shutdown timeout reached with requests still in flight; exiting");
        }
    }
    Ok(ends.get().copied().unwrap_or_else(Instant::now))
}

/// Accepts connections until `stop` resolves, then asks every connection to finish
/// its in-flight request and close, and waits for all of them.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Dropping `closing_tx` tells every connection to shut down gracefully; each holds
    // a clone of `open_rx` until it ends, so `open_tx.closed()` waits for all of them.
    let (closing_tx, closing_rx) = watch::channel(());
    let (open_tx, open_rx) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept:
                    // back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = pin!(conn);
            let mut asked = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    _ = closing.changed(), if !asked => {
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(closing_tx);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}
