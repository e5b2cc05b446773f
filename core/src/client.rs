//! A room member's side of signalling, shared by the browser client and the native peer.
//!
//! [`Client`] holds what one joined room needs beyond the peer connections themselves: our
//! key, the partial [`Mesh`], the [`SignalRelay`] used while the server is away, the resume
//! token, and the state of the link to the server with its reconnection [`Backoff`]. The I/O
//! shell feeds it server frames, channel events, relay frames and the time, and carries out the
//! [`Effect`]s that come back; it never decides anything about the room itself.

use std::collections::BTreeMap;

use swarm_protocol::gossip::Gossip;
use swarm_protocol::route::Route;
use swarm_protocol::wire::Relay;
use swarm_protocol::{
    ContentId, ErrorCode, IceServer, PeerId, RoomName, SdpType, ServerMsg, SignalData,
};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::dht::{self, Dht, Routed};
use crate::directory::{Directory, Record, RemoteFile, Unlisted};
use crate::identity::Identity;
use crate::mesh::{Action, Event, Mesh};
use crate::relay::{Incoming, SignalRelay};
use crate::sdp_auth::Rejection;
use crate::share::{FileInfo, Output, Share, ShareError};
use crate::signal_guard::{SignalGuard, SignalPolicy};
use crate::token_bucket::TokenBucket;

/// Providers dialled at once for a content we want and no neighbour provides.
const PROVIDERS_DIALLED: usize = 2;

/// A peer refused for one reason is reported once in this time (ms): an intruder's every
/// candidate does not become an event.
pub const REJECTION_REPORT_MS: u64 = 30_000;

/// Most (peer, reason) pairs remembered for [`REJECTION_REPORT_MS`].
const MAX_REJECTIONS_TOLD: usize = 1024;

/// Time between two attempts to reach a provider of a content we want (ms).
const PROVIDER_RETRY_MS: u64 = 5_000;

/// Rooms with more members than this publish provide records in the structured layer
/// ([`crate::dht`]) instead of flooding them (see [`Client::with_dht_above`]).
pub const DHT_ABOVE: usize = 64;

/// How long a lookup asked for with [`Client::find`] goes on while nothing is found (ms).
const FIND_MS: u64 = 60_000;

/// Relay and routing frames a neighbour may send at once: a new neighbour hands over the
/// records it knows ([`Client::on_channel_open`]), up to a full directory's.
pub const RELAY_BURST: u64 = 2 * crate::directory::DEFAULT_MAX_RECORDS as u64;

/// Relay and routing frames a second a neighbour may send after its burst; beyond, they are
/// dropped (a flood of fresh keys' records, or of signals, is slowed to this).
pub const RELAY_PER_SEC: u64 = 64;

/// Times a join refused for a used proof is tried again with a later one.
const MAX_JOIN_RETRIES: u8 = 3;

/// How long a peer that broke a bound is kept out ([`Client::ban`]).
pub const BAN_MS: u64 = 10 * 60 * 1000;

/// Close code with which the server tells a connection that a newer one resumed its peer.
pub const CLOSE_REPLACED: u16 = 4000;

/// The link to the signalling server, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Welcomed, and the connection is open.
    Connected,
    /// The connection closed; trying again with backoff. Peer connections carry on.
    Reconnecting,
}

impl ServerState {
    /// `"connected"` or `"reconnecting"`, as the JavaScript API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// Something the I/O shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
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
    /// Close the connection to `peer` and release what it holds.
    Disconnect(PeerId),
    /// Send this signal to `to` through the signalling server (a `signal` frame:
    /// `swarm_protocol::ClientMsg::signal`). If the connection cannot take it, call
    /// [`Client::relay_signal`] instead.
    ToServer {
        /// The remote peer.
        to: PeerId,
        /// The signal.
        data: SignalData,
    },
    /// Send this binary frame on the `swarm` channel of `peer`.
    ToPeer {
        /// The neighbour.
        peer: PeerId,
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
    /// The server welcomed us (the first time, or after a reconnection): use these ICE
    /// servers for new connections.
    Welcomed {
        /// Our id.
        me: PeerId,
        /// STUN/TURN servers for new connections.
        ice_servers: Vec<IceServer>,
        /// Whether this is the first `welcome` of the session.
        first: bool,
    },
    /// The join failed before any `welcome`: the server refused it (`code` is set) or the
    /// connection ended.
    JoinFailed {
        /// The server's refusal, if it sent one.
        code: Option<ErrorCode>,
        /// What went wrong.
        message: String,
    },
    /// The link to the server changed state.
    Server(ServerState),
    /// Open a new connection to the server (with [`Client::server_query`]) after this many
    /// milliseconds.
    ReconnectIn(u64),
    /// Tell the application that a peer's channel opened or that it left.
    Emit(Event),
    /// A peer beyond our neighbours provides `file` (heard by gossip); `new` if nobody had
    /// offered this content before.
    Provided {
        /// What is known of the content now.
        file: RemoteFile,
        /// Whether the content is new to the directory.
        new: bool,
    },
    /// Providers left: the room's file list changed.
    ProvidersGone,
    /// A signal from `peer` was refused ([`crate::signal_guard`]): unsigned where signatures
    /// are required, forged, replayed, or not sealed with this secret room's key.
    Rejected {
        /// The peer the signal claimed to come from.
        peer: PeerId,
        /// Why it was refused.
        reason: Rejection,
    },
}

/// One member's view of its room and of the server link.
#[derive(Debug)]
pub struct Client {
    room: RoomName,
    identity: Identity,
    mesh: Mesh,
    relay: SignalRelay,
    resume: Option<String>,
    /// The `ts` of our last join proof: each new one is later, since the server takes a
    /// proof only once (a reconnection within the same second signs the next second).
    last_proof_ts: Option<u64>,
    /// The server refused our proof as used (another process with our key joined within
    /// the same second): join again at once with a later one, a few times at most.
    retry_join: bool,
    join_retries: u8,
    server: ServerState,
    backoff: Backoff,
    welcomed: bool,
    left: bool,
    /// Providers heard of by gossip.
    directory: Directory,
    /// Provider records of origins the server has not listed: they go in the directory
    /// only once it does.
    unlisted: Unlisted,
    /// Our own provide records (signed frames), handed to each new neighbour.
    provided: BTreeMap<ContentId, Vec<u8>>,
    /// Contents we are downloading, with the time of the last attempt to reach a provider.
    wanted: BTreeMap<ContentId, u64>,
    /// Contents looked up with [`Client::find`], and the time the lookup ends.
    sought: BTreeMap<ContentId, u64>,
    /// When the lookups in `sought` are next retried.
    sought_retry_at: u64,
    /// Provider records kept for the room, and our own published there.
    dht: Dht,
    /// Room size above which we publish in `dht` rather than flood.
    dht_above: usize,
    /// The latest time we were given (ms on the caller's monotonic clock).
    now: u64,
    /// Per open neighbour: the relay and routing frames it may still send.
    relay_budget: BTreeMap<PeerId, TokenBucket>,
    /// Relay and routing frames dropped because their neighbour sent too many.
    relay_dropped: u64,
    /// Signs, seals, opens and checks every signal (server or mesh).
    guard: SignalGuard,
    /// The wall-clock milliseconds at start (`first_seq`), which seed the guard's nonces.
    started: u64,
    /// When each peer was last reported refused for each reason.
    rejections_told: BTreeMap<(PeerId, Rejection), u64>,
}

impl Client {
    /// A member of `room` with key `identity`; `max_peers` caps direct connections (a
    /// partial mesh), `first_seq` starts the relay's sequence numbers (the wall clock in
    /// milliseconds, so that a restarted peer is not taken for a replay).
    pub fn new(
        room: RoomName,
        identity: Identity,
        max_peers: Option<usize>,
        first_seq: u64,
    ) -> Self {
        let relay = SignalRelay::new(room.clone(), identity.clone(), first_seq);
        let dht = Dht::new(room.clone(), identity.id());
        let guard = SignalGuard::new(
            room.clone(),
            identity.clone(),
            SignalPolicy::default(),
            first_seq,
            0,
        );
        Self {
            guard,
            started: first_seq,
            rejections_told: BTreeMap::new(),
            room,
            identity,
            mesh: Mesh::with_max_peers(max_peers),
            relay,
            resume: None,
            last_proof_ts: None,
            retry_join: false,
            join_retries: 0,
            server: ServerState::Connected,
            backoff: Backoff::default(),
            welcomed: false,
            left: false,
            directory: Directory::default(),
            unlisted: Unlisted::default(),
            provided: BTreeMap::new(),
            wanted: BTreeMap::new(),
            sought: BTreeMap::new(),
            dht,
            dht_above: DHT_ABOVE,
            sought_retry_at: 0,
            now: 0,
            relay_budget: BTreeMap::new(),
            relay_dropped: 0,
        }
    }

