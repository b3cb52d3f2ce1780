//! data-ingestion: telemetry into the raw bucket (grouped, lossless, idempotent) and
//! procedure records into PostgreSQL (port 8080).

pub mod body;
pub mod cli;
pub mod content_type;
pub mod error;
pub mod grouper;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod procedure;
pub mod routes;
pub mod simulate;
pub mod startup;
pub mod telemetry;

pub use startup::{AppState, Application};
