//! Whole peers ([`swarm_core::node::Node`]) in a room, in virtual time: the signalling
//! server, the WebRTC connections and the storage are modelled in memory, everything else is
//! the real code, through the real wire encodings.
//!
//! The model ([`Net`]):
//! - **Server**: a fake signalling server built on the real room registry
//!   ([`swarm_core::room::Rooms`]). A join gets `welcome` (the members already there), the
//!   others `joined`; a leaving peer's connection ending sends `left`; `signal` frames are
//!   parsed as a client's and relayed stamped with their sender. It can be switched off:
//!   every node then gets `ServerClosed`, later signals are refused (`ServerRefused`, as the
//!   shells do) and reconnection attempts find it unreachable.
//! - **Connections**: `Connect` creates a connection object. The offering side produces an
//!   offer (`LocalSignal`), which travels as the node sends it (through the server, or the
//!   mesh); a connection handed an offer (`Signal`) answers it; once the offerer is handed
//!   the answer, both ends get `ChannelOpen` a little later. SDP texts name the connection
//!   serials, so signals for a connection that was replaced open nothing. `Disconnect`
//!   drops the connection; the other end gets `ChannelClosed`.
//! - **Links**: each direction is the real [`SendQueue`] in front of a transport with a
//!   bandwidth, a buffer of [`HIGH_WATER`](swarm_core::send_queue::HIGH_WATER) and a
//!   latency; `Drained` is reported as the shells do ([`SendQueue::take_drained`]). A
//!   direction can be wedged: it swallows what it is given.
//! - **Storage**: pieces are read from and written to in-memory files; a download's file
//!   is prepared on `ManifestReady`.
//! - **Time**: one clock; each step delivers the next scheduled event, or runs the upkeep of
//!   the nodes whose `poll_timeout` is earliest. Every run has a limit in virtual time and
//!   fails saying what did not happen.
//!
//! Covered: a full mesh and a file reaching everyone from several sources; a partial mesh
//! under a low cap; the server going away mid-transfer (the transfer, application messages
//! and signalling through the mesh carry on, and a partial mesh heals through itself) and
//! coming back; a seeder leaving; a wedged link (stall detection); churn during a transfer;
//! cancelling and downloading again; a corrupting seeder; a peer that breaks a bound of the
//! sharing engine dropped and kept out while the room goes on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::value::RawValue;
use swarm_core::client::ServerState;
use swarm_core::identity::Identity;
use swarm_core::merkle::{manifest_of, piece_hash};
use swarm_core::node::{Event, Input, Node, NodeConfig, Output, WritePiece};
use swarm_core::room::Rooms;
use swarm_core::sdp_auth::Rejection;
use swarm_core::secret_room::RoomSecret;
use swarm_core::send_queue::{Frame, SendQueue};
use swarm_core::share::STALLED_LINK_MS;
use swarm_core::signal_guard::SignalPolicy;
use swarm_protocol::content::MIN_PIECE_SIZE;
use swarm_protocol::wire::{BinaryFrame, PeerMsg, decode_binary, encode_app_binary};
use swarm_protocol::{
    ClientMsg, ContentId, ErrorCode, PeerId, RoomName, SdpType, ServerMsg, SessionDescription,
    SignalData,
};

/// Pieces of the shared files: the smallest the manifest allows, so 1 MiB is 64 pieces.
const PIECE: u32 = MIN_PIECE_SIZE;
const MIB: usize = 1 << 20;
/// One way, client to server or server to client.
const SERVER_LATENCY_MS: u64 = 10;
/// One way, peer to peer.
const LINK_LATENCY_MS: u64 = 5;
/// From the offerer taking the answer to both channels opening (ICE, DTLS, SCTP).
const OPEN_DELAY_MS: u64 = 30;
/// Link bandwidth, bytes per millisecond each way: 1 MB/s.
const FAST: u64 = 1_000;
/// Steps any one test may take before it is deemed to have run away.
const MAX_STEPS: u64 = 20_000_000;

/// Index of a node in [`Net::peers`].
type Ix = usize;

/// Deterministic test content.
fn data(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 9) as u8)
        .collect()
}

/// One member process: its node and what its shell keeps.
struct Peer {
    node: Node,
    id: PeerId,
    /// The files it holds or is downloading.
    storage: BTreeMap<ContentId, Vec<u8>>,
    /// The outputs worth asserting on (not frames, storage or signals), with their time.
    log: Vec<(u64, Output)>,
    /// Piece bytes received, by sender.
    received_from: BTreeMap<PeerId, u64>,
    /// Frames of the mesh's signal relay received.
    relay_frames: usize,
    /// `busy` replies to its offers the server delivered.
    busy_replies: usize,
    /// Its signalling connection is open (it is in the server's room).
    in_room: bool,
    /// It left or crashed: it gets nothing more.
    gone: bool,
}

/// One end's peer connection to another node.
struct Conn {
    serial: u64,
    offerer: bool,
    polite: bool,
    /// The serial of the other end's connection, once their descriptions met.
    remote: Option<u64>,
    /// Its channel opened.
    open: bool,
    /// Its offer dialled a provider for a content (beyond the mesh's cap).
    for_content: bool,
}

/// One direction of an established link.
struct Pipe {
    /// The serials of the sending and the receiving connection.
    serials: (u64, u64),
    queue: SendQueue,
    /// When the transport has finished putting what it was given on the wire (µs).
    busy_until_us: u64,
    /// Frames handed to the transport: when they leave its buffer (ms), and their length.
    in_flight: VecDeque<(u64, usize)>,
    /// Frames are swallowed, never delivered.
    wedged: bool,
}

impl Pipe {
    fn new(serials: (u64, u64)) -> Self {
        Self {
            serials,
            queue: SendQueue::new(),
            busy_until_us: 0,
            in_flight: VecDeque::new(),
            wedged: false,
        }
    }
}

/// Something scheduled to happen.
enum Due {
    /// A text frame from the server reaches node `to`.
    Server { to: Ix, text: String },
    /// A connection of `at` produced a signal for `to`.
    LocalSignal {
        at: Ix,
        to: PeerId,
        data: SignalData,
    },
    /// The channel of connection `serial` of `at` to `peer` opens.
    Open { at: Ix, peer: Ix, serial: u64 },
    /// Connection `serial` of `at` to `peer` closed from the other end (or failed).
    Closed { at: Ix, peer: Ix, serial: u64 },
    /// A frame arrives on the link `from` -> `to` made of connections `serials`.
    Frame {
        from: Ix,
        to: Ix,
        serials: (u64, u64),
        data: Vec<u8>,
    },
    /// The transport of `from` -> `to` has room again.
    Pump { from: Ix, to: Ix },
    /// `at` opens a new signalling connection.
    Reconnect { at: Ix },
}

