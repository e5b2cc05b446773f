//! The id space of the structured layer: each content id maps to a [`Key`] in the 128-bit
//! space of peer ids, and the peers whose ids are closest to that key by XOR [`Distance`]
//! keep its [`ProviderStore`] records ([`crate::dht`] routes to them; [`crate::mesh`] picks
//! neighbours by the same distance). Sans-I/O: expiry times are plain millisecond
//! timestamps that the caller passes in; no clock is read here. (The iterative lookup and
//! routing table of the Kademlia paper, which only the simulation models, live in the
//! simulation crate.)

use std::collections::BTreeMap;

use swarm_protocol::{ContentId, PeerId};

/// Bytes in a [`Key`]: the size of a [`PeerId`].
pub const KEY_LEN: usize = swarm_protocol::peer_id::PEER_ID_LEN;

/// Peers per bucket, peers returned per reply and record holders per key.
pub const DEFAULT_K: usize = 20;

/// Queries a lookup keeps in flight while it makes progress.
pub const DEFAULT_ALPHA: usize = 3;

/// How long a provider record lives unless its provider publishes it again: 30 minutes.
pub const DEFAULT_PROVIDER_TTL_MS: u64 = 30 * 60 * 1000;

/// How often a provider publishes its records again: 10 minutes, a third of their lifetime,
/// so one lost republication does not lose the record.
pub const DEFAULT_REPUBLISH_MS: u64 = 10 * 60 * 1000;

/// Providers kept per key by a [`ProviderStore`] unless configured otherwise.
pub const DEFAULT_MAX_PROVIDERS_PER_KEY: usize = 64;

/// A point in the 128-bit id space: a peer's id, or the first 16 bytes of a content id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key under which the providers of `content` are stored: the first 16 bytes of its
    /// id (a SHA-256 root, so they are as uniform as peer ids).
    pub fn for_content(content: &ContentId) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&content.as_bytes()[..KEY_LEN]);
        Self(bytes)
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        distance(self, other)
    }

    fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

impl From<PeerId> for Key {
    fn from(peer: PeerId) -> Self {
        Self(*peer.as_bytes())
    }
}

/// The XOR of two keys read as a big-endian number: zero only between equal keys, symmetric,
/// and for a given key and distance there is exactly one key at that distance, so a lookup
/// converges on one set of closest peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Distance(u128);

impl Distance {
    /// The distance between a key and itself.
    pub const ZERO: Distance = Distance(0);

    /// The distance as a number.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }

    /// Leading zero bits: the length of the prefix the two keys share (128 for equal keys).
    pub const fn leading_zeros(&self) -> u32 {
        self.0.leading_zeros()
    }
}

/// The XOR distance between two keys.
pub fn distance(a: &Key, b: &Key) -> Distance {
    Distance(a.as_u128() ^ b.as_u128())
}

/// One provider of a key and when its record expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The peer that has the content.
    pub provider: PeerId,
    /// When the record stops counting, in the caller's milliseconds.
    pub expires_at_ms: u64,
}

/// The provider records a peer holds for the keys it is among the closest to.
#[derive(Debug, Clone)]
pub struct ProviderStore {
    max_per_key: usize,
    records: BTreeMap<Key, Vec<ProviderRecord>>,
}

impl Default for ProviderStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PROVIDERS_PER_KEY)
    }
}

impl ProviderStore {
    /// An empty store keeping at most `max_per_key` providers per key (at least one).
    pub fn new(max_per_key: usize) -> Self {
        Self {
            max_per_key: max_per_key.max(1),
            records: BTreeMap::new(),
        }
    }

    /// `provider` has the content of `key` until `expires_at_ms`. A known provider gets the
    /// later of its two expiry times. A full key takes no newcomer: a record is never
    /// evicted for a newer one (fresh keys cost nothing, so newer says nothing of
    /// genuineness); records make room by expiring. Returns whether the provider is now
    /// stored.
    pub fn add(&mut self, key: Key, provider: PeerId, expires_at_ms: u64) -> bool {
        let records = self.records.entry(key).or_default();
        if let Some(record) = records.iter_mut().find(|r| r.provider == provider) {
            record.expires_at_ms = record.expires_at_ms.max(expires_at_ms);
            return true;
        }
        if records.len() >= self.max_per_key {
            return false;
        }
        records.push(ProviderRecord {
            provider,
            expires_at_ms,
        });
        true
    }

    /// The providers of `key` whose records have not expired at `now_ms`.
    pub fn providers(&self, key: &Key, now_ms: u64) -> Vec<PeerId> {
        self.records
            .get(key)
            .into_iter()
            .flatten()
            .filter(|r| r.expires_at_ms > now_ms)
            .map(|r| r.provider)
            .collect()
    }

