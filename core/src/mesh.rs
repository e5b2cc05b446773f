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
//!   In a full mesh, a connection that fails while the server still counts the peer in the
//!   room (no `left` came) is tried again: after [`REDIAL_MS`], by the side with the
//!   smaller id (so the two never offer at once), up to [`MAX_REDIALS`] times in a row.
//!
//! # Full and partial mesh
//! By default every peer connects to every other (a full mesh). With a cap
//! ([`Mesh::with_max_peers`]), a large room becomes a partial mesh: a newcomer offers to at
//! most `max_peers` of the peers in `welcome` (three quarters of them the closest peer of
//! each bucket of its Kademlia table, closest bucket first, so that routing by XOR distance
//! always finds a closer neighbour ([`crate::dht`]); the rest chosen at random, the long
//! random links that keep the overlay in one piece under churn: with closest-only choices a
//! simulated room of 1,000 fell apart along id prefixes), the others only note that it
//! exists, and each peer answers offers while it has fewer than twice the cap, so a newcomer
//! always finds room. Whenever a peer has fewer connections than the cap (a neighbour left),
//! [`Mesh::on_tick`] dials another member it knows of, through the server, or through the
//! mesh when the server is away ([`crate::relay`]): the closest member of a bucket it has no
//! connection in, otherwise one at random. [`Mesh::dial`] opens a connection on request.
//!
//! Two peers must never offer to each other at the same moment: both would create the `swarm`
//! data channel, and one of the two channels would be closed, taking the connection with it.
//! So the upkeep only dials members with a larger id than ours (XOR closeness is symmetric, so
//! both would otherwise pick each other), and only once they have been known for
//! [`SETTLE_MS`] (a newcomer offers to the peers in its `welcome` itself).
//!
//! # Time
//! Milliseconds on the caller's monotonic clock. The mesh's clock is the latest time it was
//! given ([`Mesh::advance`], [`Mesh::on_tick`]); the methods without a time argument act at
//! that time, so a caller advances the clock before it hands in what happened.

use std::collections::{BTreeMap, BTreeSet};

use swarm_protocol::PeerId;

use crate::kademlia::{Distance, Key};
use crate::negotiation::is_polite;

/// How long a member must have been known before the upkeep of a partial mesh may dial it.
pub const SETTLE_MS: u64 = 2_000;

/// How long a connection may take to open its channel before it is given up: the other
/// side may have ignored our offer (it was full) or left.
/// The member is not forgotten, so it may be dialled again.
pub const CONNECT_TIMEOUT_MS: u64 = 60_000;

/// How long after a failed connection of a full mesh it is dialled again: long enough for
/// the other side to notice the failure too.
pub const REDIAL_MS: u64 = 5_000;

/// A provider answers offers for a content it provides while it has fewer than this many
/// times the cap of connections ([`Mesh::on_offer_for_content`]); other offers, while fewer
/// than twice the cap.
pub const PROVIDER_ANSWERS: usize = 3;

/// How long a member that replied busy to our offer is not dialled again by the upkeep.
pub const BUSY_MS: u64 = 30_000;

/// Peers banned at once ([`Mesh::ban`]); past it, the ban that ends first is lifted.
pub const MAX_BANNED: usize = 1024;

/// Members heard of only through the mesh (gossip, relayed signals), not listed by the
/// server, kept at once: a signed record needs only a fresh key, so these are not trusted
/// to size the room.
pub const MAX_HEARD: usize = 256;

/// Times in a row a failed connection of a full mesh is dialled again before the peer is
/// forgotten (it may have gone while the server was away).
pub const MAX_REDIALS: u32 = 3;

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
    /// Being made since this time.
    Connecting(u64),
    Open,
}

/// The client's mesh state.
#[derive(Debug, Default)]
pub struct Mesh {
    me: Option<PeerId>,
    peers: BTreeMap<PeerId, Phase>,
    /// Every other member of the room we know of, connected or not, with the time at which
    /// we learned of it.
    members: BTreeMap<PeerId, u64>,
    /// Those of `members` the server listed (`welcome`, `joined`); the others were heard of
    /// through the mesh, and at most [`MAX_HEARD`] of them are kept.
    listed: BTreeSet<PeerId>,
    /// The latest time we were given (ms).
    now: u64,
    /// The cap on connections we open ourselves; `None` for a full mesh.
    max_peers: Option<usize>,
    /// Full mesh: members whose connection failed without a `left`, with the time it failed
    /// at and how many times in a row it has.
    lost: BTreeMap<PeerId, (u64, u32)>,
    /// Partial mesh: members that replied busy to our offer, with the time they did.
    busy: BTreeMap<PeerId, u64>,
    /// Peers we do not connect to, with the time the ban ends ([`Mesh::ban`]).
    banned: BTreeMap<PeerId, u64>,
}