    /// Publishes what we provide in the structured layer once the room has more than
    /// `members` members (counting us), instead of flooding it ([`DHT_ABOVE`] by default;
    /// 0: always).
    pub fn with_dht_above(mut self, members: usize) -> Self {
        self.dht_above = members;
        self
    }

    /// Signs and checks signals by `policy` (whether unsigned offers and answers are refused;
    /// a secret room's key); `random` is drawn by the caller and seeds this session's nonces.
    pub fn with_signal_policy(mut self, policy: SignalPolicy, random: u64) -> Self {
        self.guard = SignalGuard::new(
            self.room.clone(),
            self.identity.clone(),
            policy,
            self.started,
            random,
        );
        self
    }

    /// Whether the room is large enough for the structured layer.
    pub fn is_large_room(&self) -> bool {
        // Counted from the server's lists only: members heard of through the mesh may be
        // fresh keys of one peer.
        self.mesh.listed_count() + 1 > self.dht_above
    }

    /// The room.
    pub fn room(&self) -> &RoomName {
        &self.room
    }

    /// Our id, once welcomed.
    pub fn me(&self) -> Option<PeerId> {
        self.mesh.me()
    }

    /// The state of the server link.
    pub fn server_state(&self) -> ServerState {
        self.server
    }

    /// Whether [`Client::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Peers whose `swarm` channel is open.
    pub fn open_peers(&self) -> Vec<PeerId> {
        self.mesh.open_peers().collect()
    }

    /// Whether the channel to `peer` is open.
    pub fn is_open(&self, peer: PeerId) -> bool {
        self.mesh.is_open(peer)
    }

    /// The room's members we know of (connected or not), sorted.
    pub fn members(&self) -> Vec<PeerId> {
        self.mesh.members().collect()
    }

    /// The query to append to the server's room URL (without `?`): a new proof of our key
    /// for `now_secs` (Unix time; a second after the last proof's if that was not earlier,
    /// since a server takes each proof once) and, after the first `welcome`, our resume token.
    pub fn server_query(&mut self, now_secs: u64) -> String {
        let ts = match self.last_proof_ts {
            Some(last) if last >= now_secs => last.saturating_add(1),
            _ => now_secs,
        };
        self.last_proof_ts = Some(ts);
        let mut query = self.identity.join_proof(&self.room, ts).query();
        if let Some(token) = &self.resume {
            query.push_str("&resume=");
            query.push_str(&percent_encode(token));
        }
        query
    }

    /// A text frame arrived from the server.
    pub fn on_server_frame(&mut self, text: &str) -> Vec<Effect> {
        let msg = match ServerMsg::parse(text) {
            Ok(msg) => msg,
            Err(err) => {
                warn!(error = %err, "ignoring a malformed frame from the server");
                return Vec::new();
            }
        };
        match msg {
            ServerMsg::Welcome {
                id,
                peers,
                ice_servers,
                resume,
            } => {
                info!(room = %self.room, me = %id, peers = peers.len(), "welcomed");
                if id != self.identity.id() {
                    warn!(me = %id, "the server gave another id than our key's: signals relayed through the mesh will not verify");
                }
                self.resume = resume;
                self.backoff.reset();
                let first = !self.welcomed;
                self.welcomed = true;
                let mut effects = vec![Effect::Welcomed {
                    me: id,
                    ice_servers,
                    first,
                }];
                effects.extend(mesh_effects(self.mesh.on_welcome(id, &peers)));
                for peer in peers {
                    self.now_listed(peer, &mut effects);
                }
                self.set_server(ServerState::Connected, &mut effects);
                effects
            }
            ServerMsg::Joined { id } => {
                let mut effects = mesh_effects(self.mesh.on_joined(id));
                self.now_listed(id, &mut effects);
                effects
            }
            ServerMsg::Left { id } => {
                self.guard.left(id);
                let mut effects = mesh_effects(self.mesh.on_left(id));
                self.unlisted.take(id);
                self.forget_provider(id, &mut effects);
                self.dht.forget_provider(id);
                effects
            }
            ServerMsg::Signal { from, data } => match SignalData::parse(&data) {
                Ok(data) => self.on_signal(from, data),
                Err(err) => {
                    warn!(peer = %from, error = %err, "ignoring unreadable signal data");
                    Vec::new()
                }
            },
            ServerMsg::Error { code, message } => {
                if !self.welcomed {
                    if code == ErrorCode::InvalidKey
                        && message == crate::identity::PROOF_USED
                        && self.join_retries < MAX_JOIN_RETRIES
                    {
                        // The next proof signs a later second; join again once this closes.
                        self.join_retries += 1;
                        self.retry_join = true;
                        return Vec::new();
                    }
                    // Before `welcome`, an error is the server refusing the join; it closes next.
                    return vec![Effect::JoinFailed {
                        code: Some(code),
                        message,
                    }];
                }
                warn!(
                    code = code.as_str(),
                    message, "the signalling server refused a frame"
                );
                Vec::new()
            }
        }
    }

    /// The server connection ended with close `code` (1006 when it just dropped). Before the
    /// first `welcome` that fails the join; afterwards peer connections carry on without the
    /// server, signals go through the mesh, and the server is tried again with backoff.
    /// `random` is uniform in `[0, 1)`, for the backoff's jitter.
    pub fn on_server_closed(&mut self, code: u16, reason: &str, random: f64) -> Vec<Effect> {
        if !self.welcomed && std::mem::take(&mut self.retry_join) {
            return vec![Effect::ReconnectIn(0)];
        }
        if !self.welcomed {
            let message = if reason.is_empty() {
                format!("connection closed (code {code})")
            } else {
                format!("connection closed (code {code}: {reason})")
            };
            return vec![Effect::JoinFailed {
                code: None,
                message,
            }];
        }
        if self.left || code == CLOSE_REPLACED {
            // A newer connection of ours resumed this peer: that one is in use.
            debug!(code, "an old signalling connection ended");
            return Vec::new();
        }
        if self.server == ServerState::Connected {
            warn!(
                code,
                reason, "lost the signalling server; open peer connections keep working"
            );
        }
        let mut effects = Vec::new();
        self.set_server(ServerState::Reconnecting, &mut effects);
        effects.push(Effect::ReconnectIn(self.backoff.next_delay(random)));
        effects
    }

    /// Opening a new server connection failed outright: try again later.
    pub fn on_server_unreachable(&mut self, random: f64) -> Vec<Effect> {
        if self.left {
            return Vec::new();
        }
        vec![Effect::ReconnectIn(self.backoff.next_delay(random))]
    }

    fn set_server(&mut self, state: ServerState, effects: &mut Vec<Effect>) {
        if self.server != state {
            self.server = state;
            effects.push(Effect::Server(state));
        }
    }

