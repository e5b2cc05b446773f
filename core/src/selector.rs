//! Which piece to ask which peer for: rarest first, random among equals, an end game for the
//! last pieces, and timeouts that move stalled requests elsewhere.
//!
//! [`PieceSelector`] is a pure state machine. The caller tells it which peers have which
//! pieces, when data arrives and when a piece verifies; it answers with the requests to send
//! and the duplicates to cancel. Time is passed in as milliseconds.
//!
//! - **Rarest first**: of the pieces a peer can give us, ask for one the fewest peers have, so
//!   rare pieces spread before their holders leave. Ties are broken at random (seeded), so
//!   downloaders that start together do not all fetch the same piece, except that among
//!   equals the piece right after the last one asked of the same peer comes first: each
//!   peer is asked for runs of neighbouring pieces from a random start, which lets it read
//!   its file in large blocks (libtorrent's `prefer_contiguous_blocks` does the same for
//!   disk reads). Rarity still decides first, so runs never hold back a rarer piece.
//! - **Pipelining**: each peer has up to [`SelectorConfig::pipeline`] requests outstanding, so
//!   its link never idles between pieces.
//! - **End game**: once every missing piece is already requested, idle peers ask for pieces
//!   that are in flight elsewhere (up to [`SelectorConfig::endgame_duplicates`] peers per
//!   piece); when one copy verifies, the others are cancelled.
//! - **Timeouts**: a request that sees no data for [`SelectorConfig::request_timeout_ms`] is
//!   dropped and the piece goes back to the pool; that peer is not asked for it again (while
//!   others have it) and gets a pipeline of one until it delivers a piece.
//! - **Priority**: an optional window of pieces (the playhead of a stream) is served before
//!   rarity counts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;

use crate::bitfield::Bitfield;

/// Tuning of a [`PieceSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// Requests outstanding per peer, at least.
    pub pipeline: usize,
    /// Requests outstanding per peer, at most.
    pub pipeline_max: usize,
    /// A peer that delivers fast gets as many requests outstanding as it delivered pieces in
    /// this long (within `pipeline..=pipeline_max`). Then the sender always has a next piece
    /// waiting when it sends one, even with a full channel buffer and more on the wire, and
    /// packs the end of one piece and the start of the next into one frame, while a slow peer
    /// is not asked for more than it sends in seconds (a seek in a stream would wait behind
    /// it).
    pub pipeline_ms: u64,
    /// A request without data for this long is moved elsewhere.
    pub request_timeout_ms: u64,
    /// Most peers asked for the same piece in the end game.
    pub endgame_duplicates: usize,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            pipeline: 6,
            pipeline_max: 16,
            pipeline_ms: 150,
            request_timeout_ms: 10_000,
            endgame_duplicates: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    piece: u32,
    deadline: u64,
}

#[derive(Debug)]
struct PeerPieces {
    has: Bitfield,
    requests: Vec<Outstanding>,
    /// Pieces this peer let time out: ask others first.
    avoid: BTreeSet<u32>,
    /// Set by a timeout, cleared by a delivered piece: a slow peer gets one request at a time.
    slow: bool,
    /// The piece last asked of this peer: the one after it wins a tie.
    last: Option<u32>,
    /// Since when we have been waiting for data from this peer: its last data, or the first
    /// request after it had none. `None` while nothing is asked of it. A timeout keeps it.
    waiting_since: Option<u64>,
    /// When its pieces of the last [`DELIVERY_WINDOW_MS`] were done, oldest first (as of its
    /// last delivery).
    delivered: VecDeque<u64>,
}

impl PeerPieces {
    /// Requests it may have outstanding: one while it is slow, else as many as it delivered
    /// pieces in [`SelectorConfig::pipeline_ms`], within the configured bounds.
    fn limit(&self, config: &SelectorConfig) -> usize {
        if self.slow {
            return 1;
        }
        let per_window = self.delivered.len() as u64 * config.pipeline_ms;
        let depth = per_window.div_ceil(DELIVERY_WINDOW_MS) as usize;
        depth.clamp(config.pipeline, config.pipeline_max.max(config.pipeline))
    }
}

