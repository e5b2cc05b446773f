//! The signalling server's room registry.
//!
//! [`Rooms`] records who is in which room. Each member carries a handle `H` chosen by the
//! server (for example the sending half of its connection's queue); the registry never uses
//! it, it only hands back the handles of the peers that must hear about an event. A room
//! exists while it has members and disappears with its last one.

use std::collections::HashMap;

use swarm_protocol::{PeerId, RoomName};

/// Why a peer could not join a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The id is already a member of that room (ids are random, so this is a caller bug).
    #[error("peer {0} is already in the room")]
    DuplicateId(PeerId),
    /// The room already has [`RoomLimits::peers_per_room`] members.
    #[error("the room is full ({0} peers)")]
    RoomFull(usize),
    /// The room does not exist and the server already has [`RoomLimits::rooms`] rooms.
    #[error("the server has no room for more rooms ({0})")]
    TooManyRooms(usize),
}

/// How large the registry may grow; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms at once.
    pub rooms: usize,
    /// Members of one room.
    pub peers_per_room: usize,
}

/// What the server must do after a successful join.
#[derive(Debug)]
pub struct Joined<H> {
    /// The peers that were already in the room, oldest first (for `welcome`).
    pub peers: Vec<PeerId>,
    /// Their handles, in the same order (each gets `joined`).
    pub notify: Vec<H>,
}

/// All rooms of one server.
#[derive(Debug)]
pub struct Rooms<H> {
    rooms: HashMap<RoomName, Vec<(PeerId, H)>>,
    limits: RoomLimits,
    /// Members across all rooms.
    peers: usize,
}

impl<H> Default for Rooms<H> {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            limits: RoomLimits::default(),
            peers: 0,
        }
    }
}

impl<H: Clone> Rooms<H> {
    /// An empty registry without limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry that refuses joins beyond `limits`.
    pub fn with_limits(limits: RoomLimits) -> Self {
        Self {
            rooms: HashMap::new(),
            limits,
            peers: 0,
        }
    }

    /// Adds `id` to `room`, creating the room if needed.
    pub fn join(&mut self, room: &RoomName, id: PeerId, handle: H) -> Result<Joined<H>, JoinError> {
        let limits = self.limits;
        if limits.rooms > 0 && self.rooms.len() >= limits.rooms && !self.rooms.contains_key(room) {
            return Err(JoinError::TooManyRooms(limits.rooms));
        }
        let members = self.rooms.entry(room.clone()).or_default();
        if members.iter().any(|(member, _)| *member == id) {
            return Err(JoinError::DuplicateId(id));
        }
        if limits.peers_per_room > 0 && members.len() >= limits.peers_per_room {
            return Err(JoinError::RoomFull(limits.peers_per_room));
        }
        let joined = Joined {
            peers: members.iter().map(|(member, _)| *member).collect(),
            notify: members.iter().map(|(_, handle)| handle.clone()).collect(),
        };
        members.push((id, handle));
        self.peers += 1;
        Ok(joined)
    }

    /// Removes `id` from `room` and returns the handles of the members that remain (each
    /// gets `left`). Returns nothing when `id` was not there, so a second call is harmless.
    pub fn leave(&mut self, room: &RoomName, id: PeerId) -> Vec<H> {
        let Some(members) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let Some(position) = members.iter().position(|(member, _)| *member == id) else {
            return Vec::new();
        };
        members.remove(position);
        self.peers -= 1;
        if members.is_empty() {
            self.rooms.remove(room);
            return Vec::new();
        }
        members.iter().map(|(_, handle)| handle.clone()).collect()
    }

    /// Gives member `id` of `room` a new handle (its connection was replaced by a resumed
    /// one); returns the old handle, or `None` (and changes nothing) if `id` is not there.
    /// Nobody needs telling: the member never left.
    pub fn replace(&mut self, room: &RoomName, id: PeerId, handle: H) -> Option<H> {
        let member = self
            .rooms
            .get_mut(room)?
            .iter_mut()
            .find(|(member, _)| *member == id)?;
        Some(std::mem::replace(&mut member.1, handle))
    }

    /// The handle of `to` if it is a member of `room`: a `signal` may only be relayed there.
    pub fn route(&self, room: &RoomName, to: PeerId) -> Option<&H> {
        self.rooms
            .get(room)?
            .iter()
            .find(|(member, _)| *member == to)
            .map(|(_, handle)| handle)
    }

