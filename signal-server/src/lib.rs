//! The swarm's signalling server: it introduces peers to each other and relays their WebRTC
//! negotiation (signalling protocol v1, see `protocol/PROTOCOL.md`), and serves the web page.
//! It never reads what peers send each other, and once peers are connected it is no longer
//! needed.
//!
//! # Layout
//! - [`settings`]: flags, environment variables and the TOML file, resolved into a
//!   [`Config`] ([`config`]: every setting with its default).
//! - [`serve`]: [`run`], the accept loop: TLS, handshake time limit, graceful shutdown.
//! - [`routes`]: [`app`], the HTTP routes: `/ws/{room}`, `/healthz`, `/metrics` and the page;
//!   the admission checks before a WebSocket joins.
//! - `connection`: one task per WebSocket: join, relay, rate limit, ping, leave.
//! - `state`: [`AppState`], shared by all connections: the room registry (from `swarm-core`),
//!   per-address counts, metrics, and the shutdown signal.
//! - [`cluster`]: rooms shared by several instances through Redis (`--redis`).
//! - [`access`] (room tokens, `Origin`), [`turn`] (TURN credentials), [`limits`] (token
//!   bucket, per-address slots), [`metrics`] (Prometheus text), [`tls`], [`self_signed`] (the
//!   certificate of `--tls-self-signed`), [`proofs`] (each join proof is taken once).

pub mod access;
pub mod cluster;
pub mod config;
mod connection;
pub mod limits;
pub mod metrics;
pub mod proofs;
pub mod routes;
pub mod self_signed;
pub mod serve;
pub mod settings;
mod state;
pub mod tls;
pub mod turn;

pub use config::Config;
pub use routes::app;
pub use serve::{RunError, run};
pub use state::AppState;
