//! `tollgate-sidecar` binary: parse flags, set up logging (stderr), run.

use clap::Parser;
use tollgate_sidecar::config::{Cli, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout's first line is the listen address for scripts.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::from_cli(Cli::parse())?;
    tollgate_sidecar::run(config).await
}