    /// The members of `room`, oldest first.
    pub fn members(&self, room: &RoomName) -> Vec<PeerId> {
        self.rooms
            .get(room)
            .map(|members| members.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// Number of rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of members across all rooms.
    pub fn peer_count(&self) -> usize {
        self.peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).expect("valid room")
    }

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn a_member_can_be_given_a_new_handle_in_place() {
        let mut rooms = Rooms::new();
        rooms.join(&room("r"), id(1), "old").expect("join");
        rooms.join(&room("r"), id(2), "other").expect("join");
        assert_eq!(rooms.replace(&room("r"), id(1), "new"), Some("old"));
        assert_eq!(rooms.route(&room("r"), id(1)), Some(&"new"));
        assert_eq!(rooms.members(&room("r")), vec![id(1), id(2)], "order kept");
        assert_eq!(rooms.replace(&room("r"), id(3), "x"), None);
        assert_eq!(rooms.replace(&room("s"), id(1), "x"), None);
        assert_eq!(rooms.peer_count(), 2);
    }

    #[test]
    fn a_newcomer_learns_the_members_and_they_are_notified() {
        let mut rooms = Rooms::new();
        let demo = room("demo");
        let first = rooms.join(&demo, id(1), "h1").expect("join");
        assert!(first.peers.is_empty() && first.notify.is_empty());
        let second = rooms.join(&demo, id(2), "h2").expect("join");
        assert_eq!(second.peers, vec![id(1)]);
        assert_eq!(second.notify, vec!["h1"]);
        let third = rooms.join(&demo, id(3), "h3").expect("join");
        assert_eq!(third.peers, vec![id(1), id(2)]);
        assert_eq!(third.notify, vec!["h1", "h2"]);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut rooms = Rooms::new();
        rooms.join(&room("a"), id(1), ()).expect("join");
        assert_eq!(
            rooms.join(&room("a"), id(1), ()).err(),
            Some(JoinError::DuplicateId(id(1)))
        );
    }

    #[test]
    fn routes_stay_inside_a_room() {
        let mut rooms = Rooms::new();
        rooms.join(&room("a"), id(1), "a1").expect("join");
        rooms.join(&room("b"), id(2), "b2").expect("join");
        assert_eq!(rooms.route(&room("a"), id(1)), Some(&"a1"));
        assert_eq!(rooms.route(&room("a"), id(2)), None);
        assert_eq!(rooms.route(&room("c"), id(1)), None);
    }

    #[test]
    fn leaving_notifies_the_rest_and_the_last_one_out_removes_the_room() {
        let mut rooms = Rooms::new();
        let demo = room("demo");
        rooms.join(&demo, id(1), "h1").expect("join");
        rooms.join(&demo, id(2), "h2").expect("join");
        assert_eq!(rooms.leave(&demo, id(1)), vec!["h2"]);
        assert_eq!(rooms.leave(&demo, id(1)), Vec::<&str>::new());
        assert_eq!(rooms.room_count(), 1);
        assert_eq!(rooms.leave(&demo, id(2)), Vec::<&str>::new());
        assert_eq!(rooms.room_count(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8, u8),
        Leave(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 0..8u8).prop_map(|(r, p)| Op::Join(r, p)),
            (0..3u8, 0..8u8).prop_map(|(r, p)| Op::Leave(r, p)),
        ]
    }

    proptest! {
        /// The registry behaves like a plain map of room -> ordered member list.
        #[test]
        fn matches_a_simple_model(
            ops in proptest::collection::vec(op(), 0..200),
            max_rooms in 0..4usize,
            max_peers in 0..6usize,
        ) {
            let limits = RoomLimits { rooms: max_rooms, peers_per_room: max_peers };
            let mut rooms = Rooms::with_limits(limits);
            let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Join(r, p) => {
                        let new_room = !model.contains_key(&r);
                        let room_count = model.len();
                        let members = model.entry(r).or_default();
                        let result = rooms.join(&room(&format!("r{r}")), id(p), p);
                        if max_rooms > 0 && new_room && room_count >= max_rooms {
                            prop_assert_eq!(result.err(), Some(JoinError::TooManyRooms(max_rooms)));
                        } else if members.contains(&p) {
                            prop_assert!(result.is_err());
                        } else if max_peers > 0 && members.len() >= max_peers {
                            prop_assert_eq!(result.err(), Some(JoinError::RoomFull(max_peers)));
                        } else {
                            let joined = result.expect("join");
                            prop_assert_eq!(&joined.notify, &*members);
                            members.push(p);
                        }
                    }
                    Op::Leave(r, p) => {
                        let notified = rooms.leave(&room(&format!("r{r}")), id(p));
                        let members = model.entry(r).or_default();
                        if let Some(i) = members.iter().position(|m| *m == p) {
                            members.remove(i);
                            prop_assert_eq!(&notified, &*members);
                        } else {
                            prop_assert!(notified.is_empty());
                        }
                    }
                }
                model.retain(|_, members| !members.is_empty());
                prop_assert_eq!(rooms.room_count(), model.len());
                prop_assert_eq!(rooms.peer_count(), model.values().map(Vec::len).sum::<usize>());
                for (r, members) in &model {
                    let expected: Vec<PeerId> = members.iter().map(|p| id(*p)).collect();
                    prop_assert_eq!(rooms.members(&room(&format!("r{r}"))), expected);
                }
            }
        }
    }
}
