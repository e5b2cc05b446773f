//! The structured layer: every live peer runs the real [`RoutingTable`], [`Lookup`] and
//! [`ProviderStore`] of `swarm_core::kademlia`; this module only carries the requests.
//!
//! - A request reaches any live peer and is answered at once (one RPC round is one round trip,
//!   far shorter than a churn round, so the room does not change during a lookup). A request
//!   to a peer that left fails, as a timeout would.
//! - The answering peer records the requester in its table and answers with the `k` peers of
//!   its table closest to the key (never the requester) and the unexpired providers it stores.
//! - The requester records each peer that answered and removes each that failed.
//! - When a bucket is full, the least recently seen peer is "pinged" (the simulation knows
//!   whether it is alive, and counts two messages, one if it is gone): a dead one is replaced,
//!   a live one is kept ([`RoutingTable::insert_or_evict`]).
//! - A newcomer puts its overlay neighbours in its table, then looks up its own id and
//!   refreshes the buckets farther than its closest peer that are not full (a lookup of a
//!   random key in each), as in the Kademlia paper. There is no periodic refresh after that. Whenever an
//!   overlay link opens, both ends put each other in their tables.
//! - Publishing: a lookup of the `k` peers closest to the content key, then a one-way
//!   "add provider" message to each of them.

use rand::Rng;
use swarm_core::kademlia::{Key, ProviderStore};

use crate::kademlia::{Lookup, LookupConfig, LookupResult, RoutingTable};
use swarm_protocol::PeerId;

use crate::overlay::{Overlay, Slot};

/// Kademlia settings of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bucket size, peers per answer and record holders per key.
    pub k: usize,
    /// Queries in flight per lookup.
    pub alpha: usize,
    /// Provider records live this long after each publication.
    pub record_ttl_ms: u64,
    /// A newcomer refreshes its buckets after its own-id lookup (a lookup of a random key in
    /// each bucket farther than its closest peer and not yet full), as in the Kademlia paper.
    pub refresh: bool,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            k: swarm_core::kademlia::DEFAULT_K,
            alpha: swarm_core::kademlia::DEFAULT_ALPHA,
            record_ttl_ms: swarm_core::kademlia::DEFAULT_PROVIDER_TTL_MS,
            refresh: true,
        }
    }
}

/// Messages spent keeping tables up to date (not counted in any lookup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Requests and replies of newcomers' own-id lookups.
    pub bootstrap_messages: u64,
    /// Pings of the least recently seen peer of a full bucket, and their replies.
    pub ping_messages: u64,
    /// Lookup and "add provider" messages of publications and republications.
    pub publish_messages: u64,
}

/// One lookup as the simulation saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRun {
    /// What the lookup state machine reported.
    pub result: LookupResult,
    /// Batches of requests sent one after the other: the lookup's latency in round trips.
    pub rounds: u32,
    /// Requests plus replies.
    pub messages: u32,
    /// Requests that went to a direct overlay neighbour of the requester.
    pub to_neighbours: u32,
}

/// Every peer's routing table and provider store.
#[derive(Debug)]
pub struct Dht {
    config: DhtConfig,
    tables: Vec<Option<RoutingTable>>,
    stores: Vec<ProviderStore>,
    /// Maintenance messages over the whole run.
    pub stats: DhtStats,
}

impl Dht {
    /// No peer has a table yet.
    pub fn new(config: DhtConfig) -> Self {
        Self {
            config,
            tables: Vec::new(),
            stores: Vec::new(),
            stats: DhtStats::default(),
        }
    }

    /// The table of `slot`, if it has joined the structured layer.
    pub fn table(&self, slot: Slot) -> Option<&RoutingTable> {
        self.tables.get(slot).and_then(Option::as_ref)
    }

    fn grow(&mut self, overlay: &Overlay) {
        if self.tables.len() < overlay.slots() {
            self.tables.resize_with(overlay.slots(), || None);
            self.stores
                .resize_with(overlay.slots(), ProviderStore::default);
        }
    }

