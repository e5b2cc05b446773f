//! Signalling through the mesh: how a `signal` reaches a peer we have no connection to, by way
//! of peers we do have one to, while the signalling server is away.
//!
//! The origin signs each signal with its key ([`crate::identity`]); every peer on the way
//! checks the signature before forwarding it, and the target before using it, so no
//! forwarder can alter a signal or claim another origin. Each signal has a sequence number,
//! and a bounded memory of those seen ([`crate::gossip::Seen`]) drops duplicates and replays.
//! A hop limit (`ttl`, lowered at each hop and not covered by the signature) bounds the
//! flood: a forwarder that is connected to the target sends it there only; otherwise it sends
//! it on to every neighbour but the one it came from.
//!
//! What we forward is limited per origin ([`ORIGIN_BURST`], [`ORIGIN_PER_SEC`]) on top of the
//! limit per neighbour the caller applies ([`crate::client::RELAY_PER_SEC`]): one origin's
//! frames arriving through many neighbours get no more than its share sent on. The replay
//! memory is sized by time as well as count ([`SEEN_RETENTION_MS`]).
//!
//! The same frames carry room-wide [`swarm_protocol::gossip`] messages: their target is
//! [`BROADCAST`], and every peer both delivers one and passes it on (with a larger hop
//! limit, [`crate::gossip::DEFAULT_TTL`]), so it floods the overlay once.

use std::collections::BTreeMap;

use swarm_protocol::gossip::BROADCAST;
use swarm_protocol::wire::{Relay, WireError};
use swarm_protocol::{PeerId, RoomName};

use crate::gossip::{DEFAULT_TTL, Insert, MAX_ORIGINS, Seen, forward_targets};
use crate::identity::{Identity, IdentityError, RelayedSignal};
use crate::token_bucket::TokenBucket;

/// Frames to send: (neighbour, encoded frame).
pub type Frames = Vec<(PeerId, Vec<u8>)>;

/// Hops a relayed signal may make after the first: origin → neighbour → … → target crosses at
/// most `HOP_LIMIT + 1` links.
pub const HOP_LIMIT: u8 = 3;

/// Relayed frames remembered for duplicate suppression. With [`SEEN_RETENTION_MS`] this is
/// the most fresh frames taken in that time: one neighbour at its limit
/// ([`crate::client::RELAY_BURST`] then [`crate::client::RELAY_PER_SEC`]) sends at most
/// 2,048 + 64 × 30 = 3,968 in 30 s, so it takes four neighbours flooding at their limits to
/// have fresh frames refused. About 1 MiB at most.
pub const SEEN_CAPACITY: usize = 16_384;

/// Least time a relayed frame is remembered (ms), whatever comes after it: a flood of fresh
/// frames (of fresh keys) cannot push a frame out and have it replayed within this time;
/// past [`SEEN_CAPACITY`] fresh frames are refused instead ([`DropReason::MemoryFull`]).
/// Copies of a frame that come by other paths arrive within a few seconds; after 30 s the
/// per-origin floors of [`Seen`] still refuse a replay (for the origins heard from last).
pub const SEEN_RETENTION_MS: u64 = 30_000;

/// Frames of one origin we forward at once (then [`ORIGIN_PER_SEC`]). A peer reconnecting
/// through the mesh signals to each of its new neighbours (an offer or answer and a few ICE
/// candidates each), and one sharing a folder floods a provide record per file (of which
/// the directory keeps [`crate::directory::MAX_PER_PROVIDER`], 64): 256 covers both with
/// room to spare, and is an eighth of what one neighbour may send at once.
pub const ORIGIN_BURST: u64 = 256;

/// Frames of one origin we forward a second after its burst: a quarter of what one
/// neighbour may send ([`crate::client::RELAY_PER_SEC`], 64), so an origin flooding through
/// many neighbours gets no more on than a quarter of one neighbour's share, and a neighbour
/// flooding under one key has a quarter of its frames sent on.
pub const ORIGIN_PER_SEC: u64 = 16;

