//! Shared runtime pieces of the medrobotics services: settings, the database pool and
//! migrations, probes, metrics, logging, the HTTP layer stack and graceful shutdown.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod storage;
pub mod telemetry_otel;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{Service, Settings};
pub use db::{Arg, Db, DbError, Query, Rows};

/// Binds the listener for `server` (port 0 picks a free port).
pub async fn bind(server: &config::ServerSettings) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind((server.host.as_str(), server.port)).await
}