    /// Sends a signal to `to`: through the server while it is there, otherwise through the
    /// mesh, signed with our key.
    pub fn send_signal(&mut self, to: PeerId, data: &SignalData) -> Vec<Effect> {
        let mut data = data.clone();
        if let SignalData::Sdp(description) = &mut data
            && description.kind == SdpType::Offer
        {
            // An offer to a provider of what we download says so, so that it answers even
            // when its connections are full.
            description.want = self
                .wanted
                .keys()
                .copied()
                .find(|id| self.directory.providers(*id).contains(&to));
        }
        let data = self.guard.outgoing(to, data);
        if self.server == ServerState::Connected {
            return vec![Effect::ToServer { to, data }];
        }
        self.relay_signal(to, &data)
    }

    /// Sends a signal to `to` through the mesh (the server connection failed to take it).
    /// `data` is as [`Client::send_signal`] handed it out (signed, and sealed in a secret
    /// room).
    pub fn relay_signal(&mut self, to: PeerId, data: &SignalData) -> Vec<Effect> {
        let Ok(json) = serde_json::to_vec(data) else {
            return Vec::new();
        };
        let neighbours = self.open_peers();
        match self.relay.send(to, &json, &neighbours) {
            Ok(frames) if frames.is_empty() => {
                debug!(peer = %to, "no server and no neighbour: signal dropped");
                Vec::new()
            }
            Ok(frames) => to_peers(frames),
            Err(err) => {
                warn!(peer = %to, error = %err, "cannot relay a signal");
                Vec::new()
            }
        }
    }

    /// A signal relayed through the mesh arrived from neighbour `from`.
    pub fn on_relay(&mut self, from: PeerId, relay: Relay<'_>) -> Vec<Effect> {
        if !self.within_relay_budget(from) {
            return Vec::new();
        }
        let neighbours = self.open_peers();
        match self.relay.on_frame(from, relay, &neighbours, self.now) {
            Incoming::Deliver { from: origin, data } => {
                match serde_json::from_slice::<SignalData>(&data) {
                    Ok(data) => self.on_signal(origin, data),
                    Err(err) => {
                        warn!(peer = %origin, error = %err, "ignoring unreadable relayed signal data");
                        Vec::new()
                    }
                }
            }
            Incoming::Forward(frames) => to_peers(frames),
            Incoming::Broadcast {
                from: origin,
                data,
                record,
                forward,
            } => {
                let mut effects = to_peers(forward);
                match Gossip::parse(&data) {
                    Ok(gossip) => self.on_gossip(origin, gossip, record, &mut effects),
                    Err(err) => {
                        debug!(peer = %origin, error = %err, "ignoring gossip we cannot read")
                    }
                }
                effects
            }
            Incoming::Drop(reason) => {
                debug!(%from, ?reason, "dropped a relayed signal");
                Vec::new()
            }
        }
    }

    fn on_gossip(
        &mut self,
        origin: PeerId,
        gossip: Gossip,
        record: Vec<u8>,
        effects: &mut Vec<Effect>,
    ) {
        match gossip {
            Gossip::Provide {
                id,
                size,
                name,
                mime,
            } => {
                // Its signature shows the origin holds its key: it is (or was) in the room.
                self.mesh.learn(origin);
                let record = Record {
                    provider: origin,
                    id,
                    size,
                    name,
                    mime,
                    frame: record,
                };
                if self.mesh.is_listed(origin) {
                    self.add_provider(record, effects);
                } else {
                    // Anyone can sign with a fresh key: it waits until the server lists it.
                    debug!(%id, provider = %origin, "a provider the server has not listed (yet)");
                    self.unlisted.push(record);
                }
            }
        }
    }

    /// Puts a provider record in the directory, and dials the provider if we want the
    /// content.
    fn add_provider(&mut self, record: Record, effects: &mut Vec<Effect>) {
        let Record {
            provider,
            id,
            size,
            name,
            mime,
            frame,
        } = record;
        let new = self
            .directory
            .insert(provider, id, size, &name, &mime, frame);
        if let Some(file) = self.directory.file(id) {
            debug!(%id, %provider, "heard of a provider");
            effects.push(Effect::Provided { file, new });
        }
        if self.wanted.contains_key(&id) {
            effects.extend(self.dial_providers(id));
        }
    }

    /// The server lists `peer`: the records it gossiped before go in the directory.
    fn now_listed(&mut self, peer: PeerId, effects: &mut Vec<Effect>) {
        if !self.mesh.is_listed(peer) {
            return;
        }
        for record in self.unlisted.take(peer) {
            self.add_provider(record, effects);
        }
    }

    /// Whether neighbour `from` may send one more relay or routing frame now
    /// ([`RELAY_BURST`], [`RELAY_PER_SEC`]); counts the ones it may not.
    fn within_relay_budget(&mut self, from: PeerId) -> bool {
        if !self.mesh.is_open(from) {
            return false;
        }
        let now = self.now;
        let budget = self
            .relay_budget
            .entry(from)
            .or_insert_with(|| TokenBucket::new(RELAY_BURST, RELAY_PER_SEC, now));
        if budget.take(now) {
            return true;
        }
        self.relay_dropped += 1;
        debug!(peer = %from, "dropping a relay frame: the neighbour sends too many");
        false
    }

    /// Relay and routing frames dropped so far because their neighbour sent too many.
    /// Frames dropped for their origin are counted apart ([`Client::relay_origin_dropped`]).
    pub fn relay_dropped(&self) -> u64 {
        self.relay_dropped
    }

    /// Relayed frames not forwarded so far because their origin (the signer, whichever
    /// neighbour they came through) had had its share sent on
    /// ([`crate::relay::ORIGIN_BURST`], [`crate::relay::ORIGIN_PER_SEC`]). A broadcast among
    /// them was still handled here.
    pub fn relay_origin_dropped(&self) -> u64 {
        self.relay.origin_limited()
    }

    /// Relayed frames refused so far because the replay memory was full of frames younger
    /// than [`crate::relay::SEEN_RETENTION_MS`] (a flood of fresh frames).
    pub fn relay_memory_full(&self) -> u64 {
        self.relay.memory_full()
    }

    fn forget_provider(&mut self, peer: PeerId, effects: &mut Vec<Effect>) {
        if self.directory.remove_provider(peer) {
            effects.push(Effect::ProvidersGone);
        }
    }

    /// Tells the room that we hold all of content `id` (we shared it, or finished
    /// downloading it): by gossip through the mesh, or in a large room by publishing it in
    /// the structured layer. Our neighbours also hear it from the sharing engine; the others
    /// learn of it from this. Once per content.
    pub fn provide(&mut self, id: ContentId, size: u64, name: &str, mime: &str) -> Vec<Effect> {
        self.wanted.remove(&id);
        if self.provided.contains_key(&id) {
            return Vec::new();
        }
        let gossip = Gossip::provide(id, size, name, mime);
        let neighbours = self.open_peers();
        let large = self.is_large_room();
        // In a large room the record goes to the structured layer, not to everyone.
        let flooded_to = if large { &[][..] } else { &neighbours[..] };
        match self.relay.broadcast(&gossip.to_json(), flooded_to) {
            Ok((frames, record)) => {
                self.provided.insert(id, record.clone());
                let mut effects = to_peers(frames);
                if large {
                    debug!(%id, "publishing in the structured layer");
                    effects.extend(to_peers(self.dht.publish(
                        id,
                        record,
                        &neighbours,
                        self.now,
                    )));
                }
                effects
            }
            Err(err) => {
                warn!(%id, error = %err, "cannot announce content to the room");
                Vec::new()
            }
        }
    }

    /// [`Client::provide`] for content the sharing engine holds whole (shared, or just
    /// downloaded); nothing if it does not.
    pub fn provide_held(&mut self, share: &Share<PeerId>, id: ContentId) -> Vec<Effect> {
        match share.manifest(id) {
            Some(m) if share.is_complete(id) => self.provide(id, m.size, &m.name, &m.mime),
            _ => Vec::new(),
        }
    }

    /// Stops announcing ourselves as a provider of `id` and wanting it (we no longer hold
    /// it). Records of it that peers keep expire on their own.
    pub fn unprovide(&mut self, id: ContentId) {
        self.provided.remove(&id);
        self.wanted.remove(&id);
    }

