//! The whole peer, sans I/O: one [`Node`] composes the room member ([`Client`]: mesh, relay,
//! server link, structured layer) and the file-sharing engine ([`Share`]), behind one input
//! and one output type, in the shape of str0m: the shell feeds in what happened with
//! [`Node::handle`] (and the user's requests through the command methods), drains
//! [`Node::poll_output`] and carries each [`Output`] out, and calls [`Node::handle_timeout`]
//! when [`Node::poll_timeout`]'s deadline passes.
//!
//! Every rule that joins the two engines lives here, once, for the browser and the native
//! peer alike: a channel that opens is greeted by the sharing engine, a connection that ends
//! releases what it held there, a link that stopped delivering is closed like a failed one,
//! a finished download is announced to the room, a signal the server cannot take goes
//! through the mesh, a received frame is decoded and routed to the layer it belongs to, and
//! the providers heard of by gossip appear in the room's file list.
//!
//! Time is milliseconds on a monotonic clock of the shell's choosing, passed with every
//! input; the wall clock appears only where the protocol needs it (the sequence numbers of
//! signed records, [`NodeConfig::seq`], and the join proof, [`Node::server_query`]).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use swarm_protocol::content::{MAX_PIECE_SIZE, MAX_PIECES, Manifest};
use swarm_protocol::wire::{self, BinaryFrame};
use swarm_protocol::{ContentId, ErrorCode, IceServer, PeerId, RoomName, SignalData};
use tracing::{debug, info, warn};

use crate::bitfield::Bitfield;
use crate::client::{Client, DHT_ABOVE, Effect, ServerState};
use crate::identity::Identity;
use crate::mesh;
use crate::sdp_auth::Rejection;
use crate::share::{self, FileInfo, Progress, Share, ShareConfig, ShareError, ShareEvent};
use crate::signal_guard::SignalPolicy;

/// A piece to read for a peer ([`Output::ReadPiece`]), handed back with what was read.
pub type ReadPiece = share::ReadPiece<PeerId>;

/// A verified piece to store ([`Output::WritePiece`]).
pub type WritePiece = share::WritePiece<PeerId>;

/// How often the node does its upkeep (request timeouts, speeds, the partial mesh, the
/// structured layer): [`Node::poll_timeout`] is never further away than this.
pub const UPKEEP_MS: u64 = 250;

/// Bytes we may have sent a peer since its send queue last emptied ([`Input::Drained`])
/// before it is dropped as not reading ([`share::bounds::reason::NOT_READING`]). What it can
/// ask of us at once is paced by what it reads (one manifest, [`MAX_MANIFEST_BYTES`] at
/// most, and two pieces ahead, of at most [`MAX_PIECE_SIZE`] each), so an honest peer stays
/// below this however slow it is; small replies (`not-found`, `reject`) are as many as its
/// requests, and this bounds them for one that asks and never reads.
pub const MAX_UNREAD_BYTES: u64 = MAX_MANIFEST_BYTES + 2 * MAX_PIECE_SIZE as u64 + (16 << 20);

/// The largest encoded manifest: [`MAX_PIECES`] piece hashes and the longest labels.
const MAX_MANIFEST_BYTES: u64 = MAX_PIECES as u64 * 32 + 4 * 1024;

/// How to build a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The room to join.
    pub room: RoomName,
    /// Our key; our id is its hash.
    pub identity: Identity,
    /// Caps the connections we open ourselves (a partial mesh); `None`: connect to everyone.
    pub max_peers: Option<usize>,
    /// Room size above which provided files are published in the structured layer instead
    /// of flooded.
    pub dht_above: usize,
    /// Tuning of the sharing engine.
    pub share: ShareConfig,
    /// Wall-clock milliseconds at start: the first sequence number of our signed records,
    /// so that records of a later session replace those of an earlier one.
    pub seq: u64,
    /// Seeds the node's own randomness (piece order ties, reconnection jitter).
    pub seed: u64,
    /// A peer with more than this sent and not read is dropped ([`MAX_UNREAD_BYTES`]).
    pub max_unread_bytes: u64,
    /// Whether unsigned offers and answers are refused, and a secret room's key
    /// ([`crate::signal_guard`]). `room` is then the name the server sees
    /// ([`crate::secret_room::RoomSecret::server_room`]).
    pub signals: SignalPolicy,
}

