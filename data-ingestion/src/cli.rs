//! The command line: serve (default), migrate, simulate, print-config.

use clap::{Parser, Subcommand};
use common::auth::{Scope, create_key_text};
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
    /// Create an API key: prints the key once and the hashed entry to store.
    CreateKey {
        /// Who will hold the key (appears in logs and metrics).
        #[arg(long)]
        name: String,
        /// Scopes: read (api-service), ingest (data-ingestion); repeat for several.
        #[arg(long = "scope", value_parser = parse_scope, required = true)]
        scopes: Vec<Scope>,
    },
    /// Print the effective settings (secrets redacted) and exit.
    PrintConfig,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    match s {
        "read" => Ok(Scope::Read),
        "ingest" => Ok(Scope::Ingest),
        other => Err(format!("unknown scope {other:?}: expected read or ingest")),
    }
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
        Command::CreateKey { name, scopes } => {
            print!(
                "{}",
                create_key_text(&name, &scopes).map_err(anyhow::Error::msg)?
            );
        }
        Command::PrintConfig => println!("{settings:#?}"),
    }
    Ok(())
}