struct Net {
    room: RoomName,
    now: u64,
    peers: Vec<Peer>,
    index: BTreeMap<PeerId, Ix>,
    /// The fake server's state.
    rooms: Rooms<Ix>,
    server_up: bool,
    conns: BTreeMap<(Ix, Ix), Conn>,
    pipes: BTreeMap<(Ix, Ix), Pipe>,
    /// By (time, order of scheduling).
    events: BTreeMap<(u64, u64), Due>,
    scheduled: u64,
    next_serial: u64,
    /// Link bandwidth, bytes per ms.
    rate: u64,
    steps: u64,
    /// What the fake server does to the descriptions it relays.
    mitm: Mitm,
    /// Every `data` the server relayed, as it saw it.
    relayed: Vec<String>,
}

/// A server in the middle: what it does to every offer and answer it relays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mitm {
    /// Relays them untouched.
    Honest,
    /// Puts its own DTLS fingerprint in place of the sender's, keeping the signature.
    SwapFingerprint,
    /// Its own fingerprint, and the signature removed (as if the sender were a v1 peer).
    SwapAndStrip,
}

impl Net {
    fn new(rate: u64) -> Self {
        Self {
            room: RoomName::new("node-net").expect("a valid room name"),
            now: 1_000,
            peers: Vec::new(),
            index: BTreeMap::new(),
            rooms: Rooms::new(),
            server_up: true,
            conns: BTreeMap::new(),
            pipes: BTreeMap::new(),
            events: BTreeMap::new(),
            scheduled: 0,
            next_serial: 1,
            rate,
            steps: 0,
            mitm: Mitm::Honest,
            relayed: Vec::new(),
        }
    }

    // ---- setting up ----

    /// A new node (not joined yet), with its own key and seed.
    fn add(&mut self, max_peers: Option<usize>) -> Ix {
        self.add_with(max_peers, SignalPolicy::default())
    }

    /// A new node that treats signals by `policy` and joins at once.
    fn spawn_with(&mut self, policy: SignalPolicy) -> Ix {
        let ix = self.add_with(None, policy);
        self.join(ix);
        ix
    }

    /// A new node (not joined yet) that treats signals by `policy`.
    fn add_with(&mut self, max_peers: Option<usize>, policy: SignalPolicy) -> Ix {
        let ix = self.peers.len();
        let salt = u8::try_from(ix + 1).expect("fewer than 255 nodes");
        let identity = Identity::from_seed([salt; 32]);
        let id = identity.id();
        let seq = 1_700_000_000_000 + self.now;
        let mut config = NodeConfig::new(self.room.clone(), identity, seq, u64::from(salt));
        config.max_peers = max_peers;
        config.signals = policy;
        self.peers.push(Peer {
            node: Node::new(config, self.now),
            id,
            storage: BTreeMap::new(),
            log: Vec::new(),
            received_from: BTreeMap::new(),
            relay_frames: 0,
            busy_replies: 0,
            in_room: false,
            gone: false,
        });
        self.index.insert(id, ix);
        ix
    }

    /// A new node that joins the room at once.
    fn spawn(&mut self, max_peers: Option<usize>) -> Ix {
        let ix = self.add(max_peers);
        self.join(ix);
        ix
    }

    /// `n` nodes joining one after the other, `gap_ms` apart, each settled in for `gap_ms`.
    fn spawn_all(&mut self, n: usize, max_peers: Option<usize>, gap_ms: u64) -> Vec<Ix> {
        (0..n)
            .map(|_| {
                let ix = self.spawn(max_peers);
                self.run_for(gap_ms);
                ix
            })
            .collect()
    }

    fn id(&self, ix: Ix) -> PeerId {
        self.peers[ix].id
    }

    fn ix(&self, id: PeerId) -> Ix {
        *self.index.get(&id).expect("a peer of this net")
    }

    fn node(&self, ix: Ix) -> &Node {
        &self.peers[ix].node
    }

    fn alive(&self) -> Vec<Ix> {
        (0..self.peers.len())
            .filter(|ix| !self.peers[*ix].gone)
            .collect()
    }

    // ---- the server ----

    /// The server side of a new signalling connection of `ix`: `welcome` for it (a resumed
    /// one if the server still counts it in), `joined` for the others.
    fn join(&mut self, ix: Ix) {
        let id = self.id(ix);
        let others = if self.rooms.replace(&self.room, id, ix).is_some() {
            let peers = self.rooms.members(&self.room);
            (peers.into_iter().filter(|p| *p != id).collect(), Vec::new())
        } else {
            let joined = self.rooms.join(&self.room, id, ix).expect("room join");
            (joined.peers, joined.notify)
        };
        self.peers[ix].in_room = true;
        let welcome = ServerMsg::Welcome {
            id,
            peers: others.0,
            ice_servers: Vec::new(),
            resume: Some(format!("resume-{id}")),
        };
        self.tell_node(ix, &welcome);
        for other in others.1 {
            self.tell_node(other, &ServerMsg::Joined { id });
        }
    }

    fn tell_node(&mut self, to: Ix, msg: &ServerMsg) {
        let text = msg.to_json();
        self.schedule(SERVER_LATENCY_MS, Due::Server { to, text });
    }

    /// The signalling connection of `ix` ends: the others hear `left`.
    fn server_drop(&mut self, ix: Ix) {
        if !std::mem::replace(&mut self.peers[ix].in_room, false) || !self.server_up {
            return;
        }
        let id = self.id(ix);
        for other in self.rooms.leave(&self.room, id) {
            self.tell_node(other, &ServerMsg::Left { id });
        }
    }

    /// The server goes away for good: every connection to it ends, and what it had not
    /// delivered yet is lost.
    fn server_off(&mut self) {
        self.server_up = false;
        self.rooms = Rooms::new();
        self.events
            .retain(|_, event| !matches!(event, Due::Server { .. }));
        for ix in self.alive() {
            if std::mem::replace(&mut self.peers[ix].in_room, false) {
                let input = Input::ServerClosed {
                    code: 1006,
                    reason: "",
                };
                self.input(ix, input);
            }
        }
    }

    /// The server is back (restarted: it remembers nobody); reconnections find it.
    fn server_on(&mut self) {
        self.server_up = true;
    }

