//! The command line: serve (default), migrate, seed, print-config.

use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand};
use common::auth::{Scope, create_key_text};
use common::{Db, Service, Settings};

use crate::seed::{SeedPlan, seed};
use crate::startup::Application;

/// api-service: read API over the surgical-robotics database.
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
    /// Apply the database migrations and exit (the Helm pre-install/pre-upgrade Job).
    Migrate,
    /// Apply migrations and fill an empty database with deterministic demo data.
    Seed {
        /// Last day of the two years of procedures (default: today, UTC).
        #[arg(long)]
        anchor_date: Option<NaiveDate>,
    },
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
            let db = Db::connect(&settings.database, Service::Api.name()).await?;
            db.migrate().await?;
            tracing::info!(backend = ?db.backend(), "migrations applied");
            db.close().await;
        }
        Command::Seed { anchor_date } => {
            let db = Db::connect(&settings.database, Service::Api.name()).await?;
            db.migrate().await?;
            let anchor = anchor_date.unwrap_or_else(|| Utc::now().date_naive());
            match seed(&db, anchor, SeedPlan::default()).await? {
                Some(report) => tracing::info!(?report, %anchor, "demo data written"),
                None => tracing::info!("database already holds robots; demo data not written"),
            }
            db.close().await;
        }
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