impl NodeConfig {
    /// A configuration with the defaults: a full mesh, the default structured-layer size
    /// and sharing engine.
    pub fn new(room: RoomName, identity: Identity, seq: u64, seed: u64) -> Self {
        Self {
            room,
            identity,
            max_peers: None,
            dht_above: DHT_ABOVE,
            share: ShareConfig::default(),
            seq,
            seed,
            max_unread_bytes: MAX_UNREAD_BYTES,
            signals: SignalPolicy::default(),
        }
    }
}

/// Something that happened, for the node to handle.
#[derive(Debug)]
pub enum Input<'a> {
    /// A text frame from the signalling server.
    ServerFrame(&'a str),
    /// The signalling connection ended (or never opened), with its close code and reason.
    ServerClosed {
        /// The WebSocket close code (1006 when there was none).
        code: u16,
        /// The close reason.
        reason: &'a str,
    },
    /// A new signalling connection could not even be created: try again later.
    ServerUnreachable,
    /// The signalling connection could not take this signal ([`Output::ToServer`]): it goes
    /// through the mesh instead.
    ServerRefused {
        /// The remote peer.
        to: PeerId,
        /// The signal.
        data: SignalData,
    },
    /// Our connection to `to` produced a signal (a description or an ICE candidate).
    LocalSignal {
        /// The remote peer.
        to: PeerId,
        /// The signal.
        data: SignalData,
    },
    /// The `swarm` channel to this peer opened.
    ChannelOpen(PeerId),
    /// The connection to this peer closed or failed (or could not be created).
    ChannelClosed(PeerId),
    /// A binary message arrived on the `swarm` channel of `from` (text messages are the
    /// application's and do not pass through the node).
    Frame {
        /// The neighbour.
        from: PeerId,
        /// The whole message.
        data: &'a [u8],
    },
    /// Everything queued for this peer has been handed to its channel
    /// ([`crate::send_queue::SendQueue::take_drained`]).
    Drained(PeerId),
    /// A piece asked for by [`Output::ReadPiece`] was read (`Some`), or cannot be (`None`).
    PieceRead {
        /// What was asked.
        read: ReadPiece,
        /// Its bytes.
        data: Option<&'a [u8]>,
    },
    /// A piece of [`Output::WritePiece`] was stored (`stored`), or, having a check, was not
    /// stored because it did not match (`!stored`; `from` is the peer the check names).
    PieceStored {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
        /// The peer of the write's [`share::PieceCheck`], if it had one.
        from: Option<PeerId>,
        /// Whether the piece is stored.
        stored: bool,
    },
}

/// Something the shell must do or tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Create a peer connection to `peer`, offering (creating the `swarm` channel) if
    /// `offerer`.
    Connect {
        /// The remote peer.
        peer: PeerId,
        /// Whether this side creates the data channel and the first offer.
        offerer: bool,
        /// Whether this side is polite in perfect negotiation.
        polite: bool,
    },
    /// Close the connection to `peer` (the node has forgotten it already).
    Disconnect(PeerId),
    /// Send this signal through the signalling server (`ClientMsg::signal`); if the
    /// connection cannot take it, hand it back as [`Input::ServerRefused`].
    ToServer {
        /// The remote peer.
        to: PeerId,
        /// The signal.
        data: SignalData,
    },
    /// Queue this binary frame on the `swarm` channel of `to`.
    Send {
        /// The neighbour.
        to: PeerId,
        /// The encoded frame.
        frame: Vec<u8>,
    },
    /// Hand this signal to the connection with `from` (its negotiation).
    Signal {
        /// The remote peer.
        from: PeerId,
        /// What it sent.
        data: SignalData,
    },
    /// Read a piece; hand it back with what was read as [`Input::PieceRead`].
    ReadPiece(ReadPiece),
    /// Store a piece (hashing it first if it has a `check`, and storing it only if it
    /// matches); answer with [`Input::PieceStored`].
    WritePiece(WritePiece),
    /// Drop the queued frames of this piece to `to` ([`crate::send_queue::SendQueue::withdraw`]);
    /// report [`Input::Drained`] if that empties the queue.
    Withdraw {
        /// The peer.
        to: PeerId,
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
    },
    /// Open a new signalling connection (with [`Node::server_query`]) after this many
    /// milliseconds.
    ReconnectIn(u64),
    /// The server welcomed us (the first time, or again after a reconnection).
    Welcomed {
        /// Our id.
        me: PeerId,
        /// STUN/TURN servers for new connections.
        ice_servers: Vec<IceServer>,
        /// Whether this is the first `welcome` of the session.
        first: bool,
    },
    /// The join failed before any `welcome`.
    JoinFailed {
        /// The server's refusal, if it sent one.
        code: Option<ErrorCode>,
        /// What went wrong.
        message: String,
    },
    /// Something for the application.
    Event(Event),
}