    /// `ix` sends a `signal` frame: parsed and relayed as the real server does.
    fn server_signal(&mut self, ix: Ix, to: PeerId, data: SignalData) {
        if let SignalData::Sdp(description) = &data
            && description.kind == SdpType::Offer
            && description.want.is_some()
            && let Some(conn) = self.conns.get_mut(&(ix, self.ix(to)))
        {
            conn.for_content = true;
        }
        if !(self.server_up && self.peers[ix].in_room) {
            let now = self.now;
            let input = Input::ServerRefused { to, data };
            self.peers[ix].node.handle(input, now);
            return;
        }
        let text = ClientMsg::signal(to, &data).to_json();
        let ClientMsg::Signal { to, data } = ClientMsg::parse(&text).expect("our own frame");
        let data = self.tamper(data);
        self.relayed.push(data.get().to_owned());
        match self.rooms.route(&self.room, to).copied() {
            Some(dest) => {
                if data.get() == r#""busy""# {
                    self.peers[dest].busy_replies += 1;
                }
                let from = self.id(ix);
                self.tell_node(dest, &ServerMsg::Signal { from, data });
            }
            None => {
                let refusal = ServerMsg::error(ErrorCode::UnknownPeer, "no such peer");
                self.tell_node(ix, &refusal);
            }
        }
    }

    /// What a server in the middle makes of `data` ([`Mitm`]).
    fn tamper(&self, data: Box<RawValue>) -> Box<RawValue> {
        if self.mitm == Mitm::Honest {
            return data;
        }
        let Ok(SignalData::Sdp(mut description)) = SignalData::parse(&data) else {
            return data;
        };
        let ours = "a=fingerprint:sha-256 EE:EE";
        description.sdp = description
            .sdp
            .lines()
            .map(|line| {
                if line.starts_with("a=fingerprint:") {
                    ours
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        if self.mitm == Mitm::SwapAndStrip {
            description.auth = None;
        }
        serde_json::value::to_raw_value(&SignalData::Sdp(description)).expect("json")
    }

    // ---- connections ----

    /// `ix` creates a connection to `peer` (replacing any it had).
    fn connect(&mut self, ix: Ix, peer: Ix, offerer: bool, polite: bool) {
        self.drop_conn(ix, peer);
        let serial = self.next_serial;
        self.next_serial += 1;
        let conn = Conn {
            serial,
            offerer,
            polite,
            remote: None,
            open: false,
            for_content: false,
        };
        self.conns.insert((ix, peer), conn);
        if offerer {
            let data = sdp(SdpType::Offer, format!("offer {serial}"));
            let to = self.id(peer);
            self.schedule(1, Due::LocalSignal { at: ix, to, data });
        }
    }

    /// `ix` closes its connection to `peer`; the other end, if their descriptions met,
    /// sees it close.
    fn drop_conn(&mut self, ix: Ix, peer: Ix) {
        let Some(conn) = self.conns.remove(&(ix, peer)) else {
            return;
        };
        self.pipes.remove(&(ix, peer));
        self.pipes.remove(&(peer, ix));
        if let Some(other) = self.conns.get(&(peer, ix))
            && (conn.remote == Some(other.serial) || other.remote == Some(conn.serial))
        {
            let serial = other.serial;
            self.schedule(
                LINK_LATENCY_MS,
                Due::Closed {
                    at: peer,
                    peer: ix,
                    serial,
                },
            );
        }
    }

    /// The node of `ix` hands a signal from `from` to its connection.
    fn signal(&mut self, ix: Ix, from: PeerId, data: SignalData) {
        let peer = self.ix(from);
        let SignalData::Sdp(description) = data else {
            return; // candidates and the like: nothing to model
        };
        let Some(conn) = self.conns.get_mut(&(ix, peer)) else {
            return; // for a connection that is gone, as the shells do
        };
        let serials: Vec<u64> = description
            .sdp
            .lines()
            .next()
            .unwrap_or_default()
            .split(' ')
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        match (description.kind, serials.as_slice()) {
            (SdpType::Offer, &[offer]) => {
                if conn.offerer && conn.remote.is_none() && !conn.polite {
                    return; // glare: the impolite side ignores the other's offer
                }
                conn.offerer = false;
                conn.remote = Some(offer);
                let data = sdp(SdpType::Answer, format!("answer {offer} {}", conn.serial));
                self.schedule(
                    1,
                    Due::LocalSignal {
                        at: ix,
                        to: from,
                        data,
                    },
                );
            }
            (SdpType::Answer, &[offer, answer]) => {
                let answered = self
                    .conns
                    .get(&(peer, ix))
                    .is_some_and(|c| c.serial == answer && c.remote == Some(offer));
                let Some(conn) = self.conns.get_mut(&(ix, peer)) else {
                    return;
                };
                if conn.serial != offer || !conn.offerer || conn.remote.is_some() || !answered {
                    return; // a stale answer
                }
                conn.remote = Some(answer);
                self.pipes.insert((ix, peer), Pipe::new((offer, answer)));
                self.pipes.insert((peer, ix), Pipe::new((answer, offer)));
                let (at, serial) = (ix, offer);
                self.schedule(OPEN_DELAY_MS, Due::Open { at, peer, serial });
                let (at, peer, serial) = (peer, ix, answer);
                self.schedule(OPEN_DELAY_MS, Due::Open { at, peer, serial });
            }
            _ => panic!("an SDP the model did not write: {:?}", description.sdp),
        }
    }

    /// `ix` queues a frame for `peer`'s channel.
    fn send(&mut self, ix: Ix, peer: Ix, frame: Vec<u8>) {
        let open = self.conns.get(&(ix, peer)).is_some_and(|c| c.open);
        match self.pipes.get_mut(&(ix, peer)) {
            Some(pipe) if open => pipe.queue.push(Frame::Binary(frame)),
            _ => return, // no channel: the frame is lost
        }
        self.pump(ix, peer);
    }

    /// Hands queued frames to the transport while its buffer has room; reports `Drained`.
    fn pump(&mut self, from: Ix, to: Ix) {
        let (now, rate) = (self.now, self.rate);
        let Some(pipe) = self.pipes.get_mut(&(from, to)) else {
            return;
        };
        pipe.in_flight.retain(|(leaves, _)| *leaves > now);
        let mut sent = Vec::new();
        loop {
            let buffered = pipe.in_flight.iter().map(|(_, len)| len).sum();
            let Some(frame) = pipe.queue.next(buffered) else {
                break;
            };
            let Frame::Binary(bytes) = frame else {
                panic!("the node only sends binary frames");
            };
            let start = pipe.busy_until_us.max(now * 1_000);
            pipe.busy_until_us = start + bytes.len() as u64 * 1_000 / rate;
            let leaves = pipe.busy_until_us.div_ceil(1_000);
            pipe.in_flight.push_back((leaves, bytes.len()));
            sent.push((leaves, (!pipe.wedged).then_some(bytes)));
        }
        let drained = pipe.queue.take_drained();
        let serials = pipe.serials;
        for (leaves, bytes) in sent {
            let delay = leaves - now;
            self.schedule(delay, Due::Pump { from, to });
            if let Some(data) = bytes {
                let frame = Due::Frame {
                    from,
                    to,
                    serials,
                    data,
                };
                self.schedule(delay + LINK_LATENCY_MS, frame);
            }
        }
        if drained {
            let (id, now) = (self.id(to), self.now);
            self.peers[from].node.handle(Input::Drained(id), now);
        }
    }

    // ---- what a test does ----

    /// `ix` shares `bytes`.
    fn share(&mut self, ix: Ix, bytes: &[u8]) -> ContentId {
        let (id, manifest) = manifest_of("file.bin", "application/octet-stream", PIECE, bytes);
        self.peers[ix].storage.insert(id, bytes.to_vec());
        let now = self.now;
        self.peers[ix].node.share(id, manifest, now);
        self.drain(ix);
        id
    }

    /// `ix` starts downloading `id`.
    fn download(&mut self, ix: Ix, id: ContentId) {
        let now = self.now;
        self.peers[ix]
            .node
            .download(id, now)
            .expect("the download starts");
        self.drain(ix);
    }

    /// `ix` leaves the room: its connections close, then its signalling connection.
    fn leave(&mut self, ix: Ix) {
        let now = self.now;
        self.peers[ix].node.leave(now);
        self.drain(ix);
        self.server_drop(ix);
        self.peers[ix].gone = true;
    }

    /// `ix`'s process dies: every connection of it fails at the other end.
    fn crash(&mut self, ix: Ix) {
        let peers: Vec<Ix> = self
            .conns
            .keys()
            .filter(|(at, _)| *at == ix)
            .map(|(_, peer)| *peer)
            .collect();
        for peer in peers {
            self.drop_conn(ix, peer);
        }
        self.server_drop(ix);
        self.peers[ix].gone = true;
    }

    /// From now on the current link `from` -> `to` swallows everything.
    fn wedge(&mut self, from: Ix, to: Ix) {
        self.pipes
            .get_mut(&(from, to))
            .expect("an open link to wedge")
            .wedged = true;
    }

    /// `from`'s shell sends a binary application message to `to`, as the browser's
    /// `send` does (it does not pass through the node).
    fn send_app(&mut self, from: Ix, to: Ix, payload: &[u8]) {
        let frame = encode_app_binary(payload).expect("a small message");
        self.send(from, to, frame);
        self.drain(from);
    }

    // ---- running ----

    fn schedule(&mut self, delay: u64, event: Due) {
        self.scheduled += 1;
        self.events
            .insert((self.now + delay, self.scheduled), event);
    }

    fn input(&mut self, ix: Ix, input: Input<'_>) {
        let now = self.now;
        self.peers[ix].node.handle(input, now);
        self.drain(ix);
    }

    /// Carries out everything `ix`'s node asks for.
    fn drain(&mut self, ix: Ix) {
        while let Some(output) = self.peers[ix].node.poll_output() {
            self.carry(ix, output);
        }
    }

    fn carry(&mut self, ix: Ix, output: Output) {
        let now = self.now;
        match output {
            Output::Connect {
                peer,
                offerer,
                polite,
            } => {
                self.log(ix, output);
                self.connect(ix, self.ix(peer), offerer, polite);
            }
            Output::Disconnect(peer) => {
                self.log(ix, output);
                self.drop_conn(ix, self.ix(peer));
            }
            Output::ToServer { to, data } => self.server_signal(ix, to, data),
            Output::Send { to, frame } => self.send(ix, self.ix(to), frame),
            Output::Signal { from, data } => self.signal(ix, from, data),
            Output::ReadPiece(read) => {
                let Peer { node, storage, .. } = &mut self.peers[ix];
                let (start, len) = (read.offset as usize, read.len as usize);
                let data = storage
                    .get(&read.id)
                    .and_then(|b| b.get(start..start + len));
                node.handle(Input::PieceRead { read, data }, now);
            }
            Output::WritePiece(WritePiece {
                id,
                piece,
                offset,
                data,
                check,
            }) => {
                let Peer { node, storage, .. } = &mut self.peers[ix];
                let stored = check
                    .as_ref()
                    .is_none_or(|c| piece_hash(&data) == c.expected);
                if stored {
                    let file = storage
                        .get_mut(&id)
                        .expect("ManifestReady prepares the file before any WritePiece");
                    file[offset as usize..][..data.len()].copy_from_slice(&data);
                }
                let from = check.map(|c| c.from);
                node.handle(
                    Input::PieceStored {
                        id,
                        piece,
                        from,
                        stored,
                    },
                    now,
                );
            }
            Output::Withdraw { to, id, piece } => {
                let to = self.ix(to);
                let drained = self.pipes.get_mut(&(ix, to)).is_some_and(|pipe| {
                    pipe.queue.withdraw(id, piece);
                    pipe.queue.take_drained()
                });
                if drained {
                    let input = Input::Drained(self.id(to));
                    self.peers[ix].node.handle(input, now);
                }
            }
            Output::ReconnectIn(delay) => {
                self.log(ix, output);
                self.schedule(delay, Due::Reconnect { at: ix });
            }
            Output::Event(Event::ManifestReady { id, ref manifest }) => {
                let size = usize::try_from(manifest.size).expect("a small file");
                self.peers[ix].storage.insert(id, vec![0; size]);
                self.log(ix, output);
            }
            Output::Event(Event::FilesChanged | Event::Progress { .. }) => {}
            other => self.log(ix, other),
        }
    }

    fn log(&mut self, ix: Ix, output: Output) {
        let now = self.now;
        self.peers[ix].log.push((now, output));
    }

    fn process(&mut self, event: Due) {
        match event {
            Due::Server { to, text } => {
                if self.peers[to].in_room && !self.peers[to].gone {
                    self.input(to, Input::ServerFrame(&text));
                }
            }
            Due::LocalSignal { at, to, data } => {
                if !self.peers[at].gone {
                    self.input(at, Input::LocalSignal { to, data });
                }
            }
            Due::Open { at, peer, serial } => {
                if let Some(conn) = self.conns.get_mut(&(at, peer))
                    && conn.serial == serial
                {
                    conn.open = true;
                    let id = self.id(peer);
                    self.input(at, Input::ChannelOpen(id));
                }
            }
            Due::Closed { at, peer, serial } => {
                if self
                    .conns
                    .get(&(at, peer))
                    .is_some_and(|c| c.serial == serial)
                {
                    self.conns.remove(&(at, peer));
                    self.pipes.remove(&(at, peer));
                    self.pipes.remove(&(peer, at));
                    let id = self.id(peer);
                    self.input(at, Input::ChannelClosed(id));
                }
            }
            Due::Frame {
                from,
                to,
                serials,
                data,
            } => {
                let current = self.pipes.get(&(from, to)).map(|p| p.serials);
                if current != Some(serials) || self.peers[to].gone {
                    return; // the link it travelled on is gone
                }
                let from = self.id(from);
                let receiver = &mut self.peers[to];
                match decode_binary(&data) {
                    Ok(BinaryFrame::Peer(msg)) => {
                        *receiver.received_from.entry(from).or_default() += piece_bytes(&msg);
                    }
                    Ok(BinaryFrame::Relay(_)) => receiver.relay_frames += 1,
                    _ => {}
                }
                self.input(to, Input::Frame { from, data: &data });
            }
            Due::Pump { from, to } => {
                self.pump(from, to);
                self.drain(from);
            }
            Due::Reconnect { at } => {
                if self.peers[at].gone || self.node(at).has_left() {
                    return;
                }
                if self.server_up {
                    self.join(at);
                } else {
                    self.input(at, Input::ServerUnreachable);
                }
            }
        }
    }

    /// Delivers the next event, or runs the upkeep that is due first.
    fn step(&mut self) {
        self.steps += 1;
        assert!(self.steps < MAX_STEPS, "ran away: {MAX_STEPS} steps");
        let next_event = self.events.first_key_value().map(|((at, _), _)| *at);
        let next_timer = self
            .alive()
            .into_iter()
            .map(|ix| self.node(ix).poll_timeout())
            .min();
        match (next_event, next_timer) {
            (Some(at), timer) if timer.is_none_or(|t| at <= t) => {
                let (_, event) = self.events.pop_first().expect("an event is due");
                self.now = self.now.max(at);
                self.process(event);
            }
            (_, Some(at)) => {
                self.now = self.now.max(at);
                let now = self.now;
                for ix in self.alive() {
                    if self.node(ix).poll_timeout() <= now {
                        self.peers[ix].node.handle_timeout(now);
                        self.drain(ix);
                    }
                }
            }
            (Some(_) | None, None) => panic!("no node and nothing scheduled"),
        }
    }

    /// Runs until `done`, failing if that takes more than `limit_ms` of virtual time.
    fn run_until(&mut self, limit_ms: u64, what: &str, done: impl Fn(&Net) -> bool) {
        let deadline = self.now + limit_ms;
        while !done(self) {
            assert!(
                self.now <= deadline,
                "{what}: not reached within {limit_ms} ms (virtual time {})",
                self.now
            );
            self.step();
        }
    }

    /// Lets `ms` of virtual time pass.
    fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while self.now < until {
            self.step();
        }
    }

    // ---- what a test looks at ----

    fn logged(&self, ix: Ix, wanted: &Output) -> bool {
        self.peers[ix].log.iter().any(|(_, o)| o == wanted)
    }

    /// Whether `ix`'s node told its application `wanted`.
    fn told(&self, ix: Ix, wanted: &Event) -> bool {
        self.count_told(ix, wanted) > 0
    }

    fn count_told(&self, ix: Ix, wanted: &Event) -> usize {
        let told = |o: &&(u64, Output)| matches!(&o.1, Output::Event(e) if e == wanted);
        self.peers[ix].log.iter().filter(told).count()
    }

    fn completed(&self, ix: Ix, id: ContentId) -> bool {
        self.told(ix, &Event::Completed(id))
    }

    fn stored_pieces(&self, ix: Ix, id: ContentId) -> u32 {
        self.node(ix).stored(id).map_or(0, |b| b.count())
    }

    fn knows_file(&self, ix: Ix, id: ContentId) -> bool {
        self.node(ix).file(id).is_some()
    }

    /// The peers `ix` received piece data from.
    fn sources(&self, ix: Ix) -> Vec<PeerId> {
        let received = &self.peers[ix].received_from;
        received
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether every two of `ixs` have an open channel to each other.
    fn fully_meshed(&self, ixs: &[Ix]) -> bool {
        ixs.iter().all(|a| {
            ixs.iter()
                .all(|b| a == b || self.node(*a).is_open(self.id(*b)))
        })
    }

    fn ids(&self, ixs: &[Ix]) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = ixs.iter().map(|ix| self.id(*ix)).collect();
        ids.sort();
        ids
    }

    /// Connections `ix` opened as the offerer, and all its connections, not counting
    /// those dialled for a content.
    fn connection_counts(&self, ix: Ix) -> (usize, usize) {
        let mine = self
            .conns
            .iter()
            .filter(|((at, _), c)| *at == ix && !c.for_content);
        let offered = mine.clone().filter(|(_, c)| c.offerer).count();
        (offered, mine.count())
    }

    fn assert_holds(&self, ix: Ix, id: ContentId, original: &[u8]) {
        assert!(self.node(ix).is_complete(id), "node {ix} holds all of it");
        let held = self.peers[ix].storage.get(&id).expect("the file is stored");
        assert!(held == original, "node {ix}'s copy is byte-identical");
    }
}

/// A description in the model's SDP dialect (the serials of the connections), with a DTLS
/// fingerprint line as real descriptions have (what the nodes sign).
fn sdp(kind: SdpType, text: String) -> SignalData {
    SignalData::Sdp(SessionDescription {
        kind,
        sdp: format!("{text}\r\na=fingerprint:sha-256 {:02X}:00\r\n", text.len()),
        want: None,
        auth: None,
    })
}

/// The piece-data bytes in a message of the peer protocol.
fn piece_bytes(msg: &PeerMsg<'_>) -> u64 {
    match msg {
        PeerMsg::Piece { data, .. } => data.len() as u64,
        PeerMsg::Chunks { segments, .. } => segments.iter().map(|s| s.data.len() as u64).sum(),
        _ => 0,
    }
}

/// Runs for `ms`, noting for each node the most connections it had at once: those it
/// offered, and all (not counting those dialled for a content).
fn run_tracking_peaks(net: &mut Net, ms: u64, peaks: &mut BTreeMap<Ix, (usize, usize)>) {
    let until = net.now + ms;
    while net.now < until {
        net.step();
        for ix in net.alive() {
            let (offered, total) = net.connection_counts(ix);
            let (most_offered, most) = peaks.entry(ix).or_default();
            *most_offered = offered.max(*most_offered);
            *most = total.max(*most);
        }
    }
}

/// Whether the open links among `ixs` connect them all.
fn connected(net: &Net, ixs: &[Ix]) -> bool {
    let Some(first) = ixs.first() else {
        return true;
    };
    let mut seen = BTreeSet::from([*first]);
    let mut todo = vec![*first];
    while let Some(ix) = todo.pop() {
        for peer in net.node(ix).open_peers() {
            let next = net.ix(peer);
            if ixs.contains(&next) && seen.insert(next) {
                todo.push(next);
            }
        }
    }
    seen.len() == ixs.len()
}

#[test]
fn a_full_mesh_forms_and_a_file_reaches_everyone_from_several_sources() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(4, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    for &ix in &all {
        let others: Vec<Ix> = all.iter().copied().filter(|o| *o != ix).collect();
        assert_eq!(net.node(ix).members(), net.ids(&others), "members of {ix}");
        assert_eq!(net.node(ix).open_peers(), net.ids(&others), "links of {ix}");
        let me = net.id(ix);
        let welcomed = |o: &&(u64, Output)| match o.1 {
            Output::Welcomed { me: id, first, .. } => first && id == me,
            _ => false,
        };
        let welcomes = net.peers[ix].log.iter().filter(welcomed).count();
        assert_eq!(welcomes, 1, "{ix} was welcomed once, as itself");
    }

    let bytes = data(MIB, 1);
    let id = net.share(0, &bytes);
    let downloaders = [1, 2, 3];
    net.run_until(5_000, "the file is offered to everyone", |n| {
        downloaders.iter().all(|ix| n.knows_file(*ix, id))
    });
    for ix in downloaders {
        net.download(ix, id);
    }
    net.run_until(30_000, "every download completes", |n| {
        downloaders.iter().all(|ix| n.completed(*ix, id))
    });
    for ix in downloaders {
        net.assert_holds(ix, id, &bytes);
        assert!(
            net.sources(ix).contains(&net.id(0)),
            "{ix} got pieces from the seeder"
        );
        assert!(
            net.sources(ix).iter().all(|s| *s != net.id(ix)),
            "no node sends to itself"
        );
    }
    let most = downloaders
        .iter()
        .map(|ix| net.sources(*ix).len())
        .max()
        .unwrap_or_default();
    assert!(
        most >= 2,
        "some downloader got pieces from more than one peer"
    );
}

#[test]
fn a_partial_mesh_keeps_its_cap_stays_connected_and_carries_a_file() {
    const CAP: usize = 2;
    let mut net = Net::new(FAST);
    let mut all = Vec::new();
    let mut peaks = BTreeMap::new();
    for _ in 0..8 {
        all.push(net.spawn(Some(CAP)));
        run_tracking_peaks(&mut net, 500, &mut peaks);
    }
    run_tracking_peaks(&mut net, 15_000, &mut peaks);
    for (ix, (offered, total)) in &peaks {
        assert!(
            *offered <= CAP,
            "node {ix} had {offered} of its own at once"
        );
        assert!(*total <= 2 * CAP, "node {ix} had {total} at once");
    }
    for &ix in &all {
        let peer = &net.peers[ix];
        let offers = peer
            .log
            .iter()
            .filter(|(_, o)| matches!(o, Output::Connect { offerer: true, .. }))
            .count();
        // A busy reply makes a node give that connection up and dial someone else.
        assert!(
            offers <= CAP + peer.busy_replies,
            "node {ix} offered {offers} connections, {} refused",
            peer.busy_replies
        );
        assert!(
            !net.node(ix).open_peers().is_empty(),
            "node {ix} has a link"
        );
        let members = net.node(ix).members().len();
        assert_eq!(members, all.len() - 1, "members of {ix}");
    }
    assert!(connected(&net, &all), "the links connect the room");
    let links: usize = all.iter().map(|ix| net.node(*ix).open_peers().len()).sum();
    assert!(
        links / 2 < 8 * 7 / 2,
        "not a full mesh: {} links",
        links / 2
    );

    let bytes = data(MIB, 2);
    let id = net.share(0, &bytes);
    let downloaders: Vec<Ix> = all[1..].to_vec();
    net.run_until(10_000, "the file is heard of by everyone", |n| {
        downloaders.iter().all(|ix| n.knows_file(*ix, id))
    });
    for &ix in &downloaders {
        net.download(ix, id);
    }
    net.run_until(120_000, "the file reaches everyone", |n| {
        downloaders.iter().all(|ix| n.completed(*ix, id))
    });
    for &ix in &downloaders {
        net.assert_holds(ix, id, &bytes);
        let (offered, _) = net.connection_counts(ix);
        assert!(offered <= CAP, "node {ix} keeps its cap: {offered}");
    }
}

#[test]
fn without_the_server_a_partial_mesh_heals_through_itself() {
    const CAP: usize = 2;
    let mut net = Net::new(FAST);
    let all = net.spawn_all(8, Some(CAP), 500);
    net.run_for(15_000);
    assert!(connected(&net, &all), "the links connect the room");
    net.server_off();
    net.run_for(1_000);

    // The best connected node dies; its neighbours fall below the cap.
    let hub = *all
        .iter()
        .max_by_key(|ix| net.node(**ix).open_peers().len())
        .expect("nodes");
    let orphans: Vec<Ix> = net
        .node(hub)
        .open_peers()
        .iter()
        .map(|p| net.ix(*p))
        .collect();
    let relayed: usize = all.iter().map(|ix| net.peers[*ix].relay_frames).sum();
    net.crash(hub);
    net.run_for(100);
    for &ix in &orphans {
        assert!(!net.node(ix).is_open(net.id(hub)), "{ix} lost its link");
        let members = net.node(ix).members();
        assert!(!members.contains(&net.id(hub)), "{ix} forgot the dead node");
    }
    let survivors: Vec<Ix> = all.iter().copied().filter(|ix| *ix != hub).collect();
    net.run_until(60_000, "the survivors are connected again", |n| {
        connected(n, &survivors)
            && survivors.iter().all(|ix| {
                let node = n.node(*ix);
                node.open_peers().len() >= CAP.min(node.members().len())
            })
    });
    let now_relayed: usize = all.iter().map(|ix| net.peers[*ix].relay_frames).sum();
    assert!(
        now_relayed > relayed,
        "new links were signalled through the mesh"
    );
}

#[test]
fn a_transfer_survives_the_server_going_away() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    let bytes = data(MIB, 3);
    let id = net.share(0, &bytes);
    net.run_until(5_000, "the file is offered", |n| {
        n.knows_file(1, id) && n.knows_file(2, id)
    });
    net.download(1, id);
    net.download(2, id);
    net.run_until(10_000, "a quarter of the file", |n| {
        n.stored_pieces(1, id) >= 16
    });
    assert!(!net.completed(1, id), "switched off mid-transfer");

    net.server_off();
    net.run_until(30_000, "both downloads complete without a server", |n| {
        n.completed(1, id) && n.completed(2, id)
    });
    net.assert_holds(1, id, &bytes);
    net.assert_holds(2, id, &bytes);
    for &ix in &all {
        assert_eq!(net.node(ix).server_state(), ServerState::Reconnecting);
        assert!(net.told(ix, &Event::Server(ServerState::Reconnecting)));
    }
    assert!(net.fully_meshed(&all), "the links stay up");

    // An application message still goes through.
    net.send_app(1, 2, b"still here");
    let message = Event::Message {
        from: net.id(1),
        data: b"still here".to_vec(),
    };
    net.run_until(1_000, "the message arrives", |n| n.told(2, &message));
}

