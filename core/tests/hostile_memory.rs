//! What a hostile peer can make a whole [`Node`] hold, measured: a counting global allocator
//! (this test binary only) tracks the live heap bytes, and the peak of them is sampled at
//! every input and output of the victim ([`PEAK`]); each test drives a
//! real victim [`Node`] with hand-made frames from one attacker neighbour, through the
//! public API only, as a shell would.
//!
//! The victim's shell is modelled as the worst case for memory: every frame the victim
//! sends the attacker waits in the attacker's [`SendQueue`], which the attacker never reads
//! (a peer can stop reading its channel), until the victim closes the connection. So the
//! heap counts what the victim decided to keep *and* what it decided to send.
//!
//! Each test takes [`SERIAL`] first: the allocator is global, and tests run on parallel
//! threads. Within a test, [`Meter`] measures from just before the attack (the victim joined
//! and connected) to just after it, with the attacker's frames built one at a time and
//! dropped once handed over, so they count at most one frame towards the peak.
//!
//! Bounds (each test states its own, derived from the constants of the bound it exercises):
//! - fake contents with far `have`s: [`MAX_SOURCE_BITS_PER_PEER`] of piece bits, plus
//!   bookkeeping of the contents announced before the drop;
//! - fake contents with the longest labels: [`MAX_OFFERS_PER_PEER`] offers of two labels of
//!   [`MAX_LABEL_LEN`] each, plus bookkeeping;
//! - manifest requests: [`MANIFEST_BUDGET_BYTES`] of replies in a window;
//! - provider records in the structured layer: [`MAX_KEPT_BYTES`] and [`MAX_KEPT`] records;
//! - gossip: [`DEFAULT_MAX_RECORDS`] directory records, [`MAX_HEARD`] members heard of,
//!   the replay memory of [`swarm_core::gossip::DEFAULT_SEEN_CAPACITY`] names and [`swarm_core::gossip::MAX_ORIGINS`] floors.

use std::alloc::System;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use cap::Cap;
use swarm_core::client::RELAY_BURST;
use swarm_core::dht::{MAX_KEPT, MAX_KEPT_BYTES, MAX_RECORD_LEN, RECORD_TTL_MS};
use swarm_core::directory::MAX_UNLISTED;
use swarm_core::identity::Identity;
use swarm_core::merkle::manifest_id;
use swarm_core::mesh::MAX_HEARD;
use swarm_core::node::{Event, Input, MAX_UNREAD_BYTES, Node, NodeConfig, Output};
use swarm_core::relay::SignalRelay;
use swarm_core::send_queue::{Frame, SendQueue};
use swarm_core::share::bounds::{
    MANIFEST_BUDGET_BYTES, MANIFEST_WINDOW_MS, MAX_OFFERS_PER_PEER, MAX_SOURCE_BITS_PER_PEER,
    reason,
};
use swarm_protocol::content::{MAX_LABEL_LEN, MAX_PIECES, MIN_PIECE_SIZE, Manifest};
use swarm_protocol::gossip::Gossip;
use swarm_protocol::route::{RouteKind, RouteOut};
use swarm_protocol::wire::{BinaryFrame, MAX_FRAME_LEN, PeerMsg, decode_binary};
use swarm_protocol::{ContentId, PeerId, RoomName, ServerMsg};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

// ---- the counting allocator ----

/// [`std::alloc::System`], counting the bytes it holds (live) in an atomic. The crate
/// forbids unsafe code, so the `unsafe impl GlobalAlloc` is the `cap` crate's.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// The most live bytes seen by [`sample`] since [`Meter::start`]. Sampled rather than
/// counted in the allocator: at every input the victim takes and every output it hands its
/// shell, which is when what a peer made it hold is all there (its state, its queue of
/// outputs, and the frames its shell queued); only the temporaries inside one call are
/// missed.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Heap bytes allocated and not freed, by the whole process.
fn live() -> usize {
    ALLOCATOR.allocated()
}

/// Notes the live bytes now for [`PEAK`].
fn sample() {
    PEAK.fetch_max(live(), Ordering::Relaxed);
}

/// One test at a time: the counters are the whole process's.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the others still run, one at a time.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Heap growth from the moment it was started.
struct Meter {
    base: usize,
}

impl Meter {
    fn start() -> Self {
        let base = live();
        PEAK.store(base, Ordering::Relaxed);
        Self { base }
    }

    /// Live bytes now minus at the start (negative if more was freed).
    fn live(&self) -> i64 {
        live() as i64 - self.base as i64
    }

