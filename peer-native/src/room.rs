//! A joined room, as the commands use it: join, share, download, send, ask, leave.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use swarm_core::identity::Identity;
use swarm_core::secret_room::RoomSecret;
use swarm_core::share::ShareError;
use swarm_core::signal_guard::SignalPolicy;
use swarm_protocol::{ContentId, ErrorCode, PeerId, RoomName};
use tokio::sync::{mpsc, oneshot};

use crate::node::{self, Command, Input, NodeConfig, NodeEvent, Status};
use crate::store::{self, StoreError};

/// How long joining may take before the server is declared unreachable.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything that can go wrong for a command; each ends the program with status 1 and
/// this message.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// `--server` is not a `ws://`, `wss://`, `http://` or `https://` URL.
    #[error("bad server URL {0:?}: expected ws://host:port (or wss://, http://, https://)")]
    BadServerUrl(String),
    /// `--room` is not a valid room name.
    #[error("bad room name {name:?}: {reason}")]
    BadRoom {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// `--secret` cannot be used (empty, or too long).
    #[error("bad room secret: {0}")]
    BadSecret(String),
    /// The content id is not 64 hex digits.
    #[error("bad content id {0:?}: expected 64 hex digits")]
    BadContentId(String),
    /// The server cannot be reached, or closed before welcoming us.
    #[error("cannot join through {url}: {reason}")]
    ServerUnreachable {
        /// The server.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server refused the join.
    #[error("the server refused the join ({}): {message}", code.as_str())]
    Refused {
        /// The server's error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No peer of the room offered the content in time.
    #[error("no peer in room {room} offers content {id} (waited {waited_secs} s)")]
    UnknownContent {
        /// The room.
        room: String,
        /// The content.
        id: ContentId,
        /// How long we waited.
        waited_secs: u64,
    },
    /// The download stopped making progress.
    #[error(
        "download of {id} stalled: no verified piece for {secs} s ({received} of {total} bytes)"
    )]
    Stalled {
        /// The content.
        id: ContentId,
        /// How long nothing arrived.
        secs: u64,
        /// Bytes verified so far.
        received: u64,
        /// The file's length.
        total: u64,
    },
    /// A file cannot be read, hashed or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The download cannot be written.
    #[error("cannot save {id}: {error}")]
    SaveFailed {
        /// The content.
        id: ContentId,
        /// What went wrong.
        error: String,
    },
    /// The target file exists already.
    #[error("{0} exists already (remove it, or choose another path with -o)")]
    TargetExists(PathBuf),
    /// The key file cannot be read or created, or does not hold a key.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node stopped unexpectedly.
    #[error("the peer stopped unexpectedly")]
    Stopped,
}

/// How to reach a room.
#[derive(Debug, Clone)]
pub struct RoomAddress {
    /// The server's base URL, `ws[s]://host[:port]`.
    pub server: String,
    /// The room.
    pub room: RoomName,
    /// The server's access token, if it wants one.
    pub token: Option<String>,
    /// A secret room's secret and what it derives: the server then sees only the derived
    /// name, and every signal is sealed.
    pub secret: Option<(String, RoomSecret)>,
}

impl RoomAddress {
    /// Checks `server` and `room`.
    pub fn new(server: &str, room: &str, token: Option<String>) -> Result<Self, PeerError> {
        Self::with_secret(server, room, token, None)
    }

    /// Checks `server`, `room` and the secret of a secret room.
    pub fn with_secret(
        server: &str,
        room: &str,
        token: Option<String>,
        secret: Option<String>,
    ) -> Result<Self, PeerError> {
        let server = server.trim_end_matches('/');
        let server = if let Some(rest) = server.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = server.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if server.starts_with("ws://") || server.starts_with("wss://") {
            server.to_owned()
        } else {
            return Err(PeerError::BadServerUrl(server.to_owned()));
        };
        let room = RoomName::new(room).map_err(|err| PeerError::BadRoom {
            name: room.to_owned(),
            reason: err.to_string(),
        })?;
        let secret = match secret {
            None => None,
            Some(text) => {
                let derived = RoomSecret::derive(&text, &room)
                    .map_err(|err| PeerError::BadSecret(err.to_string()))?;
                Some((text, derived))
            }
        };
        Ok(Self {
            server,
            room,
            token,
            secret,
        })
    }

    /// The room name the server sees: the derived one in a secret room.
    fn server_room(&self) -> &RoomName {
        self.secret
            .as_ref()
            .map_or(&self.room, |(_, derived)| derived.server_room())
    }

    /// The room's WebSocket URL.
    fn socket_url(&self) -> String {
        let mut url = format!("{}/ws/{}", self.server, self.server_room().as_str());
        if let Some(token) = &self.token {
            url.push_str("?token=");
            url.push_str(token);
        }
        url
    }

    /// The page that opens this room straight into the download of `id`.
    pub fn page_link(&self, id: ContentId) -> String {
        let http = if let Some(rest) = self.server.strip_prefix("wss://") {
            format!("https://{rest}")
        } else {
            self.server.replacen("ws://", "http://", 1)
        };
        match &self.secret {
            Some((text, _)) => format!(
                "{http}/#{}/{id}?k={}",
                self.room.as_str(),
                js_uri_component(text)
            ),
            None => format!("{http}/#{}/{id}", self.room.as_str()),
        }
    }
}

