//! api-service integration tests: the app on port 0 against real PostgreSQL (a fresh
//! database per test) and the embedded SQLite backend.

#[macro_use]
extern crate common;

mod helpers;

mod analytics;
mod auth;
mod errors;
mod health;
mod limits;
mod metrics;
mod migrations;
mod openapi;
mod outcomes;
mod procedures;
mod process;
mod resilience;
mod robots;
mod traces;