/// What the application hears ([`Output::Event`]): the same for every shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The link to the server changed state.
    Server(ServerState),
    /// A peer's channel opened: it can be sent to.
    PeerJoined(PeerId),
    /// A peer that had joined is gone.
    PeerLeft(PeerId),
    /// A binary application message.
    Message {
        /// The sender.
        from: PeerId,
        /// Its payload.
        data: Vec<u8>,
    },
    /// A content we had not heard of is offered in the room (by a neighbour, or by a
    /// provider heard of by gossip).
    FileFound(FileInfo),
    /// Something in [`Node::files`] changed.
    FilesChanged,
    /// A download's manifest arrived and verified: prepare its storage before the first
    /// [`Output::WritePiece`].
    ManifestReady {
        /// The content.
        id: ContentId,
        /// Its manifest.
        manifest: Manifest,
    },
    /// A download made progress.
    Progress {
        /// The content.
        id: ContentId,
        /// Where it stands.
        progress: Progress<PeerId>,
    },
    /// Every piece of a download is verified and stored (it is announced to the room).
    Completed(ContentId),
    /// A download was cancelled ([`Node::cancel`]).
    Cancelled(ContentId),
    /// A signal from `peer` was refused: unsigned where signatures are required, forged,
    /// replayed, or not sealed with this secret room's key. Nothing of it reached a
    /// connection; for a forged or unsigned description, a connection to `peer` still being
    /// set up was closed ([`Rejection::closes_setup`]).
    PeerRejected {
        /// The peer the signal claimed to come from.
        peer: PeerId,
        /// Why.
        reason: Rejection,
    },
    /// `peer` sent data for `id` that failed verification; it is no longer used for `id`.
    BadPeer {
        /// The content.
        id: ContentId,
        /// The offender.
        peer: PeerId,
        /// What was wrong.
        reason: &'static str,
    },
}

/// One room member: the mesh, the relay, the server link and the sharing engine.
#[derive(Debug)]
pub struct Node {
    client: Client,
    share: Share<PeerId>,
    out: VecDeque<Output>,
    /// The latest time given with an input.
    now: u64,
    next_upkeep: u64,
    /// xorshift64 state, for the reconnection jitter.
    rng: u64,
    /// Peers dropped for breaking a bound, by reason ([`share::bounds::reason`]).
    dropped: BTreeMap<&'static str, u64>,
    /// Bytes sent to each peer since its send queue last emptied.
    unread: BTreeMap<PeerId, u64>,
    max_unread_bytes: u64,
}

impl Node {
    /// A node that has not contacted the server yet: open a signalling connection with
    /// [`Node::server_query`] and feed it what arrives. `now` starts the node's clock.
    pub fn new(config: NodeConfig, now: u64) -> Self {
        let client = Client::new(config.room, config.identity, config.max_peers, config.seq)
            .with_dht_above(config.dht_above)
            .with_signal_policy(config.signals, config.seed);
        Self {
            client,
            share: Share::new(config.share, config.seed ^ 0x5eed),
            out: VecDeque::new(),
            now,
            next_upkeep: now + UPKEEP_MS,
            rng: config.seed | 1,
            dropped: BTreeMap::new(),
            unread: BTreeMap::new(),
            max_unread_bytes: config.max_unread_bytes,
        }
    }