/// How far back a peer's deliveries count towards its pipeline depth.
const DELIVERY_WINDOW_MS: u64 = 1_000;

/// Chooses pieces for one download.
#[derive(Debug)]
pub struct PieceSelector<P> {
    config: SelectorConfig,
    have: Bitfield,
    availability: Vec<u32>,
    in_flight: Vec<u32>,
    peers: BTreeMap<P, PeerPieces>,
    priority: Option<Range<u32>>,
    rng: u64,
}

impl<P: Ord + Copy> PieceSelector<P> {
    /// A selector for `pieces` pieces, none of them present. `seed` drives tie-breaking.
    pub fn new(pieces: u32, config: SelectorConfig, seed: u64) -> Self {
        Self::resume(Bitfield::new(pieces), config, seed)
    }

    /// A selector that already has the pieces in `have`.
    pub fn resume(have: Bitfield, config: SelectorConfig, seed: u64) -> Self {
        let pieces = have.len() as usize;
        Self {
            config,
            have,
            availability: vec![0; pieces],
            in_flight: vec![0; pieces],
            peers: BTreeMap::new(),
            priority: None,
            // xorshift needs a non-zero state.
            rng: seed | 1,
        }
    }

    /// The pieces we have.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every piece is here.
    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// The peers that have at least one piece we lack.
    pub fn useful_peers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.has.iter_ones().any(|i| !self.have.get(i)))
            .count()
    }

    /// How many peers have piece `i`.
    pub fn availability(&self, i: u32) -> u32 {
        self.availability.get(i as usize).copied().unwrap_or(0)
    }

    /// The outstanding requests, as `(peer, piece)`.
    pub fn outstanding(&self) -> impl Iterator<Item = (P, u32)> + '_ {
        self.peers
            .iter()
            .flat_map(|(peer, state)| state.requests.iter().map(move |r| (*peer, r.piece)))
    }

    /// Whether `piece` is currently requested from `peer`.
    pub fn is_requested(&self, peer: P, piece: u32) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|state| state.requests.iter().any(|r| r.piece == piece))
    }

    /// The pieces `peer` has, as far as we know.
    pub fn peer_pieces(&self, peer: P) -> Option<&Bitfield> {
        self.peers.get(&peer).map(|state| &state.has)
    }

    /// Serve pieces in `window` before any other (e.g. around a media playhead); `None` for
    /// plain rarest-first.
    pub fn set_priority(&mut self, window: Option<Range<u32>>) {
        self.priority = window;
    }

    /// `peer` has the pieces in `has` (a bitfield arrived). Replaces what was known of it.
    pub fn add_peer(&mut self, peer: P, has: Bitfield) {
        if has.len() != self.have.len() {
            return;
        }
        // A new bitfield from a known peer replaces the old view; its requests stay valid
        // only if it still has those pieces, so start it over.
        self.remove_peer(peer);
        for i in has.iter_ones() {
            self.availability[i as usize] += 1;
        }
        self.peers.insert(
            peer,
            PeerPieces {
                has,
                requests: Vec::new(),
                avoid: BTreeSet::new(),
                slow: false,
                last: None,
                waiting_since: None,
                delivered: VecDeque::new(),
            },
        );
    }

    /// `peer` announced one more piece.
    pub fn peer_has(&mut self, peer: P, piece: u32) {
        if let Some(state) = self.peers.get_mut(&peer)
            && state.has.set(piece)
        {
            self.availability[piece as usize] += 1;
        }
    }

    /// Forgets `peer` (it left, or sent a bad piece). Returns the pieces it had been asked for,
    /// which go back to the pool.
    pub fn remove_peer(&mut self, peer: P) -> Vec<u32> {
        let Some(state) = self.peers.remove(&peer) else {
            return Vec::new();
        };
        for i in state.has.iter_ones() {
            self.availability[i as usize] -= 1;
        }
        state
            .requests
            .iter()
            .map(|r| {
                self.in_flight[r.piece as usize] -= 1;
                r.piece
            })
            .collect()
    }

    /// Chooses new requests so that every peer's pipeline is full. Returns `(peer, piece)`
    /// pairs to send, already recorded as outstanding.
    pub fn next_requests(&mut self, now: u64) -> Vec<(P, u32)> {
        let mut chosen = Vec::new();
        let peers: Vec<P> = self.peers.keys().copied().collect();
        // Round-robin: one request per peer per round, so pipelines fill evenly.
        loop {
            let mut progressed = false;
            for peer in &peers {
                if let Some(piece) = self.pick_for(*peer) {
                    self.record(*peer, piece, now);
                    chosen.push((*peer, piece));
                    progressed = true;
                }
            }
            if !progressed {
                return chosen;
            }
        }
    }

    /// Data for `piece` arrived from `peer`: its request is alive, push its deadline back.
    pub fn on_progress(&mut self, peer: P, piece: u32, now: u64) {
        let timeout = self.config.request_timeout_ms;
        if let Some(state) = self.peers.get_mut(&peer)
            && let Some(request) = state.requests.iter_mut().find(|r| r.piece == piece)
        {
            request.deadline = now + timeout;
            state.waiting_since = Some(now);
        }
    }

    /// Peers we have asked for pieces and that sent no data for `after_ms` or more, counting
    /// across the timeouts that moved or repeated their requests: a link that stopped
    /// delivering (its transport may be wedged), worth replacing.
    pub fn stalled(&self, now: u64, after_ms: u64) -> Vec<P> {
        self.peers
            .iter()
            .filter(|(_, state)| {
                !state.requests.is_empty()
                    && state
                        .waiting_since
                        .is_some_and(|since| now >= since + after_ms)
            })
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// `piece` from `peer` arrived whole at `now` (and verified, or is being checked).
    /// Returns the duplicate requests (end game) to cancel. Returns nothing new if we already
    /// had it.
    pub fn on_piece_done(&mut self, peer: P, piece: u32, now: u64) -> Vec<(P, u32)> {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.slow = false;
            state.delivered.push_back(now);
            while state
                .delivered
                .front()
                .is_some_and(|at| at + DELIVERY_WINDOW_MS <= now)
            {
                state.delivered.pop_front();
            }
        }
        self.drop_request(peer, piece);
        if !self.have.set(piece) {
            return Vec::new();
        }
        let duplicates: Vec<(P, u32)> = self.outstanding().filter(|(_, p)| *p == piece).collect();
        for (other, _) in &duplicates {
            self.drop_request(*other, piece);
        }
        duplicates
    }

    /// A piece counted done by [`PieceSelector::on_piece_done`] turned out bad after all
    /// (its hash was checked later): it is missing again, and selected like any other.
    pub fn on_piece_failed(&mut self, piece: u32) {
        self.have.clear(piece);
    }

    /// `peer` will not serve `piece` (it does not have it after all): it is not asked again
    /// until it announces the piece.
    pub fn on_rejected(&mut self, peer: P, piece: u32) {
        self.drop_request(peer, piece);
        if let Some(state) = self.peers.get_mut(&peer)
            && state.has.clear(piece)
        {
            self.availability[piece as usize] -= 1;
        }
    }

    /// Drops every request that saw no data before its deadline. Returns them, so the caller
    /// can cancel them with their peers.
    pub fn expire(&mut self, now: u64) -> Vec<(P, u32)> {
        let mut expired = Vec::new();
        for (peer, state) in &mut self.peers {
            state.requests.retain(|r| {
                if r.deadline <= now {
                    expired.push((*peer, r.piece));
                    false
                } else {
                    true
                }
            });
            for (p, piece) in &expired {
                if p == peer {
                    state.avoid.insert(*piece);
                    state.slow = true;
                }
            }
        }
        for (_, piece) in &expired {
            self.in_flight[*piece as usize] -= 1;
        }
        expired
    }

    /// How many requests `peer` may have outstanding now (from how fast it delivers).
    pub fn depth(&self, peer: P) -> Option<usize> {
        self.peers.get(&peer).map(|state| state.limit(&self.config))
    }

    /// The earliest deadline of any outstanding request, for scheduling the next `expire`.
    pub fn next_deadline(&self) -> Option<u64> {
        self.peers
            .values()
            .flat_map(|state| state.requests.iter().map(|r| r.deadline))
            .min()
    }

    fn record(&mut self, peer: P, piece: u32, now: u64) {
        if let Some(state) = self.peers.get_mut(&peer) {
            // A peer that timed out keeps counting from before; others start waiting now.
            if state.waiting_since.is_none() || (state.requests.is_empty() && !state.slow) {
                state.waiting_since = Some(now);
            }
            state.requests.push(Outstanding {
                piece,
                deadline: now + self.config.request_timeout_ms,
            });
            state.last = Some(piece);
            self.in_flight[piece as usize] += 1;
        }
    }

    /// Withdraws the request for `piece` from `peer` (the caller sends the cancel).
    pub fn cancel(&mut self, peer: P, piece: u32) {
        self.drop_request(peer, piece);
    }

    fn drop_request(&mut self, peer: P, piece: u32) {
        if let Some(state) = self.peers.get_mut(&peer)
            && let Some(i) = state.requests.iter().position(|r| r.piece == piece)
        {
            state.requests.swap_remove(i);
            self.in_flight[piece as usize] -= 1;
            if state.requests.is_empty() && !state.slow {
                state.waiting_since = None;
            }
        }
    }

    /// The next piece to ask `peer` for, if its pipeline has room and it has something useful.
    fn pick_for(&mut self, peer: P) -> Option<u32> {
        let state = self.peers.get(&peer)?;
        let limit = state.limit(&self.config);
        if state.requests.len() >= limit {
            return None;
        }
        let wanted = |i: u32| !self.have.get(i) && !state.requests.iter().any(|r| r.piece == i);
        // Pieces nobody is fetching: priority window first, then rarest.
        let fresh = |i: u32, avoid: bool| {
            wanted(i) && self.in_flight[i as usize] == 0 && (!avoid || !state.avoid.contains(&i))
        };
        let mut rng = self.rng;
        let next = state.last.map(|last| last + 1);
        let best = |rng: &mut u64, ok: &dyn Fn(u32) -> bool| self.best(&state.has, next, rng, ok);
        let pick = best(&mut rng, &|i| fresh(i, true))
            .or_else(|| {
                // Pieces only this peer can give us are worth retrying even after a timeout.
                best(&mut rng, &|i| fresh(i, false) && self.availability(i) == 1)
            })
            .or_else(|| {
                // End game: nothing left unrequested that some peer could send.
                if self.any_unrequested() {
                    return None;
                }
                let dup = self.config.endgame_duplicates as u32;
                best(&mut rng, &|i| {
                    wanted(i) && self.in_flight[i as usize] < dup && !state.avoid.contains(&i)
                })
            });
        self.rng = rng;
        pick
    }

    /// Whether some missing piece is not in flight although a peer has it.
    fn any_unrequested(&self) -> bool {
        (0..self.have.len()).any(|i| {
            !self.have.get(i) && self.in_flight[i as usize] == 0 && self.availability(i) > 0
        })
    }

    /// Among the pieces `has` holds that pass `ok`: the priority window first (in order), then
    /// the fewest copies in flight, then the rarest, then piece `next` (continuing a run),
    /// then random.
    fn best(
        &self,
        has: &Bitfield,
        next: Option<u32>,
        rng: &mut u64,
        ok: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        let mut best: Option<(u32, Rank)> = None;
        let mut ties = 0u64;
        for i in has.iter_ones().filter(|i| ok(*i)) {
            // Inside the window, the piece nearest its start (the playhead) comes first.
            let (outside_priority, distance) = match &self.priority {
                Some(window) if window.contains(&i) => (false, i - window.start),
                _ => (true, 0),
            };
            let key = (
                outside_priority,
                distance,
                self.in_flight[i as usize],
                self.availability(i),
                next != Some(i),
            );
            match &best {
                Some((_, best_key)) if key > *best_key => {}
                Some((_, best_key)) if key == *best_key => {
                    // Reservoir sampling: each of the equals wins with the same chance.
                    ties += 1;
                    if next_random(rng).is_multiple_of(ties) {
                        best = Some((i, key));
                    }
                }
                _ => {
                    best = Some((i, key));
                    ties = 1;
                }
            }
        }
        best.map(|(i, _)| i)
    }
}

