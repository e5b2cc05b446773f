//! The structured layer of a large room: provider records kept by the peers whose ids are
//! closest to a content's key, and found by routing over the overlay instead of flooding it.
//!
//! A content id maps to a [`Key`] in the space of peer ids. A message about a content
//! ([`swarm_protocol::route`]) travels greedily: each peer hands it to the neighbour whose id
//! is closest to the key by XOR distance, as long as that neighbour is closer than itself.
//! Where no neighbour is closer, the route stalls. With at least one neighbour in every
//! non-empty bucket of a peer's Kademlia table, that would be the peer of the room closest
//! to the key, reached in O(log N) hops, each hop fixing at least one more bit of the key.
//! A capped mesh ([`crate::mesh`]) covers only some buckets, so routes from different peers
//! stall at different local minima; a route therefore steps aside up to [`DETOURS`] times
//! (to the closest neighbour it has not visited, whatever its distance) and goes on greedily
//! from there. In the simulation of 1,000 and 10,000 peers this took lookups from 20–73 %
//! to 98–99 % success (BENCHMARKS.md).
//!
//! - **Publishing** ([`Dht::publish`]): the provider's signed `provide` record (the same
//!   frame that is flooded in small rooms, [`crate::relay`]) is routed on, and kept at every
//!   peer where its route stalls, and by that peer's [`REPLICAS`]` - 1` neighbours closest to
//!   the key, for [`RECORD_TTL_MS`]; the provider publishes again every
//!   [`REPUBLISH_MS`], which also finds the new closest peers after churn.
//! - **Finding** ([`Dht::find`]): a request routed the same way is answered by the first
//!   peer on its way that keeps records of the content (or where it ends, with none); the
//!   answer goes back hop by hop along the path the request recorded.
//!
//! Records are checked (signature, content) before they are kept, so no peer can announce
//! a provider in another's name; the answering peer's records reach the asker unchanged and
//! are checked again there ([`crate::client`] feeds them to its directory). Sans-I/O: time
//! is milliseconds on the caller's clock, frames come in and go out as bytes.

use std::collections::BTreeMap;

use swarm_protocol::gossip::{BROADCAST, Gossip};
use swarm_protocol::route::{MAX_PATH, Route, RouteKind, RouteOut};
use swarm_protocol::wire::{BinaryFrame, decode_binary};
use swarm_protocol::{ContentId, PeerId, RoomName};
use tracing::debug;

use crate::identity::RelayedSignal;
use crate::kademlia::{Distance, Key, ProviderStore};
use crate::relay::Frames;

/// Peers that keep each record at each place its route stalls: that peer and its closest
/// neighbours.
pub const REPLICAS: usize = 3;

/// How long a kept record counts (30 minutes, in ms).
pub const RECORD_TTL_MS: u64 = crate::kademlia::DEFAULT_PROVIDER_TTL_MS;

/// How often a provider publishes its records again (10 minutes, in ms).
pub const REPUBLISH_MS: u64 = crate::kademlia::DEFAULT_REPUBLISH_MS;

/// Hops a routed message may make (a route fixes at least one bit of the key per hop).
pub const HOP_LIMIT: u8 = MAX_PATH as u8;

/// Steps aside a route may take where it stalls short of the key ([`Dht`]'s `detour`).
pub const DETOURS: u8 = 8;

/// Providers kept per content.
const MAX_PROVIDERS: usize = 20;

/// Records a peer keeps for others, in all; past it, new ones are not taken (what is kept
/// is never evicted for a newcomer) until some expire.
pub const MAX_KEPT: usize = 4096;

/// Bytes of signed records a peer keeps for others, in all.
pub const MAX_KEPT_BYTES: usize = 4 << 20;

/// Longest signed record kept: a relay frame with a `provide` of two labels of the longest
/// length a manifest allows.
pub const MAX_RECORD_LEN: usize = 4096;

/// What a routed frame that arrived leads to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// Frames to send on.
    pub frames: Frames,
    /// Provider records that answered one of our requests, to be checked and learnt by the
    /// caller (signed `relay` frames).
    pub found: Vec<Vec<u8>>,
    /// A request of ours that came back with no records: `id` is not (yet) published.
    pub not_found: Option<ContentId>,
}

