//! A client's view of its room: which peer connections to open, in which role, and when the
//! application is told that a peer joined or left.
//!
//! The signalling connection and the data channels report what happened through the `on_*`
//! methods; each returns the [`Action`]s the shell must carry out. The rules:
//! - On `welcome`, the newcomer offers to every peer already in the room (it creates the
//!   `swarm` data channel); on `joined`, the others prepare to answer.
//! - A peer is *open* once its data channel is open. The application hears
//!   [`Event::PeerJoined`] at that moment and [`Event::PeerLeft`] once when it ends, whatever
//!   ends it first: a `left` from the server, the channel closing, or the connection failing.
//! - A peer that closed is forgotten; if it shows up again (a new `joined`), it starts afresh.

use std::collections::BTreeMap;

use swarm_protocol::PeerId;

use crate::negotiation::is_polite;

/// Something the application is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The data channel to this peer is open.
    PeerJoined(PeerId),
    /// The peer is gone (it was open before).
    PeerLeft(PeerId),
}

/// Something the I/O shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create a peer connection to `peer`. The `offerer` creates the `swarm` data channel,
    /// which starts the negotiation; the other side waits for the offer.
    Connect {
        /// The remote peer.
        peer: PeerId,
        /// Whether this side creates the data channel and the first offer.
        offerer: bool,
        /// Whether this side is polite in perfect negotiation.
        polite: bool,
    },
    /// Close the connection to `peer` and release everything it holds.
    Disconnect(PeerId),
    /// Tell the application.
    Emit(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
}

/// The client's mesh state.
#[derive(Debug, Default)]
pub struct Mesh {
    me: Option<PeerId>,
    peers: BTreeMap<PeerId, Phase>,
}

impl Mesh {
    /// A mesh that has not yet been welcomed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Our own id, once welcomed.
    pub fn me(&self) -> Option<PeerId> {
        self.me
    }