/// Origins whose forwarding budget we hold (as many as [`Seen`] keeps floors for). Only a
/// budget that has refilled to its burst is forgotten (it is then the same as a new one), so
/// a flood of fresh keys cannot hand a flooder a fresh budget; while every budget held is in
/// use, frames of origins beyond them are not forwarded. An origin that had one frame
/// forwarded frees its place within 1/16 s, so filling all of them takes 4,096 fresh keys
/// × 16 frames a second, far more than the per-neighbour limit lets a few neighbours send.
pub const MAX_RATED_ORIGINS: usize = MAX_ORIGINS;

/// What to do with a relay frame that arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// It is for us: handle `data` as a `signal` from `from`.
    Deliver {
        /// The verified origin.
        from: PeerId,
        /// The signal's JSON.
        data: Vec<u8>,
    },
    /// Send these frames on (possibly none: the hop limit is reached).
    Forward(Vec<(PeerId, Vec<u8>)>),
    /// A message for the whole room: handle `data` as gossip from `from`, and send the
    /// `forward` frames on.
    Broadcast {
        /// The verified origin.
        from: PeerId,
        /// The gossip message's JSON.
        data: Vec<u8>,
        /// The signed frame with no hops left: what to hand a new neighbour so it learns the
        /// message too, without flooding it again.
        record: Vec<u8>,
        /// Copies for our other neighbours.
        forward: Vec<(PeerId, Vec<u8>)>,
    },
    /// Dropped: a duplicate, a replay, or a frame that does not verify.
    Drop(DropReason),
}

/// Why a relay frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Seen before (it arrived over another path, or was replayed).
    Duplicate,
    /// The signature or the origin's key does not check out.
    Forged(IdentityError),
    /// It claims to come from us.
    Ours,
    /// The replay memory is full of frames younger than [`SEEN_RETENTION_MS`] (a flood of
    /// fresh frames): refused rather than forgetting one that could then be replayed.
    MemoryFull,
    /// Not forwarded: its origin has had its share sent on ([`ORIGIN_BURST`],
    /// [`ORIGIN_PER_SEC`]), or [`MAX_RATED_ORIGINS`] other origins are using theirs.
    OriginRate,
}

/// The forwarding budgets of the origins of relayed frames: a [`TokenBucket`] each, for at
/// most `max` origins at once.
#[derive(Debug)]
struct OriginBudgets {
    buckets: BTreeMap<PeerId, TokenBucket>,
    max: usize,
    burst: u64,
    per_sec: u64,
    /// When full buckets were last looked for: none refill without time passing, so once
    /// per instant is enough.
    swept_at: Option<u64>,
}

impl OriginBudgets {
    fn new(max: usize, burst: u64, per_sec: u64) -> Self {
        Self {
            buckets: BTreeMap::new(),
            max,
            burst,
            per_sec,
            swept_at: None,
        }
    }

    /// Takes one of `origin`'s tokens at `now`, if it has one and a budget can be held for
    /// it. Existing budgets are never evicted for a newcomer unless they are full again.
    fn take(&mut self, origin: PeerId, now: u64) -> bool {
        if let Some(bucket) = self.buckets.get_mut(&origin) {
            return bucket.take(now);
        }
        if self.buckets.len() >= self.max && self.swept_at != Some(now) {
            self.swept_at = Some(now);
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        if self.buckets.len() >= self.max {
            return false;
        }
        let mut bucket = TokenBucket::new(self.burst, self.per_sec, now);
        let taken = bucket.take(now);
        self.buckets.insert(origin, bucket);
        taken
    }
}

/// One peer's side of signalling through the mesh.
#[derive(Debug)]
pub struct SignalRelay {
    room: RoomName,
    identity: Identity,
    public_key: [u8; 32],
    next_seq: u64,
    seen: Seen,
    origins: OriginBudgets,
    /// Frames not forwarded (or broadcasts delivered but not passed on) for their origin.
    origin_limited: u64,
    /// Frames refused because the replay memory was full of young frames.
    memory_full: u64,
}

impl SignalRelay {
    /// Relaying for `identity` in `room`. `first_seq` should differ between sessions of the
    /// same key (a clock reading in milliseconds will do), so that a restarted peer's new
    /// signals are not taken for replays of its old ones.
    pub fn new(room: RoomName, identity: Identity, first_seq: u64) -> Self {
        Self::with_memory(
            room,
            identity,
            first_seq,
            Seen::new(SEEN_CAPACITY).with_retention(SEEN_RETENTION_MS),
            OriginBudgets::new(MAX_RATED_ORIGINS, ORIGIN_BURST, ORIGIN_PER_SEC),
        )
    }

