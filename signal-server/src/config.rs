//! Server settings, resolved: every field has its final value. [`crate::settings`] builds a
//! [`Config`] from flags, environment variables and a TOML file.

use std::path::PathBuf;
use std::time::Duration;

use swarm_protocol::IceServer;

use crate::self_signed::SanName;

/// Default for [`Config::max_frame_len`]: room for an SDP offer with many candidates.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Default for [`Config::redis_presence_ttl`], in seconds.
pub const DEFAULT_REDIS_PRESENCE_TTL_SECS: u64 = 10;

/// Default for [`Config::resume_grace`], in seconds.
pub const DEFAULT_RESUME_GRACE_SECS: u64 = 20;

/// Default for [`Config::outgoing_queue`].
pub const DEFAULT_OUTGOING_QUEUE: usize = 256;

/// Default for [`Config::outgoing_queue_bytes`]: 1 MiB, room for the answers and candidates
/// of a few hundred peers, and 16 frames of the largest size.
pub const DEFAULT_OUTGOING_QUEUE_BYTES: usize = 1024 * 1024;

/// The period [`Limits::turn_credentials_per_ip`] counts over.
pub const TURN_CREDENTIALS_PERIOD: Duration = Duration::from_secs(60 * 60);

/// Everything the server can be told. [`Config::default`] serves `www/` with no ICE servers,
/// public rooms, and limits generous enough for any honest client.
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
    /// Bytes of frames waiting for one client (queued, or in the batch being written) before
    /// it counts as too slow and is disconnected with close code 1008, whatever the number of
    /// frames. A frame is always accepted into an empty queue, so the most a client can hold
    /// is the larger of this and one frame.
    pub outgoing_queue_bytes: usize,
    /// Handed to every client in `welcome.iceServers` (before the TURN server of
    /// [`Config::turn`], if any).
    pub ice_servers: Vec<IceServer>,
    /// A TURN server whose time-limited credentials this server issues.
    pub turn: Option<TurnConfig>,
    /// Rates, counts and timeouts.
    pub limits: Limits,
    /// `Origin` header values allowed to open a WebSocket; empty allows every origin.
    pub allowed_origins: Vec<String>,
    /// With a secret, joining a room needs a token signed with it (`?token=`).
    pub token_secret: Option<String>,
    /// Take the client's address from the last `X-Forwarded-For` entry (set by a reverse
    /// proxy in front of this server) instead of the TCP peer, for per-address limits.
    pub trust_forwarded_for: bool,
    /// Serve HTTPS and `wss://` directly.
    pub tls: Option<TlsConfig>,
    /// Share rooms with other instances through this Redis server (`redis://host:port`).
    pub redis: Option<String>,
    /// With Redis: an instance that has not refreshed its presence for this long counts as
    /// dead, and its peers as gone.
    pub redis_presence_ttl: Duration,
    /// How long a peer whose connection was lost (no close frame: a network drop, a proxy
    /// restart, the idle timeout) stays in its room before the others hear `left`. Reconnecting
    /// with its `resume` token within that time gives it back its id without anyone noticing.
    /// Zero announces `left` at once.
    pub resume_grace: Duration,
    /// The secret `resume` tokens are signed with. Instances sharing rooms through Redis,
    /// and a server that restarts, need the same one for tokens to stay valid; without one,
    /// each process draws a random key.
    pub resume_secret: Option<String>,
    /// Send a `Content-Security-Policy` (see [`crate::routes::content_security_policy`])
    /// with every file of [`Config::www`]. Turn it off for a page of your own that needs
    /// more than the bundled page does (other origins, inline scripts, framing).
    pub content_security_policy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            www: PathBuf::from("www"),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            outgoing_queue: DEFAULT_OUTGOING_QUEUE,
            outgoing_queue_bytes: DEFAULT_OUTGOING_QUEUE_BYTES,
            ice_servers: Vec::new(),
            turn: None,
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            token_secret: None,
            trust_forwarded_for: false,
            tls: None,
            redis: None,
            redis_presence_ttl: Duration::from_secs(DEFAULT_REDIS_PRESENCE_TTL_SECS),
            resume_grace: Duration::from_secs(DEFAULT_RESUME_GRACE_SECS),
            resume_secret: None,
            content_security_policy: true,
        }
    }
}