    /// The most the live bytes grew above the start.
    fn peak(&self) -> usize {
        sample();
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }
}

fn kib(bytes: impl Into<i64>) -> String {
    format!("{:.1} KiB", bytes.into() as f64 / 1024.0)
}

// ---- a victim node and its shell ----

/// A victim [`Node`] connected to one attacker, with its shell's state.
struct Victim {
    node: Node,
    attacker: PeerId,
    now: u64,
    /// The victim's send queue to the attacker, which the attacker never reads; `None` once
    /// the victim disconnected it (the shell drops the queue with the connection).
    to_attacker: Option<SendQueue>,
    /// Bytes in [`Victim::to_attacker`].
    queued: usize,
    /// Bytes the victim sent the attacker in all.
    sent: usize,
    /// Frames the attacker sent.
    frames_in: usize,
    /// Bytes the attacker sent.
    bytes_in: usize,
    /// Outputs that are told and counted, not kept (a kept log would count as the victim's).
    disconnected: bool,
    files_found: usize,
    bad_peers: Vec<&'static str>,
}

impl Victim {
    /// A victim in room `room`, welcomed with the attacker as the only other member, and
    /// connected to it; the attacker said `hello`.
    fn new(room: &str) -> Self {
        Self::with_unread_bound(room, MAX_UNREAD_BYTES)
    }

    /// [`Victim::new`], dropping a peer with more than `max_unread_bytes` sent and not read.
    fn with_unread_bound(room: &str, max_unread_bytes: u64) -> Self {
        let room = RoomName::new(room).expect("a valid room name");
        let identity = Identity::from_seed([0x11; 32]);
        let me = identity.id();
        let attacker = Identity::from_seed([0xa7; 32]).id();
        let now = 1_000;
        let config = NodeConfig {
            max_unread_bytes,
            ..NodeConfig::new(room, identity, 1_700_000_000_000, 7)
        };
        let mut victim = Self {
            node: Node::new(config, now),
            attacker,
            now,
            to_attacker: Some(SendQueue::new()),
            queued: 0,
            sent: 0,
            frames_in: 0,
            bytes_in: 0,
            disconnected: false,
            files_found: 0,
            bad_peers: Vec::new(),
        };
        let welcome = ServerMsg::Welcome {
            id: me,
            peers: vec![attacker],
            ice_servers: Vec::new(),
            resume: None,
        }
        .to_json();
        victim.node.handle(Input::ServerFrame(&welcome), now);
        let mut connects = 0;
        while let Some(output) = victim.node.poll_output() {
            connects +=
                usize::from(matches!(output, Output::Connect { peer, .. } if peer == attacker));
        }
        assert_eq!(connects, 1, "the victim dials the member it was told of");
        victim.node.handle(Input::ChannelOpen(attacker), now);
        victim.drain();
        assert!(
            victim.node.is_open(attacker),
            "the attacker's channel is open"
        );
        victim.frame(&PeerMsg::Hello { version: 2 }.encode());
        victim
    }

    /// The attacker's frame arrives.
    fn frame(&mut self, data: &[u8]) {
        self.frames_in += 1;
        self.bytes_in += data.len();
        let (from, now) = (self.attacker, self.now);
        sample();
        self.node.handle(Input::Frame { from, data }, now);
        self.drain();
    }

    /// Lets `ms` pass, running the upkeep when it is due.
    fn wait(&mut self, ms: u64) {
        let until = self.now + ms;
        loop {
            let next = self.node.poll_timeout();
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            self.node.handle_timeout(now);
            self.drain();
        }
    }

    /// The attacker reads everything queued for it at last: the queue empties and the shell
    /// reports it drained, as both shells do ([`SendQueue::take_drained`]).
    fn read_all(&mut self) {
        let Some(queue) = &mut self.to_attacker else {
            return;
        };
        while queue.next(0).is_some() {}
        self.queued = 0;
        if queue.take_drained() {
            let (peer, now) = (self.attacker, self.now);
            self.node.handle(Input::Drained(peer), now);
            self.drain();
        }
    }

