//! Everything one joined room holds, and the dispatch between the signalling socket, the peer
//! connections and the application.
//!
//! Every input (a server frame, a channel opening or closing) goes to
//! [`Mesh`](swarm_core::mesh::Mesh), and the [`Action`]s it returns are carried out here.
//! No `RefCell` borrow is held while an application listener runs, because a listener may
//! call straight back into the swarm.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Function};
use swarm_core::backoff::Backoff;
use swarm_core::identity::Identity;
use swarm_core::mesh::{Action, Event, Mesh};
use swarm_core::relay::{Incoming, SignalRelay};
use swarm_protocol::wire::Relay;
use swarm_protocol::{ClientMsg, IceServer, PeerId, RoomName, ServerMsg, SignalData};
use tracing::{debug, info, warn};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::RtcConfiguration;

use crate::channel::OutgoingMessage;
use crate::error::{ClientError, describe};
use crate::events::{Listeners, SWARM_EVENTS, call_all};
use crate::files::Files;
use crate::peer::PeerLink;
use crate::signalling::SignalSocket;
use crate::ticker::{Ticker, Timeout};

/// Period of the sharing engine's tick, in milliseconds.
const TICK_MS: i32 = 250;

/// The callbacks of the pending `Swarm.join` promise.
struct JoinWaiter {
    resolve: Function,
    reject: Function,
}

/// The link to the signalling server, as `swarm.on('server', …)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerState {
    /// Welcomed, and the WebSocket is open.
    Connected,
    /// The WebSocket closed; trying again with backoff. Peer connections carry on.
    Reconnecting,
}

impl ServerState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// Close code with which the server tells a connection that a newer one resumed its peer.
const CLOSE_REPLACED: u16 = 4000;

/// The state of one joined room.
pub(crate) struct Session {
    /// `ws[s]://host/ws/{room}`, with `?token=` if there is one.
    url: String,
    room: RoomName,
    /// Our key: the server derives our id from it, and signals relayed through the mesh are
    /// signed with it.
    identity: Identity,
    relay: RefCell<SignalRelay>,
    /// The `resume` token of the last `welcome`.
    resume: RefCell<Option<String>>,
    server_state: Cell<ServerState>,
    backoff: RefCell<Backoff>,
    retry: RefCell<Option<Timeout>>,
    mesh: RefCell<Mesh>,
    links: RefCell<HashMap<PeerId, Rc<PeerLink>>>,
    socket: RefCell<Option<SignalSocket>>,
    listeners: RefCell<Listeners>,
    rtc_config: RtcConfiguration,
    join_waiter: RefCell<Option<JoinWaiter>>,
    left: Cell<bool>,
    pub(crate) files: Files,
    ticker: RefCell<Option<Ticker>>,
    /// Local streams sent to every peer.
    pub(crate) published: RefCell<Vec<web_sys::MediaStream>>,
    /// Remote streams, per peer.
    pub(crate) remote_media: RefCell<swarm_core::media::RemoteStreams>,
    /// Media-file range requests waiting for their pieces.
    pub(crate) range_waiters: RefCell<Vec<crate::streaming::RangeWaiter>>,
    /// Our reader registered with the page's streaming bridge.
    pub(crate) range_reader: RefCell<Option<crate::streaming::RangeReader>>,
}