    /// Starts downloading `id` with the sharing engine: from the neighbours that offer it,
    /// or, if none does, from a provider heard of by gossip, which is dialled. Returns the
    /// engine's outputs and our effects; [`ShareError::UnknownContent`] if nobody in the
    /// room is known to have it.
    pub fn start_download(
        &mut self,
        share: &mut Share<PeerId>,
        id: ContentId,
        now: u64,
    ) -> Result<(Vec<Output<PeerId>>, Vec<Effect>), ShareError> {
        let outputs = match (share.download(id, now), self.directory.file(id)) {
            (Ok(outputs), _) => outputs,
            (Err(ShareError::UnknownContent(_)), Some(remote)) => {
                share.download_provided(id, remote.size, &remote.name, &remote.mime, now)
            }
            (Err(err), _) => return Err(err),
        };
        Ok((outputs, self.want(id)))
    }

    /// The peers beyond our neighbours known to provide `id`.
    pub fn providers(&self, id: ContentId) -> Vec<PeerId> {
        self.directory.providers(id)
    }

    /// What the directory knows of `id`: a content some peer in the room provides.
    pub fn remote_file(&self, id: ContentId) -> Option<RemoteFile> {
        self.directory.file(id)
    }

    /// The room's files: `local` (what the sharing engine knows from our neighbours and
    /// ourselves) merged with the providers heard of by gossip. A file's `sources` counts its
    /// connected sources and the providers we are not connected to.
    pub fn room_files(&self, mut local: Vec<FileInfo>) -> Vec<FileInfo> {
        for remote in self.directory.files() {
            let far = remote
                .providers
                .iter()
                .filter(|peer| !self.mesh.is_open(**peer))
                .count();
            match local.iter_mut().find(|file| file.id == remote.id) {
                Some(file) => file.sources += far,
                None => local.push(FileInfo {
                    id: remote.id,
                    name: remote.name,
                    size: remote.size,
                    mime: remote.mime,
                    sources: far,
                    complete: false,
                }),
            }
        }
        local.sort_by_key(|file| file.id);
        local
    }

    /// We are downloading `id`: if no neighbour provides it, connect to providers heard of by
    /// gossip (and try again now and then until one connects, or [`Client::provide`] or
    /// [`Client::unwant`] is called).
    pub fn want(&mut self, id: ContentId) -> Vec<Effect> {
        self.wanted.insert(id, self.now);
        let mut effects = self.dial_providers(id);
        effects.extend(self.lookup_if_unknown(id));
        effects
    }

    /// Looks for providers of `id` in the structured layer for a while (60 s), retrying
    /// every few seconds until one is known: a content nobody near us has announced, such
    /// as one opened from a link in a large room. What is found arrives as
    /// [`Effect::Provided`].
    pub fn find(&mut self, id: ContentId) -> Vec<Effect> {
        self.sought.insert(id, self.now + FIND_MS);
        self.lookup_if_unknown(id)
    }

    /// Asks the structured layer who provides `id`, unless a provider is known already.
    fn lookup_if_unknown(&mut self, id: ContentId) -> Vec<Effect> {
        if !self.directory.providers(id).is_empty() {
            return Vec::new();
        }
        let neighbours = self.open_peers();
        let routed = self.dht.find(id, &neighbours, self.now);
        self.on_routed(routed)
    }

    /// A frame of the structured layer arrived from neighbour `from`.
    pub fn on_route(&mut self, from: PeerId, route: Route<'_>) -> Vec<Effect> {
        if !self.within_relay_budget(from) {
            return Vec::new();
        }
        let neighbours = self.open_peers();
        let routed = self.dht.on_route(from, route, &neighbours, self.now);
        self.on_routed(routed)
    }

    /// Sends what the structured layer sends, and learns the providers it found.
    fn on_routed(&mut self, routed: Routed) -> Vec<Effect> {
        let mut effects = to_peers(routed.frames);
        if let Some(id) = routed.not_found {
            debug!(%id, "the structured layer knows no provider yet");
        }
        for record in routed.found {
            let Some((origin, gossip)) = dht::read_record(&self.room, &record) else {
                debug!("ignoring a found record that does not verify");
                continue;
            };
            if origin != self.identity.id() {
                self.on_gossip(origin, gossip, record, &mut effects);
            }
        }
        effects
    }

    /// We no longer download `id` (cancelled or failed).
    pub fn unwant(&mut self, id: ContentId) {
        self.wanted.remove(&id);
    }

    /// Dials up to [`PROVIDERS_DIALLED`] providers of `id`, unless one is connected or being
    /// connected to already.
    fn dial_providers(&mut self, id: ContentId) -> Vec<Effect> {
        let providers = self.directory.providers(id);
        if providers.iter().any(|peer| self.mesh.is_open(*peer)) {
            return Vec::new();
        }
        let mut effects = Vec::new();
        // A connection to a provider that has been opening for too long (an offer of one of
        // us went unanswered) is started over rather than left to time out.
        let connecting: Vec<PeerId> = providers
            .iter()
            .copied()
            .filter(|peer| self.mesh.knows(*peer))
            .collect();
        for peer in &connecting {
            effects.extend(mesh_effects(
                self.mesh.redial_if_stale(*peer, PROVIDER_RETRY_MS * 2),
            ));
        }
        if !connecting.is_empty() {
            return effects;
        }
        // Another pair each attempt, in case the last ones did not answer.
        let skip = (self.now / PROVIDER_RETRY_MS) as usize * PROVIDERS_DIALLED;
        let count = providers.len();
        let chosen = providers
            .into_iter()
            .cycle()
            .skip(skip % count.max(1))
            .take(PROVIDERS_DIALLED.min(count));
        for peer in chosen {
            debug!(%id, provider = %peer, "connecting to a provider");
            if let Some(dialled) = self.mesh.dial_provider(peer) {
                effects.extend(mesh_effects(dialled));
            }
        }
        if let Some(last) = self.wanted.get_mut(&id) {
            *last = self.now;
        }
        effects
    }

    /// A signal from `from`, through the server or the mesh.
    /// An offer we have no room to answer gets a `busy` reply; a `busy` reply to ours makes
    /// the mesh dial someone else.
    fn on_signal(&mut self, from: PeerId, data: SignalData) -> Vec<Effect> {
        let open = self.mesh.is_open(from);
        let data = match self.guard.incoming(from, data, open) {
            Ok(Some(data)) => data,
            Ok(None) => return Vec::new(),
            Err(reason) => return self.reject(from, reason),
        };
        let (offer, for_ours) = match &data {
            SignalData::Sdp(description) => (
                description.kind == SdpType::Offer,
                description
                    .want
                    .is_some_and(|id| self.provided.contains_key(&id)),
            ),
            SignalData::Candidate(_) | SignalData::Sealed(_) => (false, false),
            SignalData::Busy => {
                debug!(peer = %from, "our offer was refused: the peer is full");
                return mesh_effects(self.mesh.on_busy(from));
            }
        };
        let known = self.mesh.knows(from);
        let mut effects = mesh_effects(if for_ours {
            self.mesh.on_offer_for_content(from)
        } else {
            self.mesh.on_signal_from(from)
        });
        if offer && !known && !self.mesh.knows(from) {
            debug!(peer = %from, "no room for another connection: busy");
            return self.send_signal(from, &SignalData::Busy);
        }
        effects.push(Effect::Signal { from, data });
        effects
    }

