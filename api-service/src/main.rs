//! `api-service [serve|migrate|seed|create-key|print-config]`; no argument serves.

use std::process::ExitCode;

use api_service::cli::{Cli, run};
use clap::Parser;
use common::Service;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::cli::main(Service::Api, |settings| {
        run(cli.command.unwrap_or_default(), settings)
    })
    .await
}
