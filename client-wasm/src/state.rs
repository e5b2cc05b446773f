//! Everything one joined room holds in the browser, and how events and the node's outputs
//! are carried out.
//!
//! Every rule of the room and of file sharing is `swarm-core`'s [`Node`]; this module turns
//! inbox [`Event`]s into node inputs and node [`Output`]s into browser calls, and collects
//! what the page must hear as [`Notice`]s for the shell to deliver. It never calls into
//! JavaScript code of the application.

use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Array;
use swarm_core::client::ServerState;
use swarm_core::media::RemoteStreams;
use swarm_core::node::{self, Node, Output};
use swarm_protocol::{ClientMsg, ContentId, IceServer, PeerId, RoomName};
use tracing::{debug, info, warn};
use wasm_bindgen::JsValue;
use web_sys::{MediaStream, RtcConfiguration};

use crate::blob_reads::BlobReads;
use crate::channel::OutgoingMessage;
use crate::download_state::DownloadState;
use crate::error::{ClientError, describe};
use crate::inbox::{Event, Inbox};
use crate::library::Library;
use crate::notice::Notice;
use crate::peer::PeerLink;
use crate::ranges::RangeWaiter;
use crate::signalling::SignalSocket;
use crate::storage::Storage;
use crate::timer::{Timeout, now_ms};
use crate::upload_cap::UploadCap;

/// The callbacks of the pending `Swarm.join` promise.
pub(crate) struct JoinWaiter {
    pub(crate) resolve: js_sys::Function,
    pub(crate) reject: js_sys::Function,
}

/// How long a new signalling connection may take to send its first frame (`welcome`, or
/// an `error`) before it is given up as if it had failed: `join` rejects with
/// `server-unreachable`, or, after a first `welcome`, the client tries again with backoff.
pub(crate) const SOCKET_ANSWER_MS: u64 = 15_000;

/// The state of one joined room.
pub(crate) struct State {
    /// `ws[s]://host/ws/{room}`, with `?token=` if there is one.
    url: String,
    room: RoomName,
    pub(crate) node: Node,
    inbox: Inbox,
    rtc_config: RtcConfiguration,
    socket: Option<SignalSocket>,
    /// The serial of the newest signalling connection (events of older ones are ignored).
    socket_serial: u32,
    retry: Option<Timeout>,
    /// Runs until the newest signalling connection sends its first frame.
    answer_timer: Option<Timeout>,
    links: HashMap<PeerId, PeerLink>,
    link_serial: u32,
    join_waiter: Option<JoinWaiter>,
    left: bool,
    notices: Vec<Notice>,
    pub(crate) upload_cap: UploadCap,
    // ---- files (see `files`) ----
    pub(crate) storage: Option<Rc<Storage>>,
    /// What the page keeps in storage across reloads (see `library`).
    pub(crate) library: Library,
    /// Content held as a Blob: files we shared, and finished downloads.
    pub(crate) blobs: HashMap<ContentId, web_sys::Blob>,
    /// Blocks of those Blobs read lately, to serve pieces from.
    pub(crate) blob_reads: Rc<BlobReads>,
    pub(crate) downloads: HashMap<ContentId, Rc<DownloadState>>,
    /// Completed downloads whose file is being closed and opened as a Blob.
    pub(crate) finishing: HashMap<ContentId, Rc<DownloadState>>,
    // ---- media (see `media`) ----
    /// Local streams sent to every peer.
    pub(crate) published: Vec<MediaStream>,
    /// Remote streams, per peer.
    pub(crate) remote_media: RemoteStreams,
    // ---- streaming (see `ranges`) ----
    /// Media-file range requests waiting for their pieces.
    pub(crate) range_waiters: Vec<RangeWaiter>,
}

