//! Server settings.

use std::path::PathBuf;

use swarm_protocol::IceServer;

/// Default for [`Config::max_frame_len`]: room for an SDP offer with many candidates.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Default for [`Config::outgoing_queue`].
pub const DEFAULT_OUTGOING_QUEUE: usize = 256;

/// Everything the server can be told. [`Config::default`] serves `www/` with no ICE servers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory served at `/`: the page and the WASM client in `pkg/`.
    pub www: PathBuf,
    /// Largest text frame a client may send, in bytes. A larger frame is answered with a
    /// `too-large` error and dropped; the connection stays open. Frames above 16 times this
    /// size close the connection with code 1009 without being read whole.
    pub max_frame_len: usize,
    /// Frames queued for one client before it counts as too slow and is disconnected with
    /// close code 1008, so a stalled client never holds up its room.
    pub outgoing_queue: usize,
    /// Handed to every client in `welcome.iceServers`.
    pub ice_servers: Vec<IceServer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            www: PathBuf::from("www"),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            outgoing_queue: DEFAULT_OUTGOING_QUEUE,
            ice_servers: Vec::new(),
        }
    }
}

impl Config {
    /// The size past which a frame is not even read: the connection is closed instead.
    pub fn hard_frame_limit(&self) -> usize {
        self.max_frame_len.saturating_mul(16)
    }
}