    fn with_memory(
        room: RoomName,
        identity: Identity,
        first_seq: u64,
        seen: Seen,
        origins: OriginBudgets,
    ) -> Self {
        let public_key = identity.public_key();
        Self {
            room,
            identity,
            public_key,
            next_seq: first_seq,
            seen,
            origins,
            origin_limited: 0,
            memory_full: 0,
        }
    }

    /// Frames not forwarded because their origin had had its share sent on
    /// ([`DropReason::OriginRate`]; a broadcast is still delivered here), so far.
    pub fn origin_limited(&self) -> u64 {
        self.origin_limited
    }

    /// Frames refused because the replay memory was full of young frames
    /// ([`DropReason::MemoryFull`]), so far.
    pub fn memory_full(&self) -> u64 {
        self.memory_full
    }

    /// Our id.
    pub fn me(&self) -> PeerId {
        self.identity.id()
    }

    /// Signs `data` for `target` under our next sequence number and encodes it with `ttl`
    /// hops left; also returns the same frame with no hops left.
    fn sign(
        &mut self,
        target: PeerId,
        ttl: u8,
        data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), WireError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let me = self.me();
        // Not remembered in `seen`: a frame of ours that comes back is dropped as ours.
        let signature = self.identity.sign_relay(&self.room, target, seq, data);
        let relay = Relay {
            origin: me,
            target,
            seq,
            ttl,
            public_key: &self.public_key,
            signature: &signature,
            data,
        };
        Ok((relay.encode()?, Relay { ttl: 0, ..relay }.encode()?))
    }

    /// Frames that carry `data` (a signal's JSON) to `target`: to the target alone if it is
    /// one of our `neighbours`, otherwise to all of them.
    pub fn send(
        &mut self,
        target: PeerId,
        data: &[u8],
        neighbours: &[PeerId],
    ) -> Result<Frames, WireError> {
        let (frame, _) = self.sign(target, HOP_LIMIT, data)?;
        let to: Vec<PeerId> = if neighbours.contains(&target) {
            vec![target]
        } else {
            neighbours.to_vec()
        };
        Ok(to.into_iter().map(|peer| (peer, frame.clone())).collect())
    }

    /// Frames that flood `data` (a gossip message's JSON) to the whole room, one per
    /// neighbour, and the signed frame with no hops left (see [`Incoming::Broadcast`]).
    pub fn broadcast(
        &mut self,
        data: &[u8],
        neighbours: &[PeerId],
    ) -> Result<(Frames, Vec<u8>), WireError> {
        let (frame, record) = self.sign(BROADCAST, DEFAULT_TTL, data)?;
        let frames = neighbours
            .iter()
            .map(|peer| (*peer, frame.clone()))
            .collect();
        Ok((frames, record))
    }

