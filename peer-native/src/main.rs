//! `swarm-peer`: the native peer's command line. See the crate documentation.

use std::process::ExitCode;

use clap::Parser;
use swarm_peer::commands::{Cli, run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SWARM_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,rtc_ice=error,rtc=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("swarm-peer: {err}");
            ExitCode::FAILURE
        }
    }
}
