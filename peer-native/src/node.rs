//! The node: one task that owns a joined room and carries out what `swarm-core` decides.
//!
//! Everything that happens (a server frame, a channel opening, a frame from a peer, a piece
//! read from disk, a tick, a command from the front end) arrives as an [`Input`] on one
//! queue and is handled in order, so no state is shared between tasks. The room logic lives
//! in [`Client`] (mesh, relay, server link) and [`Share`] (files), the same code the browser
//! client runs; this module only performs their effects with tokio, webrtc-rs and the disk.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use swarm_core::client::{Client, Effect, ServerState};
use swarm_core::identity::Identity;
use swarm_core::merkle;
use swarm_core::mesh::Event;
use swarm_core::share::{FileInfo, Output, PieceCheck, Share, ShareConfig, ShareError, ShareEvent};
use swarm_protocol::content::Manifest;
use swarm_protocol::signal::IceUrls;
use swarm_protocol::wire::{self, BinaryFrame};
use swarm_protocol::{ClientMsg, ContentId, ErrorCode, IceServer, PeerId, RoomName};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use webrtc::peer_connection::RTCIceServer;

use crate::link::{Link, LinkConfig, Outgoing};
use crate::signalling::ServerLink;
use crate::store::{self, Store};

/// Period of the engine's tick.
const TICK: Duration = Duration::from_millis(250);

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
    /// Time to try the server again.
    Reconnect,
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
        to: PeerId,
        id: ContentId,
        piece: u32,
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
    /// The periodic tick.
    Tick,
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
    /// The link to the server changed state.
    Server(ServerState),
    /// A peer's channel opened.
    PeerJoined(PeerId),
    /// A peer left.
    PeerLeft(PeerId),
    /// An application text message.
    Message {
        /// The sender.
        from: PeerId,
        /// The message.
        text: String,
    },
    /// The sharing engine's news.
    Share(ShareEvent<PeerId>),
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
    let first_seq = unix_millis();
    let node = Node {
        url: config.url,
        client: Client::new(config.room, config.identity, config.max_peers, first_seq)
            .with_dht_above(config.dht_above),
        share: Share::new(
            ShareConfig {
                owner_checks_pieces: true,
                ..ShareConfig::default()
            },
            first_seq ^ 0x5eed,
        ),
        links: HashMap::new(),
        closing: Vec::new(),
        next_serial: 0,
        server: None,
        generation: 0,
        link_config: LinkConfig {
            udp_addrs: config.udp_addrs,
            ice_servers: Vec::new(),
        },
        store: Store::default(),
        inputs: inputs.clone(),
        events,
        started: Instant::now(),
    };
    tokio::spawn(node.run(inputs_rx));
    (inputs, events_rx)
}