    /// The peer in `slot` left: its table and records go with it.
    pub fn forget(&mut self, slot: Slot) {
        if let Some(table) = self.tables.get_mut(slot) {
            *table = None;
        }
        if let Some(store) = self.stores.get_mut(slot) {
            *store = ProviderStore::new(1);
        }
    }

    /// The peer in `slot` joins the structured layer with its overlay neighbours in its
    /// table (it answers requests from then on).
    pub fn join(&mut self, overlay: &Overlay, slot: Slot) {
        self.grow(overlay);
        let mut table = RoutingTable::new(overlay.id(slot), self.config.k);
        for n in overlay.neighbours(slot) {
            table.insert(overlay.id(*n));
        }
        self.tables[slot] = Some(table);
    }

    /// A link opened between `a` and `b`: each has heard from the other (the caller's
    /// connection is proof that the peer is alive), so each goes into the other's table.
    pub fn linked(&mut self, overlay: &Overlay, a: Slot, b: Slot) {
        self.grow(overlay);
        self.heard_from(overlay, a, overlay.id(b));
        self.heard_from(overlay, b, overlay.id(a));
    }

    /// The peer in `slot`, which has joined, fills its table with a lookup of its own id,
    /// then (with `refresh`) a lookup of a random key in each bucket farther than the closest
    /// peer it found and not yet full.
    pub fn bootstrap(&mut self, overlay: &Overlay, slot: Slot, now_ms: u64, rng: &mut impl Rng) {
        let me = overlay.id(slot);
        let run = self.lookup(overlay, slot, Key::from(me), None, now_ms);
        self.stats.bootstrap_messages += u64::from(run.messages);
        if !self.config.refresh {
            return;
        }
        let deepest = self
            .table(slot)
            .and_then(|t| t.peers().filter_map(|p| t.bucket_index(p)).max())
            .unwrap_or(0);
        let mine = u128::from_be_bytes(*me.as_bytes());
        for bucket in 0..deepest {
            if self
                .table(slot)
                .is_none_or(|t| t.bucket(bucket).count() >= self.config.k)
            {
                continue;
            }
            // Shares exactly `bucket` leading bits with us.
            let flip = 1u128 << (127 - bucket);
            let below = flip - 1;
            let key = (mine ^ flip) & !below | (rng.random::<u128>() & below);
            let run = self.lookup(
                overlay,
                slot,
                Key::from_bytes(key.to_be_bytes()),
                None,
                now_ms,
            );
            self.stats.bootstrap_messages += u64::from(run.messages);
        }
    }

    /// Live peers holding an unexpired record for `key` (a full scan: for diagnosis).
    pub fn record_holders(&self, overlay: &Overlay, key: &Key, now_ms: u64) -> usize {
        overlay
            .alive()
            .iter()
            .filter(|s| {
                self.stores
                    .get(**s)
                    .is_some_and(|store| !store.providers(key, now_ms).is_empty())
            })
            .count()
    }

    /// Mean number of peers in the live peers' tables.
    pub fn mean_table_size(&self, overlay: &Overlay) -> f64 {
        let alive = overlay.alive();
        let total: usize = alive
            .iter()
            .filter_map(|s| self.table(*s))
            .map(|t| t.len())
            .sum();
        total as f64 / alive.len().max(1) as f64
    }

