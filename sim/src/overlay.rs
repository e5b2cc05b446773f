//! The unstructured overlay: peers with a capped set of direct connections, joining, leaving
//! and repairing their neighbour sets in rounds. Two neighbour policies:
//!
//! **[`Policy::Mesh`]** (the default) runs the real [`swarm_core::mesh::Mesh`] of each peer in
//! its partial-mesh mode ([`Mesh::with_max_peers`] with `target` as the cap, so a peer opens up
//! to `target` connections and answers offers up to twice that). The simulation plays the
//! signalling server and the data channels around it:
//! - A newcomer's `welcome` lists every member of the room (as the server sends it), and
//!   every member hears `joined`; a departure closes the departed peer's channels
//!   (`on_channel_closed` at its neighbours) and every member hears `left`. That is O(N)
//!   work per join and per departure, and O(N²) memory for the room, too slow to simulate at
//!   10,000 peers under churn; so `welcome` can instead be a sample size W (a server variant
//!   for large rooms that does not exist yet). The sample keeps what the newcomer's mesh
//!   would take from the whole room: the welcome lists the closest member of each of the
//!   newcomer's Kademlia buckets (up to W/2, closest bucket first) and random members for the
//!   rest; `joined` goes to the W/2 members closest to the newcomer (those it is most likely
//!   to fill an empty bucket of) and W/2 random ones; `left` reaches the peers that were told.
//!   (Before 2026-11-21 both samples were random; the Kademlia-shaped one took routed
//!   lookups at 1,000 peers with W = 64 from 89 % to 99 % success.)
//! - Each `Connect` as offerer is carried out within the round: the offer reaches the other
//!   peer's `on_signal_from`; if that answers with a `Connect`, both channels open
//!   (`on_channel_open`); if it refuses (it is full), the offerer hears busy (`on_busy`, which
//!   may dial another member); if the peer is gone, the offerer's connection fails
//!   (`on_channel_closed`). Two peers offering to each other end up with one link.
//! - Each round, every peer's `on_tick` is called once per upkeep period of the clients
//!   ([`swarm_core::node::UPKEEP_MS`]: 40 times in a 10 s round), the peers taking turns in
//!   a random order. A dial
//!   resolves at once (in a browser it takes a second or two, a few ticks).
//! - `Disconnect` closes the link and tells the other side. With the server gone, nobody
//!   joins, no `joined`/`left` is sent, and an offer reaches its peer only through the mesh
//!   relay ([`swarm_core::relay`]): if that peer is within `HOP_LIMIT + 1` links; otherwise
//!   the dial fails.
//!
//! **[`Policy::Random`]** is the simulation's own, for comparison:
//! - A newcomer gets a random sample of `welcome` members from the signalling server and
//!   remembers them as dial candidates.
//! - Each round, every peer with fewer than `target` neighbours starts `target - degree` dials
//!   to random candidates. A dial to a peer that left fails; a peer that already has `max`
//!   neighbours refuses; otherwise the link opens within the round. Tried candidates are
//!   dropped from the list either way.
//! - A peer whose candidate list runs dry asks a random neighbour for its neighbours (peer
//!   exchange; their signalling can be relayed by that common neighbour). Only a peer left
//!   with no neighbour at all goes back to the server for a new sample; the simulation counts
//!   those fallbacks, and can take the server away (then such a peer stays alone).
//! - A peer that leaves drops all its links at once; its neighbours notice at once.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use swarm_core::kademlia::Key;
use swarm_core::mesh::{Action, Mesh, one_per_bucket};
use swarm_core::relay::HOP_LIMIT;
use swarm_protocol::PeerId;

/// Which members a sampled welcome or `joined` favours ([`Overlay::kademlia_sample`]).
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The closest member of each of the newcomer's buckets, closest bucket first.
    PerBucket,
    /// The members closest to the newcomer.
    Closest,
}

/// Hashes a peer id by its first eight bytes: ids are random, so that is as good as SipHash
/// here and several times cheaper (the simulation looks ids up millions of times).
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// Index of a peer in the simulation. A slot is never reused: a peer that leaves stays dead.
pub type Slot = usize;