#[test]
fn without_the_server_a_lost_link_is_signalled_again_through_the_mesh() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    net.server_off();
    net.run_for(1_000);

    // The connection between 1 and 2 fails at both ends; 0 is their only way to signal.
    let (a, b) = (1, 2);
    let (serial_a, serial_b) = (net.conns[&(a, b)].serial, net.conns[&(b, a)].serial);
    net.schedule(
        0,
        Due::Closed {
            at: a,
            peer: b,
            serial: serial_a,
        },
    );
    net.schedule(
        0,
        Due::Closed {
            at: b,
            peer: a,
            serial: serial_b,
        },
    );
    net.run_until(1_000, "the link is down", |n| {
        !n.node(a).is_open(n.id(b)) && !n.node(b).is_open(n.id(a))
    });
    assert_eq!(
        net.node(a).members().len(),
        2,
        "1 still counts 2 as a member"
    );
    let relayed = net.peers[0].relay_frames;
    net.run_until(30_000, "the link is made again through 0", |n| {
        n.fully_meshed(&all)
    });
    assert!(
        net.peers[0].relay_frames > relayed,
        "0 carried their signals"
    );
    assert!(
        net.peers[0]
            .log
            .iter()
            .all(|(_, o)| !matches!(o, Output::Disconnect(_)))
    );
}

