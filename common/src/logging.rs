//! The one logging initialiser: JSON lines on stdout in production, readable text on
//! a terminal. `RUST_LOG` overrides the configured level. Request bodies and
//! patient-linked fields are never logged. With an OTLP endpoint configured, the same
//! spans are also exported as traces (`crate::telemetry_otel`), under their own filter.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LogSettings};

/// Crates whose info-level chatter drowns the service's own lines.
const QUIET: &str =
    "sqlx=warn,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,hyper=warn,h2=warn";

/// Installs the global subscriber. Safe to call more than once (tests): later calls
/// keep the first subscriber. Fails only on an unusable OTLP exporter setting.
pub fn init(settings: &LogSettings, service: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},{QUIET}", settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        fmt.boxed()
    };
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter));
    let traces = crate::telemetry_otel::layer(service)?;
    let _ = logs.with(traces).try_init();
    Ok(())
}
