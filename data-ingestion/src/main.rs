//! `data-ingestion [serve|migrate|simulate|create-key|print-config]`; no argument serves.

use std::process::ExitCode;

use clap::Parser;
use common::Service;
use data_ingestion::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::cli::main(Service::Ingestion, |settings| {
        run(cli.command.unwrap_or_default(), settings)
    })
    .await
}
