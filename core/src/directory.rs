//! Who provides what beyond our own neighbours: the room's file directory, filled by gossip.
//!
//! In a partial mesh the `announce` frame of a sharer reaches its neighbours only. A peer
//! that holds a whole content also floods a signed [`Gossip::Provide`] through the overlay
//! ([`crate::relay`]); every peer records it here, with the signed frame itself, so that it
//! can list the file, dial a provider when the user downloads it, and hand the records to a
//! new neighbour, who then knows the room's files without anyone flooding them again.
//!
//! Records are dropped when their provider leaves the room (or its connection fails). The
//! directory holds at most a fixed number of them, and at most [`MAX_PER_PROVIDER`] of one
//! provider; when it is full, a new record is not taken: what is held is never evicted for a
//! newcomer, so a flood of records from fresh keys cannot push the genuine ones out (each
//! neighbour's flood is also slowed, [`crate::client::RELAY_PER_SEC`]).
//!
//! Only members the server listed (`welcome`, `joined`) go in the directory: a signed record
//! needs no more than a fresh key, so records of origins the server never named wait in
//! [`Unlisted`], a small queue of their own where the newest push the oldest out, and move
//! to the directory if the server lists their provider (its `joined` may come after its
//! gossip). A flood of records from fresh keys thus never fills the directory, and never
//! stays: it only churns the queue.
//!
//! [`Gossip::Provide`]: swarm_protocol::gossip::Gossip::Provide

use std::collections::{BTreeMap, VecDeque};

use swarm_protocol::{ContentId, PeerId};

/// Records (content, provider) kept by default: a room of a few hundred files with a few
/// providers each.
pub const DEFAULT_MAX_RECORDS: usize = 1024;

/// Records one provider may have in the directory.
pub const MAX_PER_PROVIDER: usize = 64;

/// Records of providers the server has not listed, kept at once ([`Unlisted`]).
pub const MAX_UNLISTED: usize = 64;

/// A provider record, as gossip brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The peer that provides the content.
    pub provider: PeerId,
    /// The content.
    pub id: ContentId,
    /// Length in bytes.
    pub size: u64,
    /// File name.
    pub name: String,
    /// MIME type (may be empty).
    pub mime: String,
    /// The signed relay frame that said so.
    pub frame: Vec<u8>,
}

/// Records of providers the server has not listed (yet), at most [`MAX_UNLISTED`]: the
/// newest push the oldest out (none of them is known to be genuine).
#[derive(Debug, Default)]
pub struct Unlisted {
    records: VecDeque<Record>,
}

impl Unlisted {
    /// Keeps `record` (in place of an older one of the same provider and content), pushing
    /// the oldest out when full.
    pub fn push(&mut self, record: Record) {
        self.records
            .retain(|r| (r.provider, r.id) != (record.provider, record.id));
        if self.records.len() >= MAX_UNLISTED {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// Takes the records of `provider` out (the server listed it, or it left).
    pub fn take(&mut self, provider: PeerId) -> Vec<Record> {
        let (taken, kept): (VecDeque<Record>, VecDeque<Record>) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(|r| r.provider == provider);
        self.records = kept;
        taken.into()
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A content some peer in the room provides, as its gossip described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The content.
    pub id: ContentId,
    /// File name, as the first provider we heard of named it.
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// MIME type (may be empty).
    pub mime: String,
    /// The peers that provide it, in id order.
    pub providers: Vec<PeerId>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    size: u64,
    mime: String,
    /// Provider → the signed relay frame that announced it (with no hops left).
    providers: BTreeMap<PeerId, Vec<u8>>,
}

/// The room's providers as heard by gossip, bounded in size.
#[derive(Debug)]
pub struct Directory {
    entries: BTreeMap<ContentId, Entry>,
    /// Records held, in all and per provider.
    records: usize,
    per_provider: BTreeMap<PeerId, usize>,
    max_records: usize,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORDS)
    }
}

impl Directory {
    /// An empty directory keeping at most `max_records` (at least one).
    pub fn new(max_records: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            records: 0,
            per_provider: BTreeMap::new(),
            max_records: max_records.max(1),
        }
    }

