//! Everything one joined room holds, and the dispatch between the signalling socket, the peer
//! connections and the application.
//!
//! Every input (a server frame, a channel opening or closing, a relayed signal) goes to
//! [`Client`], shared with the native peer, and the [`Effect`]s it returns are carried out
//! here.
//! No `RefCell` borrow is held while an application listener runs, because a listener may
//! call straight back into the swarm.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Function};
pub(crate) use swarm_core::client::ServerState;
use swarm_core::client::{Client, Effect};
use swarm_core::identity::Identity;
use swarm_core::mesh::Event;
use swarm_core::share::{FileInfo, Output, ShareError};
use swarm_protocol::route::Route;
use swarm_protocol::wire::Relay;
use swarm_protocol::{ClientMsg, ContentId, IceServer, PeerId, RoomName, SignalData};
use tracing::{debug, info, warn};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::RtcConfiguration;

use crate::channel::OutgoingMessage;
use crate::error::{ClientError, describe};
use crate::events::{Listeners, SWARM_EVENTS, call_all};
use crate::files::{Files, file_object, now};
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

/// The state of one joined room.
pub(crate) struct Session {
    /// `ws[s]://host/ws/{room}`, with `?token=` if there is one.
    url: String,
    room: RoomName,
    /// The mesh, the relay and the server link.
    client: RefCell<Client>,
    retry: RefCell<Option<Timeout>>,
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
        dht_above: Option<usize>,
    ) -> Result<Rc<Self>, JsValue> {
        let rtc_config = RtcConfiguration::new();
        if let Some(policy) = policy {
            rtc_config.set_ice_transport_policy(policy);
        }
        let identity = Identity::from_seed(crate::ticker::random_seed()?);
        let client = Client::new(
            room.clone(),
            identity,
            max_peers,
            js_sys::Date::now() as u64,
        )
        .with_dht_above(dht_above.unwrap_or(swarm_core::client::DHT_ABOVE));
        Ok(Rc::new(Self {
            url,
            room,
            client: RefCell::new(client),
            retry: RefCell::new(None),
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
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}{}",
            self.url,
            self.client.borrow().server_query(now)
        );
        // Dropping the old socket (if any) unregisters its callbacks first.
        let socket = SignalSocket::connect(&url, Rc::downgrade(self))?;
        *self.socket.borrow_mut() = Some(socket);
        Ok(())
    }

    /// The state of the link to the signalling server.
    pub(crate) fn server_state(&self) -> ServerState {
        self.client.borrow().server_state()
    }

    /// Tries the server again after `delay` milliseconds.
    fn schedule_reconnect(self: &Rc<Self>, delay: u64) {
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
                let effects = session
                    .client
                    .borrow_mut()
                    .on_server_unreachable(js_sys::Math::random());
                session.apply(effects);
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
        self.client.borrow().me()
    }

    pub(crate) fn open_peers(&self) -> Vec<PeerId> {
        self.client.borrow().open_peers()
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
        let effects = self.client.borrow_mut().on_server_frame(text);
        self.apply(effects);
    }

    /// The signalling connection ended. Before the first `welcome` that fails the join;
    /// afterwards the peer connections carry on without the server, signals go through the
    /// mesh, and the server is tried again with backoff.
    pub(crate) fn on_server_closed(self: &Rc<Self>, code: u16, reason: &str) {
        // The socket is dropped by the `ReconnectIn` that follows a loss.
        let effects =
            self.client
                .borrow_mut()
                .on_server_closed(code, reason, js_sys::Math::random());
        self.apply(effects);
    }

    // ---- inputs from peer connections ----

    pub(crate) fn on_channel_open(self: &Rc<Self>, peer: PeerId) {
        let effects = self.client.borrow_mut().on_channel_open(peer);
        self.apply(effects);
    }

    pub(crate) fn on_channel_closed(self: &Rc<Self>, peer: PeerId) {
        let effects = self.client.borrow_mut().on_channel_closed(peer);
        self.apply(effects);
    }

    pub(crate) fn on_app_message(&self, from: PeerId, data: JsValue) {
        self.emit("message", &[from.to_string().into(), data]);
    }

    // ---- outputs ----

    /// Sends a signal to `to`: through the server while it is there, otherwise through the
    /// mesh.
    pub(crate) fn send_signal(self: &Rc<Self>, to: PeerId, data: &SignalData) {
        let effects = self.client.borrow_mut().send_signal(to, data);
        self.apply(effects);
    }

    /// A signal relayed through the mesh arrived from neighbour `from`.
    pub(crate) fn on_relay(self: &Rc<Self>, from: PeerId, relay: Relay<'_>) {
        let effects = self.client.borrow_mut().on_relay(from, relay);
        self.apply(effects);
    }

    /// A message of the structured layer arrived from neighbour `from`.
    pub(crate) fn on_route(self: &Rc<Self>, from: PeerId, route: Route<'_>) {
        let effects = self.client.borrow_mut().on_route(from, route);
        self.apply(effects);
    }

    /// Looks for providers of content `id` in the room's structured layer (for a minute);
    /// what is found arrives as `file` events. Throws `invalid-content-id`, `left`.
    pub(crate) fn lookup(self: &Rc<Self>, id: &str) -> Result<(), ClientError> {
        self.check_joined()?;
        let id: ContentId = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        let effects = self.client.borrow_mut().find(id);
        self.apply(effects);
        Ok(())
    }

    /// Opens a direct connection to room member `peer` (through the mesh if the server is
    /// away). Throws `unknown-peer` for an id that is not a member we know of.
    pub(crate) fn dial(self: &Rc<Self>, peer: &str) -> Result<(), ClientError> {
        self.check_joined()?;
        let unknown = || ClientError::UnknownPeer(peer.to_owned());
        let id: PeerId = peer.parse().map_err(|_| unknown())?;
        let effects = self.client.borrow_mut().dial(id).ok_or_else(unknown)?;
        self.apply(effects);
        Ok(())
    }

    /// The room's members we know of (connected or not), sorted.
    pub(crate) fn members(&self) -> Vec<PeerId> {
        self.client.borrow().members()
    }

    /// Sends `message` to one open peer.
    pub(crate) fn send_to(&self, peer: &str, message: &OutgoingMessage) -> Result<(), ClientError> {
        self.check_joined()?;
        let unknown = || ClientError::UnknownPeer(peer.to_owned());
        let id: PeerId = peer.parse().map_err(|_| unknown())?;
        if !self.client.borrow().is_open(id) {
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
        let effects = self.client.borrow_mut().leave();
        self.apply(effects);
        let socket = self.socket.borrow_mut().take();
        defer_drop(socket);
        defer_drop(self.retry.borrow_mut().take());
        defer_drop(self.ticker.borrow_mut().take());
        defer_drop(self.range_reader.borrow_mut().take());
        self.fail_all_ranges();
        self.listeners.borrow_mut().clear();
    }

    /// Tells the whole room, by gossip, that we hold all of `id` (if we do).
    pub(crate) fn provide_held(self: &Rc<Self>, id: ContentId) {
        let effects = self
            .client
            .borrow_mut()
            .provide_held(&self.files.share.borrow(), id);
        self.apply(effects);
    }

    /// Starts the sharing engine's download of `id`, connecting to a provider beyond our
    /// neighbours if none of them has it; returns the engine's outputs.
    pub(crate) fn start_share_download(
        self: &Rc<Self>,
        id: ContentId,
    ) -> Result<Vec<Output<PeerId>>, ShareError> {
        let (outputs, effects) = self.client.borrow_mut().start_download(
            &mut self.files.share.borrow_mut(),
            id,
            now(),
        )?;
        self.apply(effects);
        Ok(outputs)
    }

    /// We no longer download `id`.
    pub(crate) fn unwant(&self, id: ContentId) {
        self.client.borrow_mut().unwant(id);
    }

    /// The room's files: ours, our neighbours', and those heard of by gossip.
    pub(crate) fn files_list(&self) -> Vec<FileInfo> {
        self.client.borrow().room_files(self.files.list())
    }

    pub(crate) fn check_joined(&self) -> Result<(), ClientError> {
        if self.left.get() {
            Err(ClientError::Left)
        } else {
            Ok(())
        }
    }

    fn apply(self: &Rc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Connect {
                    peer,
                    offerer,
                    polite,
                } => self.connect_to(peer, offerer, polite),
                Effect::Disconnect(peer) => {
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
                Effect::ToServer { to, data } => {
                    let sent = self
                        .socket
                        .borrow()
                        .as_ref()
                        .is_some_and(|socket| socket.send(&ClientMsg::signal(to, &data)));
                    if !sent {
                        let effects = self.client.borrow_mut().relay_signal(to, &data);
                        self.apply(effects);
                    }
                }
                Effect::ToPeer { peer, frame } => {
                    if let Some(link) = self.link(peer) {
                        link.send_frame(frame);
                    }
                }
                Effect::Signal { from, data } => match self.link(from) {
                    Some(link) => link.on_signal(self, data),
                    None => debug!(peer = %from, "signal for a connection that is gone"),
                },
                Effect::Welcomed {
                    ice_servers, first, ..
                } => {
                    self.set_ice_servers(&ice_servers);
                    if let Some(waiter) = self.join_waiter.borrow_mut().take() {
                        let _ = waiter.resolve.call0(&JsValue::NULL);
                    }
                    if first && self.ticker.borrow().is_none() {
                        self.start_ticker();
                    }
                }
                Effect::JoinFailed { code, message } => {
                    if let Some(waiter) = self.join_waiter.borrow_mut().take() {
                        let err = match code {
                            Some(code) => ClientError::Refused { code, message },
                            None => ClientError::ServerUnreachable {
                                url: self.url.clone(),
                                reason: message,
                            },
                        };
                        let _ = waiter.reject.call1(&JsValue::NULL, &err.into());
                    }
                }
                Effect::Server(state) => {
                    info!(state = state.as_str(), "signalling server");
                    self.emit("server", &[state.as_str().into()]);
                }
                Effect::ReconnectIn(delay) => {
                    self.socket.borrow_mut().take();
                    self.schedule_reconnect(delay);
                }
                Effect::Emit(Event::PeerJoined(peer)) => {
                    info!(%peer, "peer joined");
                    self.files_peer_open(peer);
                    self.media_peer_open(peer);
                    self.emit("peer-joined", &[peer.to_string().into()]);
                }
                Effect::Emit(Event::PeerLeft(peer)) => {
                    info!(%peer, "peer left");
                    self.emit("peer-left", &[peer.to_string().into()]);
                }
                Effect::Provided { file, new } => {
                    if new && self.files.list().iter().all(|f| f.id != file.id) {
                        let info = self.files_list().into_iter().find(|f| f.id == file.id);
                        if let Some(info) = info {
                            self.emit("file", &[file_object(&info)]);
                        }
                    }
                    self.emit("files", &[]);
                }
                Effect::ProvidersGone => self.emit("files", &[]),
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
                let effects = self.client.borrow_mut().on_channel_closed(peer);
                self.apply(effects);
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
                let effects = session.client.borrow_mut().on_tick();
                session.apply(effects);
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