/// Who decides which connections a peer opens and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The real `swarm_core::mesh::Mesh` in partial-mesh mode, cap `target` (it accepts up to
    /// twice the cap; `max` is not used).
    Mesh,
    /// The simulation's own: random candidates from a welcome sample and peer exchange.
    Random,
}

/// The neighbour policy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Which policy.
    pub policy: Policy,
    /// A peer with fewer neighbours than this dials more.
    pub target: usize,
    /// A peer with this many neighbours refuses new ones ([`Policy::Random`]).
    pub max: usize,
    /// Members in the sample the server gives a newcomer; 0 for the whole room.
    pub welcome: usize,
    /// Most dial candidates a peer remembers ([`Policy::Random`]).
    pub known_cap: usize,
    /// Simulated milliseconds per round: `Mesh::on_tick` runs every
    /// [`swarm_core::node::UPKEEP_MS`] of it ([`Policy::Mesh`]).
    pub round_ms: u64,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Mesh,
            target: 8,
            max: 16,
            welcome: 0,
            known_cap: 64,
            round_ms: 10_000,
        }
    }
}

/// Counters over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Dials started.
    pub dials: u64,
    /// Dials that opened a link.
    pub links: u64,
    /// Dials refused by a full peer.
    pub refused: u64,
    /// Dials to a peer that had left.
    pub dead_dials: u64,
    /// Candidate lists refilled from a neighbour's neighbours.
    pub peer_exchanges: u64,
    /// Peers with no neighbour left that asked the server for a new sample.
    pub server_fallbacks: u64,
    /// With the server gone, offers that could not be relayed: the peer was more than
    /// `HOP_LIMIT + 1` links away ([`Policy::Mesh`]).
    pub out_of_relay_reach: u64,
}

/// Connected components of the live peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connectivity {
    /// Live peers.
    pub alive: usize,
    /// Connected components (an isolated peer is one).
    pub components: usize,
    /// Peers in the largest component.
    pub largest: usize,
    /// Live peers without any neighbour.
    pub isolated: usize,
}

impl Connectivity {
    /// The largest component's share of the live peers (1 for an empty overlay).
    pub fn largest_fraction(&self) -> f64 {
        if self.alive == 0 {
            1.0
        } else {
            self.largest as f64 / self.alive as f64
        }
    }
}

#[derive(Debug)]
struct Peer {
    id: PeerId,
    alive: bool,
    neighbours: Vec<Slot>,
    known: Vec<Slot>,
    mesh: Option<Mesh>,
}

/// Every peer that ever joined, and the links between live ones.
#[derive(Debug)]
pub struct Overlay {
    config: OverlayConfig,
    peers: Vec<Peer>,
    alive: Vec<Slot>,
    /// Position of each live slot in `alive` (meaningless for dead slots).
    alive_pos: Vec<usize>,
    by_id: HashMap<PeerId, Slot, BuildHasherDefault<IdHasher>>,
    server: bool,
    new_links: Vec<(Slot, Slot)>,
    /// Who was told about each peer (sampled [`Policy::Mesh`] welcomes only).
    told: Vec<Vec<Slot>>,
    /// `Connect` actions of newcomers' welcomes, carried out at the next repair round.
    pending: Vec<(Slot, Action)>,
    /// Counters over the whole run.
    pub stats: OverlayStats,
    /// Simulated time (ms), the meshes' clock.
    now: u64,
}

impl Overlay {
    /// An empty room.
    pub fn new(config: OverlayConfig) -> Self {
        Self {
            config,
            peers: Vec::new(),
            alive: Vec::new(),
            alive_pos: Vec::new(),
            by_id: HashMap::default(),
            server: true,
            new_links: Vec::new(),
            told: Vec::new(),
            pending: Vec::new(),
            stats: OverlayStats::default(),
            now: 0,
        }
    }

    /// Whether the signalling server is there (it is at first). Without it, [`Policy::Mesh`]
    /// peers hear no `joined`/`left`, and a [`Policy::Random`] peer left without neighbours
    /// stays alone.
    pub fn set_server(&mut self, available: bool) {
        self.server = available;
    }