impl State {
    /// The state of a room not joined yet: [`State::open_socket`] starts.
    pub(crate) fn new(
        url: String,
        room: RoomName,
        node: Node,
        rtc_config: RtcConfiguration,
        storage: Option<Rc<Storage>>,
        inbox: Inbox,
    ) -> Self {
        Self {
            url,
            room,
            node,
            inbox,
            rtc_config,
            socket: None,
            socket_serial: 0,
            retry: None,
            answer_timer: None,
            links: HashMap::new(),
            link_serial: 0,
            join_waiter: None,
            left: false,
            notices: Vec::new(),
            upload_cap: UploadCap::default(),
            storage,
            library: Library::default(),
            blobs: HashMap::new(),
            blob_reads: Rc::default(),
            downloads: HashMap::new(),
            finishing: HashMap::new(),
            published: Vec::new(),
            remote_media: RemoteStreams::default(),
            range_waiters: Vec::new(),
        }
    }

    /// Where callbacks of this room post their events.
    pub(crate) fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// What the page must hear since the last call.
    pub(crate) fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Queues a notice for the shell to deliver.
    pub(crate) fn notify(&mut self, notice: Notice) {
        self.notices.push(notice);
    }

    /// Queues a `Swarm` event for the application's listeners. Several `files` in a row are
    /// one.
    pub(crate) fn emit(&mut self, event: &'static str, args: Vec<JsValue>) {
        if event == "files" && matches!(self.notices.last(), Some(Notice::Emit("files", _))) {
            return;
        }
        self.notices.push(Notice::Emit(event, args));
    }

    /// Waits for the first `welcome`: `resolve` or `reject` is called then.
    pub(crate) fn set_join_waiter(&mut self, waiter: JoinWaiter) {
        self.join_waiter = Some(waiter);
    }