/// Percent-encodes what `encodeURIComponent` would (the page decodes the secret with
/// `decodeURIComponent`).
fn js_uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Options of the connections.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Cap on direct connections (a partial mesh), or `None` for a full mesh.
    pub max_peers: Option<usize>,
    /// Room size above which what we provide is published in the structured layer instead
    /// of flooded ([`swarm_core::client::DHT_ABOVE`] by default).
    pub dht_above: usize,
    /// Local UDP addresses for WebRTC.
    pub udp_addrs: Vec<String>,
    /// The seed of our key (from [`load_or_create_key`]); `None` for a fresh key.
    pub key_seed: Option<[u8; 32]>,
    /// Refuse peers whose offers and answers are not signed (protocol v1 clients).
    pub require_signed: bool,
}

/// The key seed stored in `path` (64 hex digits), or a new random one written there (readable
/// by its owner only) if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32], PeerError> {
    let fail = |reason: String| PeerError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => swarm_protocol::hex::decode::<32>(text.trim())
            .ok_or_else(|| fail("expected 64 hex digits".into())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let seed: [u8; 32] = rand::random();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|err| fail(err.to_string()))?;
            writeln!(file, "{}", swarm_protocol::hex::encode(&seed))
                .map_err(|err| fail(err.to_string()))?;
            Ok(seed)
        }
        Err(err) => Err(fail(err.to_string())),
    }
}

/// A joined room.
pub struct Room {
    address: RoomAddress,
    me: PeerId,
    inputs: mpsc::UnboundedSender<Input>,
    events: mpsc::UnboundedReceiver<NodeEvent>,
}

impl Room {
    /// Joins the room; returns once the server has welcomed us.
    pub async fn join(address: RoomAddress, options: JoinOptions) -> Result<Self, PeerError> {
        let identity = Identity::from_seed(options.key_seed.unwrap_or_else(rand::random));
        let (inputs, mut events) = node::start(NodeConfig {
            url: address.socket_url(),
            room: address.server_room().clone(),
            signals: SignalPolicy {
                require_signed: options.require_signed,
                secret: address.secret.as_ref().map(|(_, derived)| derived.clone()),
            },
            identity,
            max_peers: options.max_peers,
            dht_above: options.dht_above,
            udp_addrs: options.udp_addrs,
        });
        let unreachable = |reason: String| PeerError::ServerUnreachable {
            url: address.server.clone(),
            reason,
        };
        let welcomed = tokio::time::timeout(JOIN_TIMEOUT, async {
            loop {
                match events.recv().await {
                    Some(NodeEvent::Welcomed { me }) => return Ok(me),
                    Some(NodeEvent::JoinFailed {
                        code: Some(code),
                        message,
                    }) => return Err(PeerError::Refused { code, message }),
                    Some(NodeEvent::JoinFailed {
                        code: None,
                        message,
                    }) => return Err(unreachable(message)),
                    Some(_) => {}
                    None => return Err(PeerError::Stopped),
                }
            }
        })
        .await;
        let me = match welcomed {
            Ok(Ok(me)) => me,
            Ok(Err(err)) => {
                let _ = inputs.send(Input::Command(Command::Leave));
                return Err(err);
            }
            Err(_) => {
                let _ = inputs.send(Input::Command(Command::Leave));
                return Err(unreachable(format!(
                    "no welcome within {} s",
                    JOIN_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(Self {
            address,
            me,
            inputs,
            events,
        })
    }

    /// Our id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// How to reach this room.
    pub fn address(&self) -> &RoomAddress {
        &self.address
    }

    fn command(&self, command: Command) -> Result<(), PeerError> {
        self.inputs
            .send(Input::Command(command))
            .map_err(|_| PeerError::Stopped)
    }

    /// Hashes the file at `path` (on the blocking pool) and offers it to the room; returns
    /// its content id and length.
    pub async fn share_file(&self, path: &Path) -> Result<(ContentId, u64, String), PeerError> {
        let owned = path.to_owned();
        let (id, manifest, file) = tokio::task::spawn_blocking(move || store::hash_file(&owned))
            .await
            .map_err(|_| PeerError::Stopped)??;
        let (size, name) = (manifest.size, manifest.name.clone());
        self.command(Command::Share {
            id,
            manifest,
            file: Arc::new(file),
        })?;
        Ok((id, size, name))
    }

    /// Starts downloading `id` into `target`.
    pub async fn download(&self, id: ContentId, target: PathBuf) -> Result<(), ShareError> {
        let (reply, answer) = oneshot::channel();
        if self
            .command(Command::Download { id, target, reply })
            .is_err()
        {
            return Err(ShareError::UnknownContent(id));
        }
        answer.await.unwrap_or(Err(ShareError::UnknownContent(id)))
    }

    /// Looks for providers of `id` in the room's structured layer (for a minute); what is
    /// found makes [`Room::download`] of it possible.
    pub fn lookup(&self, id: ContentId) -> Result<(), PeerError> {
        self.command(Command::Lookup { id })
    }

    /// Sends `text` to every connected peer; returns how many.
    pub async fn broadcast(&self, text: String) -> Result<usize, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Broadcast { text, reply })?;
        answer.await.map_err(|_| PeerError::Stopped)
    }

    /// Where the room stands.
    pub async fn status(&self) -> Result<Status, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Status { reply })?;
        answer.await.map_err(|_| PeerError::Stopped)
    }

    /// The next thing that happened; `None` once the node stopped.
    pub async fn next_event(&mut self) -> Option<NodeEvent> {
        self.events.recv().await
    }

    /// Leaves the room: closes every connection and the server link.
    pub async fn leave(mut self) {
        let _ = self.inputs.send(Input::Command(Command::Leave));
        // The node drops its event sender when it has stopped.
        let drain = async { while self.events.recv().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
}
