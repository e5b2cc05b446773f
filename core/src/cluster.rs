//! What one signalling server knows of the peers that other instances serve, when several
//! instances share rooms (through Redis, in the server).
//!
//! [`RemoteMembers`] is plain bookkeeping: for each room that has local members, the remote
//! members this instance's peers have been told about, and the instance each one is on. The
//! server feeds it what it learns (join snapshots, `joined`/`left` events from other
//! instances) and asks it which remote peers to report as `left` when an instance dies.

use std::collections::{BTreeSet, HashMap};

use swarm_protocol::{PeerId, RoomName};

/// Remote peers, per room, with the instance (an opaque id) that serves each.
#[derive(Debug, Default)]
pub struct RemoteMembers<I> {
    rooms: HashMap<RoomName, HashMap<PeerId, I>>,
}

impl<I: Clone + Eq + Ord> RemoteMembers<I> {
    /// Knows nobody.
    pub fn new() -> Self {
        Self {
            rooms: HashMap::new(),
        }
    }

    /// `peer` on `instance` is in `room` and local peers have been told (by a `welcome` or a
    /// `joined`). Returns whether it was new.
    pub fn insert(&mut self, room: &RoomName, peer: PeerId, instance: I) -> bool {
        self.rooms
            .entry(room.clone())
            .or_default()
            .insert(peer, instance)
            .is_none()
    }

    /// `peer` left `room`; returns whether it was known (and so whether local peers must be
    /// told).
    pub fn remove(&mut self, room: &RoomName, peer: PeerId) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        let known = members.remove(&peer).is_some();
        if members.is_empty() {
            self.rooms.remove(room);
        }
        known
    }

    /// The last local peer left `room`: nobody here needs to hear of its remote members.
    pub fn forget_room(&mut self, room: &RoomName) {
        self.rooms.remove(room);
    }

    /// The instance serving `peer` in `room`, if known.
    pub fn instance_of(&self, room: &RoomName, peer: PeerId) -> Option<&I> {
        self.rooms.get(room)?.get(&peer)
    }

    /// Every instance that serves a known remote peer.
    pub fn instances(&self) -> BTreeSet<I> {
        self.rooms
            .values()
            .flat_map(|members| members.values().cloned())
            .collect()
    }

    /// Removes every peer of the instances in `dead` and returns them by room: local peers
    /// must be told each one left.
    pub fn remove_instances(&mut self, dead: &BTreeSet<I>) -> Vec<(RoomName, PeerId)> {
        let mut gone = Vec::new();
        for (room, members) in &mut self.rooms {
            members.retain(|peer, instance| {
                let dead = dead.contains(instance);
                if dead {
                    gone.push((room.clone(), *peer));
                }
                !dead
            });
        }
        self.rooms.retain(|_, members| !members.is_empty());
        gone.sort();
        gone
    }

    /// Remote peers known in `room`.
    pub fn members(&self, room: &RoomName) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self
            .rooms
            .get(room)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        members.sort();
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name.to_owned()).expect("valid room")
    }

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn a_dead_instance_takes_its_peers_from_every_room() {
        let mut remote = RemoteMembers::new();
        assert!(remote.insert(&room("a"), id(1), "i1"));
        assert!(!remote.insert(&room("a"), id(1), "i1"), "known already");
        remote.insert(&room("a"), id(2), "i2");
        remote.insert(&room("b"), id(3), "i1");
        assert_eq!(remote.instances(), BTreeSet::from(["i1", "i2"]));
        let gone = remote.remove_instances(&BTreeSet::from(["i1"]));
        assert_eq!(gone, vec![(room("a"), id(1)), (room("b"), id(3))]);
        assert_eq!(remote.members(&room("a")), vec![id(2)]);
        assert!(remote.members(&room("b")).is_empty());
        assert_eq!(remote.instance_of(&room("a"), id(2)), Some(&"i2"));
    }

    #[test]
    fn a_peer_leaves_once() {
        let mut remote = RemoteMembers::new();
        remote.insert(&room("a"), id(1), 7);
        assert!(remote.remove(&room("a"), id(1)));
        assert!(!remote.remove(&room("a"), id(1)));
        remote.insert(&room("a"), id(2), 7);
        remote.forget_room(&room("a"));
        assert!(remote.members(&room("a")).is_empty());
    }
}