#[test]
fn when_the_server_returns_everyone_rejoins_and_a_newcomer_meshes_with_them() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    net.server_off();
    net.run_for(20_000);
    assert!(
        net.fully_meshed(&all),
        "the links stay up without the server"
    );
    net.server_on();
    net.run_until(20_000, "everyone is back", |n| {
        all.iter()
            .all(|ix| n.node(*ix).server_state() == ServerState::Connected)
    });
    for &ix in &all {
        let again = |o: &(u64, Output)| matches!(o.1, Output::Welcomed { first: false, .. });
        assert!(net.peers[ix].log.iter().any(again), "{ix} welcomed again");
        assert!(net.told(ix, &Event::Server(ServerState::Connected)));
    }
    assert!(net.fully_meshed(&all), "the links were kept");

    let newcomer = net.spawn(None);
    let everyone = [all[0], all[1], all[2], newcomer];
    net.run_until(5_000, "the newcomer is meshed", |n| {
        n.fully_meshed(&everyone)
    });
    for ix in everyone {
        let others: Vec<Ix> = everyone.iter().copied().filter(|o| *o != ix).collect();
        assert_eq!(net.node(ix).members(), net.ids(&others), "members of {ix}");
    }
}

#[test]
fn a_download_finishes_from_the_other_seeder_when_one_leaves() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    let bytes = data(MIB, 4);
    let id = net.share(0, &bytes);
    assert_eq!(net.share(1, &bytes), id, "the same content");
    net.run_until(5_000, "two sources", |n| {
        n.node(2).file(id).is_some_and(|f| f.sources == 2)
    });
    net.download(2, id);
    let (s0, s1) = (net.id(0), net.id(1));
    net.run_until(10_000, "pieces from both seeders", |n| {
        n.sources(2).contains(&s0) && n.sources(2).contains(&s1)
    });
    assert!(!net.completed(2, id), "the seeder leaves mid-download");

    net.leave(1);
    let from_0 = net.peers[2].received_from[&s0];
    net.run_until(30_000, "the download completes", |n| n.completed(2, id));
    net.assert_holds(2, id, &bytes);
    assert!(
        net.peers[2].received_from[&s0] > from_0,
        "the rest came from 0"
    );
    assert!(
        !net.node(2).members().contains(&s1),
        "1 is no member any more"
    );
    assert!(!net.node(0).members().contains(&s1));
    assert!(net.told(2, &Event::PeerLeft(s1)));
}