    /// Records that `provider` holds content `id`; `record` is the signed frame that said so.
    /// Returns whether the content itself is new to the directory. Not taken when the
    /// directory is full, or holds [`MAX_PER_PROVIDER`] records of `provider` already.
    pub fn insert(
        &mut self,
        provider: PeerId,
        id: ContentId,
        size: u64,
        name: &str,
        mime: &str,
        record: Vec<u8>,
    ) -> bool {
        let known = self
            .entries
            .get(&id)
            .is_some_and(|entry| entry.providers.contains_key(&provider));
        let of_provider = self.per_provider.get(&provider).copied().unwrap_or(0);
        if !known && (self.records >= self.max_records || of_provider >= MAX_PER_PROVIDER) {
            return false;
        }
        let is_new = !self.entries.contains_key(&id);
        let entry = self.entries.entry(id).or_insert_with(|| Entry {
            name: name.to_owned(),
            size,
            mime: mime.to_owned(),
            providers: BTreeMap::new(),
        });
        if entry.providers.insert(provider, record).is_none() {
            self.records += 1;
            *self.per_provider.entry(provider).or_default() += 1;
        }
        is_new
    }

    fn remove(&mut self, id: ContentId, provider: PeerId) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        if entry.providers.remove(&provider).is_none() {
            return false;
        }
        self.records -= 1;
        if let Some(n) = self.per_provider.get_mut(&provider) {
            *n -= 1;
            if *n == 0 {
                self.per_provider.remove(&provider);
            }
        }
        if entry.providers.is_empty() {
            self.entries.remove(&id);
        }
        true
    }

    /// Forgets everything `peer` provides (it left). Returns whether anything was removed.
    pub fn remove_provider(&mut self, peer: PeerId) -> bool {
        let ids: Vec<ContentId> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.providers.contains_key(&peer))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(*id, peer);
        }
        !ids.is_empty()
    }

    /// The providers of `id`, in id order.
    pub fn providers(&self, id: ContentId) -> Vec<PeerId> {
        self.entries
            .get(&id)
            .map(|entry| entry.providers.keys().copied().collect())
            .unwrap_or_default()
    }

    /// What is known of `id`.
    pub fn file(&self, id: ContentId) -> Option<RemoteFile> {
        let entry = self.entries.get(&id)?;
        Some(RemoteFile {
            id,
            name: entry.name.clone(),
            size: entry.size,
            mime: entry.mime.clone(),
            providers: entry.providers.keys().copied().collect(),
        })
    }

    /// Every content with at least one provider, in id order.
    pub fn files(&self) -> Vec<RemoteFile> {
        self.entries
            .keys()
            .filter_map(|id| self.file(*id))
            .collect()
    }

    /// The signed frames of every record except those of `except` (to hand a new neighbour).
    pub fn records(&self, except: PeerId) -> Vec<Vec<u8>> {
        self.entries
            .values()
            .flat_map(|entry| entry.providers.iter())
            .filter(|(provider, _)| **provider != except)
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// How many (content, provider) records are held.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    fn content(n: u8) -> ContentId {
        ContentId::from_bytes([n; 32])
    }

    fn record(provider: u8, id: u8) -> Record {
        Record {
            provider: peer(provider),
            id: content(id),
            size: 1,
            name: "x".into(),
            mime: String::new(),
            frame: vec![provider, id],
        }
    }

    #[test]
    fn unlisted_records_are_bounded_newest_first_and_taken_per_provider() {
        let mut unlisted = Unlisted::default();
        unlisted.push(record(1, 1));
        unlisted.push(record(1, 1));
        assert_eq!(unlisted.len(), 1, "a repeat replaces");
        // A flood from fresh keys pushes the oldest out, never grows past the bound.
        for n in 0..=MAX_UNLISTED as u8 {
            unlisted.push(record(100u8.wrapping_add(n), n));
        }
        assert_eq!(unlisted.len(), MAX_UNLISTED);
        assert!(unlisted.take(peer(1)).is_empty(), "the oldest went first");
        unlisted.push(record(2, 7));
        unlisted.push(record(2, 8));
        let taken = unlisted.take(peer(2));
        assert_eq!(taken, vec![record(2, 7), record(2, 8)]);
        assert!(unlisted.take(peer(2)).is_empty(), "taken once");
        assert_eq!(unlisted.len(), MAX_UNLISTED - 2);
    }

    #[test]
    fn providers_accumulate_and_leave() {
        let mut dir = Directory::default();
        assert!(dir.insert(peer(1), content(1), 10, "a.txt", "text/plain", vec![1]));
        assert!(!dir.insert(peer(2), content(1), 10, "b.txt", "", vec![2]));
        assert!(
            !dir.insert(peer(2), content(1), 10, "b.txt", "", vec![2]),
            "a repeat"
        );
        assert!(dir.insert(peer(2), content(2), 5, "c", "", vec![3]));
        assert_eq!(dir.len(), 3);
        let file = dir.file(content(1)).expect("known");
        assert_eq!(file.name, "a.txt", "the first name heard is kept");
        assert_eq!(file.providers, vec![peer(1), peer(2)]);
        assert_eq!(dir.records(peer(1)), vec![vec![2], vec![3]]);

        assert!(dir.remove_provider(peer(2)));
        assert!(!dir.remove_provider(peer(2)));
        assert_eq!(dir.providers(content(1)), vec![peer(1)]);
        assert_eq!(dir.file(content(2)), None, "no provider left");
        assert_eq!(dir.files().len(), 1);
        assert_eq!(dir.len(), 1);
    }

    #[test]
    fn a_full_directory_keeps_what_it_holds() {
        // A fresh record always displaced the oldest genuine one: a flood of records from
        // fresh keys emptied the directory of real files.
        let mut dir = Directory::new(2);
        dir.insert(peer(1), content(1), 1, "", "", vec![]);
        dir.insert(peer(2), content(2), 1, "", "", vec![]);
        assert!(!dir.insert(peer(3), content(3), 1, "", "", vec![]));
        assert_eq!(dir.len(), 2);
        assert!(dir.file(content(1)).is_some() && dir.file(content(3)).is_none());
        // Room again once a provider leaves.
        dir.remove_provider(peer(1));
        assert!(dir.insert(peer(3), content(3), 1, "", "", vec![]));
        assert!(dir.file(content(3)).is_some() && dir.file(content(2)).is_some());
    }

    #[test]
    fn one_provider_holds_a_bounded_share() {
        let mut dir = Directory::default();
        for n in 0..=MAX_PER_PROVIDER {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            dir.insert(peer(1), ContentId::from_bytes(id), 1, "", "", vec![]);
        }
        assert_eq!(dir.len(), MAX_PER_PROVIDER);
        assert!(dir.insert(peer(2), content(9), 1, "", "", vec![]));
    }

    proptest! {
        /// Whatever happens, the count matches the records held and never exceeds the limit.
        #[test]
        fn bounded_and_consistent(ops in proptest::collection::vec((any::<bool>(), 0u8..6, 0u8..6), 0..200), max in 1usize..8) {
            let mut dir = Directory::new(max);
            for (insert, p, c) in ops {
                if insert {
                    dir.insert(peer(p), content(c), 1, "", "", vec![p]);
                } else {
                    dir.remove_provider(peer(p));
                }
                let held: usize = dir.files().iter().map(|f| f.providers.len()).sum();
                prop_assert_eq!(held, dir.len());
                prop_assert!(dir.len() <= max);
            }
        }
    }
}
