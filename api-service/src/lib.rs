//! api-service: the read API over the surgical-robotics database (port 5000),
//! wire-compatible with the Flask service it replaces.

pub mod cli;
pub mod error;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod seed;
pub mod startup;
pub mod wire;

pub use startup::{AppState, Application};