#[test]
fn a_wedged_link_is_closed_and_the_download_finishes_from_another_seeder() {
    // Slow links (25 kB/s): the file takes longer from one seeder than stall detection.
    let mut net = Net::new(25);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    let bytes = data(MIB, 5);
    let id = net.share(0, &bytes);
    net.share(1, &bytes);
    net.run_until(5_000, "two sources", |n| {
        n.node(2).file(id).is_some_and(|f| f.sources == 2)
    });
    net.download(2, id);
    let (s0, s1) = (net.id(0), net.id(1));
    net.run_until(20_000, "pieces from both seeders", |n| {
        n.sources(2).contains(&s0) && n.sources(2).contains(&s1)
    });

    net.wedge(1, 2);
    let wedged_at = net.now;
    let stalled = Output::Disconnect(s1);
    net.run_until(STALLED_LINK_MS + 15_000, "2 closes the wedged link", |n| {
        n.logged(2, &stalled)
    });
    let (at, _) = net.peers[2]
        .log
        .iter()
        .find(|(_, o)| *o == stalled)
        .expect("logged");
    assert!(*at >= wedged_at + STALLED_LINK_MS, "not before it stalled");
    assert!(!net.completed(2, id), "closed while the download ran");
    let from_0 = net.peers[2].received_from[&s0];
    net.run_until(120_000, "the download completes", |n| n.completed(2, id));
    net.assert_holds(2, id, &bytes);
    assert!(net.peers[2].received_from[&s0] > from_0, "0 sent the rest");
}

