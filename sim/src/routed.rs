//! The structured layer as the clients run it: every live peer runs the real
//! [`swarm_core::dht::Dht`], and its route frames travel over the overlay's links only (no
//! peer can reach one it has no connection to), hop by hop, as the clients carry them.
//!
//! - A publication is the provider's signed record routed to the peer closest to the key,
//!   kept there and by its two closest neighbours; when a link opens, both ends publish again
//!   through it what the other is closer to (see `swarm_core::dht`).
//! - A lookup is a find routed the same way; it succeeds when the answer that comes back
//!   names the content's provider. Its hops are the links the request crossed (the answer
//!   crosses as many back).
//! - A peer that leaves takes its records with it.

use std::collections::{HashMap, VecDeque};

use swarm_core::dht::{self, Dht};
use swarm_core::identity::Identity;
use swarm_core::relay::SignalRelay;
use swarm_protocol::gossip::Gossip;
use swarm_protocol::wire::{BinaryFrame, decode_binary};
use swarm_protocol::{ContentId, PeerId, RoomName};

use crate::overlay::{Overlay, Slot};

/// What one routed lookup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedLookup {
    /// Whether the answer named the provider.
    pub found: bool,
    /// Links the request crossed.
    pub hops: u32,
    /// Frames sent (request and answer).
    pub messages: u32,
}

/// The structured layer of every live peer.
pub struct Routed {
    room: RoomName,
    nodes: HashMap<Slot, Dht>,
    /// Route frames carried for publications and for links that opened.
    pub publish_messages: u64,
}

impl Default for Routed {
    fn default() -> Self {
        Self::new()
    }
}

impl Routed {
    /// No peer yet.
    pub fn new() -> Self {
        Self {
            room: RoomName::new("sim").unwrap_or_else(|_| unreachable!("a valid room name")),
            nodes: HashMap::new(),
            publish_messages: 0,
        }
    }

    /// A signed `provide` record of `id` by a provider with key seed `seed`, and its id.
    pub fn record(&self, seed: [u8; 32], id: ContentId) -> (PeerId, Vec<u8>) {
        let identity = Identity::from_seed(seed);
        let me = identity.id();
        let mut relay = SignalRelay::new(self.room.clone(), identity, 1);
        let gossip = Gossip::provide(id, 1, "file", "");
        let record = relay
            .broadcast(&gossip.to_json(), &[])
            .map(|(_, record)| record)
            .unwrap_or_default();
        (me, record)
    }

    /// `slot` left: its records go with it.
    pub fn forget(&mut self, slot: Slot) {
        self.nodes.remove(&slot);
    }

    /// A link between `a` and `b` opened.
    pub fn linked(&mut self, overlay: &Overlay, a: Slot, b: Slot, now: u64) {
        for (from, to) in [(a, b), (b, a)] {
            let frames = self.node(overlay, from).on_neighbour(overlay.id(to));
            self.publish_messages += self.carry(overlay, from, frames, now).1;
        }
    }

    /// `provider` publishes `record` of `id`.
    pub fn publish(
        &mut self,
        overlay: &Overlay,
        provider: Slot,
        id: ContentId,
        record: Vec<u8>,
        now: u64,
    ) {
        let neighbours = neighbour_ids(overlay, provider);
        let frames = self
            .node(overlay, provider)
            .publish(id, record, &neighbours, now);
        self.publish_messages += self.carry(overlay, provider, frames, now).1;
    }

    /// Time passed: records expire, providers publish again when due.
    pub fn tick(&mut self, overlay: &Overlay, now: u64) {
        let slots: Vec<Slot> = self.nodes.keys().copied().collect();
        for slot in slots {
            let neighbours = neighbour_ids(overlay, slot);
            let frames = self.node(overlay, slot).tick(&neighbours, now);
            self.publish_messages += self.carry(overlay, slot, frames, now).1;
        }
    }

    /// `asker` looks up who provides `id`; found if the answer names `provider`.
    pub fn find(
        &mut self,
        overlay: &Overlay,
        asker: Slot,
        id: ContentId,
        provider: PeerId,
        now: u64,
    ) -> RoutedLookup {
        let neighbours = neighbour_ids(overlay, asker);
        let mut routed = self.node(overlay, asker).find(id, &neighbours, now);
        let frames = std::mem::take(&mut routed.frames);
        let (mut answers, messages) = self.carry(overlay, asker, frames, now);
        answers.push(routed);
        let found = answers
            .iter()
            .flat_map(|a| a.found.iter())
            .any(|record| dht::check_record(&self.room, record, id) == Some(provider));
        let messages = u32::try_from(messages).unwrap_or(u32::MAX);
        RoutedLookup {
            found,
            hops: messages / 2,
            messages,
        }
    }

    fn node(&mut self, overlay: &Overlay, slot: Slot) -> &mut Dht {
        let room = &self.room;
        self.nodes
            .entry(slot)
            .or_insert_with(|| Dht::new(room.clone(), overlay.id(slot)))
    }

    /// Carries `frames` sent by `from` over the overlay's links until none is left: the
    /// answers that reached their asker, and the frames carried.
    fn carry(
        &mut self,
        overlay: &Overlay,
        from: Slot,
        frames: swarm_core::relay::Frames,
        now: u64,
    ) -> (Vec<dht::Routed>, u64) {
        let mut queue: VecDeque<(Slot, PeerId, Vec<u8>)> =
            frames.into_iter().map(|(to, f)| (from, to, f)).collect();
        let mut answers = Vec::new();
        let mut carried = 0;
        while let Some((sender, to, frame)) = queue.pop_front() {
            carried += 1;
            let Some(slot) = overlay.slot_of(to).filter(|s| overlay.is_alive(*s)) else {
                continue;
            };
            if !overlay.neighbours(sender).contains(&slot) {
                continue;
            }
            let Ok(BinaryFrame::Route(route)) = decode_binary(&frame) else {
                continue;
            };
            let neighbours = neighbour_ids(overlay, slot);
            let sender_id = overlay.id(sender);
            let mut routed = self
                .node(overlay, slot)
                .on_route(sender_id, route, &neighbours, now);
            queue.extend(routed.frames.drain(..).map(|(next, f)| (slot, next, f)));
            if !routed.found.is_empty() || routed.not_found.is_some() {
                answers.push(routed);
            }
        }
        (answers, carried)
    }
}

fn neighbour_ids(overlay: &Overlay, slot: Slot) -> Vec<PeerId> {
    overlay
        .neighbours(slot)
        .iter()
        .map(|s| overlay.id(*s))
        .collect()
}
