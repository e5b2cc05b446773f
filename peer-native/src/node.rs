//! The node: one task that owns a joined room and carries out what `swarm-core` decides.
//!
//! Everything that happens (a server frame, a channel opening, a frame from a peer, a piece
//! read from disk, a command from the front end) arrives as an [`Input`] on one queue and is
//! handled in order, so no state is shared between tasks. The room logic, and every rule
//! that joins its parts, is [`swarm_core::node::Node`], the same code the browser client
//! runs: this module hands it what happened with the time on a monotonic clock, sleeps until
//! its next deadline, and carries out each [`Output`] with tokio, webrtc-rs and the disk.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarm_core::identity::Identity;
use swarm_core::merkle;
use swarm_core::node::{self as engine, Event, Node, Output};
use swarm_core::send_queue::Frame;
use swarm_core::share::{FileInfo, ShareConfig, ShareError};
use swarm_protocol::content::Manifest;
use swarm_protocol::signal::IceUrls;
use swarm_protocol::{ClientMsg, ContentId, ErrorCode, IceServer, PeerId, RoomName};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};
use webrtc::peer_connection::RTCIceServer;

use crate::link::{Link, LinkConfig};
use crate::signalling::ServerLink;
use crate::store::{self, Store};

/// Something that happened, for the node to handle.
#[derive(Debug)]
pub(crate) enum Input {
    /// A text frame from server connection `generation`.
    ServerFrame { generation: u64, text: String },
    /// Server connection `generation` ended (or never opened).
    ServerClosed {
        generation: u64,
        code: u16,
        reason: String,
    },
    /// A link produced a signal (description or candidate) for its peer.
    SignalOut {
        peer: PeerId,
        data: swarm_protocol::SignalData,
    },
    /// The `swarm` channel of link `serial` to `peer` opened.
    ChannelOpen { peer: PeerId, serial: u64 },
    /// Link `serial` to `peer` closed or failed.
    LinkClosed { peer: PeerId, serial: u64 },
    /// A message arrived on link `serial`.
    Frame {
        peer: PeerId,
        serial: u64,
        text: bool,
        data: Vec<u8>,
    },
    /// Everything queued for `peer` was handed to its channel.
    Drained { peer: PeerId },
    /// A piece asked for by `to` was read from disk.
    PieceRead {
        read: engine::ReadPiece,
        result: std::io::Result<Vec<u8>>,
    },
    /// A piece was written to disk (`Ok(true)`), or not, because it did not match its hash
    /// (`Ok(false)`); `from` is the peer that sent it if the hash was checked here.
    PieceStored {
        id: ContentId,
        piece: u32,
        from: Option<PeerId>,
        result: std::io::Result<bool>,
    },
    /// A finished download was moved to its target.
    Saved {
        id: ContentId,
        result: Result<PathBuf, store::StoreError>,
    },
    /// A request of the front end.
    Command(Command),
}

/// A request of the front end.
#[derive(Debug)]
pub(crate) enum Command {
    /// Offer a hashed file to the room.
    Share {
        id: ContentId,
        manifest: Manifest,
        file: Arc<File>,
    },
    /// Download `id` into `target`.
    Download {
        id: ContentId,
        target: PathBuf,
        reply: oneshot::Sender<Result<(), ShareError>>,
    },
    /// Look for providers of `id` in the room's structured layer.
    Lookup { id: ContentId },
    /// Send a text message to every open peer; replies how many it went to.
    Broadcast {
        text: String,
        reply: oneshot::Sender<usize>,
    },
    /// Where the room stands.
    Status { reply: oneshot::Sender<Status> },
    /// Leave the room and stop.
    Leave,
}

/// Where the room stands.
#[derive(Debug, Clone)]
pub struct Status {
    /// Our id.
    pub me: Option<PeerId>,
    /// Every member we know of, connected or not.
    pub members: Vec<PeerId>,
    /// Members with an open channel.
    pub open: Vec<PeerId>,
    /// Files known in the room.
    pub files: Vec<FileInfo>,
}

/// Something the front end hears.
#[derive(Debug)]
pub enum NodeEvent {
    /// The server welcomed us (the first time).
    Welcomed {
        /// Our id.
        me: PeerId,
    },
    /// The join failed before any `welcome`.
    JoinFailed {
        /// The server's refusal, if it sent one.
        code: Option<ErrorCode>,
        /// What went wrong.
        message: String,
    },
    /// What the node reports, as every shell hears it ([`Event::Message`] and
    /// [`Event::FilesChanged`] excepted: the front end has text messages, and asks for the
    /// file list when it wants it). [`Event::Completed`] is followed by
    /// [`NodeEvent::Saved`] once the file is moved to its target.
    Node(Event),
    /// An application text message.
    Message {
        /// The sender.
        from: PeerId,
        /// The message.
        text: String,
    },
    /// A download was verified and moved to `path`.
    Saved {
        /// The content.
        id: ContentId,
        /// Where it is now.
        path: PathBuf,
    },
    /// A download cannot be written.
    SaveFailed {
        /// The content.
        id: ContentId,
        /// What went wrong.
        error: String,
    },
}

