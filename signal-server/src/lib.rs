//! The swarm's signalling server: it introduces peers to each other and relays their WebRTC
//! negotiation (signalling protocol v1, see `protocol/PROTOCOL.md`), and serves the web page.
//! It never reads what peers send each other, and once peers are connected it is no longer
//! needed.
//!
//! # Layout
//! - [`config`]: [`Config`], every setting with its default.
//! - [`routes`]: [`app`], the HTTP routes: `/ws/{room}`, `/healthz` and the static page.
//! - `connection`: one task per WebSocket: join, relay, leave.
//! - `state`: [`AppState`], shared by all connections: the room registry (from `swarm-core`),
//!   id generation and the shutdown signal.
//! - [`run`]: serves an already bound listener until a shutdown future completes, then closes
//!   every WebSocket with `1001 going away` and waits for the connections to drain.

pub mod config;
mod connection;
pub mod routes;
mod state;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;
pub use routes::app;
pub use state::AppState;

/// How long [`run`] waits for WebSocket connections to close after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` completes, then closes every connection cleanly.
///
/// The listener is bound by the caller, so tests can bind port 0 and read the real address.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config);
    let stopping = state.shutdown_token();
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            stopping.cancel();
        })
        .await?;
    // Upgraded WebSockets are not HTTP connections any more, so axum does not wait for them.
    if !state.drain(DRAIN_TIMEOUT).await {
        tracing::warn!("some connections did not close within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}
