//! Subcommands both binaries share (`migrate`, `create-key`, `print-config`) and
//! the body of their thin `main`.

use std::future::Future;
use std::process::ExitCode;

use clap::Subcommand;

use crate::auth::{Scope, create_key_text};
use crate::config::{Service, Settings};
use crate::db::Db;

/// Shared subcommands.
#[derive(Debug, Subcommand)]
pub enum Shared {
    /// Apply the database migrations and exit (the Helm pre-install/pre-upgrade Job).
    Migrate,
    /// Create an API key: prints the key once and the hashed entry to store.
    CreateKey {
        /// Who will hold the key (appears in logs and metrics).
        #[arg(long)]
        name: String,
        /// Scopes: read (api-service), ingest (data-ingestion); repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
    },
    /// Print the effective settings (secrets redacted) and exit.
    PrintConfig,
}

/// Runs a shared subcommand.
pub async fn run_shared(
    command: Shared,
    settings: &Settings,
    service: Service,
) -> anyhow::Result<()> {
    match command {
        Shared::Migrate => {
            let db = Db::connect(&settings.database, service.name()).await?;
            db.migrate().await?;
            tracing::info!(backend = ?db.backend(), "migrations applied");
            db.close().await;
        }
        Shared::CreateKey { name, scopes } => {
            print!(
                "{}",
                create_key_text(&name, &scopes).map_err(anyhow::Error::msg)?
            );
        }
        Shared::PrintConfig => println!("{settings:#?}"),
    }
    Ok(())
}

/// Loads the settings (a bad one exits 2 with one line), starts logging, runs
/// `run` and maps its outcome to the exit code.
pub async fn main<F, Fut>(service: Service, run: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::load(service) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{}: {err}", service.name());
            return ExitCode::from(2);
        }
    };
    if let Err(err) = crate::logging::init(&settings.log, service.name()) {
        eprintln!("{}: {err:#}", service.name());
        return ExitCode::from(2);
    }
    let code = match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{} failed", service.name());
            ExitCode::FAILURE
        }
    };
    // Spans still queued for the collector leave before the process does.
    let _ = tokio::task::spawn_blocking(crate::telemetry_otel::shutdown).await;
    code
}