impl Mesh {
    /// A full mesh that has not yet been welcomed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A partial mesh: at most `max_peers` connections opened by us, and at most twice that
    /// in all (`None`: a full mesh).
    pub fn with_max_peers(max_peers: Option<usize>) -> Self {
        Self {
            max_peers: max_peers.map(|cap| cap.max(1)),
            ..Self::default()
        }
    }

    /// The members of the room we know of, other than us, connected or not.
    pub fn members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members.keys().copied()
    }

    /// Whether the server lists `peer` as a member (`welcome`, `joined`, and no `left`
    /// since).
    pub fn is_listed(&self, peer: PeerId) -> bool {
        self.listed.contains(&peer)
    }

    /// How many members the server listed (`welcome`, `joined`, and no `left` since): the
    /// room's size as far as can be trusted.
    pub fn listed_count(&self) -> usize {
        self.listed.len()
    }

    /// Whether `peer` is a member of the room as far as we know.
    pub fn is_member(&self, peer: PeerId) -> bool {
        self.members.contains_key(&peer)
    }

    /// Connections, open or being made.
    pub fn connection_count(&self) -> usize {
        self.peers.len()
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

    /// The server welcomed us as `me`; `peers` were already in the room. Also after a
    /// reconnection with the same id: peers we are connected to are kept, and we offer to
    /// those we are not (within the cap).
    pub fn on_welcome(&mut self, me: PeerId, peers: &[PeerId]) -> Vec<Action> {
        if self.me.is_some_and(|old| old != me) {
            // A new identity: nobody knows us under the old one any more.
            let mut actions = self.reset();
            self.me = Some(me);
            actions.extend(self.on_welcome(me, peers));
            return actions;
        }
        self.me = Some(me);
        for peer in peers.iter().copied().filter(|peer| *peer != me) {
            self.list(peer);
        }
        let mut candidates: Vec<PeerId> = peers
            .iter()
            .copied()
            .filter(|peer| *peer != me && !self.peers.contains_key(peer))
            .collect();
        let room = match self.max_peers {
            Some(cap) => cap.saturating_sub(self.peers.len()),
            None => candidates.len(),
        };
        if room < candidates.len() {
            // The closest peer of each bucket, closest bucket first (a Kademlia table's
            // shape), for three quarters of the room; the rest at random.
            let structured = room - room / 4;
            let mut chosen = one_per_bucket(me, &candidates);
            chosen.truncate(structured);
            let mut rest: Vec<PeerId> = candidates
                .into_iter()
                .filter(|peer| !chosen.contains(peer))
                .collect();
            rest.sort_by_key(|peer| shuffle(0, me, *peer));
            rest.truncate(room - chosen.len());
            chosen.extend(rest);
            candidates = chosen;
        }
        candidates
            .into_iter()
            .filter_map(|peer| self.connect(peer, true))
            .collect()
    }

    /// The server says `peer` joined: in a full mesh it will offer to us, in a partial mesh
    /// it may.
    pub fn on_joined(&mut self, peer: PeerId) -> Vec<Action> {
        if self.me.is_none() || self.me == Some(peer) {
            return Vec::new();
        }
        self.list(peer);
        if self.max_peers.is_some() {
            return Vec::new();
        }
        self.connect(peer, false).into_iter().collect()
    }

    /// A `signal` arrived from `peer`. If we have no connection to it (its `joined` was
    /// missed, or this is a partial mesh), one is created as the answering side so the offer
    /// is not lost, unless we have twice the cap of connections already.
    pub fn on_signal_from(&mut self, peer: PeerId) -> Vec<Action> {
        self.answer_within(peer, 2)
    }

    /// An offer from `peer` that dials us for a content we provide ([`Mesh::dial_provider`]
    /// on its side): answered like [`Mesh::on_signal_from`], but while we have fewer than
    /// [`PROVIDER_ANSWERS`] times the cap, so a provider whose connections are full still
    /// serves the peers that found it.
    pub fn on_offer_for_content(&mut self, peer: PeerId) -> Vec<Action> {
        self.answer_within(peer, PROVIDER_ANSWERS)
    }

    /// Creates the answering side of a connection to `peer`, unless we know it already or
    /// have `caps` times the cap of connections.
    fn answer_within(&mut self, peer: PeerId, caps: usize) -> Vec<Action> {
        if self.knows(peer) || self.me.is_none() || self.me == Some(peer) {
            return Vec::new();
        }
        if self
            .max_peers
            .is_some_and(|cap| self.peers.len() >= cap.saturating_mul(caps))
        {
            return Vec::new();
        }
        self.learn(peer);
        self.connect(peer, false).into_iter().collect()
    }

    /// The server says `peer` left.
    pub fn on_left(&mut self, peer: PeerId) -> Vec<Action> {
        self.members.remove(&peer);
        self.listed.remove(&peer);
        self.lost.remove(&peer);
        self.busy.remove(&peer);
        self.close(peer)
    }

    /// Opens a connection to member `peer` as the offering side (an application asked),
    /// within twice the cap. `None` if `peer` is not a member we know; no actions if it is
    /// connected already or there is no room.
    pub fn dial(&mut self, peer: PeerId) -> Option<Vec<Action>> {
        if !self.members.contains_key(&peer) {
            return None;
        }
        if self
            .max_peers
            .is_some_and(|cap| self.peers.len() >= cap.saturating_mul(2))
        {
            return Some(Vec::new());
        }
        Some(self.connect(peer, true).into_iter().collect())
    }

    /// Opens a connection to member `peer` whatever the cap: a download needs this provider
    /// and none of our neighbours has the content. (The provider answers while it has fewer
    /// than [`PROVIDER_ANSWERS`] times its cap, if the offer says what it is for:
    /// [`Mesh::on_offer_for_content`].) `None` if `peer` is not a member we know.
    pub fn dial_provider(&mut self, peer: PeerId) -> Option<Vec<Action>> {
        if !self.members.contains_key(&peer) {
            return None;
        }
        Some(self.connect(peer, true).into_iter().collect())
    }

    /// Starts the connection to `peer` over if it has been trying to open for `max_ms` or
    /// more (the other side may have ignored our offer while it was full, or be waiting for
    /// an answer of ours that was lost): close it and offer again. No actions otherwise.
    pub fn redial_if_stale(&mut self, peer: PeerId, max_ms: u64) -> Vec<Action> {
        let now = self.now;
        match self.peers.get(&peer) {
            Some(Phase::Connecting(since)) if now >= since + max_ms => {
                let mut actions = self.close(peer);
                actions.extend(self.connect(peer, true));
                actions
            }
            _ => Vec::new(),
        }
    }

    /// Moves the clock to `now` (ms; it never goes back).
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// Periodic upkeep at `now` (ms): gives up connections that did not open within
    /// [`CONNECT_TIMEOUT_MS`], and in a partial mesh below the cap dials one more member we
    /// know of and are not connected to (at random). A full mesh needs no dialling.
    pub fn on_tick(&mut self, now: u64) -> Vec<Action> {
        self.advance(now);
        let now = self.now;
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, phase)| {
                matches!(phase, Phase::Connecting(since) if now >= since + CONNECT_TIMEOUT_MS)
            })
            .map(|(peer, _)| *peer)
            .collect();
        self.busy.retain(|_, since| now < *since + BUSY_MS);
        self.banned.retain(|_, until| now < *until);
        let mut actions: Vec<Action> = Vec::new();
        for peer in stale {
            if self.lost.contains_key(&peer) {
                self.note_lost(peer);
            }
            actions.extend(self.close(peer));
        }
        let Some(me) = self.me else {
            return actions;
        };
        let Some(cap) = self.max_peers else {
            // Full mesh: dial again the lost connections that are ours to dial.
            let due: Vec<PeerId> = self
                .lost
                .iter()
                .filter(|(peer, (since, _))| {
                    **peer > me && !self.peers.contains_key(peer) && now >= since + REDIAL_MS
                })
                .map(|(peer, _)| *peer)
                .collect();
            actions.extend(due.into_iter().filter_map(|peer| self.connect(peer, true)));
            return actions;
        };
        if self.peers.len() >= cap {
            return actions;
        }
        let eligible: Vec<PeerId> = self
            .dialable()
            .filter(|peer| {
                *peer > me
                    && self
                        .members
                        .get(peer)
                        .is_some_and(|learned| now >= learned + SETTLE_MS)
            })
            .collect();
        // A bucket we have no connection in comes first (so that routing by XOR distance
        // always finds a closer neighbour, [`crate::dht`]); otherwise anyone, at random.
        let next = self.pick(me, &eligible);
        actions.extend(next.and_then(|peer| self.connect(peer, true)));
        actions
    }

    /// `peer` replied busy to our offer (its connections are full): give the connection up
    /// and, below the cap, dial another member at once (one not busy lately; the closest of
    /// a bucket we have no connection in, otherwise one at random). Unlike the upkeep, this
    /// may dial a smaller id: `peer` was ours to dial, and a newcomer whose every offer went
    /// to a full peer would otherwise wait for someone to dial it.
    pub fn on_busy(&mut self, peer: PeerId) -> Vec<Action> {
        let (Some(me), Some(Phase::Connecting(_))) = (self.me, self.peers.get(&peer)) else {
            return Vec::new();
        };
        self.busy.insert(peer, self.now);
        let mut actions = self.close(peer);
        if self.max_peers.is_some_and(|cap| self.peers.len() < cap) {
            let eligible: Vec<PeerId> = self.dialable().collect();
            actions.extend(
                self.pick(me, &eligible)
                    .and_then(|next| self.connect(next, true)),
            );
        }
        actions
    }

    /// Members we are not connected to and that have not replied busy lately.
    fn dialable(&self) -> impl Iterator<Item = PeerId> + '_ {
        let now = self.now;
        self.members
            .keys()
            .filter(move |peer| {
                !self.peers.contains_key(peer)
                    && self
                        .busy
                        .get(peer)
                        .is_none_or(|since| now >= since + BUSY_MS)
            })
            .copied()
    }

    /// Of `eligible`, the closest member of a bucket we have no connection in, otherwise one
    /// at random.
    fn pick(&self, me: PeerId, eligible: &[PeerId]) -> Option<PeerId> {
        let covered: Vec<u32> = self.peers.keys().map(|peer| bucket(me, *peer)).collect();
        one_per_bucket(me, eligible)
            .into_iter()
            .find(|peer| !covered.contains(&bucket(me, *peer)))
            .or_else(|| {
                eligible
                    .iter()
                    .copied()
                    .min_by_key(|peer| shuffle(self.now, me, *peer))
            })
    }

    /// The data channel to `peer` opened.
    pub fn on_channel_open(&mut self, peer: PeerId) -> Vec<Action> {
        match self.peers.get_mut(&peer) {
            Some(phase @ Phase::Connecting(_)) => {
                *phase = Phase::Open;
                self.lost.remove(&peer);
                vec![Action::Emit(Event::PeerJoined(peer))]
            }
            _ => Vec::new(),
        }
    }

    /// The data channel to `peer` closed, or its connection failed. In a partial mesh it is
    /// no longer counted as a member either (it most likely left; the server tells us if it
    /// comes back); in a full mesh it stays one, to be dialled again, until `left` comes or
    /// [`MAX_REDIALS`] attempts in a row failed.
    pub fn on_channel_closed(&mut self, peer: PeerId) -> Vec<Action> {
        if self.max_peers.is_none() && self.peers.contains_key(&peer) {
            self.note_lost(peer);
        } else {
            self.members.remove(&peer);
            self.listed.remove(&peer);
        }
        self.close(peer)
    }

    /// Counts one more failure of the connection to member `peer` in a row (full mesh).
    fn note_lost(&mut self, peer: PeerId) {
        let now = self.now;
        let failures = self.lost.get(&peer).map_or(1, |(_, n)| n + 1);
        if failures > MAX_REDIALS || !self.members.contains_key(&peer) {
            self.lost.remove(&peer);
            self.members.remove(&peer);
            self.listed.remove(&peer);
        } else {
            self.lost.insert(peer, (now, failures));
        }
    }

    /// Drops `peer` and keeps it out until `until` (ms): it is no longer a member we dial,
    /// and its offers are not answered (it broke a bound: [`crate::share::bounds`]). At most
    /// [`MAX_BANNED`] bans are kept.
    pub fn ban(&mut self, peer: PeerId, until: u64) -> Vec<Action> {
        if self.banned.len() >= MAX_BANNED && !self.banned.contains_key(&peer) {
            let first = self
                .banned
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(p, _)| *p);
            if let Some(first) = first {
                self.banned.remove(&first);
            }
        }
        self.banned.insert(peer, until);
        self.members.remove(&peer);
        self.listed.remove(&peer);
        self.lost.remove(&peer);
        self.busy.remove(&peer);
        self.close(peer)
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: PeerId) -> bool {
        self.banned
            .get(&peer)
            .is_some_and(|until| self.now < *until)
    }

    /// We are leaving the room: close every connection (the application is not told about
    /// each peer; it asked to leave).
    pub fn leave(&mut self) -> Vec<Action> {
        self.members.clear();
        self.listed.clear();
        self.lost.clear();
        self.busy.clear();
        std::mem::take(&mut self.peers)
            .into_keys()
            .map(Action::Disconnect)
            .collect()
    }

    /// Notes that `peer` is a member of the room (heard of through the mesh), so it may be
    /// dialled.
    pub fn learn(&mut self, peer: PeerId) {
        if self.me == Some(peer) {
            return;
        }
        if self.is_banned(peer) || self.members.contains_key(&peer) {
            return;
        }
        if self.members.len().saturating_sub(self.listed.len()) >= MAX_HEARD {
            return;
        }
        let now = self.now;
        self.members.insert(peer, now);
    }

    /// Notes that the server lists `peer` as a member of the room.
    fn list(&mut self, peer: PeerId) {
        if self.me == Some(peer) || self.is_banned(peer) {
            return;
        }
        let now = self.now;
        self.members.entry(peer).or_insert(now);
        self.listed.insert(peer);
    }

    /// Closes every connection and tells the application each open peer left: our identity
    /// changed, so they no longer know us.
    fn reset(&mut self) -> Vec<Action> {
        self.members.clear();
        self.listed.clear();
        self.lost.clear();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        peers
            .into_iter()
            .flat_map(|peer| self.close(peer))
            .collect()
    }

    fn connect(&mut self, peer: PeerId, offerer: bool) -> Option<Action> {
        let me = self.me?;
        if peer == me || self.peers.contains_key(&peer) || self.is_banned(peer) {
            return None;
        }
        self.peers.insert(peer, Phase::Connecting(self.now));
        Some(Action::Connect {
            peer,
            offerer,
            polite: is_polite(me, peer),
        })
    }

    fn close(&mut self, peer: PeerId) -> Vec<Action> {
        match self.peers.remove(&peer) {
            None => Vec::new(),
            Some(Phase::Connecting(_)) => vec![Action::Disconnect(peer)],
            Some(Phase::Open) => vec![
                Action::Disconnect(peer),
                Action::Emit(Event::PeerLeft(peer)),
            ],
        }
    }
}