    /// The peers whose data channel is open, in id order.
    pub fn open_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .filter(|(_, phase)| **phase == Phase::Open)
            .map(|(id, _)| *id)
    }

    /// Whether the data channel to `peer` is open.
    pub fn is_open(&self, peer: PeerId) -> bool {
        self.peers.get(&peer) == Some(&Phase::Open)
    }

    /// Whether a connection to `peer` exists (connecting or open).
    pub fn knows(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// The server welcomed us as `me`; `peers` were already in the room.
    pub fn on_welcome(&mut self, me: PeerId, peers: &[PeerId]) -> Vec<Action> {
        self.me = Some(me);
        peers
            .iter()
            .filter(|peer| **peer != me)
            .filter_map(|peer| self.connect(*peer, true))
            .collect()
    }

    /// The server says `peer` joined: it will offer to us.
    pub fn on_joined(&mut self, peer: PeerId) -> Vec<Action> {
        self.connect(peer, false).into_iter().collect()
    }

    /// A `signal` arrived from `peer`. If we have no connection to it (its `joined` was
    /// missed), one is created as the answering side so the offer is not lost.
    pub fn on_signal_from(&mut self, peer: PeerId) -> Vec<Action> {
        if self.knows(peer) {
            return Vec::new();
        }
        self.connect(peer, false).into_iter().collect()
    }

    /// The server says `peer` left.
    pub fn on_left(&mut self, peer: PeerId) -> Vec<Action> {
        self.close(peer)
    }

    /// The data channel to `peer` opened.
    pub fn on_channel_open(&mut self, peer: PeerId) -> Vec<Action> {
        match self.peers.get_mut(&peer) {
            Some(phase @ Phase::Connecting) => {
                *phase = Phase::Open;
                vec![Action::Emit(Event::PeerJoined(peer))]
            }
            _ => Vec::new(),
        }
    }

    /// The data channel to `peer` closed, or its connection failed.
    pub fn on_channel_closed(&mut self, peer: PeerId) -> Vec<Action> {
        self.close(peer)
    }

    /// We are leaving the room: close every connection (the application is not told about
    /// each peer; it asked to leave).
    pub fn leave(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.peers)
            .into_keys()
            .map(Action::Disconnect)
            .collect()
    }

    fn connect(&mut self, peer: PeerId, offerer: bool) -> Option<Action> {
        let me = self.me?;
        if peer == me || self.peers.contains_key(&peer) {
            return None;
        }
        self.peers.insert(peer, Phase::Connecting);
        Some(Action::Connect {
            peer,
            offerer,
            polite: is_polite(me, peer),
        })
    }

    fn close(&mut self, peer: PeerId) -> Vec<Action> {
        match self.peers.remove(&peer) {
            None => Vec::new(),
            Some(Phase::Connecting) => vec![Action::Disconnect(peer)],
            Some(Phase::Open) => vec![
                Action::Disconnect(peer),
                Action::Emit(Event::PeerLeft(peer)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    fn welcomed(me: u8, peers: &[u8]) -> (Mesh, Vec<Action>) {
        let mut mesh = Mesh::new();
        let peers: Vec<PeerId> = peers.iter().map(|p| id(*p)).collect();
        let actions = mesh.on_welcome(id(me), &peers);
        (mesh, actions)
    }

    #[test]
    fn the_newcomer_offers_to_everyone_in_welcome() {
        let (_, actions) = welcomed(5, &[1, 9]);
        assert_eq!(
            actions,
            vec![
                Action::Connect {
                    peer: id(1),
                    offerer: true,
                    polite: false
                },
                Action::Connect {
                    peer: id(9),
                    offerer: true,
                    polite: true
                },
            ]
        );
    }

    #[test]
    fn existing_members_answer_a_newcomer() {
        let (mut mesh, _) = welcomed(5, &[]);
        assert_eq!(
            mesh.on_joined(id(7)),
            vec![Action::Connect {
                peer: id(7),
                offerer: false,
                polite: true
            }]
        );
        assert!(
            mesh.on_joined(id(7)).is_empty(),
            "a repeated joined is ignored"
        );
    }

    #[test]
    fn nothing_happens_before_welcome() {
        let mut mesh = Mesh::new();
        assert!(mesh.on_joined(id(1)).is_empty());
        assert!(mesh.on_signal_from(id(1)).is_empty());
    }

    #[test]
    fn a_signal_from_an_unknown_peer_creates_an_answering_connection() {
        let (mut mesh, _) = welcomed(5, &[]);
        assert_eq!(
            mesh.on_signal_from(id(2)),
            vec![Action::Connect {
                peer: id(2),
                offerer: false,
                polite: false
            }]
        );
        assert!(mesh.on_signal_from(id(2)).is_empty());
    }

    #[test]
    fn joined_and_left_are_told_once_each() {
        let (mut mesh, _) = welcomed(5, &[1]);
        assert!(mesh.open_peers().next().is_none());
        assert_eq!(
            mesh.on_channel_open(id(1)),
            vec![Action::Emit(Event::PeerJoined(id(1)))]
        );
        assert!(mesh.on_channel_open(id(1)).is_empty());
        assert_eq!(mesh.open_peers().collect::<Vec<_>>(), vec![id(1)]);
        assert_eq!(
            mesh.on_left(id(1)),
            vec![
                Action::Disconnect(id(1)),
                Action::Emit(Event::PeerLeft(id(1)))
            ]
        );
        assert!(mesh.on_channel_closed(id(1)).is_empty());
        assert!(!mesh.knows(id(1)));
    }

    #[test]
    fn a_peer_that_never_opened_leaves_silently() {
        let (mut mesh, _) = welcomed(5, &[1]);
        assert_eq!(
            mesh.on_channel_closed(id(1)),
            vec![Action::Disconnect(id(1))]
        );
    }

    #[test]
    fn leave_disconnects_everyone_without_events() {
        let (mut mesh, _) = welcomed(5, &[1, 2]);
        mesh.on_channel_open(id(1));
        assert_eq!(
            mesh.leave(),
            vec![Action::Disconnect(id(1)), Action::Disconnect(id(2))]
        );
        assert!(mesh.open_peers().next().is_none());
    }

    #[derive(Debug, Clone)]
    enum Input {
        Joined(u8),
        Left(u8),
        Signal(u8),
        Open(u8),
        Closed(u8),
    }

    fn input() -> impl Strategy<Value = Input> {
        let p = 0..6u8;
        prop_oneof![
            p.clone().prop_map(Input::Joined),
            p.clone().prop_map(Input::Left),
            p.clone().prop_map(Input::Signal),
            p.clone().prop_map(Input::Open),
            p.prop_map(Input::Closed),
        ]
    }

    proptest! {
        /// Whatever order events arrive in, the application sees an alternating
        /// joined/left sequence per peer, `open_peers` is exactly the peers it was told
        /// joined and not yet left, and we never connect to ourselves.
        #[test]
        fn events_alternate_and_match_open_peers(inputs in proptest::collection::vec(input(), 0..100)) {
            let (mut mesh, _) = welcomed(0, &[1, 2]);
            let mut told_open = BTreeSet::new();
            let mut connections = BTreeSet::from([id(1), id(2)]);
            for input in inputs {
                let actions = match input {
                    Input::Joined(p) => mesh.on_joined(id(p)),
                    Input::Left(p) => mesh.on_left(id(p)),
                    Input::Signal(p) => mesh.on_signal_from(id(p)),
                    Input::Open(p) => mesh.on_channel_open(id(p)),
                    Input::Closed(p) => mesh.on_channel_closed(id(p)),
                };
                for action in actions {
                    match action {
                        Action::Connect { peer, .. } => {
                            prop_assert_ne!(peer, id(0));
                            prop_assert!(connections.insert(peer), "connected twice to {}", peer);
                        }
                        Action::Disconnect(peer) => prop_assert!(connections.remove(&peer)),
                        Action::Emit(Event::PeerJoined(peer)) => prop_assert!(told_open.insert(peer)),
                        Action::Emit(Event::PeerLeft(peer)) => prop_assert!(told_open.remove(&peer)),
                    }
                }
                prop_assert_eq!(mesh.open_peers().collect::<BTreeSet<_>>(), told_open.clone());
                prop_assert!(told_open.is_subset(&connections));
            }
        }
    }
}
