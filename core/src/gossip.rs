//! Gossip over the overlay: duplicate suppression for flooded messages.
//!
//! In a large room each peer is directly connected to a few neighbours only, so room
//! membership and file announcements spread by flooding: a peer that receives a message for
//! the first time delivers it and passes it on to every other neighbour, with one hop less to
//! live. Each message is named by its origin and a sequence number the origin increases;
//! [`Seen`] remembers the names already handled so a message that comes back by another path
//! is dropped, and [`forward_targets`] picks where a new one goes next.
//!
//! The memory is bounded: beyond its capacity the oldest names are forgotten. A forgotten
//! name is not accepted again, though: each origin's sequence numbers only grow, so the
//! memory keeps, per origin, the highest sequence number it forgot (its *floor*) and treats
//! everything at or below it as seen. Without that, a replayed message was accepted again
//! once enough fresh ones had pushed its name out. Floors are kept for the
//! [`MAX_ORIGINS`] origins heard from last.
//!
//! The memory can also be sized by time ([`Seen::with_retention`]): a name is then kept for
//! at least that long whatever comes after it, and a message that would push out a younger
//! name is refused instead ([`Insert::Full`]). Floors alone did not close the replay: a flood
//! of fresh *origins* (keys are free to mint) pushed the victim's name out, then its floor,
//! and the replay was new again.

use std::collections::{HashMap, HashSet, VecDeque};

use swarm_protocol::PeerId;

/// Capacity of [`Seen`] that suits a room of a few thousand peers, each announcing a few
/// messages per flood period.
pub const DEFAULT_SEEN_CAPACITY: usize = 4096;

/// Origins whose floor [`Seen`] keeps (the ones heard from least recently are forgotten).
pub const MAX_ORIGINS: usize = 4096;

/// Hops a flooded message travels by default. A random overlay of 10,000 peers with 8 to 16
/// neighbours each is 6 hops across; the partial mesh that picks XOR-close neighbours was 17
/// (measured by `swarm-sim`). Duplicates are dropped by [`Seen`] whatever the TTL, so a
/// generous one costs nothing on a healthy overlay.
pub const DEFAULT_TTL: u8 = 32;

/// What [`Seen::insert_at`] made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// First seen: recorded (forward or deliver it).
    New,
    /// Seen before, or older than what is forgotten of its origin: drop it.
    Seen,
    /// Not recorded: the memory is full of messages younger than its retention, and
    /// forgetting one would let it be replayed. Drop it; it may be taken when it comes again.
    Full,
}

/// Bounded memory of the messages already seen, by (origin, sequence number).
#[derive(Debug, Clone)]
pub struct Seen {
    capacity: usize,
    /// No message is forgotten before it has been remembered this long (ms).
    retention_ms: u64,
    /// (origin, sequence number, when it was recorded), oldest first.
    order: VecDeque<(PeerId, u64, u64)>,
    set: HashSet<(PeerId, u64)>,
    /// Per origin: the highest sequence number forgotten, and when (in insertions) the
    /// origin was last heard from.
    floors: HashMap<PeerId, (u64, u64)>,
    insertions: u64,
    /// The latest time given to [`Seen::insert_at`] (ms).
    now: u64,
}