    /// Forgets that `provider` has `key`. Returns whether it was stored.
    pub fn remove(&mut self, key: &Key, provider: PeerId) -> bool {
        let Some(records) = self.records.get_mut(key) else {
            return false;
        };
        let before = records.len();
        records.retain(|r| r.provider != provider);
        let removed = records.len() < before;
        if records.is_empty() {
            self.records.remove(key);
        }
        removed
    }

    /// Drops every record expired at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut dropped = 0;
        self.records.retain(|_, records| {
            let before = records.len();
            records.retain(|r| r.expires_at_ms > now_ms);
            dropped += before - records.len();
            !records.is_empty()
        });
        dropped
    }

    /// The keys with at least one record (expired or not).
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.records.keys().copied()
    }

    /// Records held, over all keys.
    pub fn len(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn peer(n: u128) -> PeerId {
        PeerId::from_bytes(n.to_be_bytes())
    }

    fn key(n: u128) -> Key {
        Key::from_bytes(n.to_be_bytes())
    }

    #[test]
    fn content_keys_are_the_first_sixteen_bytes() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let key = Key::for_content(&ContentId::from_bytes(bytes));
        assert_eq!(key.as_bytes()[..], bytes[..16]);
        assert_eq!(Key::from(peer(7)).as_bytes(), peer(7).as_bytes());
    }

    #[test]
    fn distance_is_xor_read_big_endian() {
        assert_eq!(key(0b1010).distance(&key(0b0110)).as_u128(), 0b1100);
        assert_eq!(key(5).distance(&key(5)), Distance::ZERO);
        assert_eq!(key(1 << 127).distance(&key(0)).leading_zeros(), 0);
        assert_eq!(key(1).distance(&key(0)).leading_zeros(), 127);
        assert!(key(0).distance(&key(1 << 127)) > key(0).distance(&key(u128::MAX >> 1)));
    }

    #[test]
    fn provider_records_expire_and_refresh() {
        let mut store = ProviderStore::new(2);
        let k = key(1);
        assert!(store.add(k, peer(1), 100));
        assert!(store.add(k, peer(1), 50), "keeps the later expiry");
        assert!(store.add(k, peer(2), 200));
        assert_eq!(store.providers(&k, 0), vec![peer(1), peer(2)]);
        assert_eq!(store.providers(&k, 100), vec![peer(2)]);
        assert!(
            !store.add(k, peer(3), 150),
            "full: the fresh record does not evict"
        );
        assert_eq!(store.providers(&k, 0), vec![peer(1), peer(2)]);
        assert_eq!(store.len(), 2);
        assert_eq!(store.expire(100), 1);
        assert!(store.add(k, peer(3), 150), "room again");
        assert_eq!(store.expire(150), 1);
        assert_eq!(store.keys().collect::<Vec<_>>(), vec![k]);
        assert!(store.remove(&k, peer(2)));
        assert!(!store.remove(&k, peer(2)));
        assert!(store.is_empty());
        assert!(store.providers(&key(9), 0).is_empty());
    }

    proptest! {
        #[test]
        fn distance_is_a_metric(a in any::<u128>(), b in any::<u128>(), c in any::<u128>()) {
            let (a, b, c) = (key(a), key(b), key(c));
            prop_assert_eq!(a.distance(&b), b.distance(&a));
            prop_assert_eq!(a.distance(&b) == Distance::ZERO, a == b);
            let via = a.distance(&b).as_u128().checked_add(b.distance(&c).as_u128());
            prop_assert!(via.is_none_or(|via| a.distance(&c).as_u128() <= via));
        }

        /// For a key and a distance, exactly one key is at that distance.
        #[test]
        fn distance_is_unidirectional(a in any::<u128>(), d in any::<u128>()) {
            let b = key(a ^ d);
            prop_assert_eq!(key(a).distance(&b).as_u128(), d);
        }

        /// A full store never exceeds its cap, and every provider it reports was added.
        #[test]
        fn the_provider_store_is_bounded(adds in proptest::collection::vec((0u128..4, 0u128..10, 0u64..100), 0..100), now in 0u64..100) {
            let mut store = ProviderStore::new(3);
            let mut added = BTreeSet::new();
            for (k, p, exp) in adds {
                store.add(key(k), peer(p), exp);
                added.insert((k, p));
            }
            for k in 0..4u128 {
                let providers = store.providers(&key(k), now);
                prop_assert!(providers.len() <= 3);
                for p in providers {
                    prop_assert!(added.contains(&(k, u128::from_be_bytes(*p.as_bytes()))));
                }
            }
        }
    }
}