    /// The policy's numbers.
    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    /// Slots handed out so far (live and dead).
    pub fn slots(&self) -> usize {
        self.peers.len()
    }

    /// The live peers, in no particular order.
    pub fn alive(&self) -> &[Slot] {
        &self.alive
    }

    /// Whether the peer in `slot` is still in the room.
    pub fn is_alive(&self, slot: Slot) -> bool {
        self.peers.get(slot).is_some_and(|p| p.alive)
    }

    /// The id of the peer in `slot`.
    pub fn id(&self, slot: Slot) -> PeerId {
        self.peers[slot].id
    }

    /// The slot of the peer with this id.
    pub fn slot_of(&self, id: PeerId) -> Option<Slot> {
        self.by_id.get(&id).copied()
    }

    /// The current neighbours of `slot`.
    pub fn neighbours(&self, slot: Slot) -> &[Slot] {
        &self.peers[slot].neighbours
    }

    /// A random live peer.
    pub fn random_alive(&self, rng: &mut impl Rng) -> Option<Slot> {
        self.alive.choose(rng).copied()
    }

    /// A newcomer with a random id joins and gets the server's `welcome`.
    pub fn join(&mut self, rng: &mut impl Rng) -> Slot {
        let id = loop {
            let id = PeerId::from_bytes(rng.random());
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        let slot = self.peers.len();
        self.told.push(Vec::new());
        let welcome = self.config.welcome;
        let (known, mesh) = match self.config.policy {
            Policy::Random => (self.sample(rng, welcome), None),
            Policy::Mesh => {
                let sample = if welcome == 0 {
                    self.alive.clone()
                } else {
                    self.kademlia_sample(rng, id, welcome, Shape::PerBucket)
                };
                let members: Vec<PeerId> = sample.iter().map(|s| self.peers[*s].id).collect();
                if welcome > 0 {
                    for q in sample {
                        self.told[q].push(slot);
                    }
                }
                let mut mesh = Mesh::with_max_peers(Some(self.config.target));
                mesh.advance(self.now);
                for action in mesh.on_welcome(id, &members) {
                    self.pending.push((slot, action));
                }
                (Vec::new(), Some(mesh))
            }
        };
        if self.config.policy == Policy::Mesh && self.server {
            let hearing = if welcome == 0 {
                self.alive.clone()
            } else {
                self.kademlia_sample(rng, id, welcome, Shape::Closest)
            };
            for other in hearing {
                if welcome > 0 {
                    self.told[slot].push(other);
                }
                let actions = self
                    .mesh(other)
                    .map(|m| m.on_joined(id))
                    .unwrap_or_default();
                self.pending.extend(actions.into_iter().map(|a| (other, a)));
            }
        }
        self.peers.push(Peer {
            id,
            alive: true,
            neighbours: Vec::new(),
            known,
            mesh,
        });
        self.by_id.insert(id, slot);
        self.alive_pos.push(self.alive.len());
        self.alive.push(slot);
        slot
    }

    fn mesh(&mut self, slot: Slot) -> Option<&mut Mesh> {
        self.peers.get_mut(slot).and_then(|p| p.mesh.as_mut())
    }

    /// The peer in `slot` leaves: its links drop.
    pub fn leave(&mut self, slot: Slot) {
        if !self.is_alive(slot) {
            return;
        }
        let id = self.peers[slot].id;
        let neighbours = std::mem::take(&mut self.peers[slot].neighbours);
        for &n in &neighbours {
            self.peers[n].neighbours.retain(|p| *p != slot);
        }
        let peer = &mut self.peers[slot];
        peer.alive = false;
        peer.known = Vec::new();
        peer.mesh = None;
        let pos = self.alive_pos[slot];
        self.alive.swap_remove(pos);
        if let Some(moved) = self.alive.get(pos) {
            self.alive_pos[*moved] = pos;
        }
        if self.config.policy == Policy::Mesh {
            for n in neighbours {
                let actions = self
                    .mesh(n)
                    .map(|m| m.on_channel_closed(id))
                    .unwrap_or_default();
                self.carry_out(n, actions);
            }
            if self.server {
                let hearing = if self.config.welcome == 0 {
                    self.alive.clone()
                } else {
                    std::mem::take(&mut self.told[slot])
                };
                for other in hearing {
                    let actions = self.mesh(other).map(|m| m.on_left(id)).unwrap_or_default();
                    self.carry_out(other, actions);
                }
            }
        }
    }

    /// Whether `q` is at most `links` links away from `p`.
    fn within(&self, p: Slot, q: Slot, links: usize) -> bool {
        let mut frontier = vec![p];
        let mut seen = std::collections::HashSet::from([p]);
        for _ in 0..links {
            let mut next = Vec::new();
            for s in frontier {
                for &n in &self.peers[s].neighbours {
                    if n == q {
                        return true;
                    }
                    if seen.insert(n) {
                        next.push(n);
                    }
                }
            }
            frontier = next;
        }
        false
    }

    /// The links opened since the last call (dialler first).
    pub fn take_new_links(&mut self) -> Vec<(Slot, Slot)> {
        std::mem::take(&mut self.new_links)
    }

    /// One round of repair: every live peer below target dials, in a random order.
    pub fn maintain(&mut self, rng: &mut impl Rng) {
        for (slot, action) in std::mem::take(&mut self.pending) {
            if self.is_alive(slot) {
                self.carry_out(slot, vec![action]);
            }
        }
        let mut order = self.alive.clone();
        order.shuffle(rng);
        for &slot in &order {
            match self.config.policy {
                Policy::Random => self.dial_round(slot, rng),
                Policy::Mesh => {}
            }
        }
        if self.config.policy == Policy::Mesh {
            let step = swarm_core::node::UPKEEP_MS;
            for _ in 0..(self.config.round_ms / step).max(1) {
                self.now += step;
                let now = self.now;
                for &slot in &order {
                    let actions = self.mesh(slot).map(|m| m.on_tick(now)).unwrap_or_default();
                    self.carry_out(slot, actions);
                }
            }
        }
    }

    /// Carries out what `slot`'s mesh asked for.
    fn carry_out(&mut self, slot: Slot, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Connect {
                    peer,
                    offerer: true,
                    ..
                } => self.offer(slot, peer),
                // The answering side of an offer handled in `offer`, or of a full mesh's
                // `joined` (not used here): the offerer drives the connection.
                Action::Connect { offerer: false, .. } => {}
                Action::Disconnect(peer) => {
                    if let Some(q) = self.slot_of(peer)
                        && self.peers[slot].neighbours.contains(&q)
                    {
                        self.peers[slot].neighbours.retain(|n| *n != q);
                        self.peers[q].neighbours.retain(|n| *n != slot);
                        let me = self.peers[slot].id;
                        let actions = self
                            .mesh(q)
                            .map(|m| m.on_channel_closed(me))
                            .unwrap_or_default();
                        self.carry_out(q, actions);
                    }
                }
                Action::Emit(_) => {}
            }
        }
    }

    /// `p`'s dial of `peer` came to nothing: its mesh sees the connection close.
    fn dial_failed(&mut self, p: Slot, peer: PeerId) {
        let actions = self
            .mesh(p)
            .map(|m| m.on_channel_closed(peer))
            .unwrap_or_default();
        self.carry_out(p, actions);
    }

    /// `p`'s offer to `peer` goes through: the other side answers or refuses.
    fn offer(&mut self, p: Slot, peer: PeerId) {
        let me = self.peers[p].id;
        let q = self.slot_of(peer).filter(|q| self.is_alive(*q));
        let Some(q) = q else {
            self.stats.dials += 1;
            self.stats.dead_dials += 1;
            self.dial_failed(p, peer);
            return;
        };
        if self.peers[p].neighbours.contains(&q) {
            return; // both offered; the link is already open
        }
        self.stats.dials += 1;
        if !self.server && !self.within(p, q, usize::from(HOP_LIMIT) + 1) {
            // The relayed offer dies out before it reaches `q`.
            self.stats.out_of_relay_reach += 1;
            self.dial_failed(p, peer);
            return;
        }
        let crossing = self.mesh(q).is_some_and(|m| m.knows(me));
        let answered = crossing
            || self
                .mesh(q)
                .map(|m| m.on_signal_from(me))
                .unwrap_or_default()
                .iter()
                .any(|a| matches!(a, Action::Connect { peer, .. } if *peer == me));
        if answered {
            self.peers[p].neighbours.push(q);
            self.peers[q].neighbours.push(p);
            self.new_links.push((p, q));
            self.stats.links += 1;
            if let Some(m) = self.mesh(p) {
                m.on_channel_open(peer);
            }
            if let Some(m) = self.mesh(q) {
                m.on_channel_open(me);
            }
        } else {
            // A full peer replies busy (`SignalData::Busy`): the offerer dials someone else.
            self.stats.refused += 1;
            let actions = self.mesh(p).map(|m| m.on_busy(peer)).unwrap_or_default();
            self.carry_out(p, actions);
        }
    }

    fn dial_round(&mut self, p: Slot, rng: &mut impl Rng) {
        let degree = self.peers[p].neighbours.len();
        let Some(mut attempts) = self.config.target.checked_sub(degree).filter(|n| *n > 0) else {
            return;
        };
        let mut refilled = false;
        while attempts > 0 {
            if self.peers[p].known.is_empty() {
                if refilled {
                    break;
                }
                refilled = true;
                self.refill(p, rng);
                continue;
            }
            let known = &mut self.peers[p].known;
            let q = known.swap_remove(rng.random_range(0..known.len()));
            if q == p || self.peers[p].neighbours.contains(&q) {
                continue;
            }
            attempts -= 1;
            self.stats.dials += 1;
            if !self.peers[q].alive {
                self.stats.dead_dials += 1;
            } else if self.peers[q].neighbours.len() >= self.config.max {
                self.stats.refused += 1;
            } else {
                self.peers[p].neighbours.push(q);
                self.peers[q].neighbours.push(p);
                self.new_links.push((p, q));
                self.stats.links += 1;
            }
        }
    }

    /// New dial candidates: a neighbour's neighbours, or the server's sample for a peer with
    /// no neighbour.
    fn refill(&mut self, p: Slot, rng: &mut impl Rng) {
        let fresh: Vec<Slot> = match self.peers[p].neighbours.choose(rng) {
            Some(&n) => {
                self.stats.peer_exchanges += 1;
                self.peers[n]
                    .neighbours
                    .iter()
                    .copied()
                    .filter(|q| *q != p && !self.peers[p].neighbours.contains(q))
                    .collect()
            }
            None => {
                self.stats.server_fallbacks += 1;
                if self.server {
                    self.sample(rng, self.config.welcome)
                } else {
                    Vec::new()
                }
            }
        };
        let cap = self.config.known_cap;
        let known = &mut self.peers[p].known;
        for q in fresh {
            if known.len() >= cap {
                break;
            }
            if !known.contains(&q) {
                known.push(q);
            }
        }
    }

    /// Up to `n` distinct random live peers (all of them for 0).
    /// A sample of `n` live members for newcomer `id` that keeps what its mesh would take
    /// from the whole room: the members closest to `id` (in each of its Kademlia buckets, or
    /// overall), up to half of `n`, and random ones for the rest.
    fn kademlia_sample(&self, rng: &mut impl Rng, id: PeerId, n: usize, shape: Shape) -> Vec<Slot> {
        if self.alive.len() <= n {
            return self.alive.clone();
        }
        let half = n / 2;
        let chosen = match shape {
            Shape::PerBucket => {
                let ids: Vec<PeerId> = self.alive.iter().map(|s| self.peers[*s].id).collect();
                one_per_bucket(id, &ids)
                    .into_iter()
                    .take(half)
                    .filter_map(|peer| self.slot_of(peer))
                    .collect()
            }
            Shape::Closest => {
                let key = Key::from(id);
                let mut all = self.alive.clone();
                all.select_nth_unstable_by_key(half, |slot| {
                    key.distance(&Key::from(self.peers[*slot].id))
                });
                all.truncate(half);
                all
            }
        };
        self.fill_at_random(rng, chosen, n)
    }

    /// `out` and random live members not in it, `n` in all.
    fn fill_at_random(&self, rng: &mut impl Rng, mut out: Vec<Slot>, n: usize) -> Vec<Slot> {
        while out.len() < n {
            let q = self.alive[rng.random_range(0..self.alive.len())];
            if !out.contains(&q) {
                out.push(q);
            }
        }
        out
    }

    fn sample(&self, rng: &mut impl Rng, n: usize) -> Vec<Slot> {
        if n == 0 || self.alive.len() <= n {
            return self.alive.clone();
        }
        self.fill_at_random(rng, Vec::with_capacity(n), n)
    }

    /// The connected components of the live peers.
    pub fn connectivity(&self) -> Connectivity {
        let mut seen = vec![false; self.peers.len()];
        let mut components = 0;
        let mut largest = 0;
        let mut isolated = 0;
        let mut stack = Vec::new();
        for &start in &self.alive {
            if seen[start] {
                continue;
            }
            components += 1;
            if self.peers[start].neighbours.is_empty() {
                isolated += 1;
            }
            seen[start] = true;
            stack.push(start);
            let mut size = 0;
            while let Some(p) = stack.pop() {
                size += 1;
                for &q in &self.peers[p].neighbours {
                    if !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
            largest = largest.max(size);
        }
        Connectivity {
            alive: self.alive.len(),
            components,
            largest,
            isolated,
        }
    }

    /// Smallest, mean and largest number of neighbours among live peers.
    pub fn degrees(&self) -> (usize, f64, usize) {
        let degrees = self.alive.iter().map(|s| self.peers[*s].neighbours.len());
        let min = degrees.clone().min().unwrap_or(0);
        let max = degrees.clone().max().unwrap_or(0);
        let mean = degrees.sum::<usize>() as f64 / self.alive.len().max(1) as f64;
        (min, mean, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn random() -> OverlayConfig {
        OverlayConfig {
            policy: Policy::Random,
            welcome: 32,
            ..OverlayConfig::default()
        }
    }

    #[test]
    fn a_room_settles_between_target_and_max() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut overlay = Overlay::new(random());
        for _ in 0..300 {
            overlay.join(&mut rng);
        }
        for _ in 0..5 {
            overlay.maintain(&mut rng);
        }
        let (min, _, max) = overlay.degrees();
        assert!(min >= 8, "min degree {min}");
        assert!(max <= 16, "max degree {max}");
        let c = overlay.connectivity();
        assert_eq!((c.components, c.largest, c.isolated), (1, 300, 0));
    }

    #[test]
    fn leaving_drops_links_and_repair_restores_them() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut overlay = Overlay::new(random());
        for _ in 0..100 {
            overlay.join(&mut rng);
        }
        overlay.maintain(&mut rng);
        let gone = overlay.alive()[0];
        let neighbours = overlay.neighbours(gone).to_vec();
        overlay.leave(gone);
        assert!(!overlay.is_alive(gone));
        assert_eq!(overlay.alive().len(), 99);
        assert!(
            neighbours
                .iter()
                .all(|n| !overlay.neighbours(*n).contains(&gone))
        );
        overlay.maintain(&mut rng);
        assert!(overlay.degrees().0 >= 8);
        assert_eq!(overlay.slot_of(overlay.id(gone)), Some(gone));
    }

    #[test]
    fn real_meshes_connect_within_twice_their_cap() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut overlay = Overlay::new(OverlayConfig::default());
        for _ in 0..200 {
            overlay.join(&mut rng);
        }
        overlay.maintain(&mut rng);
        overlay.maintain(&mut rng);
        let (min, _, max) = overlay.degrees();
        assert!(min >= 8, "min degree {min}");
        assert!(max <= 16, "max degree {max}");
        assert_eq!(overlay.connectivity().components, 1);
        let gone = overlay.alive()[0];
        let neighbours = overlay.neighbours(gone).to_vec();
        overlay.leave(gone);
        overlay.maintain(&mut rng);
        for n in neighbours {
            assert!(overlay.neighbours(n).len() >= 8);
        }
    }
}
