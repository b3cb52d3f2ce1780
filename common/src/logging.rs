//! The one logging initialiser: JSON lines on stdout in production, readable text on
//! a terminal. `RUST_LOG` overrides the configured level. Request bodies and
//! patient-linked fields are never logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Crates whose info-level chatter drowns the service's own lines.
const QUIET: &str =
    "sqlx=warn,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,hyper=warn,h2=warn";

/// Installs the global subscriber. Safe to call more than once (tests): later calls
/// keep the first subscriber.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},{QUIET}", settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