#[test]
fn a_download_finishes_despite_churn_and_departed_members_are_forgotten() {
    // 50 kB/s links: a download takes seconds, long enough for several comings and goings.
    let mut net = Net::new(50);
    let first = net.spawn_all(4, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&first));
    let bytes = data(MIB, 6);
    let id = net.share(0, &bytes);
    let mut downloading = BTreeSet::from([0]);
    let mut churners: VecDeque<Ix> = VecDeque::from([2, 3]);
    let mut departed = Vec::new();
    let mut next_churn = net.now + 1_000;
    let mut round = 0u32;
    let deadline = net.now + 120_000;
    while !net.completed(1, id) {
        assert!(
            net.now < deadline,
            "the download did not complete under churn"
        );
        net.step();
        // Everyone downloads the file once offered, and serves what it has.
        for ix in net.alive() {
            if !downloading.contains(&ix) && net.knows_file(ix, id) {
                net.download(ix, id);
                downloading.insert(ix);
            }
        }
        if net.now >= next_churn {
            next_churn += 1_000;
            round += 1;
            churners.push_back(net.spawn(None));
            if churners.len() > 3
                && let Some(old) = churners.pop_front()
            {
                if round.is_multiple_of(2) {
                    net.leave(old);
                } else {
                    net.crash(old);
                }
                departed.push(old);
            }
        }
    }
    assert!(
        departed.len() >= 4,
        "churn during the transfer: {departed:?}"
    );
    net.assert_holds(1, id, &bytes);

    net.run_for(20_000);
    let alive = net.alive();
    let gone = net.ids(&departed);
    for &ix in &alive {
        let members = net.node(ix).members();
        assert!(
            members.iter().all(|m| !gone.contains(m)),
            "node {ix} still counts a departed member: {members:?}"
        );
        let others: Vec<Ix> = alive.iter().copied().filter(|o| *o != ix).collect();
        assert_eq!(members, net.ids(&others), "node {ix} knows everyone alive");
    }
    assert!(net.fully_meshed(&alive), "the survivors are meshed");
}

#[test]
fn a_cancelled_download_can_be_started_again() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(2, None, 100);
    net.run_until(5_000, "a link", |n| n.fully_meshed(&all));
    let bytes = data(MIB, 7);
    let id = net.share(0, &bytes);
    net.run_until(5_000, "the file is offered", |n| n.knows_file(1, id));
    net.download(1, id);
    net.run_until(10_000, "a quarter of the file", |n| {
        n.stored_pieces(1, id) >= 16
    });
    assert!(!net.completed(1, id), "cancelled mid-download");

    let now = net.now;
    net.peers[1]
        .node
        .cancel(id, now)
        .expect("it is downloading");
    net.drain(1);
    assert!(net.told(1, &Event::Cancelled(id)));
    net.run_for(2_000);
    assert!(!net.completed(1, id), "nothing more after the cancel");
    assert!(!net.node(1).is_complete(id));
    assert!(
        net.peers[1].node.cancel(id, now).is_err(),
        "not downloading any more"
    );

    net.download(1, id);
    net.run_until(30_000, "the second download completes", |n| {
        n.completed(1, id)
    });
    net.assert_holds(1, id, &bytes);
    assert_eq!(net.count_told(1, &Event::Cancelled(id)), 1);
    assert_eq!(net.count_told(1, &Event::Completed(id)), 1);
}

