//! api-service integration tests: the app on port 0 against real PostgreSQL (a fresh
//! database per test) and the embedded SQLite backend.

mod helpers;

/// Runs an `async fn(Backend)` test once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(crate::helpers::Backend::Postgres).await
            }
            #[tokio::test]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await
            }
        })*
    };
}

mod analytics;
mod errors;
mod health;
mod metrics;
mod migrations;
mod openapi;
mod outcomes;
mod procedures;
mod resilience;
mod robots;
