//! A room member's side of signalling, shared by the browser client and the native peer.
//!
//! [`Client`] holds what one joined room needs beyond the peer connections themselves: our
//! key, the partial [`Mesh`], the [`SignalRelay`] used while the server is away, the resume
//! token, and the state of the link to the server with its reconnection [`Backoff`]. The I/O
//! shell feeds it server frames, channel events, relay frames and ticks, and carries out the
//! [`Effect`]s that come back; it never decides anything about the room itself.

use swarm_protocol::wire::Relay;
use swarm_protocol::{ErrorCode, IceServer, PeerId, RoomName, ServerMsg, SignalData};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::identity::Identity;
use crate::mesh::{Action, Event, Mesh};
use crate::relay::{Incoming, SignalRelay};

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
}

/// One member's view of its room and of the server link.
#[derive(Debug)]
pub struct Client {
    room: RoomName,
    identity: Identity,
    mesh: Mesh,
    relay: SignalRelay,
    resume: Option<String>,
    server: ServerState,
    backoff: Backoff,
    welcomed: bool,
    left: bool,
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
        Self {
            room,
            identity,
            mesh: Mesh::with_max_peers(max_peers),
            relay,
            resume: None,
            server: ServerState::Connected,
            backoff: Backoff::default(),
            welcomed: false,
            left: false,
        }
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

    /// The query to append to the server's room URL (without `?`): our key's proof for
    /// `now_secs` (Unix time) and, after the first `welcome`, our resume token.
    pub fn server_query(&self, now_secs: u64) -> String {
        let mut query = self.identity.join_proof(&self.room, now_secs).query();
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
                self.set_server(ServerState::Connected, &mut effects);
                effects
            }
            ServerMsg::Joined { id } => mesh_effects(self.mesh.on_joined(id)),
            ServerMsg::Left { id } => mesh_effects(self.mesh.on_left(id)),
            ServerMsg::Signal { from, data } => match SignalData::parse(&data) {
                Ok(data) => self.on_signal(from, data),
                Err(err) => {
                    warn!(peer = %from, error = %err, "ignoring unreadable signal data");
                    Vec::new()
                }
            },
            ServerMsg::Error { code, message } => {
                if !self.welcomed {
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
        if self.server == ServerState::Connected {
            return vec![Effect::ToServer {
                to,
                data: data.clone(),
            }];
        }
        self.relay_signal(to, data)
    }

    /// Sends a signal to `to` through the mesh (the server connection failed to take it).
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
        let neighbours = self.open_peers();
        match self.relay.on_frame(from, relay, &neighbours) {
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
            Incoming::Drop(reason) => {
                debug!(%from, ?reason, "dropped a relayed signal");
                Vec::new()
            }
        }
    }

    /// A signal from `from`, through the server or the mesh.
    fn on_signal(&mut self, from: PeerId, data: SignalData) -> Vec<Effect> {
        let mut effects = mesh_effects(self.mesh.on_signal_from(from));
        effects.push(Effect::Signal { from, data });
        effects
    }

    /// The `swarm` channel to `peer` opened.
    pub fn on_channel_open(&mut self, peer: PeerId) -> Vec<Effect> {
        mesh_effects(self.mesh.on_channel_open(peer))
    }

    /// The connection to `peer` closed or failed (or could not be created).
    pub fn on_channel_closed(&mut self, peer: PeerId) -> Vec<Effect> {
        mesh_effects(self.mesh.on_channel_closed(peer))
    }

    /// Periodic upkeep of the partial mesh.
    pub fn on_tick(&mut self) -> Vec<Effect> {
        mesh_effects(self.mesh.on_tick())
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
        assert!(query.contains("&resume="), "{query}");
        assert!(query.ends_with(".tag%2B%2F%3D"), "{query}");
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

    #[test]
    fn leave_closes_everything_once() {
        let mut a = client(1);
        a.on_server_frame(&welcome(&a, &[peer(2)]));
        assert_eq!(a.leave(), vec![Effect::Disconnect(peer(2))]);
        assert!(a.leave().is_empty());
        assert!(a.has_left());
        assert!(a.on_server_closed(1006, "", 0.0).is_empty());
    }
}