    // ---- the event loop ----

    /// Handles one input that happened at `now`.
    pub fn handle(&mut self, input: Input<'_>, now: u64) {
        self.advance(now);
        match input {
            Input::ServerFrame(text) => {
                let effects = self.client.on_server_frame(text);
                self.apply(effects);
            }
            Input::ServerClosed { code, reason } => {
                let random = self.random();
                let effects = self.client.on_server_closed(code, reason, random);
                self.apply(effects);
            }
            Input::ServerUnreachable => {
                let random = self.random();
                let effects = self.client.on_server_unreachable(random);
                self.apply(effects);
            }
            Input::ServerRefused { to, data } => {
                let effects = self.client.relay_signal(to, &data);
                self.apply(effects);
            }
            Input::LocalSignal { to, data } => {
                let effects = self.client.send_signal(to, &data);
                self.apply(effects);
            }
            Input::ChannelOpen(peer) => {
                let effects = self.client.on_channel_open(peer);
                self.apply(effects);
            }
            Input::ChannelClosed(peer) => self.channel_closed(peer),
            Input::Frame { from, data } => self.on_frame(from, data),
            Input::Drained(peer) => {
                self.unread.remove(&peer);
                let out = self.share.upload_drained(peer);
                self.apply_share(out);
            }
            Input::PieceRead { read, data } => {
                let ReadPiece { to, id, piece, .. } = read;
                let out = match data {
                    Some(data) => self.share.piece_read(to, id, piece, data),
                    None => {
                        warn!(%id, piece, "cannot read a piece to serve");
                        self.share.piece_unreadable(to, id, piece)
                    }
                };
                self.apply_share(out);
            }
            Input::PieceStored {
                id,
                piece,
                from,
                stored,
            } => {
                let out = match from {
                    Some(from) => self.share.piece_checked(id, piece, from, stored, self.now),
                    None if stored => self.share.piece_stored(id, piece, self.now),
                    None => Vec::new(),
                };
                self.apply_share(out);
            }
        }
    }