    /// Opens a WebSocket to the server, with our key's proof and, after the first
    /// `welcome`, our resume token.
    pub(crate) fn open_socket(&mut self) -> Result<(), ClientError> {
        let now = (js_sys::Date::now() / 1000.0) as u64;
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}{}", self.url, self.node.server_query(now));
        self.socket_serial += 1;
        // Replacing the old socket (if any) unregisters its callbacks first.
        self.socket = Some(SignalSocket::connect(
            &url,
            self.inbox.clone(),
            self.socket_serial,
        )?);
        // A socket may never open and never close: one the page's Content-Security-Policy
        // blocks, or a server that drops packets. Without a deadline, `join` would hang.
        let (inbox, socket) = (self.inbox.clone(), self.socket_serial);
        let answer = move || inbox.post(Event::SocketSilent { socket });
        self.answer_timer = Timeout::start(SOCKET_ANSWER_MS as i32, answer)
            .map_err(|err| warn!(error = %describe(&err), "cannot start the socket timer"))
            .ok();
        Ok(())
    }

    // ---- what the facade reads ----

    pub(crate) fn room(&self) -> &RoomName {
        &self.room
    }

    pub(crate) fn server_state(&self) -> ServerState {
        self.node.server_state()
    }

    pub(crate) fn has_left(&self) -> bool {
        self.left
    }

    /// When the node's upkeep is next due.
    pub(crate) fn next_deadline(&self) -> u64 {
        self.node.poll_timeout()
    }

    pub(crate) fn check_joined(&self) -> Result<(), ClientError> {
        if self.left {
            Err(ClientError::Left)
        } else {
            Ok(())
        }
    }

    pub(crate) fn link(&self, peer: PeerId) -> Option<&PeerLink> {
        self.links.get(&peer)
    }

    // ---- what the facade asks ----

    /// Sends `message` to one open peer.
    pub(crate) fn send_to(&self, peer: &str, message: &OutgoingMessage) -> Result<(), ClientError> {
        self.check_joined()?;
        let unknown = || ClientError::UnknownPeer(peer.to_owned());
        let id: PeerId = peer.parse().map_err(|_| unknown())?;
        if !self.node.is_open(id) {
            return Err(unknown());
        }
        self.links.get(&id).ok_or_else(unknown)?.send(message)
    }

    /// Sends `message` to every open peer; returns how many it was sent to. A peer whose
    /// channel refuses is skipped and logged.
    pub(crate) fn broadcast(&self, message: &OutgoingMessage) -> Result<u32, ClientError> {
        self.check_joined()?;
        let mut sent = 0;
        for peer in self.node.open_peers() {
            let Some(link) = self.links.get(&peer) else {
                continue;
            };
            match link.send(message) {
                Ok(()) => sent += 1,
                Err(err) => warn!(%peer, error = %err, "broadcast skipped a peer"),
            }
        }
        Ok(sent)
    }

    /// Opens a direct connection to room member `peer`. Throws `unknown-peer` for an id
    /// that is not a member we know of.
    pub(crate) fn dial(&mut self, peer: &str) -> Result<(), ClientError> {
        self.check_joined()?;
        let unknown = || ClientError::UnknownPeer(peer.to_owned());
        let id: PeerId = peer.parse().map_err(|_| unknown())?;
        if !self.node.dial(id, now_ms()) {
            return Err(unknown());
        }
        self.flush();
        Ok(())
    }

    /// Looks for providers of content `id` in the room's structured layer.
    pub(crate) fn lookup(&mut self, id: &str) -> Result<(), ClientError> {
        self.check_joined()?;
        let id: ContentId = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        self.node.lookup(id, now_ms());
        self.flush();
        Ok(())
    }

    /// **Testing and benchmarks only**: caps the upload of file data.
    pub(crate) fn cap_upload(&mut self, bytes_per_second: f64) {
        self.upload_cap.set(bytes_per_second, now_ms());
    }

    /// Leaves the room: closes every peer connection and the signalling socket. Idempotent.
    pub(crate) fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        // Unfinished downloads end: their `blob()` rejects with `left`.
        let pending: Vec<ContentId> = self.downloads.keys().copied().collect();
        for id in pending {
            self.fail_download(id, ClientError::Left);
        }
        self.node.leave(now_ms());
        self.flush();
        self.socket = None;
        self.retry = None;
        self.fail_all_ranges();
        self.notices.push(Notice::Left);
    }

    // ---- events ----

    /// Handles one event from the inbox, then carries out what the node decided.
    pub(crate) fn handle(&mut self, event: Event) {
        let now = now_ms();
        match event {
            Event::ServerFrame { socket, text } => {
                if socket == self.socket_serial {
                    self.answer_timer = None;
                    self.node.handle(node::Input::ServerFrame(&text), now);
                }
            }
            Event::SocketSilent { socket } => {
                if socket == self.socket_serial && self.socket.take().is_some() {
                    warn!("the signalling server did not answer; giving the connection up");
                    let reason = format!("no answer within {} s", SOCKET_ANSWER_MS / 1000);
                    let input = node::Input::ServerClosed {
                        code: 1006,
                        reason: &reason,
                    };
                    self.node.handle(input, now);
                }
            }
            Event::ServerClosed {
                socket,
                code,
                reason,
            } => {
                if socket == self.socket_serial && self.socket.is_some() {
                    self.socket = None;
                    let input = node::Input::ServerClosed {
                        code,
                        reason: &reason,
                    };
                    self.node.handle(input, now);
                }
            }
            Event::Reconnect => {
                if !self.left
                    && self.socket.is_none()
                    && let Err(err) = self.open_socket()
                {
                    warn!(error = %err, "cannot reopen the signalling connection");
                    self.node.handle(node::Input::ServerUnreachable, now);
                }
            }
            Event::Upkeep => {
                self.node.handle_timeout(now);
                self.blob_reads.expire(now);
                // Frames the upload cap held back.
                let drained: Vec<PeerId> = self
                    .links
                    .iter_mut()
                    .filter_map(|(peer, link)| {
                        link.pump(&mut self.upload_cap, now).then_some(*peer)
                    })
                    .collect();
                for peer in drained {
                    self.node.handle(node::Input::Drained(peer), now);
                }
            }
            Event::LocalSignal { peer, link, data } => {
                if self.is_current(peer, link) {
                    self.node
                        .handle(node::Input::LocalSignal { to: peer, data }, now);
                }
            }
            Event::RemoteChannel { peer, link } => {
                let open = self
                    .current_link(peer, link)
                    .is_some_and(PeerLink::on_remote_channel);
                if open {
                    self.node.handle(node::Input::ChannelOpen(peer), now);
                }
            }
            Event::ChannelOpen { peer, link } => {
                if self.is_current(peer, link) {
                    self.node.handle(node::Input::ChannelOpen(peer), now);
                }
            }
            Event::LinkClosed { peer, link } => {
                if self.is_current(peer, link) {
                    self.node.handle(node::Input::ChannelClosed(peer), now);
                }
            }
            Event::Text { peer, link, text } => {
                if self.is_current(peer, link) {
                    self.emit("message", vec![peer.to_string().into(), text.into()]);
                }
            }
            Event::Binary { peer, link, data } => {
                if self.is_current(peer, link) {
                    let input = node::Input::Frame {
                        from: peer,
                        data: &data,
                    };
                    self.node.handle(input, now);
                }
            }
            Event::Writable { peer, link } => {
                let cap = &mut self.upload_cap;
                let drained = self
                    .links
                    .get_mut(&peer)
                    .filter(|l| l.serial() == link)
                    .is_some_and(|l| l.pump(cap, now));
                if drained {
                    self.node.handle(node::Input::Drained(peer), now);
                }
            }
            Event::Track { peer, link, stream } => {
                if let Some(l) = self.current_link(peer, link) {
                    l.watch_remote_stream(&stream);
                    self.on_remote_track(peer, &stream);
                }
            }
            Event::TrackRemoved { peer, link, stream } => {
                if self.is_current(peer, link) {
                    self.on_remote_track_removed(peer, &stream);
                }
            }
            Event::PieceRead { read, data } => {
                let data = data.as_deref();
                self.node.handle(node::Input::PieceRead { read, data }, now);
            }
            Event::PieceWritten {
                id,
                piece,
                from,
                result,
            } => self.on_piece_written(id, piece, from, result),
            Event::StorageFailed { id, error } => self.fail_download(id, error),
            Event::SpaceChecked { id, free } => self.on_space_checked(id, free),
            Event::Finished { id, result } => self.on_finished(id, result),
            Event::Restored { id, have, blob } => self.on_restored(id, have, blob),
        }
        self.flush();
    }

    fn is_current(&self, peer: PeerId, serial: u32) -> bool {
        self.links.get(&peer).is_some_and(|l| l.serial() == serial)
    }

    fn current_link(&mut self, peer: PeerId, serial: u32) -> Option<&mut PeerLink> {
        self.links.get_mut(&peer).filter(|l| l.serial() == serial)
    }

    // ---- the node's outputs ----

    /// Carries out everything the node has decided so far.
    pub(crate) fn flush(&mut self) {
        while let Some(output) = self.node.poll_output() {
            self.carry_out(output);
        }
    }

    fn carry_out(&mut self, output: Output) {
        let now = now_ms();
        match output {
            Output::Connect {
                peer,
                offerer,
                polite,
            } => self.connect_to(peer, offerer, polite),
            Output::Disconnect(peer) => {
                if let Some(mut link) = self.links.remove(&peer) {
                    link.close();
                    self.media_peer_gone(peer);
                }
            }
            Output::ToServer { to, data } => {
                let sent = self
                    .socket
                    .as_ref()
                    .is_some_and(|socket| socket.send(&ClientMsg::signal(to, &data)));
                if !sent {
                    self.node
                        .handle(node::Input::ServerRefused { to, data }, now);
                }
            }
            Output::Send { to, frame } => {
                let cap = &mut self.upload_cap;
                let drained = self
                    .links
                    .get_mut(&to)
                    .is_some_and(|link| link.send_frame(frame, cap, now));
                if drained {
                    self.node.handle(node::Input::Drained(to), now);
                }
            }
            Output::Signal { from, data } => match self.links.get(&from) {
                Some(link) => link.on_signal(data),
                None => debug!(peer = %from, "signal for a connection that is gone"),
            },
            Output::ReadPiece(read) => self.read_piece(read),
            Output::WritePiece(write) => self.write_piece(write),
            Output::Withdraw { to, id, piece } => {
                let cap = &mut self.upload_cap;
                let drained = self
                    .links
                    .get_mut(&to)
                    .is_some_and(|link| link.withdraw(id, piece, cap, now));
                if drained {
                    self.node.handle(node::Input::Drained(to), now);
                }
            }
            Output::ReconnectIn(delay) => {
                self.socket = None;
                self.schedule_reconnect(delay);
            }
            Output::Welcomed { ice_servers, .. } => {
                self.set_ice_servers(&ice_servers);
                if let Some(waiter) = self.join_waiter.take() {
                    self.notify(Notice::Settle(waiter.resolve, JsValue::NULL));
                }
            }
            Output::JoinFailed { code, message } => {
                if let Some(waiter) = self.join_waiter.take() {
                    let err = match code {
                        Some(code) => ClientError::Refused { code, message },
                        None => ClientError::ServerUnreachable {
                            url: self.url.clone(),
                            reason: message,
                        },
                    };
                    self.notify(Notice::Settle(waiter.reject, err.into()));
                }
            }
            Output::Event(event) => self.on_node_event(event),
        }
    }

    /// Tells the page what the node reports.
    fn on_node_event(&mut self, event: node::Event) {
        match event {
            node::Event::Server(state) => {
                info!(state = state.as_str(), "signalling server");
                self.emit("server", vec![state.as_str().into()]);
            }
            node::Event::PeerJoined(peer) => {
                self.media_peer_open(peer);
                self.emit("peer-joined", vec![peer.to_string().into()]);
            }
            node::Event::PeerLeft(peer) => self.emit("peer-left", vec![peer.to_string().into()]),
            node::Event::Message { from, data } => {
                let data = js_sys::Uint8Array::from(data.as_slice());
                self.emit("message", vec![from.to_string().into(), data.into()]);
            }
            node::Event::FileFound(info) => {
                self.emit("file", vec![crate::files::file_object(&info)]);
            }
            node::Event::FilesChanged => self.emit("files", Vec::new()),
            node::Event::ManifestReady { id, manifest } => self.on_manifest_ready(id, &manifest),
            node::Event::Progress { id, progress } => {
                if let Some(download) = self.downloads.get(&id).cloned() {
                    self.notify(Notice::Progress(download, progress));
                }
            }
            node::Event::Completed(id) => self.finish_download(id),
            node::Event::Cancelled(id) => {
                self.fail_download(id, ClientError::Cancelled(id.to_string()));
            }
            node::Event::BadPeer { id, peer, reason } => {
                if let Some(download) = self.downloads.get(&id).cloned() {
                    self.notify(Notice::BadPeer(download, peer, reason));
                }
            }
            node::Event::PeerRejected { peer, reason } => {
                self.emit(
                    "peer-rejected",
                    vec![peer.to_string().into(), reason.code().into()],
                );
            }
        }
    }

    fn connect_to(&mut self, peer: PeerId, offerer: bool, polite: bool) {
        let Some(me) = self.node.me() else { return };
        debug!(%peer, offerer, polite, "connecting");
        self.link_serial += 1;
        let created = PeerLink::new(
            &self.inbox,
            me,
            peer,
            self.link_serial,
            offerer,
            &self.rtc_config,
        );
        match created {
            // Replacing an old link closes it.
            Ok(link) => drop(self.links.insert(peer, link)),
            Err(err) => {
                warn!(%peer, error = %describe(&err), "cannot create a peer connection");
                self.node.handle(node::Input::ChannelClosed(peer), now_ms());
            }
        }
    }

    /// Tries the server again after `delay` milliseconds.
    fn schedule_reconnect(&mut self, delay: u64) {
        debug!(delay, "reconnecting to the signalling server");
        let inbox = self.inbox.clone();
        let delay = delay.min(i32::MAX as u64) as i32;
        match Timeout::start(delay, move || inbox.post(Event::Reconnect)) {
            Ok(timer) => self.retry = Some(timer),
            Err(err) => warn!(error = %describe(&err), "cannot start the reconnection timer"),
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

    /// The links, for media.
    pub(crate) fn links_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut PeerLink)> {
        self.links.iter_mut()
    }

    pub(crate) fn link_mut(&mut self, peer: PeerId) -> Option<&mut PeerLink> {
        self.links.get_mut(&peer)
    }
}