/// How to join.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    /// `ws[s]://host[:port]/ws/{room}` (with `?token=` if the server wants one).
    pub(crate) url: String,
    pub(crate) room: RoomName,
    pub(crate) identity: Identity,
    pub(crate) max_peers: Option<usize>,
    /// Room size above which we publish in the structured layer instead of flooding.
    pub(crate) dht_above: usize,
    pub(crate) udp_addrs: Vec<String>,
    /// Signed offers required, and a secret room's key.
    pub(crate) signals: swarm_core::signal_guard::SignalPolicy,
}

/// Starts a node; returns its input queue and the events it reports.
pub(crate) fn start(
    config: NodeConfig,
) -> (
    mpsc::UnboundedSender<Input>,
    mpsc::UnboundedReceiver<NodeEvent>,
) {
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let mut engine_config =
        engine::NodeConfig::new(config.room, config.identity, unix_millis(), rand::random());
    engine_config.max_peers = config.max_peers;
    engine_config.dht_above = config.dht_above;
    engine_config.signals = config.signals;
    engine_config.share = ShareConfig {
        owner_checks_pieces: true,
        ..ShareConfig::default()
    };
    let shell = Shell {
        url: config.url,
        node: Node::new(engine_config, 0),
        links: HashMap::new(),
        closing: Vec::new(),
        next_serial: 0,
        server: None,
        generation: 0,
        reconnect_at: None,
        link_config: LinkConfig {
            udp_addrs: config.udp_addrs,
            ice_servers: Vec::new(),
        },
        store: Store::default(),
        inputs: inputs.clone(),
        events,
        started: Instant::now(),
    };
    tokio::spawn(shell.run(inputs_rx));
    (inputs, events_rx)
}

