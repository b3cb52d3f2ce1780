//! `data-ingestion [serve|migrate|simulate|print-config]`; no argument serves.

use std::process::ExitCode;

use clap::Parser;
use common::{Service, Settings};
use data_ingestion::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(Service::Ingestion) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("data-ingestion: {err}");
            return ExitCode::from(2);
        }
    };
    common::logging::init(&settings.log);
    match run(cli.command.unwrap_or_default(), settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "data-ingestion failed");
            ExitCode::FAILURE
        }
    }
}