/// One peer's part of the structured layer.
#[derive(Debug)]
pub struct Dht {
    room: RoomName,
    me: PeerId,
    store: ProviderStore,
    /// The signed record behind each kept (content, provider).
    records: BTreeMap<(ContentId, PeerId), Vec<u8>>,
    /// Their total length.
    kept_bytes: usize,
    /// Our own records and the time each is due to be published again.
    published: BTreeMap<ContentId, (Vec<u8>, u64)>,
}

impl Dht {
    /// The structured layer of `me` in `room`.
    pub fn new(room: RoomName, me: PeerId) -> Self {
        Self {
            room,
            me,
            store: ProviderStore::new(MAX_PROVIDERS),
            records: BTreeMap::new(),
            kept_bytes: 0,
            published: BTreeMap::new(),
        }
    }

    /// Publishes our signed `provide` `record` of `id` now and every [`REPUBLISH_MS`].
    pub fn publish(
        &mut self,
        id: ContentId,
        record: Vec<u8>,
        neighbours: &[PeerId],
        now: u64,
    ) -> Frames {
        self.published
            .insert(id, (record.clone(), now + REPUBLISH_MS));
        let out = RouteOut {
            kind: RouteKind::AddProvider,
            id,
            ttl: HOP_LIMIT,
            path: Vec::new(),
            records: vec![record],
        };
        self.route_on(out, neighbours, now).frames
    }

    /// Asks the room who provides `id`. The answer comes back as a [`Routed`] from
    /// [`Dht::on_route`] (or at once, if we keep records of it ourselves).
    pub fn find(&mut self, id: ContentId, neighbours: &[PeerId], now: u64) -> Routed {
        let out = RouteOut {
            kind: RouteKind::FindProviders,
            id,
            ttl: HOP_LIMIT,
            path: Vec::new(),
            records: Vec::new(),
        };
        self.route_on(out, neighbours, now)
    }

    /// A routed frame arrived from neighbour `from`; `neighbours` are our open connections.
    pub fn on_route(
        &mut self,
        from: PeerId,
        route: Route<'_>,
        neighbours: &[PeerId],
        now: u64,
    ) -> Routed {
        let out = RouteOut::from_route(&route);
        if out.kind == RouteKind::Providers {
            return self.answer_back(out, neighbours);
        }
        // A request passes each peer once, and comes from the last peer on its path.
        if out.path.contains(&self.me) || out.path.last() != Some(&from) {
            debug!(%from, id = %out.id, "dropping a routed message with a bad path");
            return Routed::default();
        }
        self.route_on(out, neighbours, now)
    }

    /// A connection to `peer` opened: each of our records whose key it is closer to than we
    /// are is published again through it, so a provider that published while it had no
    /// neighbours (or only poor ones) is found once it has better ones. Records we keep for
    /// others are not handed on: in the simulation, handing them to every closer newcomer
    /// multiplied them across the room under churn (tens of frames per peer per round at 5 %
    /// churn), and their providers publish them again every [`REPUBLISH_MS`] anyway.
    pub fn on_neighbour(&self, peer: PeerId) -> Frames {
        let closer = |id: &ContentId| {
            let key = Key::for_content(id);
            key.distance(&Key::from(peer)) < key.distance(&Key::from(self.me))
        };
        self.published
            .iter()
            .filter(|(id, _)| closer(id))
            .filter_map(|(id, (record, _))| {
                let onward = RouteOut {
                    kind: RouteKind::AddProvider,
                    id: *id,
                    ttl: HOP_LIMIT - 1,
                    path: vec![self.me],
                    records: vec![record.clone()],
                };
                onward.encode().ok().map(|frame| (peer, frame))
            })
            .collect()
    }

