//! `signal-server`: run the swarm's signalling server.
//!
//! ```text
//! signal-server [--config FILE] [--listen 127.0.0.1:8080] [--www www] [flags…]
//! signal-server token --room ROOM [--ttl SECS]     (with --token-secret or SIGNAL_TOKEN_SECRET)
//! ```
//! Every flag can also be given as an environment variable (`SIGNAL_…`, listed by `--help`)
//! or as a key in the TOML file. Logs go to stderr; set `RUST_LOG` (e.g. `RUST_LOG=debug`) for
//! more. Once listening, it prints one line to stdout: `listening on http://ADDR` (or
//! `https://` with TLS). With `--tls-self-signed` it prints before that line where the
//! certificate is and what it is for, `certificate SHA-256 AB:CD:…`, and `open https://…/`
//! for each URL the page can be opened at.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_server::access::{issue_token, unix_now};
use signal_server::settings::{LogFormat, Settings};
use swarm_protocol::RoomName;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Signalling server of the swarm: introduces browser peers to each other over WebSocket
/// (`/ws/{room}`) and serves the web page. It never sees what peers send each other.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: Settings,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a token for joining ROOM, signed with --token-secret, for testing or for
    /// applications that shell out (most will compute it themselves: see the README).
    Token {
        /// The room the token opens.
        #[arg(long)]
        room: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let resolved = match cli.settings.with_file().and_then(Settings::resolve) {
        Ok(resolved) => resolved,
        Err(err) => {
            eprintln!("signal-server: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token { room, ttl }) = cli.command {
        return print_token(resolved.config.token_secret.as_deref(), room, ttl);
    }
    init_logs(resolved.log_format);

    let mut config = resolved.config;
    if !config.www.join("index.html").is_file() {
        tracing::warn!(www = %config.www.display(), "no index.html there: the page will not load");
    }
    let listener = match TcpListener::bind(resolved.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("signal-server: cannot listen on {}: {err}", resolved.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr();
    if let Some(self_signed) = &resolved.self_signed {
        let local = *local.as_ref().unwrap_or(&resolved.listen);
        match signal_server::self_signed::prepare(self_signed, local) {
            Ok(prepared) => {
                let cert = &prepared.certificate;
                tracing::info!(
                    cert = %cert.tls.cert.display(),
                    fingerprint = %cert.fingerprint,
                    outcome = %cert.outcome,
                    names = ?cert.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    urls = ?prepared.urls,
                    "self-signed TLS certificate: compare its SHA-256 fingerprint in the browser"
                );
                for line in prepared.report() {
                    println!("{line}");
                }
                config.tls = Some(prepared.certificate.tls);
            }
            Err(err) => {
                eprintln!("signal-server: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match local {
        Ok(addr) => println!("listening on {scheme}://{addr}"),
        Err(err) => tracing::warn!(%err, "bound, but the address is unknown"),
    }
    match signal_server::run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("signal-server: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn print_token(secret: Option<&str>, room: String, ttl: u64) -> ExitCode {
    let Some(secret) = secret else {
        eprintln!("signal-server: token needs --token-secret (or SIGNAL_TOKEN_SECRET)");
        return ExitCode::from(2);
    };
    let room = match RoomName::new(room) {
        Ok(room) => room,
        Err(err) => {
            eprintln!("signal-server: {err}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{}",
        issue_token(secret, &room, unix_now().saturating_add(ttl))
    );
    ExitCode::SUCCESS
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
