//! The iterative Kademlia lookup of the paper, as a model for the simulation: a
//! [`RoutingTable`] of up to `k` peers per bucket (the bucket of a peer is the length of the
//! id prefix it shares with us) and a [`Lookup`] that says which peers to ask next and is told
//! their replies and failures, halving the distance at each hop. The clients do not run this:
//! they route greedily over their open connections ([`swarm_core::dht`]); the simulation
//! compares the two. Keys, distances and the provider store are core's
//! ([`swarm_core::kademlia`]).
//!
//! # Eviction
//! When a bucket is full the table does not decide on its own: [`RoutingTable::insert`]
//! returns [`Insert::Full`] with the least recently seen entry, as the Kademlia paper has it.
//! The caller pings that peer (or checks whether its connection is still open); if it is gone
//! the caller removes it and inserts the newcomer, otherwise it refreshes the old entry and the
//! newcomer is dropped. Long-lived peers are kept because they are the likeliest to stay.
//! [`RoutingTable::insert_or_evict`] does that in one call when the caller can answer the
//! question synchronously. Peers that fail to answer a query are removed with
//! [`RoutingTable::remove`].

use std::collections::{BTreeMap, VecDeque};

use swarm_core::kademlia::{DEFAULT_ALPHA, DEFAULT_K, Distance, KEY_LEN, Key};
use swarm_protocol::PeerId;

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// The peer was added as the most recently seen of its bucket.
    Inserted,
    /// The peer was already there; it is now the most recently seen of its bucket.
    Refreshed,
    /// The bucket is full and nothing changed. `oldest` is its least recently seen peer: if it
    /// no longer answers, remove it and insert again; if it does, insert it (to refresh it).
    Full {
        /// The least recently seen peer of the bucket.
        oldest: PeerId,
    },
    /// The bucket was full and its least recently seen peer was gone: it was replaced.
    Replaced {
        /// The peer that was removed.
        evicted: PeerId,
    },
    /// That is our own id; tables never hold it.
    Local,
}

/// Up to `k` peers per bucket, by the length of the id prefix they share with us.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: PeerId,
    local_key: Key,
    k: usize,
    /// Index: shared prefix length. Front: least recently seen.
    buckets: Vec<VecDeque<PeerId>>,
    len: usize,
}

impl RoutingTable {
    /// An empty table for the peer `local`, with buckets of `k` peers (at least one).
    pub fn new(local: PeerId, k: usize) -> Self {
        Self {
            local,
            local_key: Key::from(local),
            k: k.max(1),
            buckets: Vec::new(),
            len: 0,
        }
    }

    /// Our own id.
    pub fn local(&self) -> PeerId {
        self.local
    }

    /// Peers per bucket.
    pub fn k(&self) -> usize {
        self.k
    }

    /// How many peers the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no peer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bucket `peer` belongs in: the length of the prefix it shares with us; `None` for
    /// our own id.
    pub fn bucket_index(&self, peer: PeerId) -> Option<usize> {
        let shared = self.local_key.distance(&Key::from(peer)).leading_zeros() as usize;
        (shared < KEY_LEN * 8).then_some(shared)
    }

