//! `api-service [serve|migrate|seed|print-config]`; no argument serves.

use std::process::ExitCode;

use api_service::cli::{Cli, run};
use clap::Parser;
use common::{Service, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(Service::Api) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("api-service: {err}");
            return ExitCode::from(2);
        }
    };
    common::logging::init(&settings.log);
    match run(cli.command.unwrap_or_default(), settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "api-service failed");
            ExitCode::FAILURE
        }
    }
}