    /// Carries out what the node asks, as a shell would: frames to the attacker wait in its
    /// queue (never read), the rest is told and forgotten.
    fn drain(&mut self) {
        loop {
            sample();
            let Some(output) = self.node.poll_output() else {
                break;
            };
            match output {
                Output::Send { to, frame } if to == self.attacker => {
                    self.sent += frame.len();
                    if let Some(queue) = &mut self.to_attacker {
                        self.queued += frame.len();
                        queue.push(Frame::Binary(frame));
                    }
                }
                Output::Disconnect(peer) if peer == self.attacker => {
                    self.disconnected = true;
                    self.to_attacker = None;
                    self.queued = 0;
                }
                Output::ReadPiece(read) => {
                    let now = self.now;
                    self.node.handle(Input::PieceRead { read, data: None }, now);
                }
                Output::Event(Event::FileFound(_)) => self.files_found += 1,
                Output::Event(Event::BadPeer { reason, .. }) => self.bad_peers.push(reason),
                _ => {}
            }
        }
    }

    /// How many peers were dropped for `reason`.
    fn dropped(&self, reason: &str) -> u64 {
        self.node.dropped().get(reason).copied().unwrap_or(0)
    }

    /// The attacker was dropped for `reason`, once, and is out.
    fn assert_dropped(&self, why: &str) {
        assert_eq!(
            self.dropped(why),
            1,
            "dropped for {why:?}: {:?}",
            self.node.dropped()
        );
        assert_eq!(self.node.dropped().len(), 1, "for that reason only");
        assert!(
            self.disconnected,
            "the victim closed the attacker's connection"
        );
        assert!(
            !self.node.is_open(self.attacker),
            "the attacker's channel is closed"
        );
        assert!(
            !self.node.members().contains(&self.attacker),
            "the attacker is no member any more (banned)"
        );
    }
}

