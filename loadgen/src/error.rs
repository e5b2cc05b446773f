//! The generator's errors.

use std::net::SocketAddr;

/// Everything that can stop a scenario, or one peer of it.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A TCP socket could not be created, bound to its source address, or connected.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server's address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The WebSocket handshake or a later read or write failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection before it assigned the peer an id.
    #[error("closed by the server before an id was assigned")]
    ClosedBeforeId,
    /// The server refused the peer before assigning an id (its own words).
    #[error("refused by the server: {0}")]
    Refused(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A server process's memory could not be read from `/proc`.
    #[error("cannot read the memory of process {pid}: {reason}")]
    Rss {
        /// The process id.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// A command-line value could not be understood.
    #[error("{0}")]
    BadArgument(String),
    /// A worker process of the idle hold failed or said something unexpected.
    #[error("hold worker: {0}")]
    Worker(String),
    /// Local I/O (spawning workers, talking to them) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