impl Seen {
    /// Remembers up to `capacity` messages (at least one), forgetting the oldest beyond it
    /// at once (no retention time: see [`Seen::with_retention`]).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            retention_ms: 0,
            order: VecDeque::new(),
            set: HashSet::new(),
            floors: HashMap::new(),
            insertions: 0,
            now: 0,
        }
    }

    /// Keeps every message for at least `ms` after it was recorded: past `capacity`, a new
    /// message is refused ([`Insert::Full`]) rather than a younger one forgotten. Times are
    /// those given to [`Seen::insert_at`].
    pub fn with_retention(mut self, ms: u64) -> Self {
        self.retention_ms = ms;
        self
    }

    /// Records the message; true if it is new (forward/deliver it), false if seen before
    /// or refused (drop it). Acts at the latest time given to [`Seen::insert_at`].
    pub fn insert(&mut self, origin: PeerId, seq: u64) -> bool {
        self.insert_at(origin, seq, self.now) == Insert::New
    }

    /// Records the message at `now` (ms; time going back counts as the latest time given).
    /// Beyond `capacity` the oldest message is forgotten, if it has been kept for the
    /// retention time; otherwise this one is refused.
    pub fn insert_at(&mut self, origin: PeerId, seq: u64, now: u64) -> Insert {
        self.now = self.now.max(now);
        let now = self.now;
        if self.contains(origin, seq) {
            return Insert::Seen;
        }
        if self.order.len() >= self.capacity
            && self
                .order
                .front()
                .is_some_and(|(_, _, at)| now.saturating_sub(*at) < self.retention_ms)
        {
            return Insert::Full;
        }
        self.set.insert((origin, seq));
        self.insertions += 1;
        let heard = self.insertions;
        if let Some((_, last)) = self.floors.get_mut(&origin) {
            *last = heard;
        }
        self.order.push_back((origin, seq, now));
        while self.order.len() > self.capacity {
            if let Some((old, old_seq, _)) = self.order.pop_front() {
                self.set.remove(&(old, old_seq));
                self.raise_floor(old, old_seq);
            }
        }
        Insert::New
    }

    /// Whether the message is remembered, or older than what is forgotten of its origin
    /// (without recording it).
    pub fn contains(&self, origin: PeerId, seq: u64) -> bool {
        self.below_floor(origin, seq) || self.set.contains(&(origin, seq))
    }

    fn below_floor(&self, origin: PeerId, seq: u64) -> bool {
        self.floors
            .get(&origin)
            .is_some_and(|(floor, _)| seq <= *floor)
    }

    /// `seq` of `origin` is forgotten: everything up to it counts as seen.
    fn raise_floor(&mut self, origin: PeerId, seq: u64) {
        let heard = self.insertions;
        let entry = self.floors.entry(origin).or_insert((seq, heard));
        entry.0 = entry.0.max(seq);
        if self.floors.len() > MAX_ORIGINS {
            let stalest = self
                .floors
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(peer, _)| *peer);
            if let Some(stalest) = stalest {
                self.floors.remove(&stalest);
            }
        }
    }

    /// How many messages are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Most messages remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Default for Seen {
    fn default() -> Self {
        Self::new(DEFAULT_SEEN_CAPACITY)
    }
}