impl Session {
    /// A session for `room` through the server at `url` (with its query), its peer
    /// connections limited to `policy` if given.
    pub(crate) fn new(
        url: String,
        room: RoomName,
        policy: Option<web_sys::RtcIceTransportPolicy>,
        max_peers: Option<usize>,
    ) -> Result<Rc<Self>, JsValue> {
        let rtc_config = RtcConfiguration::new();
        if let Some(policy) = policy {
            rtc_config.set_ice_transport_policy(policy);
        }
        let identity = Identity::from_seed(crate::ticker::random_seed()?);
        let relay = SignalRelay::new(room.clone(), identity.clone(), js_sys::Date::now() as u64);
        Ok(Rc::new(Self {
            url,
            room,
            identity,
            relay: RefCell::new(relay),
            resume: RefCell::new(None),
            server_state: Cell::new(ServerState::Connected),
            backoff: RefCell::new(Backoff::default()),
            retry: RefCell::new(None),
            mesh: RefCell::new(Mesh::with_max_peers(max_peers)),
            links: RefCell::new(HashMap::new()),
            socket: RefCell::new(None),
            listeners: RefCell::new(Listeners::new(SWARM_EVENTS)),
            rtc_config,
            join_waiter: RefCell::new(None),
            left: Cell::new(false),
            files: Files::new(js_sys::Date::now() as u64),
            ticker: RefCell::new(None),
            published: RefCell::new(Vec::new()),
            remote_media: RefCell::default(),
            range_waiters: RefCell::new(Vec::new()),
            range_reader: RefCell::new(None),
        }))
    }

    /// Connects to the server; resolves once `welcome` arrives, rejects if the connection
    /// ends first.
    pub(crate) async fn connect(self: &Rc<Self>) -> Result<(), JsValue> {
        self.open_socket()?;
        let welcomed = js_sys::Promise::new(&mut |resolve, reject| {
            *self.join_waiter.borrow_mut() = Some(JoinWaiter { resolve, reject });
        });
        wasm_bindgen_futures::JsFuture::from(welcomed)
            .await
            .map(drop)
    }

    /// Opens a WebSocket to the server, with our key's proof and, after the first
    /// `welcome`, our resume token.
    fn open_socket(self: &Rc<Self>) -> Result<(), ClientError> {
        let now = (js_sys::Date::now() / 1000.0) as u64;
        let proof = self.identity.join_proof(&self.room, now);
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{separator}{}", self.url, proof.query());
        if let Some(token) = self.resume.borrow().as_deref() {
            url.push_str("&resume=");
            url.push_str(&String::from(js_sys::encode_uri_component(token)));
        }
        // Dropping the old socket (if any) unregisters its callbacks first.
        let socket = SignalSocket::connect(&url, Rc::downgrade(self))?;
        *self.socket.borrow_mut() = Some(socket);
        Ok(())
    }

    /// The state of the link to the signalling server.
    pub(crate) fn server_state(&self) -> ServerState {
        self.server_state.get()
    }

    fn set_server_state(&self, state: ServerState) {
        if self.server_state.replace(state) != state {
            info!(state = state.as_str(), "signalling server");
            self.emit("server", &[state.as_str().into()]);
        }
    }

    /// Tries the server again after the next backoff delay.
    fn schedule_reconnect(self: &Rc<Self>) {
        let delay = self.backoff.borrow_mut().next_delay(js_sys::Math::random());
        debug!(delay, "reconnecting to the signalling server");
        let session = Rc::downgrade(self);
        let timeout = Timeout::start(delay.min(i32::MAX as u64) as i32, move || {
            let Some(session) = session.upgrade() else {
                return;
            };
            if session.left.get() {
                return;
            }
            if let Err(err) = session.open_socket() {
                warn!(error = %err, "cannot reopen the signalling connection");
                session.schedule_reconnect();
            }
        });
        match timeout {
            Ok(timeout) => *self.retry.borrow_mut() = Some(timeout),
            Err(err) => warn!(error = %describe(&err), "cannot start the reconnection timer"),
        }
    }

    pub(crate) fn room(&self) -> &RoomName {
        &self.room
    }

    pub(crate) fn me(&self) -> Option<PeerId> {
        self.mesh.borrow().me()
    }

    pub(crate) fn open_peers(&self) -> Vec<PeerId> {
        self.mesh.borrow().open_peers().collect()
    }

    pub(crate) fn link(&self, peer: PeerId) -> Option<Rc<PeerLink>> {
        self.links.borrow().get(&peer).cloned()
    }

    pub(crate) fn all_links(&self) -> Vec<Rc<PeerLink>> {
        self.links.borrow().values().cloned().collect()
    }