#[test]
fn a_corrupting_seeder_is_reported_and_the_file_arrives_intact() {
    let mut net = Net::new(FAST);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    let bytes = data(MIB, 8);
    let id = net.share(0, &bytes);
    net.share(1, &bytes);
    net.peers[1].node.set_corrupt_uploads(true);
    net.run_until(5_000, "two sources", |n| {
        n.node(2).file(id).is_some_and(|f| f.sources == 2)
    });
    net.download(2, id);
    net.run_until(30_000, "the download completes", |n| n.completed(2, id));
    net.assert_holds(2, id, &bytes);
    let liar = net.id(1);
    let names_liar = |(_, o): &(u64, Output)| match o {
        Output::Event(Event::BadPeer { id: bad, peer, .. }) => *bad == id && *peer == liar,
        _ => false,
    };
    assert!(
        net.peers[2].log.iter().any(names_liar),
        "the corrupting seeder is named"
    );
}

#[test]
fn a_peer_that_breaks_a_bound_is_dropped_kept_out_and_the_room_goes_on() {
    use swarm_core::share::bounds::{MAX_OFFERS_PER_PEER, reason};
    let mut net = Net::new(FAST);
    let all = net.spawn_all(3, None, 100);
    net.run_until(5_000, "a full mesh", |n| n.fully_meshed(&all));
    let (victim, seeder, attacker) = (0, 1, 2);
    let bytes = data(MIB, 7);
    let id = net.share(seeder, &bytes);
    // The attacker offers more contents than a peer may.
    for n in 0..=MAX_OFFERS_PER_PEER as u32 {
        let mut fake = [0xfa; 32];
        fake[..4].copy_from_slice(&n.to_be_bytes());
        let announce = PeerMsg::Announce {
            id: ContentId::from_bytes(fake),
            size: 1,
            name: "fake",
            mime: "",
        };
        net.send(attacker, victim, announce.encode());
    }
    net.drain(attacker);
    net.run_until(5_000, "the attacker is dropped", |n| {
        n.node(victim).dropped().get(reason::TOO_MANY_OFFERS) == Some(&1)
    });
    let attacker_id = net.id(attacker);
    assert!(!net.node(victim).is_open(attacker_id));
    // Its fake offers went with it.
    assert!(net.node(victim).files().iter().all(|f| f.id == id));
    // The attacker's side redials (a full mesh), but the victim does not answer for a while.
    net.run_for(60_000);
    assert!(!net.node(victim).is_open(attacker_id), "kept out");
    assert!(!net.node(victim).members().contains(&attacker_id));
    // The victim still downloads from, and talks to, the honest peer.
    net.download(victim, id);
    net.run_until(30_000, "the download completes", |n| {
        n.completed(victim, id)
    });
    net.assert_holds(victim, id, &bytes);
    assert!(net.node(victim).is_open(net.id(seeder)));
}

// ---- a server that cannot be trusted ----

fn signed() -> SignalPolicy {
    SignalPolicy {
        require_signed: true,
        secret: None,
    }
}

fn secret_room(room: &RoomName, secret: &str) -> SignalPolicy {
    SignalPolicy {
        require_signed: true,
        secret: Some(RoomSecret::derive(secret, room).expect("a secret")),
    }
}

/// Whether `ix` was told that `peer` was refused for `reason`.
fn rejected(net: &Net, ix: Ix, peer: Ix, reason: Rejection) -> bool {
    net.told(
        ix,
        &Event::PeerRejected {
            peer: net.id(peer),
            reason,
        },
    )
}

#[test]
fn a_server_that_answers_with_its_own_fingerprint_is_refused_and_no_channel_opens() {
    // Signatures kept, fingerprints swapped: refused even by peers that do not require
    // signatures, since a signature that is there must verify.
    let mut net = Net::new(FAST);
    net.mitm = Mitm::SwapFingerprint;
    let a = net.spawn_with(SignalPolicy::default());
    net.run_for(100);
    let b = net.spawn_with(SignalPolicy::default());
    net.run_for(10_000);
    assert!(rejected(&net, a, b, Rejection::FingerprintMismatch));
    assert!(net.node(a).open_peers().is_empty() && net.node(b).open_peers().is_empty());

    // Signatures stripped too: peers that require them refuse.
    let mut net = Net::new(FAST);
    net.mitm = Mitm::SwapAndStrip;
    let a = net.spawn_with(signed());
    net.run_for(100);
    let b = net.spawn_with(signed());
    net.run_for(10_000);
    assert!(rejected(&net, a, b, Rejection::Unsigned));
    assert!(net.node(a).open_peers().is_empty() && net.node(b).open_peers().is_empty());
    assert!(!net.told(a, &Event::PeerJoined(net.id(b))));
}

#[test]
fn peers_that_do_not_require_signatures_fall_for_a_server_that_strips_them() {
    // The threat is real: v1 rules let the server answer in the peer's place.
    let mut net = Net::new(FAST);
    net.mitm = Mitm::SwapAndStrip;
    let a = net.spawn_with(SignalPolicy::default());
    net.run_for(100);
    let b = net.spawn_with(SignalPolicy::default());
    net.run_until(10_000, "the (intercepted) channel opens", |n| {
        n.fully_meshed(&[a, b])
    });
}

#[test]
fn a_secret_room_carries_a_file_and_its_server_sees_no_description_or_address() {
    let mut net = Net::new(FAST);
    let room = RoomName::new("plans").expect("room");
    let all: Vec<Ix> = (0..3)
        .map(|_| {
            let ix = net.spawn_with(secret_room(&room, "correct horse battery staple"));
            net.run_for(200);
            ix
        })
        .collect();
    net.run_until(10_000, "the secret room meshes", |n| n.fully_meshed(&all));
    let bytes = data(MIB, 7);
    let id = net.share(all[0], &bytes);
    net.run_until(10_000, "the file is heard of", |n| n.knows_file(all[2], id));
    net.download(all[2], id);
    net.run_until(60_000, "the file arrives", |n| n.completed(all[2], id));
    net.assert_holds(all[2], id, &bytes);
    assert!(!net.relayed.is_empty());
    for data in &net.relayed {
        let sealed = data
            .strip_prefix(r#"{"sealed":""#)
            .and_then(|rest| rest.strip_suffix(r#""}"#))
            .unwrap_or_else(|| panic!("sealed: {data}"));
        assert!(
            sealed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url only: {sealed}"
        );
        for clear in ["fingerprint", "candidate", "offer", "answer"] {
            assert!(!data.contains(clear), "{clear} in {data}");
        }
    }
}

#[test]
fn a_peer_without_the_secret_is_refused_and_the_room_goes_on() {
    let mut net = Net::new(FAST);
    let room = RoomName::new("plans").expect("room");
    let a = net.spawn_with(secret_room(&room, "right"));
    net.run_for(200);
    let b = net.spawn_with(secret_room(&room, "right"));
    net.run_until(10_000, "members mesh", |n| n.fully_meshed(&[a, b]));
    // The server puts a peer with a wrong secret in the same room (it could: it is the
    // server); what it sends does not open.
    let intruder = net.spawn_with(secret_room(&room, "wrong"));
    net.run_for(10_000);
    for member in [a, b] {
        let told = Event::PeerRejected {
            peer: net.id(intruder),
            reason: Rejection::CannotOpen,
        };
        assert_eq!(net.count_told(member, &told), 1, "told once");
    }
    assert_eq!(net.node(a).open_peers(), vec![net.id(b)]);
    assert!(net.node(intruder).open_peers().is_empty());
}
