//! Gossip over the overlay: an announcement flooded hop by hop with the real
//! [`swarm_core::gossip::Seen`] and [`forward_targets`].
//!
//! Messages travel in synchronous hops over a snapshot of the overlay: a hop is one message
//! latency on a data channel (tens of milliseconds), far shorter than a churn round, so the
//! links do not change during one flood.

use swarm_core::gossip::{Seen, forward_targets};
use swarm_protocol::PeerId;

use crate::overlay::{Overlay, Slot};

/// What one flood did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodOutcome {
    /// Live peers when the flood started.
    pub alive: usize,
    /// Live peers that delivered the message (the origin included).
    pub reached: usize,
    /// Hops after which 99 % of the live peers had it (`None`: never).
    pub hops_to_99: Option<u32>,
    /// Hops after which every live peer had it (`None`: never).
    pub hops_to_all: Option<u32>,
    /// Copies sent over links, duplicates included.
    pub messages: u64,
    /// Without a TTL: hops from the origin to the farthest live peer (`None`: some live peer
    /// cannot be reached at all, the overlay is split).
    pub eccentricity: Option<u32>,
}

impl FloodOutcome {
    /// Share of the live peers reached.
    pub fn reach(&self) -> f64 {
        self.reached as f64 / self.alive.max(1) as f64
    }
}

/// The peers' memories of seen messages, and the next sequence number of each flood.
#[derive(Debug, Default)]
pub struct Gossip {
    seen: Vec<Seen>,
    capacity: usize,
    next_seq: u64,
}

impl Gossip {
    /// Each peer remembers up to `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Vec::new(),
            capacity,
            next_seq: 0,
        }
    }

    /// Floods one new message from `origin` with `ttl` hops to live.
    pub fn flood(&mut self, overlay: &Overlay, origin: Slot, ttl: u8) -> FloodOutcome {
        if self.seen.len() < overlay.slots() {
            let capacity = self.capacity;
            self.seen
                .resize_with(overlay.slots(), || Seen::new(capacity));
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let origin_id = overlay.id(origin);
        let alive = overlay.alive().len();
        let ids = |slots: &[Slot]| slots.iter().map(|s| overlay.id(*s)).collect::<Vec<_>>();

        self.seen[origin].insert(origin_id, seq);
        let mut reached = 1;
        let mut messages = 0u64;
        let mut hops_to_99 = None;
        let mut hops_to_all = None;
        let check = |reached: usize, hop: u32, h99: &mut Option<u32>, hall: &mut Option<u32>| {
            if h99.is_none() && reached * 100 >= alive * 99 {
                *h99 = Some(hop);
            }
            if hall.is_none() && reached >= alive {
                *hall = Some(hop);
            }
        };
        check(reached, 0, &mut hops_to_99, &mut hops_to_all);

        // (from, to, ttl the copy carries)
        let mut layer: Vec<(PeerId, Slot, u8)> =
            forward_targets(None, ids(overlay.neighbours(origin)), ttl)
                .into_iter()
                .filter_map(|to| overlay.slot_of(to))
                .map(|to| (origin_id, to, ttl - 1))
                .collect();
        let mut hop = 0;
        while !layer.is_empty() {
            hop += 1;
            let mut next = Vec::new();
            for (from, to, ttl) in layer {
                messages += 1;
                if !self.seen[to].insert(origin_id, seq) {
                    continue;
                }
                reached += 1;
                let to_id = overlay.id(to);
                for target in forward_targets(Some(from), ids(overlay.neighbours(to)), ttl) {
                    if let Some(slot) = overlay.slot_of(target) {
                        next.push((to_id, slot, ttl - 1));
                    }
                }
            }
            check(reached, hop, &mut hops_to_99, &mut hops_to_all);
            layer = next;
        }
        FloodOutcome {
            alive,
            reached,
            hops_to_99,
            hops_to_all,
            messages,
            eccentricity: eccentricity(overlay, origin),
        }
    }
}

/// Hops from `origin` to the farthest live peer, by breadth-first search; `None` if some
/// live peer is out of reach.
pub fn eccentricity(overlay: &Overlay, origin: Slot) -> Option<u32> {
    let mut depth = vec![u32::MAX; overlay.slots()];
    depth[origin] = 0;
    let mut queue = std::collections::VecDeque::from([origin]);
    let (mut seen, mut farthest) = (1usize, 0u32);
    while let Some(p) = queue.pop_front() {
        for &q in overlay.neighbours(p) {
            if depth[q] == u32::MAX {
                depth[q] = depth[p] + 1;
                farthest = farthest.max(depth[q]);
                seen += 1;
                queue.push_back(q);
            }
        }
    }
    (seen == overlay.alive().len()).then_some(farthest)
}