    /// A relay frame arrived from neighbour `from` at `now` (ms on a monotonic clock);
    /// `neighbours` are our open connections.
    ///
    /// Only what we send on spends its origin's budget: a frame for us, a frame with no hops
    /// left and a duplicate spend nothing (the caller's per-neighbour limit bounds those),
    /// and a broadcast past the budget is still delivered here, only not passed on.
    pub fn on_frame(
        &mut self,
        from: PeerId,
        relay: Relay<'_>,
        neighbours: &[PeerId],
        now: u64,
    ) -> Incoming {
        let me = self.me();
        if relay.origin == me {
            return Incoming::Drop(DropReason::Ours);
        }
        if self.seen.contains(relay.origin, relay.seq) {
            return Incoming::Drop(DropReason::Duplicate);
        }
        // Verified before it is remembered, so a forgery cannot shadow the genuine signal.
        if let Err(err) = RelayedSignal::from(&relay).verify(&self.room) {
            return Incoming::Drop(DropReason::Forged(err));
        }
        match self.seen.insert_at(relay.origin, relay.seq, now) {
            Insert::New => {}
            Insert::Seen => return Incoming::Drop(DropReason::Duplicate),
            Insert::Full => {
                self.memory_full += 1;
                return Incoming::Drop(DropReason::MemoryFull);
            }
        }
        // The hop limit is not signed: whatever a sender says, no more than ours.
        let most = if relay.target == BROADCAST {
            DEFAULT_TTL
        } else {
            HOP_LIMIT
        };
        let relay = Relay {
            ttl: relay.ttl.min(most),
            ..relay
        };
        if relay.target == BROADCAST {
            let mut forward: Frames = match relay.ttl.checked_sub(1) {
                Some(ttl) => {
                    let frame = Relay { ttl, ..relay }.encode().unwrap_or_default();
                    forward_targets(Some(from), neighbours.iter().copied(), relay.ttl)
                        .into_iter()
                        .filter(|peer| *peer != relay.origin)
                        .map(|peer| (peer, frame.clone()))
                        .collect()
                }
                None => Vec::new(),
            };
            if !forward.is_empty() && !self.origins.take(relay.origin, now) {
                self.origin_limited += 1;
                forward.clear();
            }
            return Incoming::Broadcast {
                from: relay.origin,
                data: relay.data.to_vec(),
                record: Relay { ttl: 0, ..relay }.encode().unwrap_or_default(),
                forward,
            };
        }
        if relay.target == me {
            return Incoming::Deliver {
                from: relay.origin,
                data: relay.data.to_vec(),
            };
        }
        let Some(ttl) = relay.ttl.checked_sub(1) else {
            return Incoming::Forward(Vec::new());
        };
        let targets: Vec<PeerId> = if neighbours.contains(&relay.target) {
            vec![relay.target]
        } else {
            forward_targets(Some(from), neighbours.iter().copied(), relay.ttl)
                .into_iter()
                .filter(|peer| *peer != relay.origin)
                .collect()
        };
        if targets.is_empty() {
            return Incoming::Forward(Vec::new());
        }
        if !self.origins.take(relay.origin, now) {
            self.origin_limited += 1;
            return Incoming::Drop(DropReason::OriginRate);
        }
        let Ok(frame) = Relay { ttl, ..relay }.encode() else {
            // It decoded from a frame of at most the maximum size, so it re-encodes.
            return Incoming::Forward(Vec::new());
        };
        Incoming::Forward(
            targets
                .into_iter()
                .map(|peer| (peer, frame.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use swarm_protocol::wire::{BinaryFrame, decode_binary};

    use super::*;

    fn room() -> RoomName {
        RoomName::new("r").expect("room")
    }

    fn relay_for(seed: u8) -> SignalRelay {
        SignalRelay::new(room(), Identity::from_seed([seed; 32]), 1)
    }

    fn decode(frame: &[u8]) -> Relay<'_> {
        match decode_binary(frame) {
            Ok(BinaryFrame::Relay(relay)) => relay,
            other => panic!("not a relay frame: {other:?}"),
        }
    }

    /// A line of peers 0 - 1 - 2 - … - (n-1); returns what each delivered.
    /// What each peer delivered: (origin, data) pairs.
    type Delivered = BTreeMap<PeerId, Vec<(PeerId, Vec<u8>)>>;

    fn run_line(n: u8, data: &[u8]) -> (Delivered, usize) {
        let mut peers: Vec<SignalRelay> = (0..n).map(|i| relay_for(i + 1)).collect();
        let ids: Vec<PeerId> = peers.iter().map(SignalRelay::me).collect();
        let neighbours = |i: usize| -> Vec<PeerId> {
            let mut out = Vec::new();
            if i > 0 {
                out.push(ids[i - 1]);
            }
            if i + 1 < ids.len() {
                out.push(ids[i + 1]);
            }
            out
        };
        let target = ids[ids.len() - 1];
        let mut queue: VecDeque<(PeerId, PeerId, Vec<u8>)> = peers[0]
            .send(target, data, &neighbours(0))
            .expect("send")
            .into_iter()
            .map(|(to, frame)| (ids[0], to, frame))
            .collect();
        let mut delivered = Delivered::new();
        let mut frames = 0;
        while let Some((from, to, frame)) = queue.pop_front() {
            frames += 1;
            let i = ids.iter().position(|id| *id == to).expect("known");
            match peers[i].on_frame(from, decode(&frame), &neighbours(i), 0) {
                Incoming::Deliver { from, data } => {
                    delivered.entry(to).or_default().push((from, data))
                }
                Incoming::Forward(out) => {
                    queue.extend(out.into_iter().map(|(next, frame)| (to, next, frame)))
                }
                Incoming::Drop(reason) => panic!("dropped: {reason:?}"),
                Incoming::Broadcast { .. } => panic!("not a broadcast"),
            }
        }
        (delivered, frames)
    }

    #[test]
    fn a_broadcast_floods_a_ring_with_chords_once_per_peer_and_is_signed() {
        let n = 24usize;
        let mut peers: Vec<SignalRelay> = (0..n).map(|i| relay_for(i as u8 + 1)).collect();
        let ids: Vec<PeerId> = peers.iter().map(SignalRelay::me).collect();
        let neighbours =
            |i: usize| -> Vec<PeerId> { [1, n - 1, 5, n - 5].map(|d| ids[(i + d) % n]).to_vec() };
        let data = br#"{"type":"provide"}"#;
        let (out, record) = peers[0].broadcast(data, &neighbours(0)).expect("fits");
        assert_eq!(decode(&record).ttl, 0);
        assert_eq!(decode(&record).target, BROADCAST);
        let mut queue: VecDeque<(PeerId, PeerId, Vec<u8>)> =
            out.into_iter().map(|(to, f)| (ids[0], to, f)).collect();
        let mut delivered = vec![0; n];
        let mut records = Vec::new();
        while let Some((from, to, frame)) = queue.pop_front() {
            let i = ids.iter().position(|id| *id == to).expect("known");
            match peers[i].on_frame(from, decode(&frame), &neighbours(i), 0) {
                Incoming::Broadcast {
                    from: origin,
                    data: got,
                    record,
                    forward,
                } => {
                    assert_eq!((origin, &got[..]), (ids[0], &data[..]));
                    delivered[i] += 1;
                    records.push(record);
                    assert!(forward.iter().all(|(p, _)| *p != from && *p != ids[0]));
                    queue.extend(forward.into_iter().map(|(next, f)| (to, next, f)));
                }
                Incoming::Drop(DropReason::Duplicate | DropReason::Ours) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delivered[0], 0, "the origin does not deliver its own");
        assert!(delivered[1..].iter().all(|d| *d == 1), "{delivered:?}");
        // A record handed to a newcomer is delivered there and goes no further.
        let mut newcomer = relay_for(200);
        match newcomer.on_frame(ids[3], decode(&records[0]), &[ids[3], ids[4]], 0) {
            Incoming::Broadcast { forward, .. } => assert!(forward.is_empty()),
            other => panic!("{other:?}"),
        }
        // A forwarder cannot change what was broadcast.
        let genuine = decode(&records[1]);
        let altered = Relay {
            data: br#"{"type":"other"}"#,
            ..genuine
        }
        .encode()
        .expect("fits");
        assert_eq!(
            relay_for(201).on_frame(ids[3], decode(&altered), &[ids[3]], 0),
            Incoming::Drop(DropReason::Forged(IdentityError::BadSignature))
        );
    }

    #[test]
    fn a_signal_is_not_a_broadcast() {
        // A signal signed for one target cannot be turned into a broadcast.
        let (mut a, mut b) = (relay_for(1), relay_for(2));
        let frame = a.send(b.me(), b"{}", &[b.me()]).expect("send").remove(0).1;
        let as_broadcast = Relay {
            target: BROADCAST,
            ..decode(&frame)
        }
        .encode()
        .expect("fits");
        assert_eq!(
            b.on_frame(a.me(), decode(&as_broadcast), &[a.me()], 0),
            Incoming::Drop(DropReason::Forged(IdentityError::BadSignature))
        );
    }

    #[test]
    fn a_signal_crosses_up_to_the_hop_limit_and_no_further() {
        let data = br#"{"sdp":{"type":"offer","sdp":"v=0"}}"#;
        // HOP_LIMIT forwards: origin plus HOP_LIMIT + 1 links reach a line of HOP_LIMIT + 2.
        let (delivered, _) = run_line(HOP_LIMIT + 2, data);
        let origin = relay_for(1).me();
        let target = relay_for(HOP_LIMIT + 2).me();
        assert_eq!(delivered.get(&target), Some(&vec![(origin, data.to_vec())]));
        let (delivered, _) = run_line(HOP_LIMIT + 3, data);
        assert!(delivered.is_empty(), "one hop too far");
    }

    #[test]
    fn a_hop_limit_above_ours_is_lowered_on_receipt() {
        // `ttl` is not signed: a sender that set 255 had it forwarded as 254.
        let (mut a, mut b) = (relay_for(1), relay_for(2));
        let (c, d) = (relay_for(3).me(), relay_for(4).me());
        let out = a.send(c, b"{}", &[b.me()]).expect("send");
        let mut relay = decode(&out[0].1);
        relay.ttl = u8::MAX;
        let frame = relay.encode().expect("fits");
        match b.on_frame(a.me(), decode(&frame), &[a.me(), d], 0) {
            Incoming::Forward(next) => assert_eq!(decode(&next[0].1).ttl, HOP_LIMIT - 1),
            other => panic!("{other:?}"),
        }
        let (frames, _) = a.broadcast(b"{}", &[b.me()]).expect("broadcast");
        let mut relay = decode(&frames[0].1);
        relay.ttl = u8::MAX;
        let frame = relay.encode().expect("fits");
        match b.on_frame(a.me(), decode(&frame), &[a.me(), d], 0) {
            Incoming::Broadcast { forward, .. } => {
                assert_eq!(decode(&forward[0].1).ttl, DEFAULT_TTL - 1)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_neighbour_of_the_target_sends_it_there_only() {
        let (mut a, mut b) = (relay_for(1), relay_for(2));
        let (c, d) = (relay_for(3).me(), relay_for(4).me());
        let out = a.send(c, b"{}", &[b.me(), d]).expect("send");
        assert_eq!(out.len(), 2, "a is not connected to c: flood");
        let frame = &out[0].1;
        match b.on_frame(a.me(), decode(frame), &[a.me(), c, d], 0) {
            Incoming::Forward(next) => {
                assert_eq!(next.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![c]);
                assert_eq!(decode(&next[0].1).ttl, HOP_LIMIT - 1);
            }
            other => panic!("{other:?}"),
        }
        let direct = a.send(d, b"{}", &[b.me(), d]).expect("send");
        assert_eq!(direct.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![d]);
    }

    #[test]
    fn duplicates_replays_and_forgeries_are_dropped() {
        let (mut a, mut b, mut m) = (relay_for(1), relay_for(2), relay_for(3));
        let out = a.send(b.me(), b"{\"x\":1}", &[m.me()]).expect("send");
        let frame = out[0].1.clone();
        // m forwards it genuinely...
        let Incoming::Forward(fwd) = m.on_frame(a.me(), decode(&frame), &[a.me(), b.me()], 0)
        else {
            panic!("forwarded");
        };
        assert!(matches!(
            b.on_frame(m.me(), decode(&fwd[0].1), &[m.me()], 0),
            Incoming::Deliver { .. }
        ));
        // ...and replays it.
        assert_eq!(
            b.on_frame(m.me(), decode(&fwd[0].1), &[m.me()], 0),
            Incoming::Drop(DropReason::Duplicate)
        );
        // m alters the data.
        let genuine = decode(&frame);
        let altered = Relay {
            data: b"{\"x\":2}",
            seq: genuine.seq + 5,
            ..genuine
        }
        .encode()
        .expect("fits");
        assert_eq!(
            b.on_frame(m.me(), decode(&altered), &[m.me()], 0),
            Incoming::Drop(DropReason::Forged(IdentityError::BadSignature))
        );
        // m signs with its own key but claims a's origin.
        let mine = m.send(b.me(), b"{}", &[b.me()]).expect("send");
        let forged = Relay {
            origin: a.me(),
            seq: 100,
            ..decode(&mine[0].1)
        }
        .encode()
        .expect("fits");
        assert_eq!(
            b.on_frame(m.me(), decode(&forged), &[m.me()], 0),
            Incoming::Drop(DropReason::Forged(IdentityError::WrongPeer(a.me())))
        );
        // Our own signal coming back.
        assert_eq!(
            a.on_frame(m.me(), decode(&frame), &[m.me()], 0),
            Incoming::Drop(DropReason::Ours)
        );
    }

    #[test]
    fn a_forgery_does_not_shadow_the_genuine_signal() {
        let (mut a, mut b, m) = (relay_for(1), relay_for(2), relay_for(3));
        let frame = a.send(b.me(), b"{}", &[b.me()]).expect("send").remove(0).1;
        let genuine = decode(&frame);
        let forged = Relay {
            data: b"{\"evil\":1}",
            ..genuine
        }
        .encode()
        .expect("fits");
        assert!(matches!(
            b.on_frame(m.me(), decode(&forged), &[], 0),
            Incoming::Drop(_)
        ));
        assert!(matches!(
            b.on_frame(a.me(), decode(&frame), &[], 0),
            Incoming::Deliver { .. }
        ));
    }
    #[test]
    fn one_origin_through_many_neighbours_gets_its_share_forwarded_and_no_more() {
        // Each neighbour stays well within its own limit; without a limit per origin, all
        // of a's frames were sent on.
        let (mut a, mut b, mut c) = (relay_for(1), relay_for(2), relay_for(3));
        let ns: Vec<PeerId> = (10..14).map(|n| relay_for(n).me()).collect();
        let target = relay_for(50).me();
        let extra = 50;
        let mut forwarded = 0;
        for n in 0..(ORIGIN_BURST + extra) {
            let via = ns[n as usize % ns.len()];
            let frame = a.send(target, b"{}", &[via]).expect("send").remove(0).1;
            match b.on_frame(via, decode(&frame), &ns, 0) {
                Incoming::Forward(out) => {
                    assert_eq!(out.len(), ns.len() - 1);
                    forwarded += 1;
                }
                Incoming::Drop(DropReason::OriginRate) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(forwarded, ORIGIN_BURST);
        assert_eq!(b.origin_limited(), extra);
        // Another origin has a budget of its own.
        let frame = c.send(target, b"{}", &[ns[0]]).expect("send").remove(0).1;
        assert!(matches!(
            b.on_frame(ns[0], decode(&frame), &ns, 0),
            Incoming::Forward(out) if !out.is_empty()
        ));
        // What a sends to b itself is still delivered, and its broadcasts are still
        // handled here, only not passed on.
        let frame = a.send(b.me(), b"{}", &[ns[1]]).expect("send").remove(0).1;
        assert!(matches!(
            b.on_frame(ns[1], decode(&frame), &ns, 0),
            Incoming::Deliver { .. }
        ));
        let (frames, _) = a.broadcast(b"{}", &[ns[2]]).expect("broadcast");
        match b.on_frame(ns[2], decode(&frames[0].1), &ns, 0) {
            Incoming::Broadcast { forward, .. } => assert!(forward.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.origin_limited(), extra + 1);
        // A second later, a second's worth goes on.
        let mut later = 0;
        for _ in 0..(ORIGIN_PER_SEC + 10) {
            let frame = a.send(target, b"{}", &[ns[3]]).expect("send").remove(0).1;
            if let Incoming::Forward(out) = b.on_frame(ns[3], decode(&frame), &ns, 1_000) {
                assert!(!out.is_empty());
                later += 1;
            }
        }
        assert_eq!(later, ORIGIN_PER_SEC);
    }

    #[test]
    fn frames_that_go_nowhere_spend_no_budget() {
        // With no hops left, or no neighbour to send to, nothing is forwarded and nothing
        // is spent.
        let (mut a, mut b) = (relay_for(1), relay_for(2));
        let target = relay_for(50).me();
        for _ in 0..(2 * ORIGIN_BURST) {
            let frame = a.send(target, b"{}", &[b.me()]).expect("send").remove(0).1;
            assert_eq!(
                b.on_frame(a.me(), decode(&frame), &[a.me()], 0),
                Incoming::Forward(Vec::new())
            );
        }
        assert_eq!(b.origin_limited(), 0);
    }

    #[test]
    fn a_flood_of_fresh_origins_does_not_reset_a_flooders_budget() {
        let (flooder, fresh) = (PeerId::from_bytes([1; 16]), |n: u8| {
            PeerId::from_bytes([n + 100; 16])
        });
        let mut budgets = OriginBudgets::new(4, 2, 1);
        assert!(budgets.take(flooder, 0) && budgets.take(flooder, 0));
        assert!(!budgets.take(flooder, 0));
        // Fresh origins fill the table; the next one is not given a budget, and none of
        // theirs was made room for by forgetting the flooder's.
        assert!((0..3).all(|n| budgets.take(fresh(n), 0)));
        assert!(!budgets.take(fresh(3), 0), "full of budgets in use");
        assert!(!budgets.take(flooder, 0));
        // A second on, the fresh ones are full again and make room; the flooder's is not,
        // and keeps what it has: one token, not a new burst.
        assert!(budgets.take(fresh(3), 1_000));
        assert!(budgets.take(flooder, 1_000));
        assert!(!budgets.take(flooder, 1_000));
        assert!(budgets.buckets.len() <= 4);
    }

    #[test]
    fn a_flood_of_fresh_frames_cannot_push_out_a_young_one_to_replay_it() {
        let capacity = 4;
        let seen = Seen::new(capacity).with_retention(SEEN_RETENTION_MS);
        let budgets = OriginBudgets::new(MAX_RATED_ORIGINS, ORIGIN_BURST, ORIGIN_PER_SEC);
        let mut b =
            SignalRelay::with_memory(room(), Identity::from_seed([2; 32]), 1, seen, budgets);
        let mut a = relay_for(1);
        let frame = a.send(b.me(), b"{}", &[b.me()]).expect("send").remove(0).1;
        assert!(matches!(
            b.on_frame(a.me(), decode(&frame), &[a.me()], 0),
            Incoming::Deliver { .. }
        ));
        // Frames of fresh keys: the memory fills, then refuses them.
        let mut full = 0;
        for n in 0..(capacity as u8 + 3) {
            let mut fresh = relay_for(100 + n);
            let flood = fresh
                .send(b.me(), b"{}", &[a.me()])
                .expect("send")
                .remove(0)
                .1;
            if b.on_frame(a.me(), decode(&flood), &[a.me()], 1_000)
                == Incoming::Drop(DropReason::MemoryFull)
            {
                full += 1;
            }
        }
        assert_eq!(full, 4);
        assert_eq!(b.memory_full(), 4);
        assert_eq!(
            b.on_frame(a.me(), decode(&frame), &[a.me()], 1_000),
            Incoming::Drop(DropReason::Duplicate),
            "the replay is still refused"
        );
        // Once it is old enough to be forgotten, its origin's floor refuses it still.
        let mut late = relay_for(120);
        let flood = late
            .send(b.me(), b"{}", &[a.me()])
            .expect("send")
            .remove(0)
            .1;
        assert!(matches!(
            b.on_frame(a.me(), decode(&flood), &[a.me()], SEEN_RETENTION_MS),
            Incoming::Deliver { .. }
        ));
        assert_eq!(
            b.on_frame(a.me(), decode(&frame), &[a.me()], SEEN_RETENTION_MS),
            Incoming::Drop(DropReason::Duplicate)
        );
    }
}