impl Config {
    /// The size past which a frame is not even read: the connection is closed instead.
    pub fn hard_frame_limit(&self) -> usize {
        self.max_frame_len.saturating_mul(16)
    }
}

/// How much any one client, address or room may take. A count of 0 means "no limit".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Frames per second one connection may send, on average (token bucket refill rate).
    pub rate: u32,
    /// Frames one connection may send in a burst (token bucket size). Joining a busy room
    /// makes a burst of offers and ICE candidates, so this is large.
    pub burst: u32,
    /// WebSocket connections open at once from one IP address.
    pub connections_per_ip: usize,
    /// Peers in one room.
    pub peers_per_room: usize,
    /// Rooms on this server.
    pub rooms: usize,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// The server pings every client this often; browsers answer on their own.
    pub ping_interval: Duration,
    /// Time allowed from accepting a TCP connection to the end of its TLS handshake and of the
    /// headers of its first request. A connection that sends nothing is closed after it too.
    pub handshake_timeout: Duration,
    /// An HTTP connection (HTTP/1.1 keep-alive or h2c, not a WebSocket) on which no byte has
    /// moved either way for this long is closed.
    pub http_idle_timeout: Duration,
    /// A write to a WebSocket client (one batch of frames, a ping, a close) that does not
    /// complete within this time means the client is not reading: it is disconnected as too
    /// slow (1008).
    pub write_timeout: Duration,
    /// TCP connections open at once from one IP address (HTTP and WebSocket alike); further
    /// ones are closed at once, before anything is read. Not applied with
    /// [`Config::trust_forwarded_for`], where the TCP peer is the proxy.
    pub tcp_connections_per_ip: usize,
    /// TURN credentials handed to one IP address (IPv6: one /64) per
    /// [`TURN_CREDENTIALS_PERIOD`], as a token bucket; past it, `welcome` carries no TURN
    /// entry (the client joins anyway and connects without a relay).
    pub turn_credentials_per_ip: u32,
}

/// Default for [`Limits::tcp_connections_per_ip`] given [`Limits::connections_per_ip`]:
/// twice as many, for the page's own HTTP connections next to the WebSockets; no limit if
/// WebSockets have none.
pub fn default_tcp_connections_per_ip(websockets_per_ip: usize) -> usize {
    websockets_per_ip.saturating_mul(2)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate: 50,
            burst: 500,
            connections_per_ip: 64,
            peers_per_room: 500,
            rooms: 100_000,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            tcp_connections_per_ip: default_tcp_connections_per_ip(64),
            turn_credentials_per_ip: 100,
        }
    }
}

/// A TURN server that accepts credentials from the TURN REST API (coturn's
/// `use-auth-secret` with the same `static-auth-secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The server's URLs, e.g. `turn:turn.example.org:3478?transport=udp`.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server.
    pub secret: String,
    /// How long issued credentials stay valid.
    pub ttl: Duration,
}

/// A self-signed certificate that the server makes for itself (`--tls-self-signed`, see
/// [`crate::self_signed`]); once the listener is bound, [`crate::self_signed::prepare`] turns
/// it into the [`TlsConfig`] that [`Config::tls`] serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSignedConfig {
    /// Where the certificate and its key are kept across restarts.
    pub dir: PathBuf,
    /// Names it is for besides the listen address (or the machine's addresses), `localhost`
    /// and the hostname.
    pub names: Vec<SanName>,
}

/// Certificate and key for serving TLS directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file holding the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file holding the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}
