//! The command line: serve (default), seed, and the shared migrate, create-key,
//! print-config.

use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand};
use common::cli::{Shared, run_shared};
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
    /// Apply migrations and fill an empty database with deterministic demo data.
    Seed {
        /// Last day of the two years of procedures (default: today, UTC).
        #[arg(long)]
        anchor_date: Option<NaiveDate>,
    },
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
        Command::Shared(shared) => run_shared(shared, &settings, Service::Api).await?,
    }
    Ok(())
}