    /// The next output to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Node::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> u64 {
        self.next_upkeep
    }

    /// Lets time pass: the upkeep runs if it is due.
    pub fn handle_timeout(&mut self, now: u64) {
        self.advance(now);
        if now < self.next_upkeep {
            return;
        }
        // Missed deadlines (a suspended tab) are not made up: one upkeep, then the next.
        self.next_upkeep = now + UPKEEP_MS;
        self.drop_unread();
        let out = self.share.tick(now);
        self.apply_share(out);
        let effects = self.client.on_tick(self.now);
        self.apply(effects);
    }

    // ---- what the user asks ----

    /// Offers content we hold whole (the shell keeps its bytes) to the room.
    pub fn share(&mut self, id: ContentId, manifest: Manifest, now: u64) {
        self.advance(now);
        info!(%id, name = manifest.name, size = manifest.size, "sharing");
        let out = self.share.share(id, manifest);
        self.apply_share(out);
        self.provide_held(id);
        self.tell(Event::FilesChanged);
    }

    /// Starts (or joins) the download of `id`: from the neighbours that offer it, or from a
    /// provider heard of, which is dialled. A content held whole completes at once.
    /// [`ShareError::UnknownContent`] if nobody in the room is known to have it.
    pub fn download(&mut self, id: ContentId, now: u64) -> Result<(), ShareError> {
        self.advance(now);
        if self.share.is_complete(id) {
            let out = self.share.download(id, now)?;
            self.apply_share(out);
            return Ok(());
        }
        let (out, effects) = self.client.start_download(&mut self.share, id, now)?;
        self.apply(effects);
        self.apply_share(out);
        Ok(())
    }

    /// Resumes the download of `id` from the pieces in `have`, stored by an earlier run (a
    /// page before a reload) and checked against `manifest` by the shell, which has checked
    /// `manifest` against `id` ([`crate::merkle::verify_manifest`]). Only the missing
    /// pieces are fetched, from the neighbours that offer `id` or from providers heard of,
    /// once there are any; the stored ones are offered meanwhile. With every piece, `id` is
    /// shared as by [`Node::share`]. Nothing if `id` is downloading or held whole already.
    pub fn resume(&mut self, id: ContentId, manifest: Manifest, have: Bitfield, now: u64) {
        self.advance(now);
        if have.is_complete() && have.len() == manifest.piece_count() {
            return self.share(id, manifest, now);
        }
        info!(%id, stored = have.count(), pieces = manifest.piece_count(), "resuming");
        let out = self.share.resume(id, manifest, have, now);
        self.apply_share(out);
        let effects = self.client.want(id);
        self.apply(effects);
        self.tell(Event::FilesChanged);
    }

    /// Stops offering and fetching `id` (the user deleted it): a download is cancelled
    /// ([`Event::Cancelled`] follows), neighbours hear we no longer have it, and we stop
    /// announcing ourselves as its provider (records others keep expire on their own).
    pub fn forget(&mut self, id: ContentId, now: u64) {
        self.advance(now);
        self.client.unprovide(id);
        let out = self.share.forget(id);
        self.apply_share(out);
        self.tell(Event::FilesChanged);
    }

    /// Cancels the download of `id`: [`Event::Cancelled`] follows.
    /// [`ShareError::NotDownloading`] if it is not being downloaded.
    pub fn cancel(&mut self, id: ContentId, now: u64) -> Result<(), ShareError> {
        self.advance(now);
        let out = self.share.cancel(id)?;
        self.apply_share(out);
        Ok(())
    }

    /// Gives up the download of `id` because the shell cannot store it: its requests are
    /// cancelled and nothing more is reported for it. Nothing if it is not downloading.
    pub fn abandon(&mut self, id: ContentId, now: u64) {
        self.advance(now);
        self.client.unwant(id);
        if let Ok(out) = self.share.cancel(id) {
            // Only the frames: the shell has reported the failure its own way.
            let frames = out
                .into_iter()
                .filter(|o| matches!(o, share::Output::Send { .. }))
                .collect();
            self.apply_share(frames);
        }
    }

    /// Fetch these bytes of `id` (and what follows them) first; `None` returns to rarest
    /// first.
    pub fn set_priority(&mut self, id: ContentId, bytes: Option<Range<u64>>, now: u64) {
        self.advance(now);
        let out = self.share.set_priority(id, bytes, now);
        self.apply_share(out);
    }

    /// Looks for providers of `id` in the room's structured layer (for a while); what is
    /// found arrives as [`Event::FileFound`].
    pub fn lookup(&mut self, id: ContentId, now: u64) {
        self.advance(now);
        let effects = self.client.find(id);
        self.apply(effects);
    }

    /// Opens a direct connection to member `peer`; `false` if it is not a member we know of.
    pub fn dial(&mut self, peer: PeerId, now: u64) -> bool {
        self.advance(now);
        match self.client.dial(peer) {
            Some(effects) => {
                self.apply(effects);
                true
            }
            None => false,
        }
    }

    /// Leaves the room: every connection is to be closed. Idempotent.
    pub fn leave(&mut self, now: u64) {
        self.advance(now);
        let effects = self.client.leave();
        self.apply(effects);
    }

    /// **Testing only**: corrupt every piece we serve.
    pub fn set_corrupt_uploads(&mut self, corrupt: bool) {
        self.share.set_corrupt_uploads(corrupt);
    }

    // ---- what the shell may ask ----

    /// The query string of a new signalling connection (our key's proof at wall-clock
    /// second `now_secs`, never reused, and the resume token once welcomed).
    pub fn server_query(&mut self, now_secs: u64) -> String {
        self.client.server_query(now_secs)
    }

    /// Our id, once welcomed.
    pub fn me(&self) -> Option<PeerId> {
        self.client.me()
    }

    /// The state of the link to the server.
    pub fn server_state(&self) -> ServerState {
        self.client.server_state()
    }

    /// How many peers were dropped for breaking a bound, by reason
    /// ([`share::bounds::reason`]); each is kept out for [`crate::client::BAN_MS`].
    pub fn dropped(&self) -> &BTreeMap<&'static str, u64> {
        &self.dropped
    }

    /// Whether [`Node::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.client.has_left()
    }

    /// Peers with an open channel, sorted.
    pub fn open_peers(&self) -> Vec<PeerId> {
        self.client.open_peers()
    }

    /// Whether `peer`'s channel is open.
    pub fn is_open(&self, peer: PeerId) -> bool {
        self.client.is_open(peer)
    }

    /// Every member we know of, connected or not, sorted.
    pub fn members(&self) -> Vec<PeerId> {
        self.client.members()
    }

    /// The room's files: ours, our neighbours', and those heard of by gossip.
    pub fn files(&self) -> Vec<FileInfo> {
        self.client.room_files(self.share.files())
    }

    /// One of [`Node::files`].
    pub fn file(&self, id: ContentId) -> Option<FileInfo> {
        self.files().into_iter().find(|f| f.id == id)
    }

    /// The manifest of `id`, once known.
    pub fn manifest(&self, id: ContentId) -> Option<&Manifest> {
        self.share.manifest(id)
    }

    /// The pieces of `id` we hold, once its manifest is known.
    pub fn stored(&self, id: ContentId) -> Option<&Bitfield> {
        self.share.stored(id)
    }

    /// The pieces each source of `id` has.
    pub fn source_pieces(&self, id: ContentId) -> Vec<(PeerId, Bitfield)> {
        self.share.source_pieces(id)
    }

    /// Whether we hold all of `id`.
    pub fn is_complete(&self, id: ContentId) -> bool {
        self.share.is_complete(id)
    }

    /// Whether the `len` bytes at `start` of `id` are stored.
    pub fn has_bytes(&self, id: ContentId, start: u64, len: u64) -> bool {
        self.share.has_bytes(id, start, len)
    }

    /// Bytes from `start` of `id`, up to `max`, stored without a gap.
    pub fn stored_run(&self, id: ContentId, start: u64, max: u64) -> u64 {
        self.share.stored_run(id, start, max)
    }

    // ---- the rules that join the two engines ----

    fn advance(&mut self, now: u64) {
        // A monotonic clock never goes back; if a shell's does, keep ours still.
        self.now = self.now.max(now);
        self.client.advance(self.now);
    }

    fn tell(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Hands `frame` to the shell for `peer`, counting it as unread until the peer's queue
    /// empties.
    fn send(&mut self, to: PeerId, frame: Vec<u8>) {
        *self.unread.entry(to).or_default() += frame.len() as u64;
        self.out.push_back(Output::Send { to, frame });
    }

    /// Drops the peers that have more than the bound sent and not read.
    fn drop_unread(&mut self) {
        let over: Vec<PeerId> = self
            .unread
            .iter()
            .filter(|(_, bytes)| **bytes > self.max_unread_bytes)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in over {
            self.unread.remove(&peer);
            self.drop_abusive(peer, share::bounds::reason::NOT_READING);
        }
    }

    /// `peer` broke a bound: it is counted, dropped and kept out for a while.
    fn drop_abusive(&mut self, peer: PeerId, reason: &'static str) {
        warn!(%peer, reason, "dropping a peer that broke a bound");
        *self.dropped.entry(reason).or_default() += 1;
        let effects = self.client.ban(peer);
        self.apply(effects);
    }

    fn channel_closed(&mut self, peer: PeerId) {
        self.unread.remove(&peer);
        let effects = self.client.on_channel_closed(peer);
        self.apply(effects);
    }

    fn provide_held(&mut self, id: ContentId) {
        let effects = self.client.provide_held(&self.share, id);
        self.apply(effects);
    }

    /// A binary message from neighbour `from`: each layer gets its own frames.
    fn on_frame(&mut self, from: PeerId, data: &[u8]) {
        match wire::decode_binary(data) {
            Ok(BinaryFrame::App(payload)) => self.tell(Event::Message {
                from,
                data: payload.to_vec(),
            }),
            Ok(BinaryFrame::Peer(msg)) => {
                let out = self.share.on_message(from, msg, self.now);
                self.apply_share(out);
            }
            Ok(BinaryFrame::Relay(relay)) => {
                let effects = self.client.on_relay(from, relay);
                self.apply(effects);
            }
            Ok(BinaryFrame::Route(route)) => {
                let effects = self.client.on_route(from, route);
                self.apply(effects);
            }
            Err(err) => debug!(peer = %from, error = %err, "dropping a frame"),
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Connect {
                    peer,
                    offerer,
                    polite,
                } => self.out.push_back(Output::Connect {
                    peer,
                    offerer,
                    polite,
                }),
                Effect::Disconnect(peer) => {
                    self.unread.remove(&peer);
                    self.out.push_back(Output::Disconnect(peer));
                    let out = self.share.remove_peer(peer, self.now);
                    self.apply_share(out);
                }
                Effect::ToServer { to, data } => self.out.push_back(Output::ToServer { to, data }),
                Effect::ToPeer { peer, frame } => self.send(peer, frame),
                Effect::Signal { from, data } => self.out.push_back(Output::Signal { from, data }),
                Effect::Welcomed {
                    me,
                    ice_servers,
                    first,
                } => self.out.push_back(Output::Welcomed {
                    me,
                    ice_servers,
                    first,
                }),
                Effect::JoinFailed { code, message } => {
                    self.out.push_back(Output::JoinFailed { code, message })
                }
                Effect::Server(state) => self.tell(Event::Server(state)),
                Effect::ReconnectIn(delay) => self.out.push_back(Output::ReconnectIn(delay)),
                Effect::Emit(mesh::Event::PeerJoined(peer)) => {
                    info!(%peer, "peer joined");
                    self.tell(Event::PeerJoined(peer));
                    let out = self.share.add_peer(peer);
                    self.apply_share(out);
                }
                Effect::Emit(mesh::Event::PeerLeft(peer)) => {
                    info!(%peer, "peer left");
                    self.tell(Event::PeerLeft(peer));
                }
                Effect::Provided { file, new } => {
                    debug!(id = %file.id, providers = file.providers.len(), "heard of a provider");
                    if new
                        && self.share.file(file.id).is_none()
                        && let Some(info) = self.file(file.id)
                    {
                        self.tell(Event::FileFound(info));
                    }
                    self.tell(Event::FilesChanged);
                }
                Effect::ProvidersGone => self.tell(Event::FilesChanged),
                Effect::Rejected { peer, reason } => {
                    self.tell(Event::PeerRejected { peer, reason })
                }
            }
        }
    }

    fn apply_share(&mut self, outputs: Vec<share::Output<PeerId>>) {
        for output in outputs {
            match output {
                share::Output::Send { to, frame } => self.send(to, frame),
                share::Output::ReadPiece(read) => self.out.push_back(Output::ReadPiece(read)),
                share::Output::WritePiece(write) => self.out.push_back(Output::WritePiece(write)),
                share::Output::Withdraw { to, id, piece } => {
                    self.out.push_back(Output::Withdraw { to, id, piece })
                }
                share::Output::Stalled(peer) => {
                    warn!(%peer, "the link delivers nothing any more: closing it to connect again");
                    self.channel_closed(peer);
                }
                share::Output::Abusive { peer, reason } => self.drop_abusive(peer, reason),
                share::Output::Event(event) => self.on_share_event(event),
            }
        }
    }

    fn on_share_event(&mut self, event: ShareEvent<PeerId>) {
        match event {
            ShareEvent::Offered(info) => {
                self.tell(Event::FileFound(info));
                self.tell(Event::FilesChanged);
            }
            ShareEvent::SourcesChanged { .. } => self.tell(Event::FilesChanged),
            ShareEvent::ManifestReady { id, manifest } => {
                self.tell(Event::ManifestReady { id, manifest });
                self.tell(Event::FilesChanged);
            }
            ShareEvent::Progress { id, progress } => self.tell(Event::Progress { id, progress }),
            ShareEvent::Completed { id } => {
                self.provide_held(id);
                self.tell(Event::Completed(id));
                self.tell(Event::FilesChanged);
            }
            ShareEvent::Failed { id, .. } => {
                self.client.unwant(id);
                self.tell(Event::Cancelled(id));
            }
            ShareEvent::BadPeer { id, peer, reason } => {
                warn!(%id, %peer, reason, "a peer sent bad data; it is no longer used for this file");
                self.tell(Event::BadPeer { id, peer, reason });
            }
        }
    }
}
