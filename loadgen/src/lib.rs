//! A load generator for WebRTC signalling servers. It opens many WebSocket peers in small
//! rooms, has them signal each other, and measures joins per second, relayed signals per
//! second, relay latency and the server's memory per connection. It speaks three protocols
//! through small adapters, so the same scenario runs against our `signal-server`,
//! `matchbox_server` and the PeerJS server side by side.
//!
//! # Layout
//! - [`target`]: which server, where, and which process to weigh.
//! - [`adapter`]: one adapter per protocol, and the timestamped payload.
//! - [`connect`]: opening one peer's WebSocket from a chosen source address.
//! - [`relay`]: the join-and-relay scenario.
//! - [`hold`]: the idle hold, spread over worker processes.
//! - [`rss`]: a process's resident memory from `/proc`.
//! - [`stats`]: percentiles of latencies.
//! - [`report`]: Markdown tables.
//! - [`error`]: [`LoadgenError`], what can go wrong.

pub mod adapter;
pub mod connect;
pub mod error;
pub mod hold;
pub mod relay;
pub mod report;
pub mod rss;
pub mod stats;
pub mod target;

pub use error::LoadgenError;
pub use target::{ServerKind, Target};

/// A short id, unique enough to keep one run's rooms and peer names apart from another's:
/// lowercase hex of this process's id and the time.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{:x}{nanos:08x}", std::process::id())
}