    /// Drops the records of `provider` (it left the room).
    pub fn forget_provider(&mut self, provider: PeerId) {
        let ids: Vec<ContentId> = self
            .records
            .keys()
            .filter(|(_, p)| *p == provider)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.records.remove(&(id, provider));
            self.store.remove(&Key::for_content(&id), provider);
        }
        self.recount();
    }

    fn recount(&mut self) {
        self.kept_bytes = self.records.values().map(Vec::len).sum();
    }

    /// Time passed: drops expired records and publishes ours again when due.
    pub fn tick(&mut self, neighbours: &[PeerId], now: u64) -> Frames {
        if self.store.expire(now) > 0 {
            let store = &self.store;
            self.records.retain(|(id, provider), _| {
                store
                    .providers(&Key::for_content(id), now)
                    .contains(provider)
            });
            self.recount();
        }
        let due: Vec<(ContentId, Vec<u8>)> = self
            .published
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (record, _))| (*id, record.clone()))
            .collect();
        let mut frames = Frames::new();
        for (id, record) in due {
            frames.extend(self.publish(id, record, neighbours, now));
        }
        frames
    }

    /// The records we keep for `id` (others' and our own), at most `MAX_PROVIDERS` (20).
    pub fn records(&self, id: ContentId, now: u64) -> Vec<Vec<u8>> {
        let own = self.published.get(&id).map(|(record, _)| record.clone());
        let kept = self
            .store
            .providers(&Key::for_content(&id), now)
            .into_iter()
            .filter_map(|provider| self.records.get(&(id, provider)).cloned());
        own.into_iter().chain(kept).take(MAX_PROVIDERS).collect()
    }

    /// Records we keep for others.
    pub fn kept(&self) -> usize {
        self.records.len()
    }

    /// Bytes of the records we keep for others.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// Handles a request at this hop: answer, keep, or pass on.
    fn route_on(&mut self, mut out: RouteOut, neighbours: &[PeerId], now: u64) -> Routed {
        let key = Key::for_content(&out.id);
        let hops_left = out.ttl > 0;
        let closer = closer_neighbour(self.me, &key, neighbours, &out.path).filter(|_| hops_left);
        // Where the greedy route stalls, it may step aside a few times (see `detour`).
        let aside = match closer {
            None if hops_left => self.detour(&key, neighbours, &out.path),
            _ => None,
        };
        match out.kind {
            RouteKind::FindProviders => {
                let records = self.records(out.id, now);
                if records.is_empty()
                    && let Some(next) = closer.or(aside)
                {
                    return self.pass_on(out, next);
                }
                // The answer: ours, or "none" where the route ends.
                out.kind = RouteKind::Providers;
                out.records = records;
                out.ttl = 0;
                out.path.push(self.me);
                self.answer_back(out, neighbours)
            }
            RouteKind::AddProvider => {
                if out.records.len() != 1 {
                    return Routed::default();
                }
                if let Some(next) = closer {
                    return self.pass_on(out, next);
                }
                // Checked where it is kept, not at every hop on the way.
                let Some(provider) = check_record(&self.room, &out.records[0], out.id) else {
                    debug!(id = %out.id, "dropping a provider record that does not verify");
                    return Routed::default();
                };
                // Our own record is answered from what we publish.
                if provider != self.me {
                    self.keep(out.id, provider, out.records[0].clone(), now);
                }
                if !hops_left {
                    return Routed::default();
                }
                // The route stalls here: our closest neighbours keep copies (with no hops
                // left), and the record may go on around the stall.
                let mut replicas: Vec<PeerId> = neighbours
                    .iter()
                    .copied()
                    .filter(|peer| *peer != provider)
                    .collect();
                replicas.sort_by_key(|peer| key.distance(&Key::from(*peer)));
                let copy = RouteOut {
                    ttl: 0,
                    path: vec![self.me],
                    ..out.clone()
                };
                let frame = copy.encode().unwrap_or_default();
                let mut frames: Frames = replicas
                    .into_iter()
                    .take(REPLICAS - 1)
                    .map(|peer| (peer, frame.clone()))
                    .collect();
                if let Some(next) = aside {
                    frames.extend(self.pass_on(out, next).frames);
                }
                Routed {
                    frames,
                    ..Routed::default()
                }
            }
            RouteKind::Providers => Routed::default(),
        }
    }

    /// Where a route stalls (no unvisited neighbour is closer to `key` than we are), the
    /// unvisited neighbour closest to the key, if the route has stepped aside fewer than
    /// [`DETOURS`] times so far. Greedy routes from different peers can stall at different
    /// local minima of a partial mesh; a step aside lets a request reach the minimum where a
    /// record was kept, and a record reach the minima where requests stall.
    fn detour(&self, key: &Key, neighbours: &[PeerId], path: &[PeerId]) -> Option<PeerId> {
        let distance = |peer: &PeerId| key.distance(&Key::from(*peer));
        let taken = path
            .iter()
            .chain(std::iter::once(&self.me))
            .map(distance)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[1] > pair[0])
            .count();
        if taken >= usize::from(DETOURS) {
            return None;
        }
        neighbours
            .iter()
            .filter(|peer| !path.contains(peer))
            .min_by_key(|peer| distance(peer))
            .copied()
    }

    /// Sends `out` one hop on, to `next`, with us on its path.
    fn pass_on(&self, mut out: RouteOut, next: PeerId) -> Routed {
        out.ttl -= 1;
        out.path.push(self.me);
        match out.encode() {
            Ok(frame) => Routed {
                frames: vec![(next, frame)],
                ..Routed::default()
            },
            Err(err) => {
                debug!(id = %out.id, error = %err, "cannot route a message further");
                Routed::default()
            }
        }
    }

    /// An answer on its way back: we are the last peer on its path. Delivered if we are
    /// also the first (the asker), otherwise sent to the peer before us.
    fn answer_back(&self, mut out: RouteOut, neighbours: &[PeerId]) -> Routed {
        if out.path.pop() != Some(self.me) {
            return Routed::default();
        }
        let Some(back) = out.path.last().copied() else {
            return self.arrived(out);
        };
        if !neighbours.contains(&back) {
            debug!(id = %out.id, peer = %back, "the way back of an answer is gone");
            return Routed::default();
        }
        match out.encode() {
            Ok(frame) => Routed {
                frames: vec![(back, frame)],
                ..Routed::default()
            },
            Err(_) => Routed::default(),
        }
    }

    /// The answer to one of our requests.
    fn arrived(&self, out: RouteOut) -> Routed {
        Routed {
            not_found: out.records.is_empty().then_some(out.id),
            found: out.records,
            frames: Frames::new(),
        }
    }

    fn keep(&mut self, id: ContentId, provider: PeerId, record: Vec<u8>, now: u64) {
        let key = Key::for_content(&id);
        let known = self.records.contains_key(&(id, provider));
        let full = self.records.len() >= MAX_KEPT
            || self.kept_bytes.saturating_add(record.len()) > MAX_KEPT_BYTES;
        if record.len() > MAX_RECORD_LEN || (!known && full) {
            debug!(%id, %provider, "not keeping a provider record: full, or too long");
            return;
        }
        if self.store.add(key, provider, now + RECORD_TTL_MS) {
            let len = record.len();
            if let Some(old) = self.records.insert((id, provider), record) {
                self.kept_bytes -= old.len();
            }
            self.kept_bytes += len;
        }
    }
}

