//! data-ingestion integration tests: the app on port 0 against real PostgreSQL and
//! a real S3-protocol server (and the embedded SQLite + local-directory defaults).

#[macro_use]
extern crate common;

mod helpers;

mod bad_input;
mod batch;
mod bodies;
mod fencing;
mod idempotency;
mod loss;
mod outages;
mod procedures;
mod service;
mod telemetry;
mod wire;