    /// Refuses a signal from `from` for `reason`: nothing of it reaches a connection and the
    /// application hears why. A forged or unsigned description also closes a connection to
    /// `from` still being set up ([`Rejection::closes_setup`]); an open one carries on, and a
    /// replay or what does not open closes nothing (whoever relays could inject those).
    fn reject(&mut self, from: PeerId, reason: Rejection) -> Vec<Effect> {
        let mut effects = Vec::new();
        let now = self.now;
        let last = self.rejections_told.get(&(from, reason)).copied();
        if last.is_none_or(|at| now >= at + REJECTION_REPORT_MS) {
            warn!(peer = %from, reason = reason.code(), "refused a signal: {reason}");
            if self.rejections_told.len() >= MAX_REJECTIONS_TOLD {
                self.rejections_told
                    .retain(|_, at| now < *at + REJECTION_REPORT_MS);
                if self.rejections_told.len() >= MAX_REJECTIONS_TOLD {
                    self.rejections_told.clear();
                }
            }
            self.rejections_told.insert((from, reason), now);
            effects.push(Effect::Rejected { peer: from, reason });
        } else {
            debug!(peer = %from, reason = reason.code(), "refused a signal again");
        }
        if reason.closes_setup() && self.mesh.knows(from) && !self.mesh.is_open(from) {
            self.guard.forget(from);
            effects.extend(mesh_effects(self.mesh.on_channel_closed(from)));
        }
        effects
    }

    /// The `swarm` channel to `peer` opened: the new neighbour also gets the room's provide
    /// records (ours and those heard of; in a large room, ours and the structured layer's
    /// it is closer to), so it knows the room's files at once.
    pub fn on_channel_open(&mut self, peer: PeerId) -> Vec<Effect> {
        let mut effects = mesh_effects(self.mesh.on_channel_open(peer));
        if self.mesh.is_open(peer) {
            self.guard.opened(peer);
            // In a large room only ours: the others are found in the structured layer, and
            // ours are published again through the newcomer if it is closer to their keys.
            let heard = if self.is_large_room() {
                Vec::new()
            } else {
                self.directory.records(peer)
            };
            let records = self.provided.values().cloned().chain(heard);
            effects.extend(records.map(|frame| Effect::ToPeer { peer, frame }));
            effects.extend(to_peers(self.dht.on_neighbour(peer)));
        }
        effects
    }

    /// The connection to `peer` closed or failed (or could not be created).
    pub fn on_channel_closed(&mut self, peer: PeerId) -> Vec<Effect> {
        self.relay_budget.remove(&peer);
        self.guard.forget(peer);
        let mut effects = mesh_effects(self.mesh.on_channel_closed(peer));
        self.forget_provider(peer, &mut effects);
        effects
    }

    /// Drops `peer`, which broke a bound, and keeps it out for [`BAN_MS`]: its connection
    /// closes, it is no longer dialled, its offers are not answered, and what it provided is
    /// forgotten.
    pub fn ban(&mut self, peer: PeerId) -> Vec<Effect> {
        let until = self.now.saturating_add(BAN_MS);
        self.relay_budget.remove(&peer);
        let mut effects = mesh_effects(self.mesh.ban(peer, until));
        self.forget_provider(peer, &mut effects);
        effects
    }

    /// Moves the clock to `now` (ms on the caller's monotonic clock; it never goes back).
    /// The methods without a time argument act at the latest time given, so the caller
    /// advances the clock before it hands in what happened ([`crate::node::Node`] does).
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.mesh.advance(now);
    }

    /// Periodic upkeep at `now` (ms) of the partial mesh, and of the connections to
    /// providers of what we download.
    pub fn on_tick(&mut self, now: u64) -> Vec<Effect> {
        self.advance(now);
        let now = self.now;
        let mut effects = mesh_effects(self.mesh.on_tick(now));
        let due: Vec<ContentId> = self
            .wanted
            .iter()
            .filter(|(_, last)| now >= *last + PROVIDER_RETRY_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            effects.extend(self.dial_providers(id));
            effects.extend(self.lookup_if_unknown(id));
        }
        // Lookups asked for: again every few seconds until found, or the time is up.
        self.sought.retain(|_, until| *until > now);
        let retry: Vec<ContentId> = if now >= self.sought_retry_at {
            self.sought_retry_at = now + PROVIDER_RETRY_MS;
            self.sought.keys().copied().collect()
        } else {
            Vec::new()
        };
        for id in retry {
            if self.directory.providers(id).is_empty() {
                effects.extend(self.lookup_if_unknown(id));
            } else {
                self.sought.remove(&id);
            }
        }
        let neighbours = self.open_peers();
        effects.extend(to_peers(self.dht.tick(&neighbours, now)));
        effects
    }

    /// Opens a direct connection to member `peer`; `None` if it is not a member we know of.
    pub fn dial(&mut self, peer: PeerId) -> Option<Vec<Effect>> {
        self.mesh.dial(peer).map(mesh_effects)
    }

    /// Leaves the room: every connection is to be closed. Idempotent.
    pub fn leave(&mut self) -> Vec<Effect> {
        if std::mem::replace(&mut self.left, true) {
            return Vec::new();
        }
        mesh_effects(self.mesh.leave())
    }
}

fn mesh_effects(actions: Vec<Action>) -> Vec<Effect> {
    actions
        .into_iter()
        .map(|action| match action {
            Action::Connect {
                peer,
                offerer,
                polite,
            } => Effect::Connect {
                peer,
                offerer,
                polite,
            },
            Action::Disconnect(peer) => Effect::Disconnect(peer),
            Action::Emit(event) => Effect::Emit(event),
        })
        .collect()
}

fn to_peers(frames: Vec<(PeerId, Vec<u8>)>) -> Vec<Effect> {
    frames
        .into_iter()
        .map(|(peer, frame)| Effect::ToPeer { peer, frame })
        .collect()
}