/// The XOR distance between two ids ([`crate::kademlia`]'s, the one the structured layer
/// routes by).
fn xor(a: PeerId, b: PeerId) -> Distance {
    Key::from(a).distance(&Key::from(b))
}

/// The Kademlia bucket of `peer` seen from `me`: how many leading bits their ids share.
pub fn bucket(me: PeerId, peer: PeerId) -> u32 {
    xor(me, peer).leading_zeros()
}

/// The closest of `peers` to `me` in each bucket, the closest bucket first.
pub fn one_per_bucket(me: PeerId, peers: &[PeerId]) -> Vec<PeerId> {
    let mut closest: BTreeMap<std::cmp::Reverse<u32>, PeerId> = BTreeMap::new();
    for peer in peers {
        closest
            .entry(std::cmp::Reverse(bucket(me, *peer)))
            .and_modify(|best| {
                if xor(me, *peer) < xor(me, *best) {
                    *best = *peer;
                }
            })
            .or_insert(*peer);
    }
    closest.into_values().collect()
}

/// A pseudo-random sort key for `peer` as seen from `me`, different for every `round`: the
/// first bytes of SHA-256(`round`, `me`, `peer`). Core has no random generator; ids are
/// random already, and hashing them gives every peer its own order of the others.
fn shuffle(round: u64, me: PeerId, peer: PeerId) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(round.to_be_bytes())
        .chain_update(me.as_bytes())
        .chain_update(peer.as_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The period of the upkeep in these tests (ms), the one the node uses.
    const STEP: u64 = crate::node::UPKEEP_MS;

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    /// One upkeep, [`STEP`] after the mesh's clock.
    fn step(mesh: &mut Mesh) -> Vec<Action> {
        let now = mesh.now + STEP;
        mesh.on_tick(now)
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

    /// Runs the upkeep of `mesh` `n` times, [`STEP`] apart; returns the peers it dialled.
    fn tick(mesh: &mut Mesh, n: u64) -> Vec<PeerId> {
        let actions: Vec<Action> = (0..n).flat_map(|_| step(mesh)).collect();
        connected(&actions)
    }

    #[test]
    fn a_full_mesh_dials_a_failed_connection_again_while_the_peer_is_in_the_room() {
        let (mut mesh, _) = welcomed(5, &[1, 9]);
        mesh.on_channel_open(id(1));
        mesh.on_channel_open(id(9));
        assert_eq!(
            mesh.on_channel_closed(id(9)),
            vec![
                Action::Disconnect(id(9)),
                Action::Emit(Event::PeerLeft(id(9)))
            ]
        );
        mesh.on_channel_closed(id(1));
        assert!(mesh.is_member(id(9)) && mesh.is_member(id(1)));
        assert!(
            tick(&mut mesh, (REDIAL_MS / STEP) - 1).is_empty(),
            "too soon"
        );
        // Only the larger id is ours to dial; the smaller one dials us, and we answer.
        assert_eq!(tick(&mut mesh, 1), vec![id(9)]);
        assert!(tick(&mut mesh, (REDIAL_MS / STEP) * 2).is_empty());
        assert_eq!(connected(&mesh.on_signal_from(id(1))), vec![id(1)]);
        assert_eq!(
            mesh.on_channel_open(id(9)),
            vec![Action::Emit(Event::PeerJoined(id(9)))]
        );
    }

    #[test]
    fn a_full_mesh_gives_up_after_repeated_failures_or_a_left() {
        let (mut mesh, _) = welcomed(5, &[7, 9]);
        mesh.on_channel_closed(id(7));
        mesh.on_left(id(7));
        assert!(!mesh.is_member(id(7)));

        mesh.on_channel_closed(id(9));
        for _ in 1..MAX_REDIALS {
            assert_eq!(tick(&mut mesh, REDIAL_MS / STEP), vec![id(9)]);
            mesh.on_channel_closed(id(9));
        }
        assert_eq!(tick(&mut mesh, REDIAL_MS / STEP), vec![id(9)]);
        // The last attempt times out instead of failing: that counts too.
        let dialled = tick(&mut mesh, (CONNECT_TIMEOUT_MS / STEP) + (REDIAL_MS / STEP));
        assert!(dialled.is_empty(), "{dialled:?}");
        assert!(!mesh.is_member(id(9)));
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

    fn connected(actions: &[Action]) -> Vec<PeerId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_capped_newcomer_offers_to_the_closest_few_and_notes_the_rest() {
        let mut mesh = Mesh::with_max_peers(Some(2));
        let peers: Vec<PeerId> = [1, 2, 3, 4, 6].map(id).to_vec();
        // XOR distances from 0x07..: 6 -> 1, 4 -> 3, 3 -> 4, 2 -> 5, 1 -> 6.
        let actions = mesh.on_welcome(id(7), &peers);
        let dialed = connected(&actions);
        assert_eq!(dialed.len(), 2);
        assert_eq!(dialed[0], id(6), "the closest");
        assert!(
            peers.contains(&dialed[1]) && dialed[1] != id(6),
            "and one at random"
        );
        assert_eq!(mesh.members().count(), 5);
        assert!(
            mesh.on_joined(id(9)).is_empty(),
            "no eager answer when capped"
        );
        assert!(mesh.is_member(id(9)));
        assert!(step(&mut mesh).is_empty(), "at the cap");
        // A neighbour leaves: once settled, the tick dials the closest member with a larger
        // id than ours (only 9: the others would dial us).
        mesh.on_left(id(6));
        let (mut dialed, mut ticks) = (Vec::new(), 1);
        while dialed.is_empty() && ticks < 20 {
            dialed = connected(&step(&mut mesh));
            ticks += 1;
        }
        assert_eq!(dialed, vec![id(9)]);
        assert!(ticks >= (SETTLE_MS / STEP), "{ticks} ticks");
    }

    fn first_byte(b: u8) -> PeerId {
        let mut bytes = [0u8; 16];
        bytes[0] = b;
        bytes[15] = 1;
        PeerId::from_bytes(bytes)
    }

    #[test]
    fn a_capped_newcomer_covers_its_closest_buckets_and_the_upkeep_fills_empty_ones() {
        let me = PeerId::from_bytes([0; 16]);
        // Buckets (leading bits shared with 00..): 0x80, 0xc0 -> 0; 0x40 -> 1; 0x20, 0x21 ->
        // 2; 0x10 -> 3; 0x01 -> 7.
        let peers: Vec<PeerId> = [0x80, 0xc0, 0x40, 0x20, 0x21, 0x10, 0x01]
            .map(first_byte)
            .to_vec();
        let mut mesh = Mesh::with_max_peers(Some(4));
        let dialed = connected(&mesh.on_welcome(me, &peers));
        assert_eq!(dialed.len(), 4);
        // Three quarters: the closest of each bucket, closest bucket first.
        assert_eq!(&dialed[..3], &[0x01, 0x10, 0x20].map(first_byte));
        assert!(!dialed[..3].contains(&dialed[3]), "and one at random");
        // Two connections go: the upkeep dials a member of a bucket it has none in.
        for peer in &dialed[..2] {
            mesh.on_channel_closed(*peer);
        }
        let covered: Vec<u32> = dialed[2..].iter().map(|p| bucket(me, *p)).collect();
        let mut next = Vec::new();
        for _ in 0..(SETTLE_MS / STEP) + 1 {
            next.extend(connected(&step(&mut mesh)));
        }
        assert!(!next.is_empty());
        assert!(
            !covered.contains(&bucket(me, next[0])),
            "{next:?} after {covered:?}"
        );
    }

    #[test]
    fn a_busy_reply_gives_the_offer_up_and_dials_another_member_at_once() {
        let mut mesh = Mesh::with_max_peers(Some(1));
        // The largest id: the upkeep would never dial anyone for it.
        let welcome = mesh.on_welcome(id(9), &[id(1), id(2), id(3)]);
        let first = connected(&welcome);
        assert_eq!(first.len(), 1);
        let busy = mesh.on_busy(first[0]);
        assert_eq!(busy[0], Action::Disconnect(first[0]));
        let second = connected(&busy);
        assert_eq!(second.len(), 1);
        assert_ne!(second[0], first[0]);
        // Busy again: the third member, not the first (busy lately).
        let third = connected(&mesh.on_busy(second[0]));
        assert_eq!(third.len(), 1);
        assert!(!first.contains(&third[0]) && !second.contains(&third[0]));
        assert_eq!(mesh.connection_count(), 1);
        // All three busy: nobody left to dial until the busy ones may be tried again.
        assert!(connected(&mesh.on_busy(third[0])).is_empty());
        assert!(mesh.on_busy(third[0]).is_empty(), "not connecting any more");
        let retried: Vec<PeerId> = (0..(BUSY_MS / STEP))
            .flat_map(|_| connected(&step(&mut mesh)))
            .collect();
        assert!(
            retried.is_empty(),
            "smaller ids are not the upkeep's to dial"
        );
        mesh.on_joined(id(12));
        let dialled: Vec<PeerId> = (0..(SETTLE_MS / STEP) + 1)
            .flat_map(|_| connected(&step(&mut mesh)))
            .collect();
        assert_eq!(dialled, vec![id(12)]);
        // By now the first three may be tried again.
        let again = connected(&mesh.on_busy(id(12)));
        assert!(again.len() == 1 && again[0] < id(9), "{again:?}");
        assert_eq!(mesh.members().count(), 4, "busy members stay members");
    }

    #[test]
    fn a_capped_peer_answers_offers_up_to_twice_its_cap() {
        let mut mesh = Mesh::with_max_peers(Some(1));
        mesh.on_welcome(id(1), &[id(2)]);
        assert_eq!(connected(&mesh.on_signal_from(id(3))), vec![id(3)]);
        assert!(
            mesh.on_signal_from(id(4)).is_empty(),
            "2 connections = 2 × cap"
        );
        assert_eq!(mesh.dial(id(4)), None, "not a member it knows");
        mesh.on_joined(id(4));
        assert_eq!(mesh.dial(id(4)), Some(Vec::new()), "no room");
        mesh.on_channel_closed(id(3));
        assert_eq!(connected(&mesh.dial(id(4)).expect("member")), vec![id(4)]);
    }

    #[test]
    fn a_provider_is_dialled_beyond_the_cap() {
        let mut mesh = Mesh::with_max_peers(Some(1));
        mesh.on_welcome(id(1), &[id(2), id(3), id(4)]);
        mesh.on_signal_from(id(2));
        mesh.on_signal_from(id(3));
        assert_eq!(mesh.connection_count(), 2);
        assert_eq!(mesh.dial(id(4)), Some(Vec::new()), "full");
        assert_eq!(
            connected(&mesh.dial_provider(id(4)).expect("member")),
            vec![id(4)]
        );
        assert_eq!(mesh.connection_count(), 3);
        assert_eq!(mesh.dial_provider(id(9)), None, "not a member");
        assert_eq!(mesh.dial_provider(id(4)), Some(Vec::new()), "already");
    }

    #[test]
    fn a_stale_connection_is_started_over_on_request() {
        let (mut mesh, _) = welcomed(1, &[2]);
        assert!(
            mesh.redial_if_stale(id(2), 4 * STEP).is_empty(),
            "just started"
        );
        for _ in 0..4 {
            step(&mut mesh);
        }
        let actions = mesh.redial_if_stale(id(2), 4 * STEP);
        assert_eq!(actions[0], Action::Disconnect(id(2)));
        assert_eq!(connected(&actions[1..]), vec![id(2)]);
        assert!(
            mesh.redial_if_stale(id(2), 4 * STEP).is_empty(),
            "started over"
        );
        mesh.on_channel_open(id(2));
        for _ in 0..8 {
            step(&mut mesh);
        }
        assert!(mesh.redial_if_stale(id(2), 4 * STEP).is_empty(), "open");
    }

    #[test]
    fn a_connection_that_never_opens_is_given_up_but_its_member_kept() {
        let (mut mesh, _) = welcomed(1, &[2, 3]);
        mesh.on_channel_open(id(2));
        let mut gave_up = Vec::new();
        for _ in 0..(CONNECT_TIMEOUT_MS / STEP) {
            gave_up.extend(step(&mut mesh));
        }
        assert_eq!(gave_up, vec![Action::Disconnect(id(3))]);
        assert!(mesh.is_open(id(2)) && !mesh.knows(id(3)));
        assert!(mesh.is_member(id(3)));
        assert_eq!(connected(&mesh.dial(id(3)).expect("member")), vec![id(3)]);
    }

    #[test]
    fn a_welcome_after_reconnecting_keeps_connections_and_meets_newcomers() {
        let (mut mesh, _) = welcomed(5, &[1, 2]);
        mesh.on_channel_open(id(1));
        let actions = mesh.on_welcome(id(5), &[id(1), id(2), id(3)]);
        assert_eq!(connected(&actions), vec![id(3)], "only the newcomer");
        assert!(mesh.is_open(id(1)));
        // A different id: everything starts over, and the application hears who is gone.
        let actions = mesh.on_welcome(id(6), &[id(1)]);
        assert!(actions.contains(&Action::Emit(Event::PeerLeft(id(1)))));
        assert!(actions.contains(&Action::Disconnect(id(3))));
        assert_eq!(connected(&actions), vec![id(1)]);
        assert_eq!(mesh.me(), Some(id(6)));
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
        /// A capped mesh never holds more than twice its cap of connections, whatever the
        /// order of events.
        #[test]
        fn a_capped_mesh_stays_within_twice_its_cap(
            cap in 1usize..4,
            inputs in proptest::collection::vec((input(), any::<bool>()), 0..120),
        ) {
            let mut mesh = Mesh::with_max_peers(Some(cap));
            mesh.on_welcome(id(0), &[1, 2, 3, 4, 5].map(id));
            for (input, tick) in inputs {
                match input {
                    Input::Joined(p) => mesh.on_joined(id(p)),
                    Input::Left(p) => mesh.on_left(id(p)),
                    Input::Signal(p) => mesh.on_signal_from(id(p)),
                    Input::Open(p) => mesh.on_channel_open(id(p)),
                    Input::Closed(p) => mesh.on_channel_closed(id(p)),
                };
                if tick {
                    step(&mut mesh);
                }
                prop_assert!(mesh.connection_count() <= 2 * cap);
                prop_assert!(!mesh.knows(id(0)));
            }
        }

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