/// Which neighbours a flooded message goes on to: every neighbour but the one it came
/// from, while `ttl` (hops left) is above zero.
///
/// The origin calls it with `from = None` and the TTL it chose, and sends each copy with
/// `ttl - 1`; a receiver that finds the message new calls it with the sender and the TTL the
/// copy carried. So a message sent with TTL `t` travels at most `t` hops. Neighbours listed
/// twice are returned once, in first-seen order.
pub fn forward_targets(
    from: Option<PeerId>,
    neighbours: impl IntoIterator<Item = PeerId>,
    ttl: u8,
) -> Vec<PeerId> {
    if ttl == 0 {
        return Vec::new();
    }
    let mut targets: Vec<PeerId> = Vec::new();
    for peer in neighbours {
        if Some(peer) != from && !targets.contains(&peer) {
            targets.push(peer);
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn a_message_is_new_once() {
        let mut seen = Seen::new(8);
        assert!(seen.insert(id(1), 1));
        assert!(!seen.insert(id(1), 1));
        assert!(seen.insert(id(1), 2), "another sequence number");
        assert!(seen.insert(id(2), 1), "another origin");
        assert_eq!(seen.len(), 3);
        assert!(seen.contains(id(2), 1));
        assert!(!seen.contains(id(2), 2));
    }

    #[test]
    fn the_oldest_is_forgotten_beyond_capacity_but_not_taken_again() {
        let mut seen = Seen::new(2);
        assert!(seen.insert(id(1), 1));
        assert!(seen.insert(id(1), 2));
        assert!(seen.insert(id(1), 3));
        assert_eq!(seen.len(), 2);
        assert!(!seen.insert(id(1), 3));
        // Forgotten, but below its origin's floor: a replay, not a new message.
        assert!(seen.contains(id(1), 1));
        assert!(!seen.insert(id(1), 1));
        assert!(seen.insert(id(1), 4));
        // Other origins have floors of their own.
        assert!(seen.insert(id(2), 1));
    }

    #[test]
    fn a_replay_after_a_flood_of_fresh_messages_is_still_refused() {
        // 4,096 fresh frames pushed a relayed signal out of the memory, and it was accepted
        // again.
        let mut seen = Seen::default();
        assert!(seen.insert(id(7), 1_000));
        for n in 0..(2 * DEFAULT_SEEN_CAPACITY as u64) {
            seen.insert(id(9), n);
        }
        assert!(!seen.insert(id(7), 1_000), "replayed");
        assert!(seen.insert(id(7), 1_001), "its next message is new");
        assert!(seen.len() <= DEFAULT_SEEN_CAPACITY);
    }

    /// A distinct origin per `n`, as an attacker mints keys.
    fn fresh(n: u64) -> PeerId {
        let mut bytes = [0xffu8; 16];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        PeerId::from_bytes(bytes)
    }

    #[test]
    fn without_retention_a_flood_of_fresh_origins_flushes_a_floor() {
        // What the retention time closes: the victim's name is pushed out, then its floor
        // (the origin heard from least recently), and its replay is new again.
        let mut seen = Seen::new(16);
        assert!(seen.insert(id(7), 1_000));
        for n in 0..(16 + MAX_ORIGINS as u64 + 1) {
            assert!(seen.insert(fresh(n), 1));
        }
        assert!(seen.insert(id(7), 1_000), "replayed and taken");
    }

    #[test]
    fn with_retention_a_flood_neither_pushes_out_a_young_name_nor_its_floor() {
        let (capacity, retention) = (16, 30_000);
        let mut seen = Seen::new(capacity).with_retention(retention);
        assert_eq!(seen.insert_at(id(7), 1_000, 0), Insert::New);
        // The same flood as above, within the retention time: refused once full.
        let mut refused = 0;
        for n in 0..(capacity as u64 + MAX_ORIGINS as u64 + 1) {
            match seen.insert_at(fresh(n), 1, 10) {
                Insert::New => {}
                Insert::Full => refused += 1,
                Insert::Seen => panic!("fresh"),
            }
        }
        assert_eq!(
            refused,
            MAX_ORIGINS + 2,
            "all but the first {}",
            capacity - 1
        );
        assert_eq!(seen.insert_at(id(7), 1_000, 10), Insert::Seen, "replay");
        assert_eq!(seen.len(), capacity);
        // Once the retention time has passed, the oldest make room again, and what is
        // forgotten of an origin is still refused (its floor).
        assert_eq!(seen.insert_at(id(8), 1, retention), Insert::New);
        assert!(!seen.contains(id(7), 1_001));
        assert_eq!(seen.insert_at(id(7), 1_000, retention), Insert::Seen);
        assert_eq!(seen.insert_at(id(7), 1_001, retention + 10), Insert::New);
        // A refused message was not recorded: it is taken once there is room.
        assert_eq!(
            seen.insert_at(fresh(capacity as u64 + 5), 1, 2 * retention),
            Insert::New
        );
    }

    #[test]
    fn time_going_back_does_not_age_a_name() {
        let mut seen = Seen::new(1).with_retention(1_000);
        assert_eq!(seen.insert_at(id(1), 1, 5_000), Insert::New);
        assert_eq!(seen.insert_at(id(2), 1, 0), Insert::Full);
        assert_eq!(seen.insert_at(id(2), 1, 6_000), Insert::New);
        assert!(seen.contains(id(1), 1), "forgotten, under its floor");
    }

    #[test]
    fn floors_are_kept_for_a_bounded_number_of_origins() {
        let mut seen = Seen::new(1);
        for n in 0..(4 * MAX_ORIGINS as u64) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&n.to_be_bytes());
            seen.insert(PeerId::from_bytes(bytes), 1);
        }
        assert!(seen.floors.len() <= MAX_ORIGINS);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_repeat_does_not_refresh_or_grow() {
        let mut seen = Seen::new(2);
        seen.insert(id(1), 1);
        seen.insert(id(1), 2);
        assert!(!seen.insert(id(1), 1));
        seen.insert(id(1), 3);
        assert_eq!(seen.len(), 2, "the repeat took no room");
        assert!(seen.contains(id(1), 2) && seen.contains(id(1), 3));
    }

    #[test]
    fn zero_capacity_keeps_one() {
        let mut seen = Seen::new(0);
        assert_eq!(seen.capacity(), 1);
        assert!(seen.insert(id(1), 1));
        assert!(!seen.insert(id(1), 1));
        assert!(!seen.is_empty());
    }

    #[test]
    fn forwarding_skips_the_sender_and_stops_at_zero() {
        let neighbours = [id(1), id(2), id(3)];
        assert_eq!(
            forward_targets(Some(id(2)), neighbours, 3),
            vec![id(1), id(3)]
        );
        assert_eq!(forward_targets(None, neighbours, 1), neighbours.to_vec());
        assert!(forward_targets(None, neighbours, 0).is_empty());
        assert_eq!(forward_targets(Some(id(9)), [id(1), id(1)], 2), vec![id(1)]);
    }

    /// Floods a message over a ring of `n` peers with chords and checks that every peer
    /// delivers it once.
    #[test]
    fn a_flood_reaches_every_peer_once() {
        let n = 40u8;
        let neighbours = |p: u8| [(p + 1) % n, (p + n - 1) % n, (p + 7) % n, (p + n - 7) % n];
        let mut seen: Vec<Seen> = (0..n).map(|_| Seen::new(16)).collect();
        let mut delivered = vec![0u32; n as usize];
        let origin = 0u8;
        seen[0].insert(id(origin), 1);
        delivered[0] += 1;
        let mut queue: VecDeque<(u8, u8, u8)> =
            forward_targets(None, neighbours(origin).map(id), DEFAULT_TTL)
                .into_iter()
                .map(|to| (origin, to.as_bytes()[0], DEFAULT_TTL - 1))
                .collect();
        while let Some((from, to, ttl)) = queue.pop_front() {
            if !seen[to as usize].insert(id(origin), 1) {
                continue;
            }
            delivered[to as usize] += 1;
            for next in forward_targets(Some(id(from)), neighbours(to).map(id), ttl) {
                queue.push_back((to, next.as_bytes()[0], ttl - 1));
            }
        }
        assert!(delivered.iter().all(|d| *d == 1), "{delivered:?}");
    }

    proptest! {
        /// Under capacity, `insert` is true exactly the first time each id is given.
        #[test]
        fn new_exactly_once_under_capacity(ids in proptest::collection::vec((0u8..8, 0u64..8), 0..200)) {
            let mut seen = Seen::new(64);
            let mut reference = HashSet::new();
            for (origin, seq) in ids {
                prop_assert_eq!(seen.insert(id(origin), seq), reference.insert((origin, seq)));
            }
            prop_assert_eq!(seen.len(), reference.len());
        }

        /// Whatever the capacity, memory never exceeds it, and the last `capacity` distinct
        /// ids are always remembered.
        #[test]
        fn bounded_and_remembers_the_newest(capacity in 1usize..10, seqs in proptest::collection::vec(0u64..30, 0..100)) {
            let mut seen = Seen::new(capacity);
            let mut fresh = Vec::new();
            for seq in seqs {
                if seen.insert(id(0), seq) {
                    fresh.push(seq);
                }
                prop_assert!(seen.len() <= capacity);
            }
            for seq in fresh.iter().rev().take(capacity) {
                prop_assert!(seen.contains(id(0), *seq));
            }
        }

        /// The targets are the distinct neighbours other than the sender, or none at TTL 0.
        #[test]
        fn targets_are_the_other_neighbours(from in proptest::option::of(0u8..10), neighbours in proptest::collection::vec(0u8..10, 0..20), ttl in 0u8..4) {
            let targets = forward_targets(from.map(id), neighbours.iter().map(|n| id(*n)), ttl);
            let expected: HashSet<PeerId> = if ttl == 0 {
                HashSet::new()
            } else {
                neighbours.iter().filter(|n| Some(**n) != from).map(|n| id(*n)).collect()
            };
            prop_assert_eq!(targets.len(), expected.len());
            prop_assert_eq!(targets.into_iter().collect::<HashSet<_>>(), expected);
        }
    }
}