struct Node {
    url: String,
    client: Client,
    share: Share<PeerId>,
    links: HashMap<PeerId, Link>,
    /// Links being closed: they flush what is queued first.
    closing: Vec<tokio::task::JoinHandle<()>>,
    next_serial: u64,
    server: Option<ServerLink>,
    generation: u64,
    link_config: LinkConfig,
    store: Store,
    inputs: mpsc::UnboundedSender<Input>,
    events: mpsc::UnboundedSender<NodeEvent>,
    started: Instant,
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Node {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        self.open_server();
        let ticks = self.inputs.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                if ticks.send(Input::Tick).is_err() {
                    return;
                }
            }
        });
        while let Some(input) = inputs.recv().await {
            if matches!(input, Input::Command(Command::Leave)) {
                let effects = self.client.leave();
                self.apply(effects);
                break;
            }
            self.handle(input);
        }
        ticker.abort();
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

    /// Milliseconds since the node started: the sharing engine's clock.
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn open_server(&mut self) {
        self.generation += 1;
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}{}",
            self.url,
            self.client.server_query(unix_millis() / 1000)
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

    fn handle(&mut self, input: Input) {
        match input {
            Input::ServerFrame { generation, text } => {
                if generation == self.generation {
                    let effects = self.client.on_server_frame(&text);
                    self.apply(effects);
                }
            }
            Input::ServerClosed {
                generation,
                code,
                reason,
            } => {
                if generation == self.generation {
                    self.server = None;
                    let effects = self.client.on_server_closed(code, &reason, rand::random());
                    self.apply(effects);
                }
            }
            Input::Reconnect => {
                if !self.client.has_left() && self.server.is_none() {
                    self.open_server();
                }
            }
            Input::SignalOut { peer, data } => {
                if self.links.contains_key(&peer) {
                    let effects = self.client.send_signal(peer, &data);
                    self.apply(effects);
                }
            }
            Input::ChannelOpen { peer, serial } => {
                if let Some(link) = self.current_link(peer, serial)
                    && !std::mem::replace(&mut link.open, true)
                {
                    let effects = self.client.on_channel_open(peer);
                    self.apply(effects);
                }
            }
            Input::LinkClosed { peer, serial } => {
                if self.current_link(peer, serial).is_some() {
                    let effects = self.client.on_channel_closed(peer);
                    self.apply(effects);
                }
            }
            Input::Frame {
                peer,
                serial,
                text,
                data,
            } => {
                if self.current_link(peer, serial).is_some() {
                    self.on_frame(peer, text, &data);
                }
            }
            Input::Drained { peer } => {
                let out = self.share.upload_drained(peer);
                self.apply_share(out);
            }
            Input::PieceRead {
                to,
                id,
                piece,
                result,
            } => {
                let out = match result {
                    Ok(data) => self.share.piece_read(to, id, piece, &data),
                    Err(err) => {
                        warn!(%id, piece, error = %err, "cannot read a piece to serve");
                        self.share.piece_unreadable(to, id, piece)
                    }
                };
                self.apply_share(out);
            }
            Input::PieceStored {
                id,
                piece,
                from,
                result,
            } => match result {
                Ok(matched) => {
                    let now = self.now();
                    let out = match from {
                        Some(from) => self.share.piece_checked(id, piece, from, matched, now),
                        None => self.share.piece_stored(id, piece, now),
                    };
                    self.apply_share(out);
                }
                Err(err) => self.tell(NodeEvent::SaveFailed {
                    id,
                    error: err.to_string(),
                }),
            },
            Input::Saved { id, result } => match result {
                Ok(path) => self.tell(NodeEvent::Saved { id, path }),
                Err(err) => self.tell(NodeEvent::SaveFailed {
                    id,
                    error: err.to_string(),
                }),
            },
            Input::Tick => {
                let out = self.share.tick(self.now());
                self.apply_share(out);
                let effects = self.client.on_tick();
                self.apply(effects);
            }
            Input::Command(command) => self.command(command),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Share { id, manifest, file } => {
                info!(%id, name = manifest.name, size = manifest.size, "sharing");
                self.store.add_shared(id, file);
                let out = self.share.share(id, manifest);
                self.apply_share(out);
                let effects = self.client.provide_held(&self.share, id);
                self.apply(effects);
            }
            Command::Download { id, target, reply } => {
                self.store.expect(id, target);
                let now = self.now();
                match self.client.start_download(&mut self.share, id, now) {
                    Ok((out, effects)) => {
                        let _ = reply.send(Ok(()));
                        self.apply(effects);
                        self.apply_share(out);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::Lookup { id } => {
                let effects = self.client.find(id);
                self.apply(effects);
            }
            Command::Broadcast { text, reply } => {
                let open = self.client.open_peers();
                for peer in &open {
                    if let Some(link) = self.links.get(peer) {
                        link.send(Outgoing::Text(text.clone()));
                    }
                }
                let _ = reply.send(open.len());
            }
            Command::Status { reply } => {
                let _ = reply.send(Status {
                    me: self.client.me(),
                    members: self.client.members(),
                    open: self.client.open_peers(),
                    files: self.client.room_files(self.share.files()),
                });
            }
            Command::Leave => {} // handled by the loop
        }
    }

    /// A message from `peer` on its `swarm` channel.
    fn on_frame(&mut self, peer: PeerId, text: bool, data: &[u8]) {
        if text {
            let text = String::from_utf8_lossy(data).into_owned();
            self.tell(NodeEvent::Message { from: peer, text });
            return;
        }
        match wire::decode_binary(data) {
            Ok(BinaryFrame::App(payload)) => {
                debug!(%peer, len = payload.len(), "a binary application message");
            }
            Ok(BinaryFrame::Peer(msg)) => {
                let out = self.share.on_message(peer, msg, self.now());
                self.apply_share(out);
            }
            Ok(BinaryFrame::Relay(relay)) => {
                let effects = self.client.on_relay(peer, relay);
                self.apply(effects);
            }
            Ok(BinaryFrame::Route(route)) => {
                let effects = self.client.on_route(peer, route);
                self.apply(effects);
            }
            Err(err) => debug!(%peer, error = %err, "dropping a frame"),
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Connect { peer, offerer, .. } => {
                    let Some(me) = self.client.me() else { continue };
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
                Effect::Disconnect(peer) => {
                    if let Some(link) = self.links.remove(&peer) {
                        self.closing.retain(|task| !task.is_finished());
                        self.closing.push(link.close());
                        let out = self.share.remove_peer(peer, self.now());
                        self.apply_share(out);
                    }
                }
                Effect::ToServer { to, data } => {
                    let text = ClientMsg::signal(to, &data).to_json();
                    let sent = self.server.as_ref().is_some_and(|server| server.send(text));
                    if !sent {
                        let effects = self.client.relay_signal(to, &data);
                        self.apply(effects);
                    }
                }
                Effect::ToPeer { peer, frame } => {
                    if let Some(link) = self.links.get(&peer) {
                        link.send(Outgoing::Binary(frame));
                    }
                }
                Effect::Signal { from, data } => match self.links.get(&from) {
                    Some(link) => link.on_signal(data),
                    None => debug!(peer = %from, "signal for a connection that is gone"),
                },
                Effect::Welcomed {
                    me,
                    ice_servers,
                    first,
                } => {
                    self.link_config.ice_servers = ice_servers.iter().map(rtc_ice_server).collect();
                    if first {
                        self.tell(NodeEvent::Welcomed { me });
                    }
                }
                Effect::JoinFailed { code, message } => {
                    self.tell(NodeEvent::JoinFailed { code, message })
                }
                Effect::Server(state) => {
                    info!(state = state.as_str(), "signalling server");
                    self.tell(NodeEvent::Server(state));
                }
                Effect::ReconnectIn(delay) => {
                    // `ServerClosed` already dropped the connection that ended.
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        let _ = inputs.send(Input::Reconnect);
                    });
                }
                Effect::Emit(Event::PeerJoined(peer)) => {
                    info!(%peer, "peer joined");
                    let out = self.share.add_peer(peer);
                    self.apply_share(out);
                    self.tell(NodeEvent::PeerJoined(peer));
                }
                Effect::Emit(Event::PeerLeft(peer)) => {
                    info!(%peer, "peer left");
                    self.tell(NodeEvent::PeerLeft(peer));
                }
                Effect::Provided { file, new } => {
                    debug!(id = %file.id, providers = file.providers.len(), "heard of a provider");
                    if new && self.share.file(file.id).is_none() {
                        self.tell(NodeEvent::Share(ShareEvent::Offered(FileInfo {
                            id: file.id,
                            sources: file.providers.len(),
                            name: file.name,
                            size: file.size,
                            mime: file.mime,
                            complete: false,
                        })));
                    }
                }
                Effect::ProvidersGone => {}
            }
        }
    }

    fn apply_share(&mut self, outputs: Vec<Output<PeerId>>) {
        for output in outputs {
            match output {
                Output::Send { to, frame } => {
                    if let Some(link) = self.links.get(&to) {
                        link.send(Outgoing::Binary(frame));
                    }
                }
                Output::ReadPiece {
                    to,
                    id,
                    piece,
                    offset,
                    len,
                } => {
                    let Some(file) = self.store.file(id) else {
                        let out = self.share.piece_unreadable(to, id, piece);
                        self.apply_share(out);
                        continue;
                    };
                    let inputs = self.inputs.clone();
                    tokio::task::spawn_blocking(move || {
                        let result = store::read_at(&file, offset, len);
                        let _ = inputs.send(Input::PieceRead {
                            to,
                            id,
                            piece,
                            result,
                        });
                    });
                }
                Output::WritePiece {
                    id,
                    piece,
                    offset,
                    data,
                    check,
                } => self.store_piece(id, piece, offset, data, check),
                Output::Withdraw { to, id, piece } => {
                    let emptied = self
                        .links
                        .get(&to)
                        .is_some_and(|link| link.withdraw(id, piece));
                    if emptied {
                        let out = self.share.upload_drained(to);
                        self.apply_share(out);
                    }
                }
                Output::Stalled(peer) => {
                    warn!(%peer, "the link delivers nothing any more: closing it to connect again");
                    let effects = self.client.on_channel_closed(peer);
                    self.apply(effects);
                }
                Output::Event(event) => self.on_share_event(event),
            }
        }
    }

    /// Writes a piece on the blocking pool, hashing it there first if it comes with a
    /// `check`: the node's loop neither hashes nor waits for the disk.
    fn store_piece(
        &self,
        id: ContentId,
        piece: u32,
        offset: u64,
        data: Vec<u8>,
        check: Option<PieceCheck<PeerId>>,
    ) {
        let Some(file) = self.store.file(id) else {
            self.tell(NodeEvent::SaveFailed {
                id,
                error: "no file to write the download to".into(),
            });
            return;
        };
        let inputs = self.inputs.clone();
        tokio::task::spawn_blocking(move || {
            let result = match check {
                Some(c) if merkle::piece_hash(&data) != c.expected => Ok(false),
                _ => store::write_at(&file, offset, &data).map(|()| true),
            };
            let from = check.map(|c| c.from);
            let _ = inputs.send(Input::PieceStored {
                id,
                piece,
                from,
                result,
            });
        });
    }

    fn on_share_event(&mut self, event: ShareEvent<PeerId>) {
        match &event {
            ShareEvent::ManifestReady { id, manifest } => {
                if let Err(err) = self.store.prepare(*id, manifest) {
                    self.tell(NodeEvent::SaveFailed {
                        id: *id,
                        error: err.to_string(),
                    });
                }
            }
            ShareEvent::Completed { id } => {
                let effects = self.client.provide_held(&self.share, *id);
                self.apply(effects);
                if let Some((file, temp, target)) = self.store.take_partial(*id) {
                    let (inputs, id) = (self.inputs.clone(), *id);
                    tokio::task::spawn_blocking(move || {
                        let result = store::finish(&file, &temp, &target).map(|()| target);
                        let _ = inputs.send(Input::Saved { id, result });
                    });
                }
            }
            ShareEvent::BadPeer { id, peer, reason } => {
                warn!(%id, %peer, reason, "a peer sent bad data; it is no longer used for this file");
            }
            _ => {}
        }
        self.tell(NodeEvent::Share(event));
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