/// How good a candidate piece is, smallest first: outside the priority window, distance from
/// the window's start, copies in flight, holders, and whether it does not continue the run.
type Rank = (bool, u32, u32, u32, bool);

/// xorshift64: small, fast and good enough to break ties.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn field(len: u32, ones: &[u32]) -> Bitfield {
        let mut f = Bitfield::new(len);
        for i in ones {
            f.set(*i);
        }
        f
    }

    fn config(pipeline: usize) -> SelectorConfig {
        SelectorConfig {
            pipeline,
            pipeline_max: pipeline,
            pipeline_ms: 150,
            request_timeout_ms: 1000,
            endgame_duplicates: 2,
        }
    }

    #[test]
    fn the_rarest_piece_comes_first() {
        let mut s = PieceSelector::new(4, config(1), 7);
        s.add_peer('a', Bitfield::full(4));
        s.add_peer('b', field(4, &[0, 1, 3]));
        s.add_peer('c', field(4, &[0, 1, 3]));
        // Piece 2 only `a` has: that is what `a` is asked for.
        let requests = s.next_requests(0);
        assert!(requests.contains(&('a', 2)), "{requests:?}");
    }

    #[test]
    fn ties_are_broken_differently_by_different_seeds() {
        let firsts: BTreeSet<u32> = (0..20)
            .map(|seed| {
                let mut s = PieceSelector::new(50, config(1), seed);
                s.add_peer('a', Bitfield::full(50));
                s.next_requests(0)[0].1
            })
            .collect();
        assert!(firsts.len() > 5, "{firsts:?}");
    }

    #[test]
    fn a_peer_is_asked_for_runs_of_neighbouring_pieces_among_equals() {
        let mut s = PieceSelector::new(64, config(64), 3);
        s.add_peer('a', Bitfield::full(64));
        let pieces: Vec<u32> = s.next_requests(0).into_iter().map(|(_, p)| p).collect();
        assert_eq!(pieces.len(), 64);
        // A run breaks only where it reaches the end or a piece already asked for: a few
        // random starts, where random picks would break almost every time.
        let breaks = pieces.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(breaks <= 8, "{breaks} breaks: {pieces:?}");
        assert_ne!(pieces[0], 0, "the first run starts at random");
    }

    #[test]
    fn a_peer_that_delivers_fast_gets_a_deeper_pipeline() {
        let cfg = SelectorConfig {
            pipeline: 2,
            pipeline_max: 5,
            pipeline_ms: 100,
            ..config(2)
        };
        let asked = |s: &PieceSelector<char>, peer: char| {
            s.outstanding().filter(|(p, _)| *p == peer).count()
        };
        // `peer` delivers one of its outstanding pieces at `now`; the selector refills.
        let deliver = |s: &mut PieceSelector<char>, peer: char, now: u64| {
            let Some((_, piece)) = s.outstanding().find(|(p, _)| *p == peer) else {
                panic!("{peer} has nothing outstanding");
            };
            s.on_piece_done(peer, piece, now);
            s.next_requests(now);
        };
        let mut s = PieceSelector::new(1000, cfg, 1);
        s.add_peer('f', Bitfield::full(1000));
        s.add_peer('s', Bitfield::full(1000));
        s.next_requests(0);
        assert_eq!(
            (asked(&s, 'f'), asked(&s, 's')),
            (2, 2),
            "both start at the minimum"
        );
        // `peer` delivers `times` pieces, one every `every` ms.
        let deliver_every = |s: &mut PieceSelector<char>, peer, times, every, now: &mut u64| {
            for _ in 0..times {
                *now += every;
                deliver(s, peer, *now);
            }
        };
        // `f` delivers 40 pieces a second (4 per 100 ms), `s` one every two seconds.
        let mut now = 0;
        deliver_every(&mut s, 'f', 40, 25, &mut now);
        assert_eq!((s.depth('f'), asked(&s, 'f')), (Some(4), 4));
        deliver_every(&mut s, 's', 3, 2000, &mut now);
        assert_eq!(
            (s.depth('s'), asked(&s, 's')),
            (Some(2), 2),
            "a slow peer stays at the minimum"
        );
        // `f` delivers again after two seconds: one delivery in the last second.
        deliver(&mut s, 'f', now);
        assert_eq!(s.depth('f'), Some(2), "back to the minimum");
        assert_eq!(
            asked(&s, 'f'),
            3,
            "what is outstanding stays, nothing new is asked"
        );
        deliver_every(&mut s, 'f', 60, 10, &mut now);
        assert_eq!(
            (s.depth('f'), asked(&s, 'f')),
            (Some(5), 5),
            "100 pieces a second would be 10 per 100 ms: capped at the maximum"
        );
    }

    #[test]
    fn a_rarer_piece_beats_continuing_a_run() {
        let mut s = PieceSelector::new(8, config(1), 5);
        s.add_peer('a', Bitfield::full(8));
        let (_, first) = s.next_requests(0)[0];
        s.on_piece_done('a', first, 0);
        // `b` has every piece but `rare` (not the one after `first`), which only `a` has now:
        // it comes before the run goes on.
        let rare = if first == 5 { 2 } else { 6 };
        let others: Vec<u32> = (0..8).filter(|i| *i != rare).collect();
        s.add_peer('b', field(8, &others));
        let requests = s.next_requests(0);
        assert!(
            requests.contains(&('a', rare)),
            "{requests:?} after {first}"
        );
    }

    #[test]
    fn pipelines_fill_evenly_and_no_piece_is_asked_twice_before_the_end_game() {
        let mut s = PieceSelector::new(100, config(4), 1);
        s.add_peer('a', Bitfield::full(100));
        s.add_peer('b', Bitfield::full(100));
        let requests = s.next_requests(0);
        assert_eq!(requests.len(), 8);
        assert_eq!(requests.iter().filter(|(p, _)| *p == 'a').count(), 4);
        let pieces: BTreeSet<u32> = requests.iter().map(|(_, i)| *i).collect();
        assert_eq!(pieces.len(), 8);
        assert!(s.next_requests(0).is_empty(), "pipelines are full");
    }

    #[test]
    fn end_game_asks_several_peers_and_cancels_the_duplicates() {
        let mut s = PieceSelector::new(2, config(4), 3);
        s.add_peer('a', Bitfield::full(2));
        let first = s.next_requests(0);
        assert_eq!(first.len(), 2, "a is asked for both pieces");
        s.add_peer('b', Bitfield::full(2));
        let dups = s.next_requests(0);
        assert_eq!(dups.len(), 2, "b duplicates both: {dups:?}");
        assert!(dups.iter().all(|(p, _)| *p == 'b'));
        let cancels = s.on_piece_done('a', 0, 0);
        assert_eq!(cancels, vec![('b', 0)]);
        assert!(
            s.on_piece_done('b', 0, 0).is_empty(),
            "a late duplicate changes nothing"
        );
        assert!(!s.is_complete());
        s.on_piece_done('b', 1, 0);
        assert!(s.is_complete());
        assert_eq!(s.outstanding().count(), 0);
    }

    #[test]
    fn a_stalled_request_moves_to_another_peer() {
        let mut s = PieceSelector::new(1, config(2), 5);
        s.add_peer('a', Bitfield::full(1));
        assert_eq!(s.next_requests(0), vec![('a', 0)]);
        s.add_peer('b', Bitfield::full(1));
        // `b` joins in the end game and duplicates; make it a plain move instead:
        s.remove_peer('b');
        s.on_progress('a', 0, 500);
        assert!(
            s.expire(1400).is_empty(),
            "progress pushed the deadline back"
        );
        assert_eq!(s.expire(1500), vec![('a', 0)]);
        s.add_peer('b', Bitfield::full(1));
        assert_eq!(
            s.next_requests(1500),
            vec![('b', 0)],
            "the stalled piece goes to b, not a"
        );
        assert_eq!(s.next_deadline(), Some(2500));
    }

    #[test]
    fn a_piece_only_a_slow_peer_has_is_still_retried_there() {
        let mut s = PieceSelector::new(1, config(2), 5);
        s.add_peer('a', Bitfield::full(1));
        s.next_requests(0);
        s.expire(1000);
        assert_eq!(s.next_requests(1000), vec![('a', 0)]);
    }

    #[test]
    fn a_peer_that_sends_nothing_across_retries_is_stalled_and_one_that_delivers_is_not() {
        // The only source: its requests time out every second and are asked again of it.
        let mut s = PieceSelector::new(4, config(2), 5);
        s.add_peer('a', Bitfield::full(4));
        s.next_requests(0);
        for t in 1..=12u64 {
            let now = t * 500;
            s.expire(now);
            s.next_requests(now);
            assert_eq!(
                s.stalled(now, 3000),
                if now >= 3000 { vec!['a'] } else { vec![] }
            );
        }
        // Data resets the wait.
        let piece = s.peers[&'a'].requests[0].piece;
        s.on_progress('a', piece, 6000);
        assert!(s.stalled(8000, 3000).is_empty());
        assert_eq!(s.stalled(9000, 3000), vec!['a']);

        // A peer that delivers, if slowly, is never stalled; once nothing is asked of it,
        // there is nothing to wait for.
        let mut s = PieceSelector::new(1, config(1), 5);
        s.add_peer('b', Bitfield::full(1));
        s.next_requests(0);
        for t in 1..=20u64 {
            s.on_progress('b', 0, t * 500);
            assert!(s.stalled(t * 500, 3000).is_empty());
        }
        s.on_piece_done('b', 0, 10_000);
        assert!(s.stalled(100_000, 3000).is_empty());
    }

    #[test]
    fn a_removed_peer_gives_its_requests_back() {
        let mut s = PieceSelector::new(4, config(2), 9);
        s.add_peer('a', Bitfield::full(4));
        s.next_requests(0);
        let freed = s.remove_peer('a');
        assert_eq!(freed.len(), 2);
        s.add_peer('b', Bitfield::full(4));
        assert_eq!(s.next_requests(0).len(), 2);
        assert_eq!(s.availability(0), 1);
    }

    #[test]
    fn rejected_pieces_are_not_asked_again_from_that_peer() {
        let mut s = PieceSelector::new(1, config(2), 9);
        s.add_peer('a', Bitfield::full(1));
        s.next_requests(0);
        s.on_rejected('a', 0);
        assert_eq!(s.availability(0), 0);
        assert!(s.next_requests(0).is_empty());
        s.peer_has('a', 0);
        assert_eq!(s.next_requests(0), vec![('a', 0)]);
    }

    #[test]
    fn the_priority_window_beats_rarity() {
        let mut s = PieceSelector::new(10, config(1), 2);
        s.add_peer('a', Bitfield::full(10));
        s.add_peer('b', field(10, &[0, 1, 2, 3, 4, 5, 6, 7, 8]));
        s.set_priority(Some(7..9));
        let requests = s.next_requests(0);
        assert!(
            requests.iter().all(|(_, i)| (7..9).contains(i)),
            "{requests:?}"
        );
        // Within the window, in order from its start (the playhead).
        let mut s = PieceSelector::new(100, config(3), 2);
        s.add_peer('a', Bitfield::full(100));
        s.set_priority(Some(40..60));
        let requests: Vec<u32> = s.next_requests(0).into_iter().map(|(_, i)| i).collect();
        assert_eq!(requests, vec![40, 41, 42]);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Deliver(usize),
        Stall(u64),
        Leave(u8),
        Join(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => any::<usize>().prop_map(Step::Deliver),
            1 => (100u64..3000).prop_map(Step::Stall),
            1 => (0u8..4).prop_map(Step::Leave),
            1 => (0u8..4).prop_map(Step::Join),
        ]
    }

    proptest! {
        /// Whatever peers do, the selector never asks a peer for a piece it lacks or we have,
        /// never exceeds a pipeline, duplicates only in the end game and only up to the limit,
        /// and completes once a full seeder stays.
        #[test]
        fn invariants_hold_and_the_download_completes(
            pieces in 1u32..40,
            holdings in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 40), 4),
            steps in proptest::collection::vec(step(), 0..120),
            seed in any::<u64>(),
        ) {
            let cfg = SelectorConfig { pipeline_max: 6, ..config(3) };
            let mut s = PieceSelector::new(pieces, cfg, seed);
            let peer_field = |p: u8| {
                let mut f = Bitfield::new(pieces);
                for i in 0..pieces {
                    if holdings[p as usize][i as usize] { f.set(i); }
                }
                f
            };
            for p in 0..4u8 { s.add_peer(p, peer_field(p)); }
            // Peer 9 is a full seeder that joins at the end and never leaves.
            let mut now = 0u64;
            let mut present: BTreeMap<u8, Bitfield> = (0..4u8).map(|p| (p, peer_field(p))).collect();
            let check = |s: &PieceSelector<u8>, present: &BTreeMap<u8, Bitfield>| -> Result<(), TestCaseError> {
                let mut per_piece: BTreeMap<u32, usize> = BTreeMap::new();
                let mut per_peer: BTreeMap<u8, usize> = BTreeMap::new();
                for (peer, piece) in s.outstanding() {
                    prop_assert!(!s.have().get(piece), "requested a piece we have");
                    prop_assert!(present[&peer].get(piece), "asked {} for {} it lacks", peer, piece);
                    *per_piece.entry(piece).or_default() += 1;
                    *per_peer.entry(peer).or_default() += 1;
                }
                for n in per_peer.values() { prop_assert!(*n <= cfg.pipeline_max); }
                for n in per_piece.values() { prop_assert!(*n <= cfg.endgame_duplicates); }
                Ok(())
            };
            // Duplicates are only ever made when nothing is left unrequested.
            let request = |s: &mut PieceSelector<u8>, now: u64| -> Result<(), TestCaseError> {
                let made = s.next_requests(now);
                let duplicated = made.iter().any(|(_, piece)| s.outstanding().filter(|(_, p)| p == piece).count() > 1);
                if duplicated {
                    prop_assert!(!s.any_unrequested(), "duplicate outside the end game");
                }
                Ok(())
            };
            for step in steps {
                request(&mut s, now)?;
                check(&s, &present)?;
                match step {
                    Step::Deliver(k) => {
                        let outstanding: Vec<(u8, u32)> = s.outstanding().collect();
                        if !outstanding.is_empty() {
                            let (peer, piece) = outstanding[k % outstanding.len()];
                            s.on_progress(peer, piece, now);
                            s.on_piece_done(peer, piece, now);
                        }
                    }
                    Step::Stall(ms) => { now += ms; s.expire(now); }
                    Step::Leave(p) => { s.remove_peer(p); present.remove(&p); }
                    Step::Join(p) => { s.add_peer(p, peer_field(p)); present.insert(p, peer_field(p)); }
                }
                check(&s, &present)?;
            }
            s.add_peer(9, Bitfield::full(pieces));
            present.insert(9, Bitfield::full(pieces));
            for _ in 0..(pieces * 4 + 20) {
                if s.is_complete() { break; }
                request(&mut s, now)?;
                check(&s, &present)?;
                let outstanding: Vec<(u8, u32)> = s.outstanding().collect();
                match outstanding.first() {
                    Some((peer, piece)) => { s.on_piece_done(*peer, *piece, now); }
                    None => { now += 2000; s.expire(now); }
                }
            }
            prop_assert!(s.is_complete(), "download did not complete");
        }
    }
}