/// The node's task: the sans-I/O node and the connections, files and timers it drives.
struct Shell {
    url: String,
    node: Node,
    links: HashMap<PeerId, Link>,
    /// Links being closed: they flush what is queued first.
    closing: Vec<tokio::task::JoinHandle<()>>,
    next_serial: u64,
    server: Option<ServerLink>,
    generation: u64,
    /// When to open a new server connection (node milliseconds), after one ended.
    reconnect_at: Option<u64>,
    link_config: LinkConfig,
    store: Store,
    inputs: mpsc::UnboundedSender<Input>,
    events: mpsc::UnboundedSender<NodeEvent>,
    /// Time zero of the node's clock.
    started: Instant,
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Shell {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        self.open_server();
        loop {
            let due = self.reconnect_at.map_or(self.node.poll_timeout(), |at| {
                at.min(self.node.poll_timeout())
            });
            let deadline = self.started + Duration::from_millis(due);
            tokio::select! {
                input = inputs.recv() => match input {
                    // Never `None`: the shell holds a sender itself.
                    None | Some(Input::Command(Command::Leave)) => {
                        self.node.leave(self.now());
                        self.carry_out();
                        break;
                    }
                    Some(input) => self.handle(input),
                },
                () = tokio::time::sleep_until(deadline) => self.on_timeout(),
            }
            self.carry_out();
        }
        // The links send what they still hold, then close the peer connections. Only then is
        // the server connection closed (with a close frame): the server's `left` must not
        // reach a peer before our last messages do, or it drops them with the connection.
        let mut closing = std::mem::take(&mut self.closing);
        closing.extend(self.links.drain().map(|(_, link)| link.close()));
        let links_closed = async {
            for task in closing {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), links_closed).await;
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), server.close()).await;
        }
    }

    /// Milliseconds since the node started: the node's clock.
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn on_timeout(&mut self) {
        let now = self.now();
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            if !self.node.has_left() && self.server.is_none() {
                self.open_server();
            }
        }
        self.node.handle_timeout(now);
    }

    fn open_server(&mut self) {
        self.generation += 1;
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}{}",
            self.url,
            self.node.server_query(unix_millis() / 1000)
        );
        self.server = Some(ServerLink::connect(
            url,
            self.generation,
            self.inputs.clone(),
        ));
    }

    fn tell(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    fn current_link(&mut self, peer: PeerId, serial: u64) -> Option<&mut Link> {
        self.links
            .get_mut(&peer)
            .filter(|link| link.serial() == serial)
    }

    /// Hands one platform event to the node (events of replaced links and connections are
    /// dropped here).
    fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::ServerFrame { generation, text } => {
                if generation == self.generation {
                    self.node.handle(engine::Input::ServerFrame(&text), now);
                }
            }
            Input::ServerClosed {
                generation,
                code,
                reason,
            } => {
                if generation == self.generation {
                    self.server = None;
                    let input = engine::Input::ServerClosed {
                        code,
                        reason: &reason,
                    };
                    self.node.handle(input, now);
                }
            }
            Input::SignalOut { peer, data } => {
                if self.links.contains_key(&peer) {
                    self.node
                        .handle(engine::Input::LocalSignal { to: peer, data }, now);
                }
            }
            Input::ChannelOpen { peer, serial } => {
                if let Some(link) = self.current_link(peer, serial)
                    && !std::mem::replace(&mut link.open, true)
                {
                    self.node.handle(engine::Input::ChannelOpen(peer), now);
                }
            }
            Input::LinkClosed { peer, serial } => {
                if self.current_link(peer, serial).is_some() {
                    self.node.handle(engine::Input::ChannelClosed(peer), now);
                }
            }
            Input::Frame {
                peer,
                serial,
                text,
                data,
            } => {
                if self.current_link(peer, serial).is_none() {
                    return;
                }
                if text {
                    // Text messages are the application's: they do not pass through the node.
                    let text = String::from_utf8_lossy(&data).into_owned();
                    self.tell(NodeEvent::Message { from: peer, text });
                } else {
                    let input = engine::Input::Frame {
                        from: peer,
                        data: &data,
                    };
                    self.node.handle(input, now);
                }
            }
            Input::Drained { peer } => self.node.handle(engine::Input::Drained(peer), now),
            Input::PieceRead { read, result } => {
                if let Err(err) = &result {
                    debug!(id = %read.id, piece = read.piece, error = %err, "reading a piece failed");
                }
                let data = result.as_deref().ok();
                self.node
                    .handle(engine::Input::PieceRead { read, data }, now);
            }
            Input::PieceStored {
                id,
                piece,
                from,
                result,
            } => match result {
                Ok(stored) => {
                    let input = engine::Input::PieceStored {
                        id,
                        piece,
                        from,
                        stored,
                    };
                    self.node.handle(input, now);
                }
                Err(err) => self.cannot_store(id, err.to_string()),
            },
            Input::Saved { id, result } => match result {
                Ok(path) => self.tell(NodeEvent::Saved { id, path }),
                Err(err) => self.tell(NodeEvent::SaveFailed {
                    id,
                    error: err.to_string(),
                }),
            },
            Input::Command(command) => self.command(command, now),
        }
    }

    fn command(&mut self, command: Command, now: u64) {
        match command {
            Command::Share { id, manifest, file } => {
                self.store.add_shared(id, file);
                self.node.share(id, manifest, now);
            }
            Command::Download { id, target, reply } => {
                self.store.expect(id, target);
                let _ = reply.send(self.node.download(id, now));
            }
            Command::Lookup { id } => self.node.lookup(id, now),
            Command::Broadcast { text, reply } => {
                let open = self.node.open_peers();
                for peer in &open {
                    if let Some(link) = self.links.get(peer) {
                        link.send(Frame::Text(text.clone()));
                    }
                }
                let _ = reply.send(open.len());
            }
            Command::Status { reply } => {
                let _ = reply.send(Status {
                    me: self.node.me(),
                    members: self.node.members(),
                    open: self.node.open_peers(),
                    files: self.node.files(),
                });
            }
            Command::Leave => {} // handled by the loop
        }
    }

    /// A download cannot be written: the front end hears why, and the node gives it up.
    fn cannot_store(&mut self, id: ContentId, error: String) {
        self.tell(NodeEvent::SaveFailed { id, error });
        self.node.abandon(id, self.now());
    }

    /// Carries out everything the node asks for (which may make it ask for more).
    fn carry_out(&mut self) {
        while let Some(output) = self.node.poll_output() {
            self.carry(output);
        }
    }

    fn carry(&mut self, output: Output) {
        match output {
            Output::Connect { peer, offerer, .. } => {
                let Some(me) = self.node.me() else { return };
                debug!(%peer, offerer, "connecting");
                self.next_serial += 1;
                let link = Link::start(
                    me,
                    peer,
                    offerer,
                    self.next_serial,
                    self.link_config.clone(),
                    self.inputs.clone(),
                );
                self.links.insert(peer, link);
            }
            Output::Disconnect(peer) => {
                if let Some(link) = self.links.remove(&peer) {
                    self.closing.retain(|task| !task.is_finished());
                    self.closing.push(link.close());
                }
            }
            Output::ToServer { to, data } => {
                let text = ClientMsg::signal(to, &data).to_json();
                let sent = self.server.as_ref().is_some_and(|server| server.send(text));
                if !sent {
                    let input = engine::Input::ServerRefused { to, data };
                    self.node.handle(input, self.now());
                }
            }
            Output::Send { to, frame } => {
                if let Some(link) = self.links.get(&to) {
                    link.send(Frame::Binary(frame));
                }
            }
            Output::Signal { from, data } => match self.links.get(&from) {
                Some(link) => link.on_signal(data),
                None => debug!(peer = %from, "signal for a connection that is gone"),
            },
            Output::ReadPiece(read) => self.read_piece(read),
            Output::WritePiece(write) => self.store_piece(write),
            Output::Withdraw { to, id, piece } => {
                let drained = self
                    .links
                    .get(&to)
                    .is_some_and(|link| link.withdraw(id, piece));
                if drained {
                    self.node.handle(engine::Input::Drained(to), self.now());
                }
            }
            Output::ReconnectIn(delay) => {
                // `ServerClosed` already dropped the connection that ended.
                self.reconnect_at = Some(self.now() + delay);
            }
            Output::Welcomed {
                me,
                ice_servers,
                first,
            } => {
                self.link_config.ice_servers = ice_servers.iter().map(rtc_ice_server).collect();
                if first {
                    self.tell(NodeEvent::Welcomed { me });
                }
            }
            Output::JoinFailed { code, message } => {
                self.tell(NodeEvent::JoinFailed { code, message })
            }
            Output::Event(event) => self.on_node_event(event),
        }
    }

    /// Passes what the node reports on to the front end, preparing and finishing the
    /// download files on the way.
    fn on_node_event(&mut self, event: Event) {
        match &event {
            Event::Server(state) => info!(state = state.as_str(), "signalling server"),
            Event::Message { from, data } => {
                // Binary application messages are the browser API's; the front end has text.
                debug!(peer = %from, len = data.len(), "a binary application message");
                return;
            }
            // The front end asks for the list when it wants it.
            Event::FilesChanged => return,
            Event::ManifestReady { id, manifest } => {
                if let Err(err) = self.store.prepare(*id, manifest) {
                    self.cannot_store(*id, err.to_string());
                    return;
                }
            }
            Event::Completed(id) => {
                let id = *id;
                if let Some((file, temp, target)) = self.store.take_partial(id) {
                    let inputs = self.inputs.clone();
                    tokio::task::spawn_blocking(move || {
                        let result = store::finish(&file, &temp, &target).map(|()| target);
                        let _ = inputs.send(Input::Saved { id, result });
                    });
                }
            }
            _ => {}
        }
        self.tell(NodeEvent::Node(event));
    }

    /// Reads a piece to serve on the blocking pool.
    fn read_piece(&mut self, read: engine::ReadPiece) {
        let Some(file) = self.store.file(read.id) else {
            let input = engine::Input::PieceRead { read, data: None };
            self.node.handle(input, self.now());
            return;
        };
        let inputs = self.inputs.clone();
        tokio::task::spawn_blocking(move || {
            let result = store::read_at(&file, read.offset, read.len);
            let _ = inputs.send(Input::PieceRead { read, result });
        });
    }

    /// Writes a piece on the blocking pool, hashing it there first if it comes with a
    /// `check`: the node's loop neither hashes nor waits for the disk.
    fn store_piece(&mut self, write: engine::WritePiece) {
        let Some(file) = self.store.file(write.id) else {
            self.cannot_store(write.id, "no file to write the download to".into());
            return;
        };
        let inputs = self.inputs.clone();
        tokio::task::spawn_blocking(move || {
            let matches = write
                .check
                .as_ref()
                .is_none_or(|c| merkle::piece_hash(&write.data) == c.expected);
            let result = if matches {
                store::write_at(&file, write.offset, &write.data).map(|()| true)
            } else {
                Ok(false)
            };
            let from = write.check.map(|c| c.from);
            let (id, piece) = (write.id, write.piece);
            let _ = inputs.send(Input::PieceStored {
                id,
                piece,
                from,
                result,
            });
        });
    }
}

/// A `welcome`'s ICE server in webrtc-rs's shape.
fn rtc_ice_server(server: &IceServer) -> RTCIceServer {
    RTCIceServer {
        urls: match &server.urls {
            IceUrls::One(url) => vec![url.clone()],
            IceUrls::Many(urls) => urls.clone(),
        },
        username: server.username.clone().unwrap_or_default(),
        credential: server.credential.clone().unwrap_or_default(),
    }
}
