//! A native peer of the swarm: joins the same rooms as the browsers (signalling protocol v1,
//! the same peer wire protocol, WebRTC data channels through webrtc-rs) to seed and fetch
//! files from the command line.
//!
//! The room logic is `swarm-core`'s sans-I/O `Node`, the same code the browser client runs:
//! [`node`] only feeds it what happens and carries out its outputs with tokio, webrtc-rs and
//! the disk.
//!
//! # Layout
//! - [`room`]: a joined room as the commands use it, and the errors they report.
//! - [`commands`]: `seed`, `get`, `peers` and `chat`.
//! - [`node`]: the one task that owns a room and performs what the core decides.
//! - `link`: one WebRTC connection and its `swarm` data channel.
//! - `signalling`: the WebSocket to the server.
//! - [`store`]: files on disk: hashing, positioned reads and writes, atomic saving.

pub mod commands;
mod link;
pub mod node;
pub mod room;
mod signalling;
pub mod store;