/// The neighbour closest to `key` if it is closer than `me`, skipping peers on `path`.
pub fn closer_neighbour(
    me: PeerId,
    key: &Key,
    neighbours: &[PeerId],
    path: &[PeerId],
) -> Option<PeerId> {
    let mine: Distance = key.distance(&Key::from(me));
    neighbours
        .iter()
        .copied()
        .filter(|peer| !path.contains(peer))
        .map(|peer| (key.distance(&Key::from(peer)), peer))
        .filter(|(d, _)| *d < mine)
        .min()
        .map(|(_, peer)| peer)
}

/// The provider a signed `provide` record of `id` names, if the record is genuine.
pub fn check_record(room: &RoomName, record: &[u8], id: ContentId) -> Option<PeerId> {
    read_record(room, record)
        .filter(|(_, gossip)| gossip.content() == id)
        .map(|(provider, _)| provider)
}

/// The origin and message of a signed gossip record, if its signature holds.
pub fn read_record(room: &RoomName, record: &[u8]) -> Option<(PeerId, Gossip)> {
    let Ok(BinaryFrame::Relay(relay)) = decode_binary(record) else {
        return None;
    };
    if relay.target != BROADCAST {
        return None;
    }
    RelayedSignal::from(&relay).verify(room).ok()?;
    Some((relay.origin, Gossip::parse(relay.data).ok()?))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use swarm_protocol::route::RouteOut;

    use super::*;
    use crate::identity::Identity;
    use crate::relay::SignalRelay;

    fn room() -> RoomName {
        RoomName::new("lobby").expect("valid room")
    }

    fn content(n: u8) -> ContentId {
        ContentId::from_bytes([n; 32])
    }

    /// A signed `provide` record of `id` by the peer with key seed `seed`.
    fn record(seed: u8, id: ContentId) -> (PeerId, Vec<u8>) {
        let identity = Identity::from_seed([seed; 32]);
        let me = identity.id();
        let mut relay = SignalRelay::new(room(), identity, 1);
        let gossip = Gossip::provide(id, 10, "a.bin", "");
        let (_, record) = relay.broadcast(&gossip.to_json(), &[]).expect("signs");
        (me, record)
    }

    /// Peers and who each is connected to (links both ways).
    struct Net {
        nodes: BTreeMap<PeerId, Dht>,
        links: BTreeMap<PeerId, Vec<PeerId>>,
        /// Frames carried in the last `carry`.
        hops: usize,
    }

    impl Net {
        fn new(ids: &[PeerId], links: &[(PeerId, PeerId)]) -> Self {
            let mut net = Self {
                nodes: ids.iter().map(|id| (*id, Dht::new(room(), *id))).collect(),
                links: ids.iter().map(|id| (*id, Vec::new())).collect(),
                hops: 0,
            };
            for (a, b) in links {
                net.link(*a, *b);
            }
            net
        }

        fn link(&mut self, a: PeerId, b: PeerId) {
            for (x, y) in [(a, b), (b, a)] {
                let list = self.links.entry(x).or_default();
                if x != y && !list.contains(&y) {
                    list.push(y);
                }
            }
        }

        /// Carries `frames` sent by `from` until none is left; what reached its asker.
        fn carry(&mut self, from: PeerId, frames: Frames, now: u64) -> Vec<Routed> {
            let mut queue: VecDeque<(PeerId, PeerId, Vec<u8>)> =
                frames.into_iter().map(|(to, f)| (from, to, f)).collect();
            let mut arrived = Vec::new();
            self.hops = 0;
            while let Some((sender, to, frame)) = queue.pop_front() {
                self.hops += 1;
                assert!(self.links[&to].contains(&sender), "sent over a link");
                let Ok(BinaryFrame::Route(route)) = decode_binary(&frame) else {
                    panic!("a route frame");
                };
                let neighbours = self.links[&to].clone();
                let node = self.nodes.get_mut(&to).expect("a node");
                let mut routed = node.on_route(sender, route, &neighbours, now);
                queue.extend(routed.frames.drain(..).map(|(next, f)| (to, next, f)));
                if !routed.found.is_empty() || routed.not_found.is_some() {
                    arrived.push(routed);
                }
            }
            arrived
        }

        fn publish(&mut self, provider: PeerId, id: ContentId, record: Vec<u8>) {
            let neighbours = self.links[&provider].clone();
            let node = self.nodes.get_mut(&provider).expect("a node");
            let frames = node.publish(id, record, &neighbours, 0);
            self.carry(provider, frames, 0);
        }

        /// Looks `id` up from `asker`: the providers found, and the frames it took.
        fn find(&mut self, asker: PeerId, id: ContentId, now: u64) -> (Vec<PeerId>, usize) {
            let neighbours = self.links[&asker].clone();
            let node = self.nodes.get_mut(&asker).expect("a node");
            let mut routed = node.find(id, &neighbours, now);
            let mut arrived = self.carry(asker, std::mem::take(&mut routed.frames), now);
            arrived.push(routed);
            let providers = arrived
                .iter()
                .flat_map(|r| r.found.iter())
                .filter_map(|record| check_record(&room(), record, id))
                .collect();
            (providers, self.hops)
        }

        /// Who keeps records of `id` for others.
        fn keepers(&self, id: ContentId) -> Vec<PeerId> {
            self.nodes
                .iter()
                .filter(|(_, node)| {
                    node.store
                        .providers(&Key::for_content(&id), 0)
                        .iter()
                        .any(|p| node.records.contains_key(&(id, *p)))
                })
                .map(|(peer, _)| *peer)
                .collect()
        }
    }

    /// Key seeds 1..=n, sorted by the distance of their ids to `key`, closest first.
    fn seeds_by_distance(n: u8, key: &Key) -> Vec<u8> {
        let mut seeds: Vec<u8> = (1..=n).collect();
        seeds.sort_by_key(|s| key.distance(&Key::from(Identity::from_seed([*s; 32]).id())));
        seeds
    }

    /// Ids of `n` peers, sorted by distance to `key`, closest first.
    fn ids_by_distance(n: u8, key: &Key) -> Vec<PeerId> {
        seeds_by_distance(n, key)
            .into_iter()
            .map(|s| Identity::from_seed([s; 32]).id())
            .collect()
    }

    #[test]
    fn a_record_is_kept_where_its_route_ends_and_found_from_the_far_end() {
        let id = content(7);
        let key = Key::for_content(&id);
        // A line from the closest peer to the farthest but one; the farthest provides, off
        // to one side.
        let seeds = seeds_by_distance(7, &key);
        let line: Vec<PeerId> = seeds[..6]
            .iter()
            .map(|s| Identity::from_seed([*s; 32]).id())
            .collect();
        let (provider, signed) = record(seeds[6], id);
        let mut ids = line.clone();
        ids.push(provider);
        let mut links: Vec<(PeerId, PeerId)> = line.windows(2).map(|w| (w[0], w[1])).collect();
        links.push((provider, line[5]));
        let mut net = Net::new(&ids, &links);
        net.publish(provider, id, signed);
        // Kept by the closest peer and its closest neighbours (a line: one).
        assert_eq!(net.keepers(id), {
            let mut k = vec![line[0], line[1]];
            k.sort();
            k
        });
        // The peer farthest along the line asks: the request walks to line[0] and back.
        let (found, frames) = net.find(line[5], id, 1);
        assert_eq!(found, vec![provider]);
        // It stops at line[1], the first keeper on the way: 4 hops there, 4 back.
        assert_eq!(frames, 8);
        // Nobody else learnt anything by the way.
        assert_eq!(net.keepers(id).len(), 2);
    }

    #[test]
    fn a_route_that_stalls_steps_aside_and_goes_on() {
        let id = content(13);
        let key = Key::for_content(&id);
        let seeds = seeds_by_distance(6, &key);
        // Closest first: the keeper, a local minimum, a peer beside both, the asker.
        let [keeper, stall, beside, asker, other] =
            [0, 1, 2, 3, 4].map(|i| Identity::from_seed([seeds[i]; 32]).id());
        let (provider, signed) = record(seeds[5], id);
        let links = [(asker, stall), (stall, beside), (beside, keeper)];
        let mut net = Net::new(&[keeper, stall, beside, asker], &links);
        // The keeper holds the record (a copy with no hops left: it goes nowhere else).
        let copy = RouteOut {
            kind: RouteKind::AddProvider,
            id,
            ttl: 0,
            path: vec![beside],
            records: vec![signed.clone()],
        };
        net.carry(beside, vec![(keeper, copy.encode().expect("fits"))], 0);
        assert_eq!(net.keepers(id), vec![keeper]);
        // The asker's greedy route stalls at `stall` (both its neighbours are farther), steps
        // aside to `beside`, and goes on to the keeper: 3 hops there, 3 back.
        let (found, frames) = net.find(asker, id, 1);
        assert_eq!(found, vec![provider]);
        assert_eq!(frames, 6);

        // A publication stalls the same way, and is kept at each minimum it reaches.
        let mut net = Net::new(
            &[keeper, stall, beside, other, provider],
            &[
                (provider, stall),
                (stall, beside),
                (beside, keeper),
                (keeper, other),
            ],
        );
        net.publish(provider, id, signed);
        let kept = net.keepers(id);
        assert!(kept.contains(&stall) && kept.contains(&keeper), "{kept:?}");
        // The keeper's closest neighbours keep copies: `beside` (on the way) and `other`.
        assert!(kept.contains(&beside) && kept.contains(&other), "{kept:?}");
    }

    #[test]
    fn a_lookup_of_an_unpublished_content_ends_with_none() {
        let id = content(8);
        let line = ids_by_distance(4, &Key::for_content(&id));
        let links: Vec<(PeerId, PeerId)> = line.windows(2).map(|w| (w[0], w[1])).collect();
        let mut net = Net::new(&line, &links);
        let asker = line[3];
        let neighbours = net.links[&asker].clone();
        let routed = net
            .nodes
            .get_mut(&asker)
            .expect("node")
            .find(id, &neighbours, 0);
        let arrived = net.carry(asker, routed.frames, 0);
        assert_eq!(arrived.len(), 1);
        assert_eq!(arrived[0].not_found, Some(id));
        assert!(arrived[0].found.is_empty());
    }

    #[test]
    fn forged_records_and_bad_paths_are_dropped() {
        let id = content(9);
        let (provider, mut signed) = record(5, id);
        let me = Identity::from_seed([6; 32]).id();
        let mut dht = Dht::new(room(), me);
        // An add-provider frame of `record` with `path`, handed to `dht` as sent by the
        // provider.
        let add = |dht: &mut Dht, record: Vec<u8>, path: Vec<PeerId>| {
            let frame = RouteOut {
                kind: RouteKind::AddProvider,
                id,
                ttl: 3,
                path,
                records: vec![record],
            }
            .encode()
            .expect("fits");
            let Ok(BinaryFrame::Route(route)) = decode_binary(&frame) else {
                panic!("route");
            };
            dht.on_route(provider, route, &[provider], 0)
        };
        // One changed byte of the name: the signature no longer holds.
        let last = signed.len() - 3;
        signed[last] ^= 1;
        assert_eq!(add(&mut dht, signed, vec![provider]), Routed::default());
        assert_eq!(dht.kept(), 0);
        // A genuine record of another content than the frame's.
        let (_, other) = record(5, content(10));
        assert_eq!(check_record(&room(), &other, id), None);
        // A genuine record, but the sender is not the last on the path.
        let (_, good) = record(5, id);
        assert_eq!(add(&mut dht, good.clone(), vec![me]), Routed::default());
        assert_eq!(dht.kept(), 0);
        // The same, well formed: kept (we are the closest we know).
        add(&mut dht, good, vec![provider]);
        assert_eq!(dht.kept(), 1);
        assert_eq!(dht.records(id, 0).len(), 1);
        // It expires, unless published again; the provider leaving drops it at once.
        assert!(dht.records(id, RECORD_TTL_MS + 1).is_empty());
        dht.forget_provider(provider);
        assert_eq!(dht.kept(), 0);
    }

    /// A signed record of content `n` by a fresh key `n`, with labels `label` long.
    fn fresh_record(n: u32, label: usize) -> (PeerId, ContentId, Vec<u8>) {
        let mut seed = [9u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let identity = Identity::from_seed(seed);
        let provider = identity.id();
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let id = ContentId::from_bytes(id);
        let mut relay = SignalRelay::new(room(), identity, 1);
        let name = "n".repeat(label);
        let gossip = Gossip::provide(id, 10, &name, &name);
        let (_, record) = relay.broadcast(&gossip.to_json(), &[]).expect("signs");
        (provider, id, record)
    }

    #[test]
    fn unsolicited_records_are_kept_within_count_and_bytes_and_never_evict() {
        // 9,796 unsolicited records were kept against a bound of 4,096, and names were not
        // length-checked on receipt (a real bound of about 4.7 GiB).
        let me = Identity::from_seed([6; 32]).id();
        let mut dht = Dht::new(room(), me);
        let offer = |dht: &mut Dht, provider: PeerId, id: ContentId, record: Vec<u8>| {
            let frame = RouteOut {
                kind: RouteKind::AddProvider,
                id,
                ttl: 0,
                path: vec![provider],
                records: vec![record],
            }
            .encode()
            .expect("fits");
            let Ok(BinaryFrame::Route(route)) = decode_binary(&frame) else {
                panic!("route");
            };
            dht.on_route(provider, route, &[provider], 0);
        };
        let first = fresh_record(0, 8);
        offer(&mut dht, first.0, first.1, first.2.clone());
        // Records with the longest labels: the byte bound is reached before the count.
        for n in 1..(MAX_KEPT as u32 + 500) {
            let (provider, id, record) = fresh_record(n, swarm_protocol::gossip::MAX_LABEL_LEN);
            offer(&mut dht, provider, id, record);
        }
        assert!(dht.kept() <= MAX_KEPT, "{} kept", dht.kept());
        assert!(
            dht.kept_bytes() <= MAX_KEPT_BYTES,
            "{} bytes",
            dht.kept_bytes()
        );
        assert!(dht.kept() > 100, "it keeps records up to the bound");
        assert_eq!(
            dht.records(first.1, 0),
            vec![first.2],
            "the first is never evicted"
        );
    }

    #[test]
    fn a_provider_publishes_again_through_a_closer_new_neighbour() {
        let id = content(12);
        let key = Key::for_content(&id);
        let seeds = seeds_by_distance(5, &key);
        let [closest, middle, provider, farther] =
            [0, 1, 3, 4].map(|i| Identity::from_seed([seeds[i]; 32]).id());
        let (_, signed) = record(seeds[3], id);
        let mut net = Net::new(&[middle, provider], &[(middle, provider)]);
        net.publish(provider, id, signed);
        assert_eq!(net.keepers(id), vec![middle]);
        // A keeper does not hand others' records on; the provider hands its own to a
        // newcomer closer to the key than itself, not to a farther one.
        assert!(net.nodes[&middle].on_neighbour(closest).is_empty());
        assert!(net.nodes[&provider].on_neighbour(farther).is_empty());
        let handed = net.nodes[&provider].on_neighbour(closest);
        assert_eq!(handed.len(), 1);
        net.nodes.insert(closest, Dht::new(room(), closest));
        net.link(provider, closest);
        net.carry(provider, handed, 0);
        assert!(net.keepers(id).contains(&closest));
    }

    #[test]
    fn a_provider_publishes_again_when_due() {
        let id = content(11);
        let (me, signed) = record(3, id);
        let next = Identity::from_seed([4; 32]).id();
        let mut dht = Dht::new(room(), me);
        let first = dht.publish(id, signed, &[next], 0);
        // Whether the neighbour is closer decides whether it goes there; either way our own
        // record answers a lookup that reaches us.
        assert!(first.len() <= REPLICAS);
        assert!(dht.tick(&[next], REPUBLISH_MS - 1).is_empty());
        let again = dht.tick(&[next], REPUBLISH_MS);
        assert_eq!(again.len(), first.len());
        assert_eq!(dht.records(id, REPUBLISH_MS).len(), 1);
    }

    /// A room of `n` peers where each links to the closest peer of every bucket of its
    /// table (as the mesh dials them), plus `random` links each.
    fn kademlia_room(n: usize, random: usize, seed: u64) -> (Vec<PeerId>, Vec<(PeerId, PeerId)>) {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let ids: Vec<PeerId> = (0..n)
            .map(|_| {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&next().to_be_bytes());
                bytes[8..].copy_from_slice(&next().to_be_bytes());
                PeerId::from_bytes(bytes)
            })
            .collect();
        let mut links = Vec::new();
        for me in &ids {
            let mut best: BTreeMap<u32, PeerId> = BTreeMap::new();
            for peer in ids.iter().filter(|p| *p != me) {
                let b = crate::mesh::bucket(*me, *peer);
                let d = |p: &PeerId| Key::from(*me).distance(&Key::from(*p));
                let entry = best.entry(b).or_insert(*peer);
                if d(peer) < d(entry) {
                    *entry = *peer;
                }
            }
            links.extend(best.into_values().map(|p| (*me, p)));
            for _ in 0..random {
                links.push((*me, ids[(next() % n as u64) as usize]));
            }
        }
        (ids, links)
    }

    #[test]
    fn in_a_kademlia_shaped_room_every_lookup_finds_the_provider_in_few_hops() {
        let (ids, links) = kademlia_room(500, 2, 42);
        let mut net = Net::new(&ids, &links);
        for n in 0..10u8 {
            let id = content(100 + n);
            let (provider, signed) = record(200 + n, id);
            // The provider is a room member: it takes the place of one.
            let stand_in = ids[usize::from(n) * 7];
            net.nodes.insert(provider, Dht::new(room(), provider));
            let theirs = net.links[&stand_in].clone();
            for peer in theirs {
                net.link(provider, peer);
            }
            net.publish(provider, id, signed);
            assert!(!net.keepers(id).is_empty());
            for asker in ids.iter().step_by(25) {
                let (found, frames) = net.find(*asker, id, 1);
                assert_eq!(found, vec![provider], "asked by {asker}");
                // There and back; log2(500) is about 9.
                assert!(frames <= 2 * 12, "{frames} frames");
            }
        }
    }
}