/// Percent-encodes everything but the URL-safe characters (`A-Z a-z 0-9 - _ . ~`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use swarm_protocol::SessionDescription;

    use super::*;

    fn room() -> RoomName {
        RoomName::new("lobby").expect("valid room")
    }

    fn client(seed: u8) -> Client {
        Client::new(room(), Identity::from_seed([seed; 32]), None, 1)
    }

    fn welcome(client: &Client, peers: &[PeerId]) -> String {
        ServerMsg::Welcome {
            id: client.identity.id(),
            peers: peers.to_vec(),
            ice_servers: Vec::new(),
            resume: Some(format!("{}.tag+/=", client.identity.id())),
        }
        .to_json()
    }

    fn peer(byte: u8) -> PeerId {
        Identity::from_seed([byte; 32]).id()
    }

    #[test]
    fn an_unsigned_offer_is_refused_before_any_connection_and_reported_once_per_reason() {
        let policy = SignalPolicy {
            require_signed: true,
            secret: None,
        };
        let mut a = client(1).with_signal_policy(policy, 7);
        a.on_server_frame(&welcome(&a, &[]));
        a.on_server_frame(&ServerMsg::Joined { id: peer(2) }.to_json());
        let signal =
            |data: &str| format!(r#"{{"type":"signal","from":"{}","data":{data}}}"#, peer(2));
        let offer =
            signal(r#"{"sdp":{"type":"offer","sdp":"v=0\r\na=fingerprint:sha-256 AA\r\n"}}"#);
        let candidate = signal(
            r#"{"candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.2 9 typ host","sdpMLineIndex":0}}"#,
        );
        let rejected = Effect::Rejected {
            peer: peer(2),
            reason: Rejection::Unsigned,
        };
        // Told, and the connection prepared for its offer closed.
        assert_eq!(
            a.on_server_frame(&offer),
            vec![rejected.clone(), Effect::Disconnect(peer(2))]
        );
        // Its candidates make no connection, and the same refusal is not told again soon.
        assert!(a.on_server_frame(&candidate).is_empty());
        assert!(a.on_server_frame(&offer).is_empty());
        a.advance(REJECTION_REPORT_MS);
        assert_eq!(a.on_server_frame(&offer)[0], rejected);
        assert!(a.open_peers().is_empty());
    }

    #[test]
    fn a_stale_answer_or_a_signal_that_does_not_open_cuts_no_setup() {
        let mut a = client(1).with_signal_policy(SignalPolicy::default(), 7);
        a.on_server_frame(&welcome(&a, &[peer(2)]));
        // We offer to 2; an answer signed for another offer arrives (replayed by the server).
        let offer = SignalData::Sdp(SessionDescription {
            kind: SdpType::Offer,
            sdp: "v=0\r\na=fingerprint:sha-256 AA\r\n".into(),
            want: None,
            auth: None,
        });
        assert!(matches!(
            a.send_signal(peer(2), &offer)[..],
            [Effect::ToServer { .. }]
        ));
        let mut b = client(2);
        let answer = b.guard.outgoing(
            peer(1),
            SignalData::Sdp(SessionDescription {
                kind: SdpType::Answer,
                sdp: "v=0\r\na=fingerprint:sha-256 BB\r\n".into(),
                want: None,
                auth: None,
            }),
        );
        let frame = format!(
            r#"{{"type":"signal","from":"{}","data":{}}}"#,
            peer(2),
            serde_json::to_string(&answer).expect("json")
        );
        assert_eq!(
            a.on_server_frame(&frame),
            vec![Effect::Rejected {
                peer: peer(2),
                reason: Rejection::StaleAnswer,
            }],
            "told, and the connection being set up is left alone"
        );
        let sealed = format!(
            r#"{{"type":"signal","from":"{}","data":{{"sealed":"AAAA"}}}}"#,
            peer(2)
        );
        assert_eq!(
            a.on_server_frame(&sealed),
            vec![Effect::Rejected {
                peer: peer(2),
                reason: Rejection::CannotOpen,
            }]
        );
    }

    #[test]
    fn a_proof_refused_as_used_is_signed_again_for_a_later_second() {
        // Another process with the same key joined within the same second.
        let mut a = client(1);
        assert!(a.server_query(1_700_000_000).contains("&ts=1700000000&"));
        let refused = ServerMsg::error(ErrorCode::InvalidKey, crate::identity::PROOF_USED);
        for _ in 0..MAX_JOIN_RETRIES {
            assert!(a.on_server_frame(&refused.to_json()).is_empty());
            assert_eq!(
                a.on_server_closed(1008, "invalid-key", 0.5),
                vec![Effect::ReconnectIn(0)]
            );
        }
        assert!(a.server_query(1_700_000_000).contains("&ts=1700000001&"));
        // Not for ever, and any other refusal fails the join at once.
        assert!(matches!(
            a.on_server_frame(&refused.to_json())[..],
            [Effect::JoinFailed { .. }]
        ));
        let mut b = client(2);
        let other = ServerMsg::error(ErrorCode::InvalidKey, "the proof does not verify");
        assert!(matches!(
            b.on_server_frame(&other.to_json())[..],
            [Effect::JoinFailed { .. }]
        ));
    }

    #[test]
    fn welcome_connects_to_everyone_and_keeps_the_resume_token() {
        let mut a = client(1);
        let others = [peer(2), peer(3)];
        let effects = a.on_server_frame(&welcome(&a, &others));
        assert!(matches!(effects[0], Effect::Welcomed { first: true, .. }));
        let connects = effects
            .iter()
            .filter(|e| matches!(e, Effect::Connect { .. }))
            .count();
        assert_eq!(connects, 2);
        let query = a.server_query(1_700_000_000);
        assert!(query.contains("&ts=1700000000&"), "{query}");
        assert!(query.contains("&resume="), "{query}");
        assert!(query.ends_with(".tag%2B%2F%3D"), "{query}");
        // A reconnection within the same second (or after the clock stepped back) signs a
        // later second: the server takes each proof once.
        assert!(a.server_query(1_700_000_000).contains("&ts=1700000001&"));
        assert!(a.server_query(1_699_999_990).contains("&ts=1700000002&"));
        assert!(a.server_query(1_700_000_100).contains("&ts=1700000100&"));
        // A second welcome (after a reconnection) is not the first.
        let again = a.on_server_frame(&welcome(&a, &others));
        assert!(matches!(again[0], Effect::Welcomed { first: false, .. }));
    }

    #[test]
    fn an_error_before_welcome_fails_the_join() {
        let mut a = client(1);
        let refusal = ServerMsg::error(ErrorCode::RoomFull, "full").to_json();
        assert_eq!(
            a.on_server_frame(&refusal),
            vec![Effect::JoinFailed {
                code: Some(ErrorCode::RoomFull),
                message: "full".into()
            }]
        );
        let closed = a.on_server_closed(1006, "", 0.5);
        assert!(matches!(
            closed[..],
            [Effect::JoinFailed { code: None, .. }]
        ));
    }

    #[test]
    fn losing_the_server_reconnects_with_backoff_and_relays_signals() {
        let mut a = client(1);
        let b = peer(2);
        a.on_server_frame(&welcome(&a, &[b]));
        a.on_channel_open(b);
        let data = SignalData::Candidate(None);
        assert!(matches!(
            a.send_signal(b, &data)[..],
            [Effect::ToServer { .. }]
        ));

        let effects = a.on_server_closed(1006, "", 0.0);
        assert_eq!(effects[0], Effect::Server(ServerState::Reconnecting));
        assert!(matches!(effects[1], Effect::ReconnectIn(ms) if ms > 0));
        // Without the server, a signal goes to the neighbour as a relay frame.
        let c = peer(3);
        assert!(
            matches!(&a.send_signal(c, &data)[..], [Effect::ToPeer { peer, .. }] if *peer == b)
        );
        // The replaced-connection close is not a loss.
        assert!(a.on_server_closed(CLOSE_REPLACED, "", 0.0).is_empty());
        // The next welcome reports the server back.
        let back = a.on_server_frame(&welcome(&a, &[b]));
        assert!(back.contains(&Effect::Server(ServerState::Connected)));
    }

    #[test]
    fn a_relayed_signal_is_delivered_to_its_target() {
        let mut a = client(1);
        let mut b = client(2);
        let (ida, idb) = (a.identity.id(), b.identity.id());
        a.on_server_frame(&welcome(&a, &[idb]));
        b.on_server_frame(&welcome(&b, &[ida]));
        a.on_channel_open(idb);
        b.on_channel_open(ida);
        a.on_server_closed(1006, "", 0.0);
        let data = SignalData::Candidate(None);
        let Effect::ToPeer { frame, .. } = a.send_signal(idb, &data).remove(0) else {
            panic!("expected a relay frame");
        };
        let swarm_protocol::wire::BinaryFrame::Relay(relay) =
            swarm_protocol::wire::decode_binary(&frame).expect("decodes")
        else {
            panic!("expected a relay frame");
        };
        let effects = b.on_relay(ida, relay);
        assert!(effects.contains(&Effect::Signal { from: ida, data }));
    }

    /// Carries every `ToPeer` frame of `effects` (sent by `from`) to the clients in `net`,
    /// following forwarded copies, and returns the other effects each produced.
    fn deliver(
        net: &mut [Client],
        from: PeerId,
        effects: Vec<Effect>,
    ) -> BTreeMap<PeerId, Vec<Effect>> {
        let mut queue: std::collections::VecDeque<(PeerId, Effect)> =
            effects.into_iter().map(|e| (from, e)).collect();
        let mut seen: BTreeMap<PeerId, Vec<Effect>> = BTreeMap::new();
        while let Some((sender, effect)) = queue.pop_front() {
            let Effect::ToPeer { peer, frame } = effect else {
                seen.entry(sender).or_default().push(effect);
                continue;
            };
            let Some(target) = net.iter_mut().find(|c| c.identity.id() == peer) else {
                continue;
            };
            if !target.is_open(sender) {
                continue;
            }
            let next = match swarm_protocol::wire::decode_binary(&frame) {
                Ok(swarm_protocol::wire::BinaryFrame::Relay(relay)) => {
                    target.on_relay(sender, relay)
                }
                Ok(swarm_protocol::wire::BinaryFrame::Route(route)) => {
                    target.on_route(sender, route)
                }
                other => panic!("expected a relay or route frame, not {other:?}"),
            };
            for next in next {
                queue.push_back((peer, next));
            }
        }
        seen
    }

    /// Clients 1 - 2 - 3 - 4 in a line (welcomed, channels open between neighbours).
    fn line() -> Vec<Client> {
        line_with(DHT_ABOVE)
    }

    /// [`line`], publishing in the structured layer above `dht_above` members.
    fn line_with(dht_above: usize) -> Vec<Client> {
        let mut net: Vec<Client> = (1..=4)
            .map(|n| {
                Client::new(room(), Identity::from_seed([n; 32]), Some(2), 1)
                    .with_dht_above(dht_above)
            })
            .collect();
        let ids: Vec<PeerId> = net.iter().map(|c| c.identity.id()).collect();
        for (i, client) in net.iter_mut().enumerate() {
            // As the server tells them: each is welcomed with those before it, and hears
            // the others join.
            let welcome = ServerMsg::Welcome {
                id: ids[i],
                peers: ids[..i].to_vec(),
                ice_servers: Vec::new(),
                resume: None,
            };
            client.on_server_frame(&welcome.to_json());
            for later in &ids[i + 1..] {
                client.on_server_frame(&ServerMsg::Joined { id: *later }.to_json());
            }
            for j in [i.wrapping_sub(1), i + 1] {
                if let Some(other) = ids.get(j) {
                    client.mesh.on_signal_from(*other);
                    client.on_channel_open(*other);
                }
            }
        }
        net
    }

    #[test]
    fn a_provide_spreads_along_the_line_and_a_wanting_peer_dials_the_provider() {
        let mut net = line();
        let ids: Vec<PeerId> = net.iter().map(|c| c.identity.id()).collect();
        let content = swarm_protocol::ContentId::from_bytes([9; 32]);
        let effects = net[0].provide(content, 1000, "film.webm", "video/webm");
        assert_eq!(effects.len(), 1, "one neighbour");
        assert!(
            net[0]
                .provide(content, 1000, "film.webm", "video/webm")
                .is_empty(),
            "once"
        );
        let heard = deliver(&mut net, ids[0], effects);
        for (i, client) in net.iter().enumerate().skip(1) {
            assert_eq!(client.providers(content), vec![ids[0]], "client {i}");
            assert!(heard[&ids[i]].iter().any(
                |e| matches!(e, Effect::Provided { new: true, file } if file.name == "film.webm")
            ));
        }
        // The far end lists it, with the provider as its one source.
        let files = net[3].room_files(Vec::new());
        assert_eq!((files.len(), files[0].sources, files[0].size), (1, 1, 1000));
        // Wanting it dials the provider, once, until it is connected.
        let dial = net[3].want(content);
        assert!(
            matches!(dial[..], [Effect::Connect { peer, offerer: true, .. }] if peer == ids[0]),
            "{dial:?}"
        );
        assert!(net[3].want(content).is_empty(), "already connecting");
        // A newcomer next to 4 learns of it from the records 4 hands over.
        let mut newcomer = Client::new(room(), Identity::from_seed([7; 32]), Some(2), 1);
        let idn = newcomer.identity.id();
        newcomer.on_server_frame(
            &ServerMsg::Welcome {
                id: idn,
                peers: ids.clone(),
                ice_servers: Vec::new(),
                resume: None,
            }
            .to_json(),
        );
        newcomer.on_channel_open(ids[3]);
        net[3].mesh.on_signal_from(idn);
        let sync = net[3].on_channel_open(idn);
        net.push(newcomer);
        let heard = deliver(&mut net, ids[3], sync);
        assert_eq!(net[4].providers(content), vec![ids[0]]);
        assert!(heard.contains_key(&idn));
        // The provider leaves: everyone forgets it.
        let left = ServerMsg::Left { id: ids[0] }.to_json();
        let effects = net[2].on_server_frame(&left);
        assert!(effects.contains(&Effect::ProvidersGone));
        assert!(net[2].providers(content).is_empty());
        assert!(net[2].room_files(Vec::new()).is_empty());
    }

    #[test]
    fn in_a_large_room_a_provide_is_published_not_flooded_and_found_by_lookup() {
        let mut net = line_with(0);
        let ids: Vec<PeerId> = net.iter().map(|c| c.identity.id()).collect();
        let content = swarm_protocol::ContentId::from_bytes([9; 32]);
        let effects = net[0].provide(content, 1000, "film.webm", "video/webm");
        deliver(&mut net, ids[0], effects);
        // Nobody was told: the record sits with the peers closest to the content's key.
        for client in &net[1..] {
            assert!(client.providers(content).is_empty());
        }
        assert!(net.iter().map(|c| c.dht.kept()).sum::<usize>() >= 1);
        // The far end looks it up, learns the provider, and (wanting it) dials it.
        let asked = net[3].find(content);
        let heard = deliver(&mut net, ids[3], asked);
        assert_eq!(net[3].providers(content), vec![ids[0]]);
        assert!(heard[&ids[3]].iter().any(
            |e| matches!(e, Effect::Provided { new: true, file } if file.name == "film.webm")
        ));
        let dial = net[3].want(content);
        assert!(
            matches!(dial[..], [Effect::Connect { peer, offerer: true, .. }] if peer == ids[0]),
            "{dial:?}"
        );
        // Wanting a content nobody published sends a lookup (and keeps retrying).
        let other = swarm_protocol::ContentId::from_bytes([8; 32]);
        let lookup = net[2].want(other);
        assert!(!lookup.is_empty());
        let step = crate::node::UPKEEP_MS;
        let retried = (1..=PROVIDER_RETRY_MS / step)
            .flat_map(|n| net[2].on_tick(n * step))
            .any(|e| matches!(e, Effect::ToPeer { .. }));
        assert!(retried);
    }

    fn offer(want: Option<ContentId>) -> SignalData {
        SignalData::Sdp(SessionDescription {
            kind: SdpType::Offer,
            sdp: "v=0\r\n".into(),
            want,
            auth: None,
        })
    }

    #[test]
    fn an_offer_to_a_provider_says_what_it_is_for_and_a_full_provider_still_answers_it() {
        let mut net = line_with(0);
        let ids: Vec<PeerId> = net.iter().map(|c| c.identity.id()).collect();
        let content = ContentId::from_bytes([9; 32]);
        let effects = net[0].provide(content, 1000, "film.webm", "video/webm");
        deliver(&mut net, ids[0], effects);
        let asked = net[3].find(content);
        deliver(&mut net, ids[3], asked);
        assert!(!net[3].want(content).is_empty(), "dials the provider");
        // Its offer to the provider names the content; its offers to others do not.
        // (Without its signature, which `signal_guard` tests.)
        let sent = |effects: Vec<Effect>| match &effects[..] {
            [
                Effect::ToServer {
                    data: SignalData::Sdp(description),
                    ..
                },
            ] => {
                assert!(description.auth.is_some(), "offers are signed");
                SignalData::Sdp(SessionDescription {
                    auth: None,
                    ..description.clone()
                })
            }
            other => panic!("expected one offer, not {other:?}"),
        };
        assert_eq!(
            sent(net[3].send_signal(ids[0], &offer(None))),
            offer(Some(content))
        );
        assert_eq!(sent(net[3].send_signal(ids[2], &offer(None))), offer(None));

        let provider = &mut net[0];
        let mut answers = |from: u8, data: SignalData| {
            let frame = format!(
                r#"{{"type":"signal","from":"{}","data":{}}}"#,
                peer(from),
                serde_json::to_string(&data).expect("json")
            );
            match &provider.on_server_frame(&frame)[..] {
                [
                    Effect::Connect { offerer: false, .. },
                    Effect::Signal { .. },
                ] => true,
                [Effect::ToServer { to, data }] if *to == peer(from) => {
                    assert_eq!(*data, SignalData::Busy, "a refusal");
                    false
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        // With cap 2, it answers other offers up to 4 connections (it has one).
        assert!((20..23).all(|n| answers(n, offer(None))));
        assert!(!answers(23, offer(None)));
        // An offer for a content it does not provide is not answered either.
        assert!(!answers(24, offer(Some(ContentId::from_bytes([8; 32])))));
        // Offers for its content are answered up to three times the cap.
        assert!(answers(25, offer(Some(content))));
        assert!(answers(26, offer(Some(content))));
        assert!(!answers(27, offer(Some(content))));
        assert_eq!(provider.mesh.connection_count(), 2 * 3);
    }

    #[test]
    fn a_busy_reply_is_not_passed_on_and_makes_the_newcomer_dial_another_member() {
        let mut a = Client::new(room(), Identity::from_seed([1; 32]), Some(1), 1);
        let others = [peer(2), peer(3)];
        let effects = a.on_server_frame(&welcome(&a, &others));
        let dialled: Vec<PeerId> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Connect { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        assert_eq!(dialled.len(), 1);
        let busy = format!(
            r#"{{"type":"signal","from":"{}","data":"busy"}}"#,
            dialled[0]
        );
        let effects = a.on_server_frame(&busy);
        assert!(
            matches!(
                &effects[..],
                [Effect::Disconnect(gone), Effect::Connect { peer, offerer: true, .. }]
                    if *gone == dialled[0] && *peer != dialled[0]
            ),
            "{effects:?}"
        );
        // Full (an answering connection to 4 makes two, twice the cap), it refuses only
        // offers: a candidate is passed on as it was before (the shell drops it).
        let from_4 = format!(
            r#"{{"type":"signal","from":"{}","data":{{"candidate":null}}}}"#,
            peer(4)
        );
        a.on_server_frame(&from_4);
        let candidate =
            a.on_server_frame(&from_4.replace(&peer(4).to_string(), &peer(5).to_string()));
        assert!(
            matches!(&candidate[..], [Effect::Signal { .. }]),
            "{candidate:?}"
        );
    }

    #[test]
    fn leave_closes_everything_once() {
        let mut a = client(1);
        a.on_server_frame(&welcome(&a, &[peer(2)]));
        assert_eq!(a.leave(), vec![Effect::Disconnect(peer(2))]);
        assert!(a.leave().is_empty());
        assert!(a.has_left());
        assert!(a.on_server_closed(1006, "", 0.0).is_empty());
    }

    /// `client`, welcomed into a room with `others`, has an open channel to `neighbour`.
    fn with_neighbour(client: &mut Client, others: &[PeerId], neighbour: PeerId) {
        client.on_server_frame(&welcome(client, others));
        client.on_channel_open(neighbour);
        assert!(client.mesh.is_open(neighbour));
    }

    /// A signed `provide` record of a fresh key, as neighbour `via` would forward it.
    /// The seed of the fresh key numbered `n` ([`fresh_record`]).
    fn fresh_seed(n: u32) -> [u8; 32] {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        seed
    }

    /// A `provide` record signed by the fresh key numbered `n`, as neighbour `via` passes it.
    fn fresh_record(n: u32, via: PeerId) -> Vec<u8> {
        let mut origin = SignalRelay::new(room(), Identity::from_seed(fresh_seed(n)), 1);
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let gossip = Gossip::provide(ContentId::from_bytes(id), 1, "fake", "");
        let (frames, _) = origin
            .broadcast(&gossip.to_json(), &[via])
            .expect("a small record");
        frames.into_iter().next().expect("one frame").1
    }

    fn relay_of(frame: &[u8]) -> Relay<'_> {
        match swarm_protocol::wire::decode_binary(frame) {
            Ok(swarm_protocol::wire::BinaryFrame::Relay(relay)) => relay,
            other => panic!("not a relay frame: {other:?}"),
        }
    }

    #[test]
    fn records_of_fresh_keys_neither_size_the_room_nor_push_out_real_files() {
        // 2,000 records of fresh keys added 2,000 members (switching the room to the
        // structured layer) and evicted the real records.
        let mut a = client(1).with_dht_above(8);
        let (b, c) = (peer(2), peer(3));
        with_neighbour(&mut a, &[b, c], b);
        a.advance(1);
        let real = ContentId::from_bytes([5; 32]);
        let genuine = {
            let mut c_relay = SignalRelay::new(room(), Identity::from_seed([3; 32]), 1);
            let gossip = Gossip::provide(real, 10, "real.bin", "");
            c_relay.broadcast(&gossip.to_json(), &[b]).expect("ok").0[0]
                .1
                .clone()
        };
        a.on_relay(b, relay_of(&genuine));
        assert!(a.directory.file(real).is_some());
        for n in 0..2_000 {
            let frame = fresh_record(n, b);
            a.on_relay(b, relay_of(&frame));
        }
        assert!(
            !a.is_large_room(),
            "{} members listed",
            a.mesh.listed_count()
        );
        assert!(a.mesh.members().count() <= 2 + crate::mesh::MAX_HEARD);
        assert!(
            a.directory.file(real).is_some(),
            "the real file is still listed"
        );
        assert_eq!(
            a.directory.len(),
            1,
            "records of keys the server never listed stay out of the directory"
        );
        assert_eq!(a.unlisted.len(), crate::directory::MAX_UNLISTED);
        // The server lists one of those keys after all: its record moves in; a `left`
        // drops what waits for another.
        let listed = Identity::from_seed(fresh_seed(1_999)).id();
        let effects = a.on_server_frame(&ServerMsg::Joined { id: listed }.to_json());
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Provided { new: true, .. })),
            "{effects:?}"
        );
        assert_eq!(a.directory.len(), 2);
        let gone = Identity::from_seed(fresh_seed(1_998)).id();
        a.on_server_frame(&ServerMsg::Left { id: gone }.to_json());
        assert_eq!(a.unlisted.len(), crate::directory::MAX_UNLISTED - 2);
    }

    #[test]
    fn a_neighbour_flooding_relay_frames_is_slowed_to_its_rate() {
        let mut a = client(1);
        let b = peer(2);
        with_neighbour(&mut a, &[b], b);
        a.advance(1_000);
        let total = RELAY_BURST as u32 + 500;
        for n in 0..total {
            let frame = fresh_record(n, b);
            a.on_relay(b, relay_of(&frame));
        }
        assert_eq!(
            a.relay_dropped(),
            500,
            "the burst, then nothing at the same instant"
        );
        // A second later, another second's worth goes through.
        a.advance(2_000);
        for n in total..total + 100 {
            let frame = fresh_record(n, b);
            a.on_relay(b, relay_of(&frame));
        }
        assert_eq!(a.relay_dropped(), 500 + 100 - RELAY_PER_SEC);
        // Frames from a peer that is not an open neighbour are not taken at all.
        let before = a.relay_dropped();
        assert!(
            a.on_relay(peer(9), relay_of(&fresh_record(1, peer(9))))
                .is_empty()
        );
        assert_eq!(a.relay_dropped(), before);
    }
    #[test]
    fn one_origin_flooding_through_many_neighbours_gets_only_its_share_forwarded() {
        // Four neighbours each well within their own limit carry one origin's signals to a
        // peer we are not connected to: without a limit per origin, every one went on.
        let mut a = client(1);
        let ns = [peer(2), peer(3), peer(4), peer(5)];
        a.on_server_frame(&welcome(&a, &ns));
        for n in ns {
            a.on_channel_open(n);
            assert!(a.mesh.is_open(n));
        }
        a.advance(1_000);
        let mut origin = SignalRelay::new(room(), Identity::from_seed([9; 32]), 1);
        let target = peer(50);
        let extra = 100;
        let mut forwarded = 0;
        for n in 0..(crate::relay::ORIGIN_BURST + extra) {
            let via = ns[n as usize % ns.len()];
            let frame = origin
                .send(target, b"{}", &[via])
                .expect("send")
                .remove(0)
                .1;
            if !a.on_relay(via, relay_of(&frame)).is_empty() {
                forwarded += 1;
            }
        }
        assert_eq!(forwarded, crate::relay::ORIGIN_BURST);
        assert_eq!(a.relay_origin_dropped(), extra);
        assert_eq!(a.relay_dropped(), 0, "no neighbour passed its own limit");
        assert_eq!(a.relay_memory_full(), 0);
    }
}