    /// Runs one lookup from `from` to the end. `enough_providers` stops it early.
    pub fn lookup(
        &mut self,
        overlay: &Overlay,
        from: Slot,
        target: Key,
        enough_providers: Option<usize>,
        now_ms: u64,
    ) -> LookupRun {
        self.grow(overlay);
        let me = overlay.id(from);
        let k = self.config.k;
        let seeds = self
            .table(from)
            .map(|t| t.closest(&target, k))
            .unwrap_or_default();
        let config = LookupConfig {
            k,
            alpha: self.config.alpha,
            enough_providers,
            local: Some(me),
        };
        let mut lookup = Lookup::with_config(target, seeds, config);
        let neighbours = overlay.neighbours(from);
        let (mut rounds, mut messages, mut to_neighbours) = (0u32, 0u32, 0u32);
        loop {
            let queries = lookup.next_queries();
            if queries.is_empty() {
                break;
            }
            rounds += 1;
            for q in queries {
                messages += 1;
                let slot = overlay.slot_of(q).filter(|s| overlay.is_alive(*s));
                if slot.is_some_and(|s| neighbours.contains(&s)) {
                    to_neighbours += 1;
                }
                match slot.and_then(|s| self.answer(overlay, s, me, &target, now_ms)) {
                    Some((closer, providers)) => {
                        messages += 1;
                        lookup.on_reply(q, closer, providers);
                        self.heard_from(overlay, from, q);
                    }
                    None => {
                        lookup.on_failure(q);
                        if let Some(table) = self.tables[from].as_mut() {
                            table.remove(q);
                        }
                    }
                }
            }
        }
        LookupRun {
            result: lookup.result(),
            rounds,
            messages,
            to_neighbours,
        }
    }

    /// `slot` answers a request from `requester` about `target`.
    fn answer(
        &mut self,
        overlay: &Overlay,
        slot: Slot,
        requester: PeerId,
        target: &Key,
        now_ms: u64,
    ) -> Option<(Vec<PeerId>, Vec<PeerId>)> {
        self.tables[slot].as_ref()?;
        self.heard_from(overlay, slot, requester);
        let table = self.tables[slot].as_ref()?;
        let closer: Vec<PeerId> = table
            .closest(target, self.config.k + 1)
            .into_iter()
            .filter(|p| *p != requester)
            .take(self.config.k)
            .collect();
        let providers = self.stores[slot].providers(target, now_ms);
        Some((closer, providers))
    }

    /// `slot` heard from `peer`: it goes into `slot`'s table, pinging the oldest of a full
    /// bucket.
    fn heard_from(&mut self, overlay: &Overlay, slot: Slot, peer: PeerId) {
        let Some(table) = self.tables[slot].as_mut() else {
            return;
        };
        let mut pings = 0;
        table.insert_or_evict(peer, |oldest| {
            let alive = overlay.slot_of(oldest).is_some_and(|s| overlay.is_alive(s));
            pings += if alive { 2 } else { 1 };
            alive
        });
        self.stats.ping_messages += pings;
    }

    /// `provider` publishes that it has the content of `key`; returns the peers that now
    /// hold the record.
    pub fn publish(
        &mut self,
        overlay: &Overlay,
        provider: Slot,
        key: Key,
        now_ms: u64,
    ) -> Vec<PeerId> {
        let run = self.lookup(overlay, provider, key, None, now_ms);
        let id = overlay.id(provider);
        let expires = now_ms + self.config.record_ttl_ms;
        let mut holders = run.result.closest;
        // The provider keeps a record too if it is among the closest.
        holders.push(id);
        holders.sort_by_key(|p| key.distance(&Key::from(*p)));
        holders.truncate(self.config.k);
        for holder in &holders {
            if let Some(slot) = overlay.slot_of(*holder) {
                self.stores[slot].add(key, id, expires);
            }
        }
        let sent = holders.iter().filter(|h| **h != id).count() as u64;
        self.stats.publish_messages += u64::from(run.messages) + sent;
        holders
    }

    /// Looks up the providers of `key` from `from`, stopping at the first answer that names
    /// one. A peer that holds the record itself needs no request.
    pub fn find_providers(
        &mut self,
        overlay: &Overlay,
        from: Slot,
        key: Key,
        now_ms: u64,
    ) -> LookupRun {
        self.grow(overlay);
        let local = self.stores[from].providers(&key, now_ms);
        if !local.is_empty() {
            return LookupRun {
                result: LookupResult {
                    closest: Vec::new(),
                    providers: local,
                    hops: 0,
                    queries: 0,
                    failures: 0,
                },
                rounds: 0,
                messages: 0,
                to_neighbours: 0,
            };
        }
        self.lookup(overlay, from, key, Some(1), now_ms)
    }

    /// Drops expired records everywhere.
    pub fn expire(&mut self, now_ms: u64) {
        for store in &mut self.stores {
            store.expire(now_ms);
        }
    }
}
