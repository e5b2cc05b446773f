//! `signal-server`: run the swarm's signalling server.
//!
//! ```text
//! signal-server [--listen 127.0.0.1:8080] [--www www] [--max-frame 65536]
//! ```
//! Every flag can also be given as an environment variable (`SIGNAL_LISTEN`, `SIGNAL_WWW`,
//! `SIGNAL_MAX_FRAME`). Logs go to stderr; set `RUST_LOG` (e.g. `RUST_LOG=debug`) for more.
//! Once listening, it prints one line to stdout: `listening on http://ADDR`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use signal_server::{Config, config::DEFAULT_MAX_FRAME_LEN};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Signalling server of the swarm: introduces browser peers to each other over WebSocket
/// (`/ws/{room}`) and serves the web page. It never sees what peers send each other.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address and port to listen on. Port 0 picks a free port.
    #[arg(long, env = "SIGNAL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Directory served at `/`: the page (index.html) and the WASM client (pkg/).
    #[arg(long, env = "SIGNAL_WWW", default_value = "www")]
    www: PathBuf,

    /// Largest JSON frame a client may send, in bytes; larger ones get a `too-large` error.
    #[arg(long, env = "SIGNAL_MAX_FRAME", default_value_t = DEFAULT_MAX_FRAME_LEN)]
    max_frame: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    if !args.www.join("index.html").is_file() {
        tracing::warn!(www = %args.www.display(), "no index.html there: the page will not load");
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("signal-server: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(err) => tracing::warn!(%err, "bound, but the address is unknown"),
    }

    let config = Config {
        www: args.www,
        max_frame_len: args.max_frame,
        ..Config::default()
    };
    match signal_server::run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("signal-server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