    pub(crate) fn listeners(&self) -> std::cell::RefMut<'_, Listeners> {
        self.listeners.borrow_mut()
    }

    // ---- inputs from the signalling socket ----

    pub(crate) fn on_server_frame(self: &Rc<Self>, text: &str) {
        let msg = match ServerMsg::parse(text) {
            Ok(msg) => msg,
            Err(err) => {
                warn!(error = %err, "ignoring a malformed frame from the server");
                return;
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
                self.set_ice_servers(&ice_servers);
                *self.resume.borrow_mut() = resume;
                self.backoff.borrow_mut().reset();
                let actions = self.mesh.borrow_mut().on_welcome(id, &peers);
                if let Some(waiter) = self.join_waiter.borrow_mut().take() {
                    let _ = waiter.resolve.call0(&JsValue::NULL);
                }
                if self.ticker.borrow().is_none() {
                    self.start_ticker();
                }
                self.apply(actions);
                self.set_server_state(ServerState::Connected);
            }
            ServerMsg::Joined { id } => {
                let actions = self.mesh.borrow_mut().on_joined(id);
                self.apply(actions);
            }
            ServerMsg::Left { id } => {
                let actions = self.mesh.borrow_mut().on_left(id);
                self.apply(actions);
            }
            ServerMsg::Signal { from, data } => match SignalData::parse(&data) {
                Ok(data) => self.on_signal(from, data),
                Err(err) => warn!(peer = %from, error = %err, "ignoring unreadable signal data"),
            },
            ServerMsg::Error { code, message } => {
                // Before `welcome`, an error is the server refusing the join; it closes next.
                if let Some(waiter) = self.join_waiter.borrow_mut().take() {
                    let err = ClientError::Refused { code, message };
                    let _ = waiter.reject.call1(&JsValue::NULL, &err.into());
                    return;
                }
                warn!(
                    code = code.as_str(),
                    message, "the signalling server refused a frame"
                );
            }
        }
    }

    /// The signalling connection ended. Before the first `welcome` that fails the join;
    /// afterwards the peer connections carry on without the server, signals go through the
    /// mesh, and the server is tried again with backoff.
    pub(crate) fn on_server_closed(self: &Rc<Self>, code: u16, reason: &str) {
        if let Some(waiter) = self.join_waiter.borrow_mut().take() {
            let reason = if reason.is_empty() {
                format!("connection closed (code {code})")
            } else {
                format!("connection closed (code {code}: {reason})")
            };
            let err = ClientError::ServerUnreachable {
                url: self.url.clone(),
                reason,
            };
            let _ = waiter.reject.call1(&JsValue::NULL, &err.into());
            return;
        }
        if self.left.get() {
            return;
        }
        if code == CLOSE_REPLACED {
            // Another connection of ours resumed this peer: it is the one in use.
            debug!("an older signalling connection was replaced");
            return;
        }
        if self.server_state.get() == ServerState::Connected {
            warn!(
                code,
                reason, "lost the signalling server; open peer connections keep working"
            );
        }
        self.socket.borrow_mut().take();
        self.set_server_state(ServerState::Reconnecting);
        self.schedule_reconnect();
    }

    // ---- inputs from peer connections ----

    pub(crate) fn on_channel_open(self: &Rc<Self>, peer: PeerId) {
        let actions = self.mesh.borrow_mut().on_channel_open(peer);
        self.apply(actions);
    }

    pub(crate) fn on_channel_closed(self: &Rc<Self>, peer: PeerId) {
        let actions = self.mesh.borrow_mut().on_channel_closed(peer);
        self.apply(actions);
    }

    pub(crate) fn on_app_message(&self, from: PeerId, data: JsValue) {
        self.emit("message", &[from.to_string().into(), data]);
    }

    // ---- outputs ----

    /// Sends a signal to `to`: through the server while it is there, otherwise through the
    /// mesh.
    pub(crate) fn send_signal(&self, to: PeerId, data: &SignalData) {
        let sent = self.server_state.get() == ServerState::Connected
            && self
                .socket
                .borrow()
                .as_ref()
                .is_some_and(|socket| socket.send(&ClientMsg::signal(to, data)));
        if !sent {
            self.relay_signal(to, data);
        }
    }

    /// Sends a signal to `to` through the mesh, signed with our key.
    fn relay_signal(&self, to: PeerId, data: &SignalData) {
        let Ok(json) = serde_json::to_vec(data) else {
            return;
        };
        let neighbours = self.open_peers();
        let frames = self.relay.borrow_mut().send(to, &json, &neighbours);
        match frames {
            Ok(frames) if frames.is_empty() => {
                debug!(peer = %to, "no server and no neighbour: signal dropped")
            }
            Ok(frames) => {
                for (peer, frame) in frames {
                    if let Some(link) = self.link(peer) {
                        link.send_frame(frame);
                    }
                }
            }
            Err(err) => warn!(peer = %to, error = %err, "cannot relay a signal"),
        }
    }

    /// A signal relayed through the mesh arrived from neighbour `from`.
    pub(crate) fn on_relay(self: &Rc<Self>, from: PeerId, relay: Relay<'_>) {
        let neighbours = self.open_peers();
        let incoming = self.relay.borrow_mut().on_frame(from, relay, &neighbours);
        match incoming {
            Incoming::Deliver { from: origin, data } => {
                match serde_json::from_slice::<SignalData>(&data) {
                    Ok(data) => self.on_signal(origin, data),
                    Err(err) => {
                        warn!(peer = %origin, error = %err, "ignoring unreadable relayed signal data")
                    }
                }
            }
            Incoming::Forward(frames) => {
                for (peer, frame) in frames {
                    if let Some(link) = self.link(peer) {
                        link.send_frame(frame);
                    }
                }
            }
            Incoming::Drop(reason) => debug!(%from, ?reason, "dropped a relayed signal"),
        }
    }

    /// A signal from `from`, through the server or the mesh.
    fn on_signal(self: &Rc<Self>, from: PeerId, data: SignalData) {
        let actions = self.mesh.borrow_mut().on_signal_from(from);
        self.apply(actions);
        match self.link(from) {
            Some(link) => link.on_signal(self, data),
            None => debug!(peer = %from, "signal for a connection that is gone"),
        }
    }

    /// Opens a direct connection to room member `peer` (through the mesh if the server is
    /// away). Throws `unknown-peer` for an id that is not a member we know of.
    pub(crate) fn dial(self: &Rc<Self>, peer: &str) -> Result<(), ClientError> {
        self.check_joined()?;
        let unknown = || ClientError::UnknownPeer(peer.to_owned());
        let id: PeerId = peer.parse().map_err(|_| unknown())?;
        let actions = self.mesh.borrow_mut().dial(id).ok_or_else(unknown)?;
        self.apply(actions);
        Ok(())
    }

    /// The room's members we know of (connected or not), sorted.
    pub(crate) fn members(&self) -> Vec<PeerId> {
        self.mesh.borrow().members().collect()
    }

    /// Sends `message` to one open peer.
    pub(crate) fn send_to(&self, peer: &str, message: &OutgoingMessage) -> Result<(), ClientError> {
        self.check_joined()?;
        let unknown = || ClientError::UnknownPeer(peer.to_owned());
        let id: PeerId = peer.parse().map_err(|_| unknown())?;
        if !self.mesh.borrow().is_open(id) {
            return Err(unknown());
        }
        self.link(id).ok_or_else(unknown)?.send(message)
    }

    /// Sends `message` to every open peer; returns how many it was sent to. A peer whose
    /// channel refuses is skipped and logged.
    pub(crate) fn broadcast(&self, message: &OutgoingMessage) -> Result<u32, ClientError> {
        self.check_joined()?;
        let mut sent = 0;
        for peer in self.open_peers() {
            let Some(link) = self.link(peer) else {
                continue;
            };
            match link.send(message) {
                Ok(()) => sent += 1,
                Err(err) => warn!(%peer, error = %err, "broadcast skipped a peer"),
            }
        }
        Ok(sent)
    }

    /// Leaves the room: closes every peer connection and the signalling socket. Idempotent.
    pub(crate) fn leave(self: &Rc<Self>) {
        if self.left.replace(true) {
            return;
        }
        let actions = self.mesh.borrow_mut().leave();
        self.apply(actions);
        let socket = self.socket.borrow_mut().take();
        defer_drop(socket);
        defer_drop(self.retry.borrow_mut().take());
        defer_drop(self.ticker.borrow_mut().take());
        defer_drop(self.range_reader.borrow_mut().take());
        self.fail_all_ranges();
        self.listeners.borrow_mut().clear();
    }

    pub(crate) fn check_joined(&self) -> Result<(), ClientError> {
        if self.left.get() {
            Err(ClientError::Left)
        } else {
            Ok(())
        }
    }

    fn apply(self: &Rc<Self>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Connect {
                    peer,
                    offerer,
                    polite,
                } => self.connect_to(peer, offerer, polite),
                Action::Disconnect(peer) => {
                    let link = self.links.borrow_mut().remove(&peer);
                    if link.is_some() {
                        self.files_peer_closed(peer);
                        self.media_peer_gone(peer);
                    }
                    if let Some(link) = link {
                        link.close();
                        // This may run inside one of the link's own callbacks, which must not
                        // be freed while running: free them once the callback has returned.
                        defer_drop(link);
                    }
                }
                Action::Emit(Event::PeerJoined(peer)) => {
                    info!(%peer, "peer joined");
                    self.files_peer_open(peer);
                    self.media_peer_open(peer);
                    self.emit("peer-joined", &[peer.to_string().into()]);
                }
                Action::Emit(Event::PeerLeft(peer)) => {
                    info!(%peer, "peer left");
                    self.emit("peer-left", &[peer.to_string().into()]);
                }
            }
        }
    }

    fn connect_to(self: &Rc<Self>, peer: PeerId, offerer: bool, polite: bool) {
        let Some(me) = self.me() else { return };
        debug!(%peer, offerer, polite, "connecting");
        match PeerLink::new(self, me, peer, offerer, &self.rtc_config) {
            Ok(link) => {
                self.links.borrow_mut().insert(peer, link);
            }
            Err(err) => {
                warn!(%peer, error = %describe(&err), "cannot create a peer connection");
                let actions = self.mesh.borrow_mut().on_channel_closed(peer);
                self.apply(actions);
            }
        }
    }

    fn set_ice_servers(&self, servers: &[IceServer]) {
        let parsed = serde_json::to_string(servers)
            .ok()
            .and_then(|json| js_sys::JSON::parse(&json).ok());
        match parsed {
            Some(value) => self.rtc_config.set_ice_servers(&value),
            None => self.rtc_config.set_ice_servers(&Array::new()),
        }
    }

    pub(crate) fn emit(&self, event: &str, args: &[JsValue]) {
        let listeners = self.listeners.borrow().snapshot(event);
        call_all(event, &listeners, args);
    }

    /// Starts the periodic tick of the sharing engine (timeouts, speeds).
    fn start_ticker(self: &Rc<Self>) {
        let session = Rc::downgrade(self);
        let ticker = Ticker::start(TICK_MS, move || {
            if let Some(session) = session.upgrade() {
                session.files_tick();
                let actions = session.mesh.borrow_mut().on_tick();
                session.apply(actions);
            }
        });
        match ticker {
            Ok(ticker) => *self.ticker.borrow_mut() = Some(ticker),
            Err(err) => {
                warn!(error = %describe(&err), "cannot start the timer: timeouts will not fire")
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for link in self.links.get_mut().values() {
            link.close();
        }
    }
}

/// Drops `value` after the current JavaScript callback has returned.
fn defer_drop<T: 'static>(value: T) {
    spawn_local(async move { drop(value) });
}
