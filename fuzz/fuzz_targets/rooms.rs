//! The server's room registry under any sequence of joins, leaves and routes, with limits:
//! it never panics, and its counts always match what it holds.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use swarm_core::room::{RoomLimits, Rooms};
use swarm_protocol::{PeerId, RoomName};

#[derive(Debug, Arbitrary)]
enum Op {
    Join(u8, u8),
    Leave(u8, u8),
    Route(u8, u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    max_rooms: u8,
    max_peers: u8,
    ops: Vec<Op>,
}

fn room(n: u8) -> RoomName {
    RoomName::new(format!("r{}", n % 8)).expect("valid room name")
}

fn id(n: u8) -> PeerId {
    PeerId::from_bytes([n % 32; 16])
}

fuzz_target!(|input: Input| {
    let limits = RoomLimits {
        rooms: usize::from(input.max_rooms % 5),
        peers_per_room: usize::from(input.max_peers % 9),
    };
    let mut rooms = Rooms::with_limits(limits);
    for op in input.ops {
        match op {
            Op::Join(r, p) => {
                let _ = rooms.join(&room(r), id(p), p);
            }
            Op::Leave(r, p) => {
                rooms.leave(&room(r), id(p));
            }
            Op::Route(r, p) => {
                if let Some(handle) = rooms.route(&room(r), id(p)) {
                    assert_eq!(id(*handle), id(p));
                }
            }
        }
        let members: usize = (0..8).map(|r| rooms.members(&room(r)).len()).sum();
        assert_eq!(members, rooms.peer_count());
        if limits.rooms > 0 {
            assert!(rooms.room_count() <= limits.rooms);
        }
    }
});
