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
use swarm_core::mesh::{Action, Event, Mesh};
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
use crate::ticker::Ticker;

/// Period of the sharing engine's tick, in milliseconds.
const TICK_MS: i32 = 250;

/// The callbacks of the pending `Swarm.join` promise.
struct JoinWaiter {
    resolve: Function,
    reject: Function,
}

/// The state of one joined room.
pub(crate) struct Session {
    url: String,
    room: RoomName,
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
    ) -> Rc<Self> {
        let rtc_config = RtcConfiguration::new();
        if let Some(policy) = policy {
            rtc_config.set_ice_transport_policy(policy);
        }
        Rc::new(Self {
            url,
            room,
            mesh: RefCell::new(Mesh::new()),
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
        })
    }

    /// Connects to the server; resolves once `welcome` arrives, rejects if the connection
    /// ends first.
    pub(crate) async fn connect(self: &Rc<Self>) -> Result<(), JsValue> {
        let socket = SignalSocket::connect(&self.url, Rc::downgrade(self))?;
        *self.socket.borrow_mut() = Some(socket);
        let welcomed = js_sys::Promise::new(&mut |resolve, reject| {
            *self.join_waiter.borrow_mut() = Some(JoinWaiter { resolve, reject });
        });
        wasm_bindgen_futures::JsFuture::from(welcomed)
            .await
            .map(drop)
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
            } => {
                info!(room = %self.room, me = %id, peers = peers.len(), "welcomed");
                self.set_ice_servers(&ice_servers);
                let actions = self.mesh.borrow_mut().on_welcome(id, &peers);
                if let Some(waiter) = self.join_waiter.borrow_mut().take() {
                    let _ = waiter.resolve.call0(&JsValue::NULL);
                }
                self.start_ticker();
                self.apply(actions);
            }
            ServerMsg::Joined { id } => {
                let actions = self.mesh.borrow_mut().on_joined(id);
                self.apply(actions);
            }
            ServerMsg::Left { id } => {
                let actions = self.mesh.borrow_mut().on_left(id);
                self.apply(actions);
            }
            ServerMsg::Signal { from, data } => {
                let actions = self.mesh.borrow_mut().on_signal_from(from);
                self.apply(actions);
                match SignalData::parse(&data) {
                    Ok(data) => match self.link(from) {
                        Some(link) => link.on_signal(self, data),
                        None => debug!(peer = %from, "signal for a connection that is gone"),
                    },
                    Err(err) => {
                        warn!(peer = %from, error = %err, "ignoring unreadable signal data")
                    }
                }
            }
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

    /// The signalling connection ended. Before `welcome` that fails the join; afterwards the
    /// peer connections carry on without the server (they no longer need it).
    pub(crate) fn on_server_closed(&self, code: u16, reason: &str) {
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
        if !self.left.get() {
            warn!(
                code,
                reason, "lost the signalling server; open peer connections keep working"
            );
        }
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

    pub(crate) fn send_signal(&self, to: PeerId, data: &SignalData) {
        let sent = self
            .socket
            .borrow()
            .as_ref()
            .is_some_and(|socket| socket.send(&ClientMsg::signal(to, data)));
        if !sent {
            debug!(peer = %to, "no signalling connection: signal dropped");
        }
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