/// A fake content id, numbered.
fn fake(salt: u8, n: u32) -> ContentId {
    let mut bytes = [salt; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    ContentId::from_bytes(bytes)
}

fn announce(id: ContentId, name: &str, mime: &str) -> Vec<u8> {
    PeerMsg::Announce {
        id,
        size: 1 << 40,
        name,
        mime,
    }
    .encode()
}

// ---- the attacks ----

/// Fake contents with a `have` of the last piece a manifest may have (2^20 - 1) each: before
/// the manifest is known, a `have` past the end was kept as bits up to it, 128 KiB per
/// content (the original issue: 164 KB on the wire cost 264 MB). More contents are sent than
/// [`MAX_OFFERS_PER_PEER`].
///
/// Bound: the piece bits are at most [`MAX_SOURCE_BITS_PER_PEER`] (1 MiB, 8 contents'
/// worth); the attacker is dropped at the ninth (`too many piece bits`) and everything else
/// it sends is ignored. The heap grows by at most 1 MiB + 256 KiB at any time (the bits, the
/// bookkeeping of 9 contents, one frame in flight), and everything is freed once it is
/// dropped (at most 64 KiB stays: the ban and the reason counted).
#[test]
fn fake_contents_with_far_haves_cost_at_most_the_piece_bit_budget() {
    let _serial = serial();
    let mut victim = Victim::new("hostile-memory-haves");
    let meter = Meter::start();
    let mut peak_bits_before_drop = 0;
    for n in 0..=MAX_OFFERS_PER_PEER as u32 {
        let id = fake(0xfa, n);
        victim.frame(&announce(id, "fake", ""));
        victim.frame(
            &PeerMsg::Have {
                id,
                piece: MAX_PIECES - 1,
            }
            .encode(),
        );
        if !victim.disconnected {
            peak_bits_before_drop = meter.peak();
        }
    }
    let (peak, after) = (meter.peak(), meter.live());
    println!(
        "far haves: {} frames, {} in; peak growth {} (before the drop {}), after the drop {}; \
         bound {}",
        victim.frames_in,
        kib(victim.bytes_in as i64),
        kib(peak as i64),
        kib(peak_bits_before_drop as i64),
        kib(after),
        kib((MAX_SOURCE_BITS_PER_PEER + 256 * KIB) as i64),
    );
    victim.assert_dropped(reason::TOO_MANY_PIECE_BITS);
    // The attack reached the bits: 8 contents' worth were held before the drop.
    assert!(
        peak >= MAX_SOURCE_BITS_PER_PEER,
        "the piece bits were kept up to the budget: {peak}"
    );
    assert!(
        peak <= MAX_SOURCE_BITS_PER_PEER + 256 * KIB,
        "peak growth {peak}"
    );
    assert!(after <= 64 * KIB as i64, "released after the drop: {after}");
    assert!(victim.node.files().is_empty(), "its offers went with it");
}

/// A piece-bit budget spent with `bitfield`s instead: fake contents each with the largest
/// `bitfield` a frame holds (64 KiB).
///
/// Bound: [`MAX_SOURCE_BITS_PER_PEER`] (16 bitfields); dropped at the 17th with `too many
/// piece bits`. The heap grows by at most 1 MiB + 256 KiB; all is freed after the drop.
#[test]
fn fake_contents_with_large_bitfields_cost_at_most_the_piece_bit_budget() {
    let _serial = serial();
    let mut victim = Victim::new("hostile-memory-bitfields");
    let bits = vec![0xffu8; MAX_FRAME_LEN - 64];
    let meter = Meter::start();
    for n in 0..64 {
        let id = fake(0xfb, n);
        victim.frame(&announce(id, "fake", ""));
        victim.frame(&PeerMsg::Bitfield { id, bits: &bits }.encode());
    }
    let (peak, after) = (meter.peak(), meter.live());
    println!(
        "bitfields: {} frames, {} in; peak growth {}, after the drop {}; bound {}",
        victim.frames_in,
        kib(victim.bytes_in as i64),
        kib(peak as i64),
        kib(after),
        kib((MAX_SOURCE_BITS_PER_PEER + 256 * KIB) as i64),
    );
    victim.assert_dropped(reason::TOO_MANY_PIECE_BITS);
    assert!(
        peak >= MAX_SOURCE_BITS_PER_PEER * 9 / 10,
        "the bits were kept: {peak}"
    );
    assert!(
        peak <= MAX_SOURCE_BITS_PER_PEER + 256 * KIB,
        "peak growth {peak}"
    );
    assert!(after <= 64 * KIB as i64, "released after the drop: {after}");
}

/// More fake contents than a peer may offer, each with a name and a MIME type of the
/// longest length a manifest allows ([`MAX_LABEL_LEN`]) and a `have` of piece 7 (one byte
/// of bits).
///
/// Bound: [`MAX_OFFERS_PER_PEER`] offers × (2 × [`MAX_LABEL_LEN`] of labels + 1 KiB of
/// bookkeeping) = 3 MiB; dropped at offer 1,025 with `too many contents offered`, and all
/// freed after the drop but the capacity of the victim's queue of outputs (2 × 1,024
/// outputs of 128 B: the drop withdraws the 1,024 offers at once, an event each). A label one byte longer is refused at once (`announced name or type
/// too long`), keeping nothing.
#[test]
fn fake_contents_with_the_longest_labels_cost_at_most_the_offer_budget() {
    let _serial = serial();
    let mut victim = Victim::new("hostile-memory-labels");
    let label = "n".repeat(MAX_LABEL_LEN);
    let mime = "m".repeat(MAX_LABEL_LEN);
    let bound = MAX_OFFERS_PER_PEER * (2 * MAX_LABEL_LEN + KIB);
    let meter = Meter::start();
    let mut files_before_drop = 0;
    for n in 0..=MAX_OFFERS_PER_PEER as u32 + 100 {
        let id = fake(0xfc, n);
        victim.frame(&announce(id, &label, &mime));
        victim.frame(&PeerMsg::Have { id, piece: 7 }.encode());
        if !victim.disconnected {
            files_before_drop = victim.node.files().len();
        }
    }
    let (peak, after) = (meter.peak(), meter.live());
    println!(
        "longest labels: {} frames, {} in; {} offers held; peak growth {}, after the drop {}; \
         bound {}",
        victim.frames_in,
        kib(victim.bytes_in as i64),
        files_before_drop,
        kib(peak as i64),
        kib(after),
        kib(bound as i64),
    );
    victim.assert_dropped(reason::TOO_MANY_OFFERS);
    assert_eq!(
        files_before_drop, MAX_OFFERS_PER_PEER,
        "offers held up to the bound"
    );
    assert_eq!(victim.files_found, MAX_OFFERS_PER_PEER, "each told once");
    assert!(
        peak >= MAX_OFFERS_PER_PEER * 2 * MAX_LABEL_LEN,
        "the labels were kept: {peak}"
    );
    assert!(peak <= bound, "peak growth {peak}");
    // What stays is the capacity the victim's queue of outputs grew to when the drop
    // withdrew 1,024 offers at once (an event each; a `VecDeque` keeps its capacity).
    let residue = 64 * KIB + 2 * MAX_OFFERS_PER_PEER * std::mem::size_of::<Output>();
    assert!(after <= residue as i64, "released after the drop: {after}");
    assert!(victim.node.files().is_empty());

    // One byte too long: refused at once.
    let mut victim = Victim::new("hostile-memory-labels-2");
    let meter = Meter::start();
    let long = "n".repeat(MAX_LABEL_LEN + 1);
    victim.frame(&announce(fake(0xfd, 0), &long, ""));
    victim.frame(&announce(fake(0xfd, 1), "a.bin", ""));
    victim.assert_dropped(reason::LABEL_TOO_LONG);
    assert!(victim.node.files().is_empty(), "nothing kept");
    assert!(meter.live() <= 64 * KIB as i64, "{}", meter.live());
}

/// The victim shares a file whose manifest is 2 MiB (65,536 pieces, 2 MiB and 98 bytes
/// encoded); the attacker asks for it 50 times (50 frames of 33 bytes: before the budget,
/// 100 MiB of replies were queued).
///
/// Bound: one manifest in a peer's send queue at a time (the next is sent once the queue
/// drained, which a peer that does not read never lets happen), and requests of at most
/// [`MANIFEST_BUDGET_BYTES`] (8 MiB: three of these manifests, a fourth would pass it) in
/// a [`MANIFEST_WINDOW_MS`]; the fourth request drops the attacker (`too many manifest
/// requests`). The heap grows by at most one manifest + 512 KiB (the queued reply, which
/// the attacker does not read, and its frame headers); the queue is freed with the
/// connection.
#[test]
fn manifest_requests_cost_at_most_the_manifest_budget() {
    let _serial = serial();
    let mut victim = Victim::new("hostile-memory-manifests");
    let (id, manifest) = big_manifest(65_536);
    let manifest_len = manifest.encode().len();
    let now = victim.now;
    victim.node.share(id, manifest, now);
    victim.drain();
    let (queued_before, sent_before) = (victim.queued, victim.sent);
    let meter = Meter::start();
    let bound = manifest_len + 512 * KIB;
    let mut peak_queued = 0;
    for _ in 0..50 {
        victim.frame(&PeerMsg::ManifestRequest { id }.encode());
        peak_queued = peak_queued.max(victim.queued);
    }
    let (peak, after) = (meter.peak(), meter.live());
    let replies = victim.sent - sent_before;
    println!(
        "manifest requests: {} frames, {} bytes in; manifest {}; replies {} ({} queued at \
         most); peak growth {}, after the drop {}; bound {}",
        victim.frames_in,
        victim.bytes_in,
        kib(manifest_len as i64),
        kib(replies as i64),
        kib(peak_queued as i64),
        kib(peak as i64),
        kib(after),
        kib(bound as i64),
    );
    victim.assert_dropped(reason::MANIFEST_REQUESTS);
    // The budget was reached (three requests taken, the fourth dropped the attacker), but
    // only one manifest was sent: the attacker never read it.
    assert_eq!(MANIFEST_BUDGET_BYTES as usize / manifest_len, 3);
    assert!(replies >= manifest_len, "{replies}");
    assert!(replies < 2 * manifest_len, "{replies}");
    assert!(peak_queued - queued_before <= bound, "{peak_queued}");
    assert!(peak >= manifest_len, "the reply was held: {peak}");
    assert!(peak <= bound, "peak growth {peak}");
    assert!(
        after <= 64 * KIB as i64,
        "released with the connection: {after}"
    );
}

/// A requester that keeps within the budget (three 2 MiB manifests, then waits for the
/// next window) and does not read its channel: before manifests waited for the send queue
/// to drain, its replies piled up in the victim's send queue, 8 MiB more every
/// [`MANIFEST_WINDOW_MS`], for as long as it liked.
///
/// Bound: one manifest queued for it, however many windows pass; its requests wait (one
/// entry per content, 32 bytes) and are answered once it reads. Once it reads (the shell
/// reports the queue drained), the waiting manifest goes out.
#[test]
fn a_patient_manifest_requester_that_does_not_read_gets_one_manifest() {
    let _serial = serial();
    let mut victim = Victim::new("hostile-memory-patient");
    let (id, manifest) = big_manifest(65_536);
    let manifest_len = manifest.encode().len();
    let now = victim.now;
    victim.node.share(id, manifest, now);
    victim.drain();
    let meter = Meter::start();
    const WINDOWS: usize = 4;
    let served = MANIFEST_BUDGET_BYTES as usize / manifest_len;
    let sent_before = victim.sent;
    for _ in 0..WINDOWS {
        for _ in 0..served {
            victim.frame(&PeerMsg::ManifestRequest { id }.encode());
        }
        victim.wait(MANIFEST_WINDOW_MS);
    }
    let peak = meter.peak();
    println!(
        "patient manifest requests: {} frames, {} bytes in over {} s; {} queued for the \
         attacker, peak growth {}; dropped: {:?}",
        victim.frames_in,
        victim.bytes_in,
        WINDOWS as u64 * MANIFEST_WINDOW_MS / 1000,
        kib(victim.queued as i64),
        kib(peak as i64),
        victim.node.dropped(),
    );
    assert!(victim.node.dropped().is_empty(), "within the budget: kept");
    assert!(victim.node.is_open(victim.attacker));
    let replies = victim.sent - sent_before;
    assert!(replies >= manifest_len, "one manifest went out: {replies}");
    assert!(replies < 2 * manifest_len, "and only one: {replies}");
    assert!(
        victim.queued <= manifest_len + 512 * KIB,
        "{}",
        victim.queued
    );
    assert!(peak <= manifest_len + 512 * KIB, "peak growth {peak}");
    // It reads at last: the waiting request is answered.
    victim.read_all();
    assert!(
        victim.sent - sent_before >= 2 * manifest_len,
        "the next manifest after the drain"
    );
}

/// Requests whose replies are as small as they are (`manifest-request` for contents we do
/// not hold: a `not-found` each), from a peer that never reads: 1:1, but without an end.
///
/// Bound: the bytes sent and not read since the peer's queue last emptied
/// ([`MAX_UNREAD_BYTES`] by default, 64 KiB here so the test is quick); past it the peer is
/// dropped at the next upkeep (`does not read what it asks for`) and its queue freed.
#[test]
fn a_peer_that_asks_and_never_reads_is_dropped_at_the_unread_bound() {
    let _serial = serial();
    const BOUND: u64 = 64 * 1024;
    let mut victim = Victim::with_unread_bound("hostile-memory-unread", BOUND);
    let meter = Meter::start();
    let mut n = 0u32;
    while !victim.disconnected && n < 100_000 {
        victim.frame(&PeerMsg::ManifestRequest { id: fake(0x77, n) }.encode());
        n += 1;
        if n.is_multiple_of(256) {
            victim.wait(swarm_core::node::UPKEEP_MS);
        }
    }
    println!(
        "unread: {} requests ({} bytes) until dropped; {} sent; peak growth {}",
        n,
        victim.bytes_in,
        victim.sent,
        kib(meter.peak() as i64),
    );
    victim.assert_dropped(reason::NOT_READING);
    assert!(
        victim.sent as u64 > BOUND,
        "the bound was reached: {}",
        victim.sent
    );
    // Dropped within one upkeep's worth of requests past the bound.
    assert!(victim.sent as u64 <= BOUND + 256 * 40, "{}", victim.sent);
    assert!(meter.live() <= 64 * KIB as i64, "freed: {}", meter.live());
    // The default leaves an honest peer room for one largest manifest and two largest pieces.
    const { assert!(MAX_UNREAD_BYTES > (32 << 20) + 2 * (16 << 20)) };
}

/// The same requests from a peer that reads what it gets: it is never dropped, however
/// much it asks in all (the count starts again each time its queue empties).
#[test]
fn a_peer_that_reads_is_never_dropped_for_unread_bytes() {
    let _serial = serial();
    const BOUND: u64 = 64 * 1024;
    let mut victim = Victim::with_unread_bound("hostile-memory-reads", BOUND);
    for n in 0..8_192u32 {
        victim.frame(&PeerMsg::ManifestRequest { id: fake(0x78, n) }.encode());
        if n % 256 == 255 {
            victim.read_all();
            victim.wait(swarm_core::node::UPKEEP_MS);
        }
    }
    assert!(victim.sent as u64 > 4 * BOUND, "{}", victim.sent);
    assert!(
        victim.node.dropped().is_empty(),
        "{:?}",
        victim.node.dropped()
    );
    assert!(victim.node.is_open(victim.attacker));
}

/// A manifest of `pieces` pieces of the smallest size (made up: nobody downloads it).
fn big_manifest(pieces: u32) -> (ContentId, Manifest) {
    let piece_hashes: Vec<[u8; 32]> = (0..pieces)
        .map(|n| {
            let mut hash = [0x5a; 32];
            hash[..4].copy_from_slice(&n.to_be_bytes());
            hash
        })
        .collect();
    let manifest = Manifest {
        name: "big.bin".into(),
        size: u64::from(pieces) * u64::from(MIN_PIECE_SIZE),
        mime: "application/octet-stream".into(),
        piece_size: MIN_PIECE_SIZE,
        piece_hashes,
    };
    (manifest_id(&manifest), manifest)
}

/// A signed `provide` record of `id` by the fresh key numbered `n`, with the longest labels:
/// the relay frame with no hops left, as it is kept and routed.
fn provide_record(room: &RoomName, n: u32, id: ContentId, label: &str) -> Vec<u8> {
    let mut seed = [0x3c; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    let mut relay = SignalRelay::new(room.clone(), Identity::from_seed(seed), 1);
    let gossip = Gossip::provide(id, 1 << 30, label, label);
    let (_, record) = relay.broadcast(&gossip.to_json(), &[]).expect("signs");
    record
}

/// `provide` records of fresh keys, routed to the victim as `add-provider` requests that
/// stall there (the attacker is its only neighbour), so the victim keeps every one it
/// takes: records of about 2.3 KiB (labels of [`MAX_LABEL_LEN`]), more of them than fit,
/// first in one burst (the relay budget, [`RELAY_BURST`]), then at the rate the budget lets
/// through.
///
/// Bound: [`MAX_KEPT_BYTES`] (4 MiB) of records, at most [`MAX_KEPT`]; with the store's
/// bookkeeping, the heap grows by at most 4 MiB + [`MAX_KEPT`] × 512 B = 6 MiB. No bound of
/// the attacker is broken (a full store just takes nothing more), so it is not dropped. The
/// records are others' (fresh keys), so they stay after the attacker leaves, and go when
/// they expire ([`RECORD_TTL_MS`]).
#[test]
fn provider_records_in_the_structured_layer_cost_at_most_the_store_bound() {
    let _serial = serial();
    let room_name = "hostile-memory-dht";
    let room = RoomName::new(room_name).expect("room");
    let mut victim = Victim::new(room_name);
    let label = "p".repeat(MAX_LABEL_LEN);
    let record_len = provide_record(&room, 0, fake(0xd0, 0), &label).len();
    assert!(record_len <= MAX_RECORD_LEN, "{record_len}");
    let bound = MAX_KEPT_BYTES + MAX_KEPT * 512;
    let meter = Meter::start();
    let total = RELAY_BURST as u32 + 500;
    for n in 0..total {
        let id = fake(0xd0, n);
        let frame = RouteOut {
            kind: RouteKind::AddProvider,
            id,
            ttl: 0,
            path: vec![victim.attacker],
            records: vec![provide_record(&room, n, id, &label)],
        }
        .encode()
        .expect("encodes");
        victim.frame(&frame);
        if n >= RELAY_BURST as u32 {
            victim.wait(1000 / 64 + 1);
        }
    }
    let (peak, after) = (meter.peak(), meter.live());
    // The first record is kept: a request for it is answered with it.
    let sent = victim.sent;
    let find = RouteOut {
        kind: RouteKind::FindProviders,
        id: fake(0xd0, 0),
        ttl: 4,
        path: vec![victim.attacker],
        records: Vec::new(),
    };
    victim.frame(&find.encode().expect("encodes"));
    let answered = victim.sent - sent;
    println!(
        "dht records: {} frames, {} in, records of {} B; peak growth {}, after {}; bound {}; \
         answer to a find {} B",
        victim.frames_in,
        kib(victim.bytes_in as i64),
        record_len,
        kib(peak as i64),
        kib(after),
        kib(bound as i64),
        answered,
    );
    assert!(answered >= record_len, "the record was kept and is served");
    assert!(
        victim.node.dropped().is_empty(),
        "no bound of the attacker broken"
    );
    assert!(victim.node.is_open(victim.attacker));
    assert!(
        peak >= MAX_KEPT_BYTES * 9 / 10,
        "the store was filled to its byte bound: {peak}"
    );
    assert!(peak <= bound, "peak growth {peak}");

    // The attacker leaves: others' records stay until they expire.
    let now = victim.now;
    victim
        .node
        .handle(Input::ChannelClosed(victim.attacker), now);
    victim.drain();
    let left = meter.live();
    victim.wait(RECORD_TTL_MS + 1_000);
    let expired = meter.live();
    println!(
        "dht records: after the attacker left {}, after the records expired {}",
        kib(left),
        kib(expired)
    );
    assert!(left >= (MAX_KEPT_BYTES * 9 / 10) as i64, "kept: {left}");
    assert!(
        expired <= 256 * KIB as i64,
        "expired records are freed: {expired}"
    );
}

/// `provide` gossip flooded by the attacker on behalf of fresh keys, with the longest
/// labels: each is signed by its own key, so each verifies, is new to the replay memory and
/// names a new member heard of. Before only listed members' records went in the directory,
/// 1,024 of them filled it for ever (their providers never leave, having never been in the
/// room) and a genuine provider's record was refused after the flood.
///
/// Bound: none of them in the directory (the server never listed their providers); at most
/// [`MAX_UNLISTED`] wait there, each the signed frame (about 2.3 KiB) and the labels (2 KiB)
/// with bookkeeping; [`MAX_HEARD`] members heard of; the relay's replay memory (names and
/// floors, 128 B each): the heap grows by at most 64 × 5.5 KiB + 2 MiB. The relay budget
/// ([`RELAY_BURST`], then 64 a second) takes the rest quietly: the attacker is not dropped.
/// A genuine provider is listed as soon as the server names it, before or after its gossip.
#[test]
fn provide_gossip_from_fresh_keys_never_reaches_the_directory() {
    let _serial = serial();
    let room_name = "hostile-memory-gossip";
    let room = RoomName::new(room_name).expect("room");
    let mut victim = Victim::new(room_name);
    let label = "g".repeat(MAX_LABEL_LEN);
    let bound = MAX_UNLISTED * (5 * KIB + 512) + 2 * MIB;
    let meter = Meter::start();
    let total = RELAY_BURST as u32 + 200;
    for n in 0..total {
        let mut seed = [0x6e; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let mut relay = SignalRelay::new(room.clone(), Identity::from_seed(seed), 1);
        let gossip = Gossip::provide(fake(0x90, n), 1 << 30, &label, &label);
        let (frames, _) = relay
            .broadcast(&gossip.to_json(), &[victim.node.me().expect("welcomed")])
            .expect("signs");
        for (_, frame) in frames {
            victim.frame(&frame);
        }
        if n >= RELAY_BURST as u32 {
            victim.wait(1000 / 64 + 1);
        }
    }
    let (peak, after) = (meter.peak(), meter.live());
    let files = victim.node.files().len();
    let members = victim.node.members().len();
    println!(
        "gossip: {} frames, {} in; {} files listed, {} members; peak growth {}, after {}; \
         bound {}",
        victim.frames_in,
        kib(victim.bytes_in as i64),
        files,
        members,
        kib(peak as i64),
        kib(after),
        kib(bound as i64),
    );
    assert_eq!(files, 0, "no record of an unlisted provider is listed");
    assert_eq!(victim.files_found, 0);
    assert!(members <= MAX_HEARD + 1, "members heard of: {members}");
    assert!(
        victim.node.dropped().is_empty(),
        "no bound of the attacker broken"
    );
    assert!(
        peak >= MAX_UNLISTED * 4 * KIB,
        "the waiting records were kept: {peak}"
    );
    assert!(peak <= bound, "peak growth {peak}");

    // A genuine provider's gossip, before the server lists it: it waits, and is listed once
    // the server's `joined` names it.
    let honest = Identity::from_seed([0x0e; 32]);
    let honest_id = honest.id();
    let mut relay = SignalRelay::new(room.clone(), honest, 1);
    let genuine = fake(0x0e, 0);
    let gossip = Gossip::provide(genuine, 1 << 20, "real.bin", "");
    let (frames, _) = relay
        .broadcast(&gossip.to_json(), &[victim.node.me().expect("welcomed")])
        .expect("signs");
    victim.wait(60_000); // the relay budget refills
    for (_, frame) in frames {
        assert!(matches!(decode_binary(&frame), Ok(BinaryFrame::Relay(_))));
        victim.frame(&frame);
    }
    assert!(victim.node.file(genuine).is_none(), "not listed yet");
    let joined = ServerMsg::Joined { id: honest_id }.to_json();
    let now = victim.now;
    victim.node.handle(Input::ServerFrame(&joined), now);
    victim.drain();
    assert!(
        victim.node.file(genuine).is_some(),
        "listed once the server names its provider"
    );

    // The attacker leaves: what it brought stays bounded (the waiting queue), the genuine
    // record stays.
    let now = victim.now;
    victim
        .node
        .handle(Input::ChannelClosed(victim.attacker), now);
    victim.drain();
    victim.wait(RECORD_TTL_MS + 1_000);
    let kept = meter.live();
    println!(
        "gossip: after the attacker left and {} min: {} files listed, {} held",
        (RECORD_TTL_MS + 1_000) / 60_000,
        victim.node.files().len(),
        kib(kept),
    );
    assert_eq!(victim.node.files().len(), 1);
    assert!(kept <= bound as i64, "{kept}");
}