    /// The peers of bucket `index`, least recently seen first.
    pub fn bucket(&self, index: usize) -> impl Iterator<Item = PeerId> + '_ {
        self.buckets.get(index).into_iter().flatten().copied()
    }

    /// Whether the table holds `peer`.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.bucket_index(peer)
            .and_then(|i| self.buckets.get(i))
            .is_some_and(|bucket| bucket.contains(&peer))
    }

    /// Every peer in the table.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.buckets.iter().flatten().copied()
    }

    /// We heard from `peer` (it answered, or asked us something): add it or mark it the most
    /// recently seen. A full bucket is left alone; see [`Insert::Full`].
    pub fn insert(&mut self, peer: PeerId) -> Insert {
        let Some(index) = self.bucket_index(peer) else {
            return Insert::Local;
        };
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, VecDeque::new);
        }
        let k = self.k;
        let bucket = &mut self.buckets[index];
        if let Some(at) = bucket.iter().position(|p| *p == peer) {
            bucket.remove(at);
            bucket.push_back(peer);
            return Insert::Refreshed;
        }
        if bucket.len() >= k {
            return match bucket.front() {
                Some(oldest) => Insert::Full { oldest: *oldest },
                None => Insert::Inserted, // k >= 1, so a full bucket has a front
            };
        }
        bucket.push_back(peer);
        self.len += 1;
        Insert::Inserted
    }

    /// Like [`insert`](Self::insert), but a full bucket asks `is_alive` about its least
    /// recently seen peer: a dead one is replaced by `peer`, a live one is refreshed and `peer`
    /// is dropped ([`Insert::Full`] is returned).
    pub fn insert_or_evict(
        &mut self,
        peer: PeerId,
        is_alive: impl FnOnce(PeerId) -> bool,
    ) -> Insert {
        match self.insert(peer) {
            Insert::Full { oldest } => {
                if is_alive(oldest) {
                    self.insert(oldest);
                    Insert::Full { oldest }
                } else {
                    self.remove(oldest);
                    self.insert(peer);
                    Insert::Replaced { evicted: oldest }
                }
            }
            other => other,
        }
    }

    /// Forgets `peer` (it left, or failed to answer). Returns whether it was there.
    pub fn remove(&mut self, peer: PeerId) -> bool {
        let Some(bucket) = self
            .bucket_index(peer)
            .and_then(|i| self.buckets.get_mut(i))
        else {
            return false;
        };
        match bucket.iter().position(|p| *p == peer) {
            Some(at) => {
                bucket.remove(at);
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    /// The `n` peers of the table closest to `key`, closest first.
    pub fn closest(&self, key: &Key, n: usize) -> Vec<PeerId> {
        // Buckets in order of distance to `key`: with `j` the prefix `key` shares with us, the
        // peers of bucket `j` share more than `j` bits with `key`; those of every deeper
        // bucket share exactly `j` (as we do); those of bucket `i < j` share exactly `i`. So
        // only the groups that reach `n` peers need sorting.
        let shared = self.local_key.distance(key).leading_zeros() as usize;
        let mut out: Vec<PeerId> = Vec::with_capacity(n);
        let mut group: Vec<(Distance, PeerId)> = Vec::new();
        let take = |group: &mut Vec<(Distance, PeerId)>, out: &mut Vec<PeerId>| {
            let room = n - out.len();
            if group.len() > room && room > 0 {
                group.select_nth_unstable(room - 1);
            }
            group.truncate(room);
            group.sort_unstable();
            out.extend(group.drain(..).map(|(_, p)| p));
        };
        let with_distance = |p: &PeerId| (key.distance(&Key::from(*p)), *p);
        if let Some(bucket) = self.buckets.get(shared) {
            group.extend(bucket.iter().map(with_distance));
            take(&mut group, &mut out);
        }
        if out.len() < n {
            for bucket in self.buckets.iter().skip(shared + 1) {
                group.extend(bucket.iter().map(with_distance));
            }
            take(&mut group, &mut out);
        }
        for bucket in self
            .buckets
            .iter()
            .take(shared.min(self.buckets.len()))
            .rev()
        {
            if out.len() >= n {
                break;
            }
            group.extend(bucket.iter().map(with_distance));
            take(&mut group, &mut out);
        }
        out
    }
}

/// Settings of a [`Lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupConfig {
    /// How many closest peers the lookup must hear from before it is done.
    pub k: usize,
    /// Queries in flight while the lookup makes progress. When `alpha` answers in a row bring
    /// no peer closer than the closest known, it has stalled and asks all of the `k` closest
    /// that it has not asked yet at once, as the Kademlia paper does.
    pub alpha: usize,
    /// Stop as soon as this many distinct providers are known (`None`: find the `k` closest
    /// peers whatever providers turn up, as when publishing).
    pub enough_providers: Option<usize>,
    /// Our own id, ignored when a reply lists it.
    pub local: Option<PeerId>,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            k: DEFAULT_K,
            alpha: DEFAULT_ALPHA,
            enough_providers: None,
            local: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryState {
    Waiting,
    InFlight,
    Replied,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    peer: PeerId,
    state: QueryState,
    /// 1 for a seed; one more than the peer whose reply named it.
    hop: u32,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// The closest peers that answered, closest first (at most `k`).
    pub closest: Vec<PeerId>,
    /// Providers named in the replies, in the order they were learnt.
    pub providers: Vec<PeerId>,
    /// Sequential requests on the path to the answer: for a lookup that found providers, the
    /// hop count of the first peer that named one; otherwise the largest hop count among the
    /// closest peers that answered. A seed is one hop away.
    pub hops: u32,
    /// Queries sent.
    pub queries: u32,
    /// Queries that failed (timed out, or the peer was gone).
    pub failures: u32,
}

/// An iterative lookup of the peers closest to a key and of the providers they store.
///
/// Call [`next_queries`](Self::next_queries), send each peer a "closest peers and providers
/// for this key" request, and report each answer with [`on_reply`](Self::on_reply) or its
/// absence with [`on_failure`](Self::on_failure); repeat until [`is_done`](Self::is_done).
/// The lookup is done when the `k` closest peers it knows of (not counting failed ones) have
/// all answered, or when enough providers are known, or when nobody is left to ask.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: Key,
    config: LookupConfig,
    candidates: BTreeMap<Distance, Candidate>,
    providers: Vec<PeerId>,
    providers_hop: Option<u32>,
    closest_seen: Option<Distance>,
    in_flight: usize,
    no_progress: usize,
    queries: u32,
    failures: u32,
}

impl Lookup {
    /// A lookup for `target` with the default settings, starting from `seeds` (usually the
    /// closest peers of our own routing table).
    pub fn new(target: Key, seeds: impl IntoIterator<Item = PeerId>) -> Self {
        Self::with_config(target, seeds, LookupConfig::default())
    }

    /// A lookup with the given settings (`k` and `alpha` are at least one).
    pub fn with_config(
        target: Key,
        seeds: impl IntoIterator<Item = PeerId>,
        config: LookupConfig,
    ) -> Self {
        let config = LookupConfig {
            k: config.k.max(1),
            alpha: config.alpha.max(1),
            ..config
        };
        let mut lookup = Self {
            target,
            config,
            candidates: BTreeMap::new(),
            providers: Vec::new(),
            providers_hop: None,
            closest_seen: None,
            in_flight: 0,
            no_progress: 0,
            queries: 0,
            failures: 0,
        };
        for seed in seeds {
            lookup.learn(seed, 1);
        }
        lookup
    }

    /// The key looked up.
    pub fn target(&self) -> Key {
        self.target
    }

    /// Queries sent and not yet answered or failed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The peers to query now (each is then in flight). Empty when the lookup is done or
    /// must wait for answers.
    pub fn next_queries(&mut self) -> Vec<PeerId> {
        if self.is_done() {
            return Vec::new();
        }
        let parallelism = if self.no_progress >= self.config.alpha {
            self.config.k
        } else {
            self.config.alpha
        };
        let mut queries = Vec::new();
        for candidate in self
            .candidates
            .values_mut()
            .filter(|c| c.state != QueryState::Failed)
            .take(self.config.k)
        {
            if self.in_flight >= parallelism {
                break;
            }
            if candidate.state == QueryState::Waiting {
                candidate.state = QueryState::InFlight;
                self.in_flight += 1;
                self.queries += 1;
                queries.push(candidate.peer);
            }
        }
        queries
    }

    /// `from` answered with the peers it knows closest to the target and the providers it
    /// stores for it. Answers from peers that were not asked, or already answered or failed,
    /// are ignored.
    pub fn on_reply(
        &mut self,
        from: PeerId,
        closer_peers: impl IntoIterator<Item = PeerId>,
        providers: impl IntoIterator<Item = PeerId>,
    ) {
        let Some(hop) = self.mark(from, QueryState::Replied) else {
            return;
        };
        let before = self.closest_seen;
        for peer in closer_peers {
            self.learn(peer, hop + 1);
        }
        let progress = match (before, self.closest_seen) {
            (Some(before), Some(now)) => now < before,
            (None, now) => now.is_some(),
            (Some(_), None) => false,
        };
        if progress {
            self.no_progress = 0;
        } else {
            self.no_progress += 1;
        }
        for provider in providers {
            if !self.providers.contains(&provider) {
                self.providers.push(provider);
                self.providers_hop.get_or_insert(hop);
            }
        }
    }

    /// The query to `from` failed (timeout, or the peer is gone). Ignored unless it was in
    /// flight.
    pub fn on_failure(&mut self, from: PeerId) {
        if self.mark(from, QueryState::Failed).is_some() {
            self.failures += 1;
            self.no_progress += 1;
        }
    }

    /// Whether the lookup has its answer.
    pub fn is_done(&self) -> bool {
        if let Some(enough) = self.config.enough_providers
            && self.providers.len() >= enough
        {
            return true;
        }
        self.window().all(|c| c.state == QueryState::Replied)
    }

    /// What the lookup found so far (final once it is done).
    pub fn result(&self) -> LookupResult {
        let closest: Vec<Candidate> = self
            .candidates
            .values()
            .filter(|c| c.state == QueryState::Replied)
            .take(self.config.k)
            .copied()
            .collect();
        let hops = self
            .providers_hop
            .unwrap_or_else(|| closest.iter().map(|c| c.hop).max().unwrap_or(0));
        LookupResult {
            closest: closest.iter().map(|c| c.peer).collect(),
            providers: self.providers.clone(),
            hops,
            queries: self.queries,
            failures: self.failures,
        }
    }

    /// The `k` closest candidates that have not failed.
    fn window(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .values()
            .filter(|c| c.state != QueryState::Failed)
            .take(self.config.k)
    }

    fn learn(&mut self, peer: PeerId, hop: u32) {
        if Some(peer) == self.config.local {
            return;
        }
        let d = self.target.distance(&Key::from(peer));
        let candidate = self.candidates.entry(d).or_insert(Candidate {
            peer,
            state: QueryState::Waiting,
            hop,
        });
        if candidate.state == QueryState::Waiting {
            candidate.hop = candidate.hop.min(hop);
        }
        if self.closest_seen.is_none_or(|c| d < c) {
            self.closest_seen = Some(d);
        }
    }

    /// Moves an in-flight query to `state`; its hop count, if it was in flight.
    fn mark(&mut self, peer: PeerId, state: QueryState) -> Option<u32> {
        let d = self.target.distance(&Key::from(peer));
        let candidate = self.candidates.get_mut(&d)?;
        if candidate.state != QueryState::InFlight {
            return None;
        }
        candidate.state = state;
        self.in_flight -= 1;
        Some(candidate.hop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    fn peer(n: u128) -> PeerId {
        PeerId::from_bytes(n.to_be_bytes())
    }

    /// The key of the same point as `peer(n)`.
    fn key(n: u128) -> Key {
        Key::from(peer(n))
    }

    #[test]
    fn buckets_hold_k_and_report_the_oldest_when_full() {
        let mut table = RoutingTable::new(peer(0), 2);
        // 4..8 share 125 bits with 0: one bucket.
        assert_eq!(table.bucket_index(peer(4)), Some(125));
        assert_eq!(table.insert(peer(4)), Insert::Inserted);
        assert_eq!(table.insert(peer(5)), Insert::Inserted);
        assert_eq!(table.insert(peer(6)), Insert::Full { oldest: peer(4) });
        assert_eq!(table.insert(peer(4)), Insert::Refreshed);
        assert_eq!(table.insert(peer(6)), Insert::Full { oldest: peer(5) });
        assert_eq!(
            table.bucket(125).collect::<Vec<_>>(),
            vec![peer(5), peer(4)]
        );
        assert_eq!(table.insert(peer(1)), Insert::Inserted, "another bucket");
        assert_eq!(table.insert(peer(0)), Insert::Local);
        assert_eq!(table.len(), 3);
        assert!(table.contains(peer(5)));
        assert!(!table.contains(peer(6)));
    }
    #[test]
    fn insert_or_evict_replaces_only_a_dead_oldest() {
        let mut table = RoutingTable::new(peer(0), 2);
        table.insert(peer(4));
        table.insert(peer(5));
        assert_eq!(
            table.insert_or_evict(peer(6), |_| true),
            Insert::Full { oldest: peer(4) }
        );
        assert_eq!(
            table.bucket(125).collect::<Vec<_>>(),
            vec![peer(5), peer(4)]
        );
        assert_eq!(
            table.insert_or_evict(peer(6), |p| p != peer(5)),
            Insert::Replaced { evicted: peer(5) }
        );
        assert_eq!(
            table.bucket(125).collect::<Vec<_>>(),
            vec![peer(4), peer(6)]
        );
        assert_eq!(table.len(), 2);
    }
    #[test]
    fn remove_forgets() {
        let mut table = RoutingTable::new(peer(0), 4);
        table.insert(peer(3));
        assert!(table.remove(peer(3)));
        assert!(!table.remove(peer(3)));
        assert!(!table.remove(peer(0)));
        assert!(table.is_empty());
    }
    #[test]
    fn closest_is_sorted_by_distance() {
        let mut table = RoutingTable::new(peer(0), 20);
        for n in [1, 2, 3, 8, 9, 100] {
            table.insert(peer(n));
        }
        assert_eq!(table.closest(&key(8), 3), vec![peer(8), peer(9), peer(1)]);
        assert!(table.closest(&key(8), 0).is_empty());
        assert_eq!(table.closest(&key(8), 50).len(), 6);
    }
    #[test]
    fn a_lookup_without_seeds_is_done_at_once() {
        let mut lookup = Lookup::new(key(1), []);
        assert!(lookup.is_done());
        assert!(lookup.next_queries().is_empty());
        assert_eq!(lookup.result().closest, Vec::<PeerId>::new());
    }
    #[test]
    fn a_lookup_asks_alpha_at_a_time_closest_first() {
        let config = LookupConfig {
            k: 2,
            alpha: 2,
            ..LookupConfig::default()
        };
        let mut lookup = Lookup::with_config(key(0), [peer(8), peer(4), peer(16)], config);
        assert_eq!(lookup.next_queries(), vec![peer(4), peer(8)]);
        assert!(lookup.next_queries().is_empty(), "two in flight");
        lookup.on_reply(peer(4), [peer(2), peer(0b101)], []);
        assert_eq!(lookup.next_queries(), vec![peer(2)]);
        lookup.on_failure(peer(8));
        lookup.on_reply(peer(2), [peer(1)], []);
        assert_eq!(lookup.next_queries(), vec![peer(1)]);
        assert!(!lookup.is_done());
        lookup.on_reply(peer(1), [], []);
        assert!(lookup.is_done());
        let result = lookup.result();
        assert_eq!(result.closest, vec![peer(1), peer(2)]);
        assert_eq!(result.hops, 3);
        assert_eq!(result.queries, 4);
        assert_eq!(result.failures, 1);
    }
    #[test]
    fn unasked_and_repeated_answers_are_ignored() {
        let mut lookup = Lookup::new(key(0), [peer(8)]);
        lookup.on_reply(peer(9), [peer(1)], [peer(7)]);
        assert_eq!(lookup.next_queries(), vec![peer(8)]);
        lookup.on_reply(peer(8), [], []);
        lookup.on_reply(peer(8), [peer(1)], [peer(7)]);
        lookup.on_failure(peer(8));
        assert!(lookup.is_done());
        assert_eq!(lookup.result().failures, 0);
        assert!(lookup.result().providers.is_empty());
    }
    #[test]
    fn a_lookup_for_providers_stops_at_the_first() {
        let config = LookupConfig {
            enough_providers: Some(1),
            local: Some(peer(3)),
            ..LookupConfig::default()
        };
        let mut lookup = Lookup::with_config(key(0), [peer(8)], config);
        lookup.next_queries();
        lookup.on_reply(peer(8), [peer(4), peer(3)], []);
        assert_eq!(lookup.next_queries(), vec![peer(4)], "never ourselves");
        lookup.on_reply(peer(4), [peer(2)], [peer(99), peer(99)]);
        assert!(lookup.is_done());
        assert!(lookup.next_queries().is_empty());
        let result = lookup.result();
        assert_eq!(result.providers, vec![peer(99)]);
        assert_eq!(result.hops, 2);
    }
    #[test]
    fn a_stalled_lookup_asks_all_k_closest_at_once() {
        let config = LookupConfig {
            k: 5,
            alpha: 1,
            ..LookupConfig::default()
        };
        let seeds = (1..=5).map(|n| peer(n << 8));
        let mut lookup = Lookup::with_config(key(0), seeds, config);
        assert_eq!(lookup.next_queries().len(), 1);
        lookup.on_reply(peer(1 << 8), [], []);
        assert_eq!(lookup.next_queries().len(), 4, "no progress: ask the rest");
    }
    /// A static network whose tables hold, for every bucket, up to `k` of the peers that
    /// belong in it (every peer inserted, in a random order, full buckets ignored).
    fn network(ids: &[u128], k: usize, order_seed: u64) -> HashMap<PeerId, RoutingTable> {
        ids.iter()
            .map(|me| {
                let mut table = RoutingTable::new(peer(*me), k);
                let mut others: Vec<u128> = ids.to_vec();
                others.sort_by_key(|n| (n ^ u128::from(order_seed)).rotate_left(7));
                for other in others {
                    table.insert(peer(other));
                }
                (peer(*me), table)
            })
            .collect()
    }

    /// Runs a lookup from `from` to the end, every peer answering from its table.
    fn run(
        net: &HashMap<PeerId, RoutingTable>,
        from: PeerId,
        target: Key,
        config: LookupConfig,
        alive: impl Fn(PeerId) -> bool,
    ) -> LookupResult {
        let seeds = net[&from].closest(&target, config.k);
        let mut lookup = Lookup::with_config(target, seeds, config);
        let mut rounds = 0;
        while !lookup.is_done() {
            let queries = lookup.next_queries();
            assert!(!queries.is_empty(), "not done, yet nothing to ask");
            for q in queries {
                if alive(q) {
                    let closer: Vec<PeerId> = net[&q]
                        .closest(&target, config.k + 1)
                        .into_iter()
                        .filter(|p| *p != from)
                        .take(config.k)
                        .collect();
                    lookup.on_reply(q, closer, []);
                } else {
                    lookup.on_failure(q);
                }
            }
            rounds += 1;
            assert!(rounds < 1000);
        }
        lookup.result()
    }

    fn true_closest(ids: &[u128], exclude: u128, target: Key, k: usize) -> Vec<PeerId> {
        let mut others: Vec<PeerId> = ids
            .iter()
            .filter(|n| **n != exclude)
            .map(|n| peer(*n))
            .collect();
        others.sort_by_key(|p| target.distance(&Key::from(*p)));
        others.truncate(k);
        others
    }

    fn ids() -> impl Strategy<Value = Vec<u128>> {
        proptest::collection::btree_set(any::<u128>(), 2..60).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// `closest` agrees with sorting every peer the table holds.
        #[test]
        fn closest_matches_brute_force(ids in ids(), target in any::<u128>(), n in 0usize..30, k in 1usize..6) {
            let mut table = RoutingTable::new(peer(ids[0]), k);
            for id in &ids {
                table.insert(peer(*id));
            }
            prop_assert!(!table.contains(peer(ids[0])));
            let mut all: Vec<PeerId> = table.peers().collect();
            prop_assert_eq!(all.len(), table.len());
            all.sort_by_key(|p| key(target).distance(&Key::from(*p)));
            all.truncate(n);
            prop_assert_eq!(table.closest(&key(target), n), all);
        }

        /// The same with peers and keys that share long prefixes with us, so every bucket
        /// order case of `closest` is exercised.
        #[test]
        fn closest_matches_brute_force_near_us(me in any::<u128>(), others in proptest::collection::vec((any::<u128>(), 0u32..128), 0..60), target in (any::<u128>(), 0u32..128), n in 0usize..30, k in 1usize..6) {
            let mut table = RoutingTable::new(peer(me), k);
            for (bits, shift) in others {
                table.insert(peer(me ^ (bits >> shift)));
            }
            let target = key(me ^ (target.0 >> target.1));
            let mut all: Vec<PeerId> = table.peers().collect();
            all.sort_by_key(|p| target.distance(&Key::from(*p)));
            all.truncate(n);
            prop_assert_eq!(table.closest(&target, n), all);
        }

        /// On a static network, a lookup finds exactly the true `k` closest peers.
        #[test]
        fn lookup_finds_the_true_closest(ids in ids(), target in any::<u128>(), k in 1usize..8, alpha in 1usize..4, start in any::<prop::sample::Index>(), order in any::<u64>()) {
            let net = network(&ids, k, order);
            let from = ids[start.index(ids.len())];
            let config = LookupConfig { k, alpha, enough_providers: None, local: Some(peer(from)) };
            let result = run(&net, peer(from), key(target), config, |_| true);
            prop_assert_eq!(result.closest, true_closest(&ids, from, key(target), k));
            prop_assert_eq!(result.failures, 0);
        }

        /// With some peers gone (and still in the tables), a lookup finds only live peers,
        /// closest first, and terminates.
        #[test]
        fn lookup_survives_dead_peers(ids in ids(), target in any::<u128>(), dead in proptest::collection::vec(any::<prop::sample::Index>(), 0..20), start in any::<prop::sample::Index>()) {
            let net = network(&ids, 4, 1);
            let from = ids[start.index(ids.len())];
            let dead: BTreeSet<PeerId> = dead.iter().map(|i| peer(ids[i.index(ids.len())])).filter(|p| *p != peer(from)).collect();
            let config = LookupConfig { k: 4, local: Some(peer(from)), ..LookupConfig::default() };
            let result = run(&net, peer(from), key(target), config, |p| !dead.contains(&p));
            prop_assert!(result.closest.iter().all(|p| !dead.contains(p)));
            let mut sorted = result.closest.clone();
            sorted.sort_by_key(|p| key(target).distance(&Key::from(*p)));
            prop_assert_eq!(sorted, result.closest);
        }
    }
}
