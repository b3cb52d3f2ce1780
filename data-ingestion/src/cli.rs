//! The command line: serve (default), migrate, simulate, print-config.

use clap::{Parser, Subcommand};
use common::{Db, Service, Settings};

use crate::simulate::{SimulateArgs, simulate};
use crate::startup::Application;

/// data-ingestion: telemetry and procedure ingestion.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Default, Subcommand)]
pub enum Command {
    /// Serve HTTP on the configured port (the default).
    #[default]
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Play robots: register procedures and stream telemetry to a running service.
    Simulate(SimulateArgs),
    /// Print the effective settings (secrets redacted) and exit.
    PrintConfig,
}

/// Runs `command`.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(common::shutdown::signal()).await?;
        }
        Command::Migrate => {
            let db = Db::connect(&settings.database, Service::Ingestion.name()).await?;
            db.migrate().await?;
            tracing::info!(backend = ?db.backend(), "migrations applied");
            db.close().await;
        }
        Command::Simulate(args) => simulate(args).await?,
        Command::PrintConfig => println!("{settings:#?}"),
    }
    Ok(())
}
