//! The command line: serve (default), simulate, and the shared migrate,
//! create-key, print-config.

use clap::{Parser, Subcommand};
use common::cli::{Shared, run_shared};
use common::{Service, Settings};

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
    /// Play robots: register procedures and stream telemetry to a running service.
    Simulate(SimulateArgs),
    /// Shared subcommands.
    #[command(flatten)]
    Shared(Shared),
}

/// Runs `command`.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(common::shutdown::signal()).await?;
        }
        Command::Simulate(args) => simulate(args).await?,
        Command::Shared(shared) => run_shared(shared, &settings, Service::Ingestion).await?,
    }
    Ok(())
}
