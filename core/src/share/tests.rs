//! Whole swarms of [`Share`] engines, wired together in memory: frames go through the real
//! wire encoding, pieces through in-memory storage.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use swarm_protocol::content::{MAX_PIECES, MIN_PIECE_SIZE};
use swarm_protocol::wire::{BinaryFrame, decode_binary, is_piece_chunk};
use swarm_protocol::{ContentId, PeerMsg};

use super::*;
use crate::merkle::manifest_of;

const PS: u32 = MIN_PIECE_SIZE;

struct Node {
    share: Share<u8>,
    storage: BTreeMap<ContentId, Vec<u8>>,
    events: Vec<ShareEvent<u8>>,
    /// Piece-data bytes received, by sender.
    received_from: BTreeMap<u8, u64>,
    /// Peers reported stalled ([`Output::Stalled`]), with the time.
    stalled: Vec<(u8, u64)>,
    /// Peers reported abusive ([`Output::Abusive`]), with the reason (they are disconnected).
    abusive: Vec<(u8, &'static str)>,
}

struct Net {
    nodes: BTreeMap<u8, Node>,
    links: BTreeSet<(u8, u8)>,
    /// Directions (from, to) whose frames are lost: a wedged transport.
    wedged: BTreeSet<(u8, u8)>,
    queue: VecDeque<(u8, u8, Vec<u8>)>,
    now: u64,
    /// Frames delivered, by (from, to, tag).
    delivered: BTreeMap<(u8, u8, u8), usize>,
    /// Every frame of piece data is delivered twice.
    duplicate_chunks: bool,
}

fn data(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 9) as u8)
        .collect()
}

impl Net {
    fn new(ids: &[u8]) -> Self {
        Self::with_checks(ids, false)
    }

    /// With `owner_checks`, the nodes hash pieces as their owner ([`PieceCheck`]).
    fn with_checks(ids: &[u8], owner_checks: bool) -> Self {
        let config = ShareConfig {
            owner_checks_pieces: owner_checks,
            ..ShareConfig::default()
        };
        let nodes = ids
            .iter()
            .map(|id| {
                let node = Node {
                    share: Share::new(config, u64::from(*id) + 1),
                    storage: BTreeMap::new(),
                    events: Vec::new(),
                    received_from: BTreeMap::new(),
                    stalled: Vec::new(),
                    abusive: Vec::new(),
                };
                (*id, node)
            })
            .collect();
        Self {
            nodes,
            links: BTreeSet::new(),
            wedged: BTreeSet::new(),
            queue: VecDeque::new(),
            now: 0,
            delivered: BTreeMap::new(),
            duplicate_chunks: false,
        }
    }

    fn connect(&mut self, a: u8, b: u8) {
        self.links.insert((a.min(b), a.max(b)));
        let out = self.node(a).share.add_peer(b);
        self.apply(a, out);
        let out = self.node(b).share.add_peer(a);
        self.apply(b, out);
    }

    fn disconnect(&mut self, a: u8, b: u8) {
        self.links.remove(&(a.min(b), a.max(b)));
        self.queue
            .retain(|(from, to, _)| !((*from == a && *to == b) || (*from == b && *to == a)));
        let now = self.now;
        let out = self.node(a).share.remove_peer(b, now);
        self.apply(a, out);
        let out = self.node(b).share.remove_peer(a, now);
        self.apply(b, out);
    }

    /// Takes `id` out of the swarm.
    fn leave(&mut self, id: u8) {
        let peers: Vec<u8> = self
            .links
            .iter()
            .filter_map(|(a, b)| {
                if *a == id {
                    Some(*b)
                } else if *b == id {
                    Some(*a)
                } else {
                    None
                }
            })
            .collect();
        for peer in peers {
            self.disconnect(id, peer);
        }
    }

    fn node(&mut self, id: u8) -> &mut Node {
        self.nodes.get_mut(&id).expect("node")
    }

    fn share_file(&mut self, id: u8, bytes: &[u8]) -> ContentId {
        self.share_file_in(id, bytes, PS)
    }

    /// Shares `bytes` in pieces of `piece_size`.
    fn share_file_in(&mut self, id: u8, bytes: &[u8], piece_size: u32) -> ContentId {
        let (content, manifest) =
            manifest_of("file.bin", "application/octet-stream", piece_size, bytes);
        let node = self.node(id);
        node.storage.insert(content, bytes.to_vec());
        let out = node.share.share(content, manifest);
        self.apply(id, out);
        content
    }

    fn download(&mut self, id: u8, content: ContentId) {
        let now = self.now;
        let out = self
            .node(id)
            .share
            .download(content, now)
            .expect("download starts");
        self.apply(id, out);
    }

    fn apply(&mut self, at: u8, outputs: Vec<Output<u8>>) {
        let mut pending: VecDeque<Output<u8>> = outputs.into();
        while let Some(output) = pending.pop_front() {
            let now = self.now;
            match output {
                Output::Stalled(peer) => self.node(at).stalled.push((peer, now)),
                Output::Send { to, frame } => {
                    if self.links.contains(&(at.min(to), at.max(to)))
                        && !self.wedged.contains(&(at, to))
                    {
                        if self.duplicate_chunks && matches!(frame[0], 0x07 | 0x0e) {
                            self.queue.push_back((at, to, frame.clone()));
                        }
                        self.queue.push_back((at, to, frame));
                    }
                }
                Output::ReadPiece(ReadPiece {
                    to,
                    id,
                    piece,
                    offset,
                    len,
                }) => {
                    let node = self.node(at);
                    let bytes = node.storage[&id][offset as usize..][..len as usize].to_vec();
                    pending.extend(node.share.piece_read(to, id, piece, &bytes));
                    // The frames go straight into the network queue: drained at once.
                    pending.extend(node.share.upload_drained(to));
                }
                Output::Withdraw { to, id, piece } => {
                    self.queue.retain(|(from, dest, frame)| {
                        !(*from == at && *dest == to && is_piece_chunk(frame, id, piece))
                    });
                }
                Output::WritePiece(WritePiece {
                    id,
                    piece,
                    offset,
                    data,
                    check,
                }) => {
                    let node = self.node(at);
                    let matched =
                        check.is_none_or(|c| crate::merkle::piece_hash(&data) == c.expected);
                    if matched {
                        let buf = node.storage.get_mut(&id).expect("storage prepared");
                        buf[offset as usize..][..data.len()].copy_from_slice(&data);
                    }
                    pending.extend(match check {
                        Some(c) => node.share.piece_checked(id, piece, c.from, matched, now),
                        None => node.share.piece_stored(id, piece, now),
                    });
                }
                Output::Abusive { peer, reason } => {
                    self.node(at).abusive.push((peer, reason));
                    self.disconnect(at, peer);
                }
                Output::Event(event) => {
                    let node = self.node(at);
                    if let ShareEvent::ManifestReady { id, manifest } = &event {
                        // A resumed download keeps what it stored.
                        node.storage
                            .entry(*id)
                            .or_insert_with(|| vec![0; manifest.size as usize]);
                    }
                    node.events.push(event);
                }
            }
        }
    }

    /// Delivers up to `limit` frames; ticks every 50.
    fn run(&mut self, limit: usize) {
        for n in 0..limit {
            if n % 50 == 0 {
                self.tick();
            }
            let Some((from, to, frame)) = self.queue.pop_front() else {
                self.now += 1000;
                self.tick();
                if self.queue.is_empty() {
                    return;
                }
                continue;
            };
            self.now += 1;
            let now = self.now;
            *self.delivered.entry((from, to, frame[0])).or_default() += 1;
            let Ok(BinaryFrame::Peer(msg)) = decode_binary(&frame) else {
                panic!("undecodable frame");
            };
            let node = self.node(to);
            let piece_bytes = match msg {
                PeerMsg::Piece { data, .. } => data.len(),
                PeerMsg::Chunks { segments, .. } => segments.iter().map(|s| s.data.len()).sum(),
                _ => 0,
            };
            if piece_bytes > 0 {
                *node.received_from.entry(from).or_default() += piece_bytes as u64;
            }
            let out = node.share.on_message(from, msg, now);
            self.apply(to, out);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let ids: Vec<u8> = self.nodes.keys().copied().collect();
        for id in ids {
            let out = self.node(id).share.tick(now);
            self.apply(id, out);
        }
    }

    fn completed(&self, id: u8, content: ContentId) -> bool {
        self.nodes[&id]
            .events
            .contains(&ShareEvent::Completed { id: content })
    }

    fn bad_peers(&self, id: u8) -> Vec<u8> {
        self.nodes[&id]
            .events
            .iter()
            .filter_map(|e| match e {
                ShareEvent::BadPeer { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_file_travels_from_a_seeder_to_a_downloader_byte_identical() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let bytes = data(300_000, 7);
    let id = net.share_file(1, &bytes);
    let offered = &net.nodes[&2].events;
    assert!(offered.is_empty(), "frames not delivered yet");
    net.run(10);
    let files = net.nodes[&2].share.files();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (
            files[0].id,
            files[0].size,
            files[0].sources,
            files[0].complete
        ),
        (id, 300_000, 1, false)
    );
    net.download(2, id);
    net.run(100_000);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], bytes);
    assert!(net.nodes[&2].share.is_complete(id));
    let last = net.nodes[&2].events.iter().rev().find_map(|e| match e {
        ShareEvent::Progress { progress, .. } => Some(progress.clone()),
        _ => None,
    });
    assert_eq!(
        last.map(|p| (p.received, p.total)),
        Some((300_000, 300_000))
    );
}

#[test]
fn a_link_that_stops_delivering_is_reported_stalled_and_a_new_one_finishes_the_file() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let bytes = data(40 * PS as usize, 3);
    let id = net.share_file(1, &bytes);
    net.run(10);
    net.download(2, id);
    net.run(60);
    assert!(net.nodes[&2].received_from.get(&1).is_some_and(|n| *n > 0));
    // The seeder's frames stop arriving; the downloader's requests time out and are asked
    // again of its only source, to no avail.
    net.wedged.insert((1, 2));
    let wedged_at = net.now;
    while net.nodes[&2].stalled.is_empty() && net.now < wedged_at + 120_000 {
        net.run(1_000);
    }
    let (peer, at) = net.nodes[&2].stalled[0];
    assert_eq!(peer, 1);
    assert!(at >= wedged_at + STALLED_LINK_MS, "{at} after {wedged_at}");
    assert!(
        at <= wedged_at + STALLED_LINK_MS + 2_000,
        "{at} after {wedged_at}"
    );
    assert!(!net.completed(2, id));
    // What the shells do: the connection is closed and made again.
    net.wedged.clear();
    net.disconnect(1, 2);
    net.connect(1, 2);
    net.run(100_000);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], bytes);
    assert_eq!(net.nodes[&2].stalled.len(), 1, "reported once");
}

#[test]
fn with_two_seeders_pieces_come_from_both() {
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 3);
    net.connect(2, 3);
    let bytes = data(1_000_000, 3);
    let id = net.share_file(1, &bytes);
    net.share_file(2, &bytes);
    net.run(20);
    assert_eq!(net.nodes[&3].share.file(id).map(|f| f.sources), Some(2));
    net.download(3, id);
    net.run(200_000);
    assert!(net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
    let from = &net.nodes[&3].received_from;
    assert!(from[&1] > 200_000 && from[&2] > 200_000, "{from:?}");
    // The final progress event counts what arrived for live requests (no late duplicates).
    let last = net.nodes[&3].events.iter().rev().find_map(|e| match e {
        ShareEvent::Progress { progress, .. } => Some(progress.from.clone()),
        _ => None,
    });
    let last = last.expect("a progress event");
    assert_eq!(last.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![1, 2]);
    for (peer, bytes) in last {
        assert!(bytes > 200_000 && bytes <= from[&peer], "{peer}: {bytes}");
    }
}

#[test]
fn a_seeder_leaving_mid_download_does_not_stop_it() {
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 3);
    net.connect(2, 3);
    let bytes = data(4_000_000, 9);
    let id = net.share_file(1, &bytes);
    net.share_file(2, &bytes);
    net.run(20);
    net.download(3, id);
    net.run(60);
    assert!(!net.completed(3, id));
    net.leave(1);
    net.run(200_000);
    assert!(net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
}

#[test]
fn a_corrupting_peer_is_detected_and_the_file_still_arrives_intact() {
    // Hashed by the engine, and by its owner (`PieceCheck`, as the browser does).
    for owner_checks in [false, true] {
        let mut net = Net::with_checks(&[1, 2, 3], owner_checks);
        net.connect(1, 3);
        net.connect(2, 3);
        let bytes = data(600_000, 1);
        let id = net.share_file(1, &bytes);
        net.share_file(2, &bytes);
        net.node(2).share.set_corrupt_uploads(true);
        net.run(20);
        net.download(3, id);
        net.run(200_000);
        assert!(net.completed(3, id));
        assert_eq!(net.nodes[&3].storage[&id], bytes);
        assert_eq!(net.bad_peers(3), vec![2]);
    }
}

#[test]
fn a_piece_checked_by_its_owner_counts_only_once_it_matched() {
    let mut net = Net::with_checks(&[1, 2], true);
    net.connect(1, 2);
    let bytes = data(3 * PS as usize, 9);
    let id = net.share_file(1, &bytes);
    net.run(20);
    net.download(2, id);
    // Deliver frames until the first piece is complete and handed over to be checked.
    let mut checked = None;
    while checked.is_none() {
        let (from, to, frame) = net.queue.pop_front().expect("frames flow");
        let Ok(BinaryFrame::Peer(msg)) = decode_binary(&frame) else {
            panic!("undecodable frame");
        };
        let out = net.node(to).share.on_message(from, msg, 1);
        for output in out {
            match output {
                Output::WritePiece(WritePiece {
                    piece,
                    data,
                    check: Some(check),
                    ..
                }) => {
                    assert_eq!(check.from, 1);
                    assert_eq!(crate::merkle::piece_hash(&data), check.expected);
                    checked = Some(piece);
                }
                other => net.apply(to, vec![other]),
            }
        }
    }
    let piece = checked.expect("a piece");
    // Not stored yet: nothing announced, no progress counted.
    let progress = net.node(2).share.progress(id, 1).expect("downloading");
    assert_eq!(progress.received, 0);
    // It did not match after all: the sender is dropped and the piece is missing again.
    let out = net.node(2).share.piece_checked(id, piece, 1, false, 2);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(ShareEvent::BadPeer { peer: 1, .. })))
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Event(ShareEvent::Completed { .. })))
    );
    let progress = net
        .node(2)
        .share
        .progress(id, 2)
        .expect("still downloading");
    assert_eq!(progress.received, 0);
}

#[test]
fn a_downloader_serves_others_after_the_seeder_is_gone() {
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 2);
    let bytes = data(500_000, 5);
    let id = net.share_file(1, &bytes);
    net.run(20);
    net.download(2, id);
    net.run(100_000);
    assert!(net.completed(2, id));
    net.leave(1);
    net.connect(2, 3);
    net.run(20);
    assert_eq!(net.nodes[&3].share.file(id).map(|f| f.sources), Some(1));
    net.download(3, id);
    net.run(100_000);
    assert!(net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
}

#[test]
fn a_chunk_that_arrives_twice_is_counted_once() {
    // Stale chunks of an earlier request for the same piece can arrive after it was asked
    // again; counted twice, they made a piece look complete with bytes missing, and the
    // honest seeder was dropped for a failed hash.
    let mut net = Net::new(&[1, 2]);
    net.duplicate_chunks = true;
    net.connect(1, 2);
    // Pieces larger than a frame, so most frames hold part of a piece.
    let bytes = data(6 * BIG_PS as usize + 100, 9);
    let id = net.share_file_in(1, &bytes, BIG_PS);
    net.run(20);
    net.download(2, id);
    net.run(100_000);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], bytes);
    assert!(net.bad_peers(2).is_empty());
}

#[test]
fn a_peer_that_holds_everything_gets_one_bitfield_per_tick_instead_of_haves() {
    const HAVE: u8 = 0x04;
    const BITFIELD: u8 = 0x03;
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 2);
    net.connect(2, 3);
    let bytes = data(40 * PS as usize, 5);
    let id = net.share_file(1, &bytes);
    net.run(20);
    net.download(2, id);
    net.run(100_000);
    assert!(net.completed(2, id));
    // The seeder was told of the downloader's 40 pieces in a few bitfields, not 40 haves,
    // and knows it holds them all; peer 3, which holds nothing, got a have for each.
    assert_eq!(net.delivered.get(&(2, 1, HAVE)), None);
    let bitfields = net.delivered[&(2, 1, BITFIELD)];
    assert!((2..40).contains(&bitfields), "{bitfields} bitfields");
    let seen = net.nodes[&1].share.source_pieces(id);
    assert_eq!(seen.len(), 1);
    assert!(seen[0].1.is_complete());
    assert_eq!(net.delivered[&(2, 3, HAVE)], 40);
}

#[test]
fn holding_everything_is_read_from_packed_bits() {
    assert!(holds_all(&[], 0));
    assert!(holds_all(&[0xff], 8));
    assert!(!holds_all(&[0xff], 9));
    assert!(holds_all(&[0xff, 0x80], 9));
    assert!(!holds_all(&[0xff, 0x40], 9));
    assert!(holds_all(&[0xff, 0xfe], 15));
    assert!(!holds_all(&[0xff, 0xfc], 15));
    assert!(!holds_all(&[0x7f], 3));
}

#[test]
fn a_partial_downloader_already_serves_the_pieces_it_has() {
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 2);
    net.connect(2, 3);
    let bytes = data(8_000_000, 2);
    let id = net.share_file(1, &bytes);
    net.run(20);
    net.download(2, id);
    net.run(200);
    assert!(!net.completed(2, id));
    // 3 sees only 2, which offers the content before finishing it.
    assert_eq!(net.nodes[&3].share.file(id).map(|f| f.sources), Some(1));
    net.download(3, id);
    net.run(400_000);
    assert!(net.completed(2, id) && net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
}

#[test]
fn a_wrong_manifest_is_refused_and_fetched_elsewhere() {
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 3);
    net.connect(2, 3);
    let bytes = data(100_000, 4);
    let id = net.share_file(2, &bytes);
    // Peer 1 (asked first: sources are tried in id order) claims the same id but serves the
    // manifest of other bytes.
    let (_, other) = manifest_of("evil.bin", "", PS, &data(100_000, 99));
    net.node(1).storage.insert(id, data(100_000, 99));
    let out = net.node(1).share.share(id, other);
    net.apply(1, out);
    net.run(20);
    net.download(3, id);
    net.run(200_000);
    assert!(net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
    assert_eq!(net.bad_peers(3), vec![1]);
}

#[test]
fn a_priority_window_is_fetched_first() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let bytes = data(256 * PS as usize, 6);
    let id = net.share_file(1, &bytes);
    net.run(20);
    net.download(2, id);
    // A player asks for bytes near the end before the manifest is even in.
    let at = 240 * u64::from(PS);
    let out = net
        .node(2)
        .share
        .set_priority(id, Some(at..at + 2 * u64::from(PS)), 0);
    net.apply(2, out);
    net.run(300);
    let share = &net.nodes[&2].share;
    let stored = share.stored(id).expect("manifest in");
    assert!(
        (240..248).all(|i| stored.get(i)),
        "the window and its read-ahead arrived first"
    );
    assert!(share.has_bytes(id, at, 2 * u64::from(PS)));
    // From the window on, a gapless run of at least the window is there (capped at `max`).
    assert!(share.stored_run(id, at, 100 * u64::from(PS)) >= 8 * u64::from(PS));
    assert_eq!(share.stored_run(id, at + 5, 10), 10);
    assert!(!stored.is_complete(), "the rest is still coming");
    assert!(!share.has_bytes(id, 0, 256 * u64::from(PS)));
    net.run(100_000);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], bytes);
}

#[test]
fn a_new_priority_cancels_requests_that_have_not_started() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let id = net.share_file(1, &data(256 * PS as usize, 6));
    net.run(20);
    net.download(2, id);
    // Deliver until the downloader has its first requests out.
    while net.nodes[&2]
        .share
        .downloads
        .get(&id)
        .is_none_or(|d| d.phase_requests().is_empty())
    {
        net.run(1);
    }
    let before = net.nodes[&2].share.downloads[&id].phase_requests();
    assert!(!before.is_empty());
    let at = 200 * u64::from(PS);
    let out = net.node(2).share.set_priority(id, Some(at..at + 1), 0);
    let cancelled = out
        .iter()
        .filter(|o| matches!(o, Output::Send { frame, .. } if matches!(decode_binary(frame), Ok(BinaryFrame::Peer(PeerMsg::Cancel { .. })))))
        .count();
    let outside = before
        .iter()
        .filter(|(_, p)| !(200..209).contains(p))
        .count();
    assert!(outside > 0);
    assert_eq!(
        cancelled, outside,
        "every request outside the window is withdrawn"
    );
    let after = net.nodes[&2].share.downloads[&id].phase_requests();
    let in_window = |p: &u32| (200..209).contains(p);
    assert!(
        after.iter().all(|(_, p)| in_window(p))
            || (200..209).all(|p| after.iter().any(|(_, q)| *q == p)),
        "the window is asked for first: {after:?}"
    );
    assert!(
        after.iter().all(|r| in_window(&r.1) || !before.contains(r)),
        "nothing withdrawn is asked for again (a pipeline longer than the window goes on past it): {after:?}"
    );
    net.apply(2, out);
    net.run(100_000);
    assert!(net.completed(2, id));
}

#[test]
fn a_seeder_reads_only_a_couple_of_pieces_ahead_per_peer() {
    let mut share: Share<u8> = Share::new(ShareConfig::default(), 1);
    let bytes = data(20 * PS as usize, 1);
    let (id, manifest) = manifest_of("f", "", PS, &bytes);
    share.share(id, manifest);
    share.add_peer(7);
    let mut reads = 0;
    for piece in 0..6 {
        for o in share.on_message(7, PeerMsg::Request { id, piece }, 0) {
            if matches!(o, Output::ReadPiece(_)) {
                reads += 1;
            }
        }
    }
    assert_eq!(reads, UPLOAD_PIECES_AHEAD);
    // A cancelled request behind them is never read.
    share.on_message(7, PeerMsg::Cancel { id, piece: 5 }, 0);
    let mut read_pieces = Vec::new();
    for piece in 0..2 {
        share.piece_read(7, id, piece, &bytes[(piece * PS) as usize..][..PS as usize]);
    }
    for _ in 0..4 {
        for o in share.upload_drained(7) {
            if let Output::ReadPiece(ReadPiece { piece, .. }) = o {
                read_pieces.push(piece);
                share.piece_read(7, id, piece, &bytes[(piece * PS) as usize..][..PS as usize]);
            }
        }
    }
    assert_eq!(read_pieces, vec![2, 3, 4]);
}

/// A seeder of a 1 MiB file of 256 KiB pieces, peer 7 connected and said hello with
/// `version`.
fn seeder_for(version: u8) -> (Share<u8>, ContentId, Vec<u8>) {
    let mut share: Share<u8> = Share::new(ShareConfig::default(), 1);
    let bytes = data(4 * BIG_PS as usize, 1);
    let (id, manifest) = manifest_of("f", "", BIG_PS, &bytes);
    share.share(id, manifest);
    share.add_peer(7);
    share.on_message(7, PeerMsg::Hello { version }, 0);
    (share, id, bytes)
}

const BIG_PS: u32 = 256 * 1024;

/// Peer 7 asks for every piece; the seeder reads each when told and the send queue drains
/// at once. Returns the frames sent, in order.
fn serve_all(share: &mut Share<u8>, id: ContentId, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut reads = VecDeque::new();
    let mut take = |out: Vec<Output<u8>>, reads: &mut VecDeque<u32>| {
        for o in out {
            match o {
                Output::Send { frame, .. } => frames.push(frame),
                Output::ReadPiece(ReadPiece { piece, .. }) => reads.push_back(piece),
                _ => {}
            }
        }
    };
    for piece in 0..4 {
        take(
            share.on_message(7, PeerMsg::Request { id, piece }, 0),
            &mut reads,
        );
    }
    while !reads.is_empty() {
        while let Some(piece) = reads.pop_front() {
            let data = &bytes[(piece * BIG_PS) as usize..][..BIG_PS as usize];
            take(share.piece_read(7, id, piece, data), &mut reads);
        }
        take(share.upload_drained(7), &mut reads);
    }
    frames
}

/// The file put back together from piece frames (either kind).
fn reassemble(frames: &[Vec<u8>], len: usize) -> Vec<u8> {
    let mut file = vec![0u8; len];
    let mut put = |piece: u32, offset: u32, data: &[u8]| {
        let at = (piece * BIG_PS + offset) as usize;
        file[at..at + data.len()].copy_from_slice(data);
    };
    for frame in frames {
        assert!(frame.len() <= swarm_protocol::wire::MAX_FRAME_LEN);
        match decode_binary(frame) {
            Ok(BinaryFrame::Peer(PeerMsg::Piece {
                piece,
                offset,
                data,
                ..
            })) => put(piece, offset, data),
            Ok(BinaryFrame::Peer(PeerMsg::Chunks { segments, .. })) => {
                for s in segments.iter() {
                    put(s.piece, s.offset, s.data);
                }
            }
            other => panic!("not piece data: {other:?}"),
        }
    }
    file
}

#[test]
fn pieces_to_a_version_2_peer_share_frames() {
    let (mut share, id, bytes) = seeder_for(PEER_PROTOCOL_VERSION);
    let frames = serve_all(&mut share, id, &bytes);
    // 1 MiB in frames of at most 64 KiB, the end of each piece sharing a frame with the
    // start of the next: 17 frames (16 full ones cannot hold the headers too), not 20.
    assert_eq!(frames.len(), 17);
    assert!(frames[..16].iter().all(|f| f.len() == 64 * 1024));
    assert_eq!(reassemble(&frames, bytes.len()), bytes);
}

#[test]
fn pieces_to_a_version_1_peer_travel_as_piece_frames() {
    let (mut share, id, bytes) = seeder_for(1);
    let frames = serve_all(&mut share, id, &bytes);
    assert_eq!(frames.len(), 20, "five frames per 256 KiB piece");
    assert!(frames.iter().all(|f| f[0] == 0x07));
    assert_eq!(reassemble(&frames, bytes.len()), bytes);
}

#[test]
fn a_held_frame_goes_out_when_no_other_piece_will_follow() {
    let (mut share, id, bytes) = seeder_for(PEER_PROTOCOL_VERSION);
    for piece in 0..2 {
        share.on_message(7, PeerMsg::Request { id, piece }, 0);
    }
    let piece = |p: u32| &bytes[(p * BIG_PS) as usize..][..BIG_PS as usize];
    let sent = |out: &[Output<u8>]| {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { frame, .. } => Some(frame.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Piece 1 is being read: the end of piece 0 waits for it.
    let first = sent(&share.piece_read(7, id, 0, piece(0)));
    assert_eq!(first.len(), 4);
    // Piece 1 is cancelled while it is read: the end of piece 0 goes out alone.
    let flushed = sent(&share.on_message(7, PeerMsg::Cancel { id, piece: 1 }, 0));
    assert_eq!(flushed.len(), 1);
    let frames: Vec<Vec<u8>> = first.into_iter().chain(flushed).collect();
    assert_eq!(
        reassemble(&frames, bytes.len())[..BIG_PS as usize],
        *piece(0)
    );
    assert!(sent(&share.piece_read(7, id, 1, piece(1))).is_empty());
    // The last piece asked for is never held back.
    share.on_message(7, PeerMsg::Request { id, piece: 3 }, 0);
    share.upload_drained(7);
    let last = sent(&share.piece_read(7, id, 3, piece(3)));
    assert_eq!(last.len(), 5);
    let total: usize = last.iter().map(Vec::len).sum();
    assert!(total > BIG_PS as usize);
}

#[test]
fn a_cancelled_piece_waiting_to_be_sent_is_withdrawn() {
    let mut share: Share<u8> = Share::new(ShareConfig::default(), 1);
    let bytes = data(20 * PS as usize, 1);
    let (id, manifest) = manifest_of("f", "", PS, &bytes);
    share.share(id, manifest);
    share.add_peer(7);
    for piece in 0..4 {
        share.on_message(7, PeerMsg::Request { id, piece }, 0);
    }
    for piece in 0..2 {
        share.piece_read(7, id, piece, &bytes[(piece * PS) as usize..][..PS as usize]);
    }
    // Piece 1 waits in the send queue when the peer cancels it (it sought elsewhere): its
    // frames are withdrawn and the next request is read in its place.
    let out = share.on_message(7, PeerMsg::Cancel { id, piece: 1 }, 0);
    assert!(out.contains(&Output::Withdraw {
        to: 7,
        id,
        piece: 1
    }));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ReadPiece(ReadPiece { piece: 2, .. })))
    );
    // A cancel for a piece already drained withdraws nothing.
    share.upload_drained(7);
    let out = share.on_message(7, PeerMsg::Cancel { id, piece: 0 }, 0);
    assert!(!out.iter().any(|o| matches!(o, Output::Withdraw { .. })));
}

#[test]
fn an_empty_file_completes_at_once() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let id = net.share_file(1, &[]);
    net.run(20);
    net.download(2, id);
    net.run(100);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], Vec::<u8>::new());
}

#[test]
fn unknown_content_and_cancel() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let unknown = ContentId::from_bytes([5; 32]);
    assert_eq!(
        net.node(2).share.download(unknown, 0).err(),
        Some(ShareError::UnknownContent(unknown))
    );
    assert_eq!(
        net.node(2).share.cancel(unknown).err(),
        Some(ShareError::NotDownloading(unknown))
    );
    let id = net.share_file(1, &data(3_000_000, 8));
    net.run(20);
    net.download(2, id);
    net.run(200);
    let out = net.node(2).share.cancel(id).expect("cancel");
    assert!(out.contains(&Output::Event(ShareEvent::Failed {
        id,
        reason: FailReason::Cancelled
    })));
    assert!(out.iter().any(|o| matches!(o, Output::Send { to: 1, frame } if matches!(decode_binary(frame), Ok(BinaryFrame::Peer(PeerMsg::Cancel { .. }))))));
    net.apply(2, out);
    net.run(100_000);
    assert!(!net.completed(2, id));
    // The seeder stopped hearing of 2 as a source.
    assert!(net.nodes[&1].share.file(id).is_some_and(|f| f.sources == 0));
}

#[test]
fn downloading_what_we_hold_completes_immediately() {
    let mut net = Net::new(&[1]);
    let id = net.share_file(1, &data(1000, 0));
    let out = net.node(1).share.download(id, 0).expect("ok");
    assert_eq!(out, vec![Output::Event(ShareEvent::Completed { id })]);
}

#[test]
fn requests_for_pieces_we_lack_are_rejected() {
    let mut share: Share<u8> = Share::new(ShareConfig::default(), 1);
    let id = ContentId::from_bytes([1; 32]);
    // A peer not added (its channel is not open, or it was removed) is not answered.
    assert!(
        share
            .on_message(7, PeerMsg::Request { id, piece: 0 }, 0)
            .is_empty()
    );
    share.add_peer(7);
    let out = share.on_message(7, PeerMsg::Request { id, piece: 0 }, 0);
    assert_eq!(
        out,
        vec![Output::Send {
            to: 7,
            frame: PeerMsg::Reject { id, piece: 0 }.encode()
        }]
    );
    let out = share.on_message(7, PeerMsg::ManifestRequest { id }, 0);
    assert_eq!(
        out,
        vec![Output::Send {
            to: 7,
            frame: PeerMsg::NotFound { id }.encode()
        }]
    );
}

#[test]
fn unsolicited_or_out_of_range_data_is_ignored_or_punished() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let id = net.share_file(1, &data(100_000, 1));
    net.run(20);
    // A chunk nobody asked for changes nothing.
    let out = net.node(2).share.on_message(
        1,
        PeerMsg::Piece {
            id,
            piece: 0,
            offset: 0,
            data: &[1, 2, 3],
        },
        0,
    );
    assert!(out.is_empty());
    net.download(2, id);
    net.run(10);
    // The manifest is in; a request to 1 is outstanding. A chunk past the piece end is bad.
    let piece = net.nodes[&2].share.downloads[&id]
        .phase_requests()
        .first()
        .map(|(_, p)| *p);
    if let Some(piece) = piece {
        let out = net.node(2).share.on_message(
            1,
            PeerMsg::Piece {
                id,
                piece,
                offset: PS,
                data: &[0; 10],
            },
            0,
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Event(ShareEvent::BadPeer { peer: 1, .. })))
        );
    }
}

impl<P: Ord + Copy> Download<P> {
    fn phase_requests(&self) -> Vec<(P, u32)> {
        match &self.phase {
            Phase::Pieces { selector, .. } => selector.outstanding().collect(),
            Phase::Manifest(_) => Vec::new(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Seeders come and go and some corrupt what they send; as long as one honest seeder stays,
    /// every downloader ends with exactly the original bytes.
    #[test]
    fn downloads_complete_intact_despite_churn_and_liars(
        len in 0usize..400_000,
        liars in proptest::collection::vec(any::<bool>(), 3),
        leave_after in proptest::collection::vec(0usize..2000, 3),
        owner_checks in any::<bool>(),
    ) {
        let mut net = Net::with_checks(&[0, 1, 2, 3, 10, 11], owner_checks);
        let bytes = data(len, 42);
        let id = net.share_file(0, &bytes);
        for s in 1..=3u8 {
            net.share_file(s, &bytes);
            if liars[s as usize - 1] {
                net.node(s).share.set_corrupt_uploads(true);
            }
        }
        for d in [10u8, 11] {
            for s in 0..=3u8 {
                net.connect(s, d);
            }
        }
        net.connect(10, 11);
        net.run(100);
        net.download(10, id);
        net.download(11, id);
        let mut order: Vec<(usize, u8)> = leave_after.iter().copied().zip(1..=3u8).collect();
        order.sort();
        let mut ran = 0;
        for (at, s) in order {
            net.run(at.saturating_sub(ran));
            ran = at;
            net.leave(s);
        }
        net.run(500_000);
        for d in [10u8, 11] {
            prop_assert!(net.completed(d, id), "node {} did not complete", d);
            prop_assert_eq!(&net.nodes[&d].storage[&id], &bytes);
            prop_assert!(!net.bad_peers(d).contains(&0));
        }
    }
}

#[test]
fn a_download_of_provided_content_waits_for_a_source_to_connect() {
    let mut net = Net::new(&[1, 2]);
    let bytes = data(200_000, 3);
    let id = net.share_file(1, &bytes);
    // Not connected: the plain download refuses, the provided one waits.
    assert_eq!(
        net.node(2).share.download(id, 0),
        Err(ShareError::UnknownContent(id))
    );
    let out = net
        .node(2)
        .share
        .download_provided(id, 200_000, "file.bin", "", 0);
    assert!(out.is_empty(), "nobody to ask yet: {out:?}");
    assert_eq!(net.nodes[&2].share.file(id).map(|f| f.sources), Some(0));
    net.connect(1, 2);
    net.run(100_000);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], bytes);
    // Asking again for what we hold completes at once.
    let again = net.node(2).share.download_provided(id, 200_000, "", "", 0);
    assert!(matches!(
        again[..],
        [Output::Event(ShareEvent::Completed { .. })]
    ));
}

/// Runs `net` one frame at a time until `to` has received a frame tagged `tag` from `from`.
fn run_until_delivered(net: &mut Net, from: u8, to: u8, tag: u8) {
    for _ in 0..10_000 {
        if net.delivered.contains_key(&(from, to, tag)) {
            return;
        }
        net.run(1);
    }
    panic!("no frame {tag:#04x} from {from} to {to}");
}

const TAG_REQUEST: u8 = 0x05;
const TAG_MANIFEST_REQUEST: u8 = 0x09;

#[test]
fn a_manifest_part_whose_offset_would_overflow_marks_the_peer_bad_and_the_download_goes_on() {
    // Offsets and lengths come from the peer: near u32::MAX, `offset + len` wrapped a 32-bit
    // usize (wasm32) past the bound check and the slice panicked.
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 3);
    net.connect(2, 3);
    let bytes = data(100_000, 5);
    let id = net.share_file(1, &bytes);
    assert_eq!(net.share_file(2, &bytes), id);
    net.run(50);
    net.download(3, id);
    // Peer 1 is asked first (sources are tried in id order).
    run_until_delivered(&mut net, 3, 1, TAG_MANIFEST_REQUEST);
    let now = net.now;
    for offset in [u32::MAX - 3, u32::MAX, 1 << 31] {
        let part = PeerMsg::ManifestPart {
            id,
            offset,
            total: 1000,
            data: &[0xee; 16],
        };
        let out = net.node(3).share.on_message(1, part, now);
        net.apply(3, out);
    }
    assert_eq!(net.bad_peers(3), vec![1]);
    net.run(200_000);
    assert!(net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
}

#[test]
fn a_manifest_part_sent_twice_is_counted_once() {
    // Counted twice, a repeated part made the manifest look whole with bytes missing, and
    // the honest sender was dropped for a manifest that did not verify.
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let bytes = data(100_000, 6);
    let id = net.share_file(1, &bytes);
    net.run(50);
    net.download(2, id);
    run_until_delivered(&mut net, 2, 1, TAG_MANIFEST_REQUEST);
    let now = net.now;
    let manifest = net.nodes[&1].share.manifest(id).expect("seeded").encode();
    assert!(
        manifest.len() > 2,
        "the manifest has room for a repeated first half"
    );
    let half = &manifest[..manifest.len() / 2 + 1];
    for _ in 0..2 {
        let part = PeerMsg::ManifestPart {
            id,
            offset: 0,
            total: manifest.len() as u32,
            data: half,
        };
        let out = net.node(2).share.on_message(1, part, now);
        net.apply(2, out);
    }
    assert!(net.bad_peers(2).is_empty(), "a repeat is not a lie");
    net.run(200_000);
    assert!(net.completed(2, id));
    assert_eq!(net.nodes[&2].storage[&id], bytes);
}

#[test]
fn piece_data_whose_offset_would_overflow_marks_the_peer_bad_and_the_download_goes_on() {
    let mut net = Net::new(&[1, 2, 3]);
    net.connect(1, 3);
    let bytes = data(8 * PS as usize, 7);
    let id = net.share_file(1, &bytes);
    net.run(50);
    net.download(3, id);
    // Only peer 1 has it: the first piece requests go to 1.
    run_until_delivered(&mut net, 3, 1, TAG_REQUEST);
    net.queue.clear();
    let now = net.now;
    for piece in 0..8 {
        let chunk = PeerMsg::Piece {
            id,
            piece,
            offset: u32::MAX - 2,
            data: &[0xee; 64],
        };
        let out = net.node(3).share.on_message(1, chunk, now);
        net.apply(3, out);
    }
    assert_eq!(net.bad_peers(3), vec![1]);
    // An honest seeder comes along and the download finishes from it.
    assert_eq!(net.share_file(2, &bytes), id);
    net.connect(2, 3);
    net.run(200_000);
    assert!(net.completed(3, id));
    assert_eq!(net.nodes[&3].storage[&id], bytes);
}

/// Ids of fake contents a hostile peer announces.
fn fake_id(n: u32) -> ContentId {
    let mut bytes = [0xfa; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    ContentId::from_bytes(bytes)
}

/// Peer 9 sends `msg` to node `to` (connected to it beforehand).
fn hostile(net: &mut Net, to: u8, msg: PeerMsg<'_>) {
    let now = net.now;
    let out = net.node(to).share.on_message(9, msg, now);
    net.apply(to, out);
}

#[test]
fn fake_contents_with_far_piece_bits_stop_at_the_bits_budget_and_the_peer_is_dropped() {
    // An announce and a `have` of the last possible piece per fake id made a victim keep
    // 128 KiB of bits per 41 bytes on the wire (about 1,650 times).
    let mut net = Net::new(&[1, 2, 9]);
    net.connect(1, 2);
    net.connect(1, 9);
    let bytes = data(100_000, 8);
    let id = net.share_file(2, &bytes);
    net.run(50);
    let per_content = (MAX_PIECES / 8) as usize;
    let before_drop = bounds::MAX_SOURCE_BITS_PER_PEER / per_content;
    for n in 0..(before_drop as u32 + 50) {
        let id = fake_id(n);
        let announce = PeerMsg::Announce {
            id,
            size: u64::from(MAX_PIECES) * u64::from(PS),
            name: "fake",
            mime: "",
        };
        hostile(&mut net, 1, announce);
        hostile(
            &mut net,
            1,
            PeerMsg::Have {
                id,
                piece: MAX_PIECES - 1,
            },
        );
    }
    assert_eq!(
        net.nodes[&1].abusive,
        vec![(9, bounds::reason::TOO_MANY_PIECE_BITS)],
        "reported once"
    );
    // Dropped: what it offered is forgotten, and nothing it sends is taken any more.
    assert!(net.nodes[&1].share.files().iter().all(|f| f.id == id));
    hostile(
        &mut net,
        1,
        PeerMsg::Announce {
            id: fake_id(1 << 30),
            size: 1,
            name: "x",
            mime: "",
        },
    );
    assert_eq!(net.nodes[&1].share.files().len(), 1);
    // The victim goes on working with honest peers.
    net.download(1, id);
    net.run(200_000);
    assert!(net.completed(1, id));
    assert_eq!(net.nodes[&1].storage[&id], bytes);
}

#[test]
fn more_contents_than_a_peer_may_offer_drop_it() {
    let mut net = Net::new(&[1, 9]);
    net.connect(1, 9);
    for n in 0..=bounds::MAX_OFFERS_PER_PEER as u32 {
        let announce = PeerMsg::Announce {
            id: fake_id(n),
            size: 10,
            name: "f",
            mime: "",
        };
        hostile(&mut net, 1, announce);
    }
    assert_eq!(
        net.nodes[&1].abusive,
        vec![(9, bounds::reason::TOO_MANY_OFFERS)]
    );
    assert!(net.nodes[&1].share.files().is_empty());
}

#[test]
fn a_peer_announcing_again_and_again_is_not_counted_twice() {
    // An honest peer announces again when it reconnects: the same content, one offer.
    let mut net = Net::new(&[1, 9]);
    net.connect(1, 9);
    for _ in 0..=bounds::MAX_OFFERS_PER_PEER {
        let announce = PeerMsg::Announce {
            id: fake_id(1),
            size: 10,
            name: "f",
            mime: "",
        };
        hostile(&mut net, 1, announce);
        hostile(
            &mut net,
            1,
            PeerMsg::Bitfield {
                id: fake_id(1),
                bits: &[0x80],
            },
        );
    }
    assert!(net.nodes[&1].abusive.is_empty());
    assert_eq!(net.nodes[&1].share.files().len(), 1);
}

#[test]
fn an_announcement_with_a_name_longer_than_a_manifest_allows_drops_the_peer() {
    let mut net = Net::new(&[1, 9]);
    net.connect(1, 9);
    let long = "n".repeat(swarm_protocol::content::MAX_LABEL_LEN + 1);
    hostile(
        &mut net,
        1,
        PeerMsg::Announce {
            id: fake_id(0),
            size: 10,
            name: &long,
            mime: "",
        },
    );
    assert_eq!(
        net.nodes[&1].abusive,
        vec![(9, bounds::reason::LABEL_TOO_LONG)]
    );
    assert!(net.nodes[&1].share.files().is_empty());
}

#[test]
fn manifest_requests_past_the_budget_drop_the_peer_and_the_replies_stay_bounded() {
    // 50 requests of 33 bytes made 100 MiB of replies.
    let mut net = Net::new(&[1, 2, 9]);
    net.connect(1, 2);
    net.connect(1, 9);
    // A manifest of 4096 pieces: 128 KiB encoded.
    let bytes = data(4096 * PS as usize, 9);
    let id = net.share_file(1, &bytes);
    net.run(50);
    net.queue.clear();
    let encoded = net.nodes[&1]
        .share
        .manifest(id)
        .expect("seeded")
        .encode()
        .len() as u64;
    let mut sent = 0;
    for _ in 0..200 {
        let now = net.now;
        let out = net
            .node(1)
            .share
            .on_message(9, PeerMsg::ManifestRequest { id }, now);
        sent += out
            .iter()
            .map(|o| match o {
                Output::Send { to: 9, frame } => frame.len() as u64,
                _ => 0,
            })
            .sum::<u64>();
        net.apply(1, out);
    }
    assert!(
        sent <= bounds::MANIFEST_BUDGET_BYTES + encoded + encoded / 8,
        "{sent} bytes of manifests for 200 requests"
    );
    assert_eq!(
        net.nodes[&1].abusive,
        vec![(9, bounds::reason::MANIFEST_REQUESTS)]
    );
    // Honest peers still get it.
    net.download(2, id);
    net.run(2_000_000);
    assert!(net.completed(2, id));
}

/// Node 2 starts again (a page reloaded) with the first `kept` pieces of `bytes` stored.
fn restarted_with(net: &mut Net, bytes: &[u8], kept: u32) -> (ContentId, Manifest) {
    let (id, manifest) = manifest_of("file.bin", "application/octet-stream", PS, bytes);
    let mut have = Bitfield::new(manifest.piece_count());
    let mut stored = vec![0; bytes.len()];
    for piece in 0..kept {
        have.set(piece);
        let at = manifest.piece_offset(piece) as usize;
        let len = manifest.piece_len(piece) as usize;
        stored[at..at + len].copy_from_slice(&bytes[at..at + len]);
    }
    let now = net.now;
    let node = net.node(2);
    node.storage.insert(id, stored);
    let out = node.share.resume(id, manifest.clone(), have, now);
    net.apply(2, out);
    (id, manifest)
}

#[test]
fn a_resumed_download_counts_its_stored_pieces_at_once_and_fetches_only_the_others() {
    let mut net = Net::new(&[1, 2]);
    let bytes = data(20 * PS as usize + 1000, 5);
    net.share_file(1, &bytes);
    let (id, manifest) = restarted_with(&mut net, &bytes, 12);
    let first = net.nodes[&2].events.iter().find_map(|e| match e {
        ShareEvent::Progress { progress, .. } => Some(progress.received),
        _ => None,
    });
    assert_eq!(
        first,
        Some(12 * u64::from(PS)),
        "stored pieces count at once"
    );
    assert_eq!(
        net.nodes[&2].share.stored(id).map(Bitfield::count),
        Some(12)
    );
    net.connect(1, 2);
    net.run(100_000);
    assert!(net.completed(2, id));
    assert!(net.nodes[&2].storage[&id] == bytes, "byte-identical");
    let missing: u64 = (12..manifest.piece_count())
        .map(|i| u64::from(manifest.piece_len(i)))
        .sum();
    assert_eq!(net.nodes[&2].received_from.get(&1), Some(&missing));
    assert_eq!(
        net.delivered.get(&(2, 1, 0x09)).copied().unwrap_or(0),
        0,
        "the manifest is not fetched again"
    );
}

#[test]
fn a_resumed_download_offers_its_stored_pieces_before_any_source_comes() {
    let mut net = Net::new(&[2, 3]);
    let bytes = data(10 * PS as usize, 9);
    let (id, _) = restarted_with(&mut net, &bytes, 4);
    net.connect(2, 3);
    net.run(20);
    assert_eq!(net.nodes[&3].share.file(id).map(|f| f.sources), Some(1));
    assert_eq!(
        net.nodes[&2].share.file(id).map(|f| f.complete),
        Some(false)
    );
}

#[test]
fn a_resume_with_every_piece_is_held_whole_and_one_of_the_wrong_length_holds_none() {
    let mut net = Net::new(&[2]);
    let bytes = data(6 * PS as usize, 1);
    let (id, _) = restarted_with(&mut net, &bytes, 6);
    assert!(net.nodes[&2].share.is_complete(id));
    assert!(net.completed(2, id) || net.nodes[&2].share.file(id).is_some_and(|f| f.complete));

    let other = data(6 * PS as usize, 2);
    let (oid, manifest) = manifest_of("b.bin", "", PS, &other);
    let out = net
        .node(2)
        .share
        .resume(oid, manifest, Bitfield::full(99), 0);
    net.apply(2, out);
    assert_eq!(
        net.nodes[&2].share.stored(oid).map(Bitfield::count),
        Some(0)
    );
}

#[test]
fn forgetting_stops_offering_a_held_file_and_cancels_a_download() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let bytes = data(8 * PS as usize, 4);
    let id = net.share_file(1, &bytes);
    net.run(20);
    assert_eq!(net.nodes[&2].share.file(id).map(|f| f.sources), Some(1));
    let out = net.node(1).share.forget(id);
    net.apply(1, out);
    net.run(20);
    assert_eq!(net.nodes[&1].share.file(id), None);
    assert_eq!(
        net.nodes[&2].share.file(id),
        None,
        "nobody offers it any more"
    );

    let id = net.share_file(1, &bytes[..4 * PS as usize]);
    net.run(20);
    net.download(2, id);
    net.run(3);
    let out = net.node(2).share.forget(id);
    net.apply(2, out);
    assert!(net.nodes[&2].events.contains(&ShareEvent::Failed {
        id,
        reason: FailReason::Cancelled
    }));
    assert!(
        net.node(2).share.forget(id).is_empty(),
        "unknown: nothing to do"
    );
}

#[test]
fn requests_later_in_a_new_window_are_asked_again_behind_its_first_piece() {
    let mut net = Net::new(&[1, 2]);
    net.connect(1, 2);
    let id = net.share_file(1, &data(256 * PS as usize, 8));
    net.run(20);
    net.download(2, id);
    while net.nodes[&2]
        .share
        .downloads
        .get(&id)
        .is_none_or(|d| d.phase_requests().is_empty())
    {
        net.run(1);
    }
    // Requests go out for 200..209; then the player needs 195 (window 195..204).
    let at = 200 * u64::from(PS);
    let out = net.node(2).share.set_priority(id, Some(at..at + 1), 0);
    net.apply(2, out);
    let before = net.nodes[&2].share.downloads[&id].phase_requests();
    assert!(
        before.iter().any(|(_, p)| (200..205).contains(p)),
        "{before:?}"
    );
    let at = 195 * u64::from(PS);
    let out = net.node(2).share.set_priority(id, Some(at..at + 1), 0);
    let frames: Vec<PeerMsg<'_>> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { frame, .. } => match decode_binary(frame) {
                Ok(BinaryFrame::Peer(msg)) => Some(msg),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let cancelled: BTreeSet<u32> = frames
        .iter()
        .filter_map(|m| match m {
            PeerMsg::Cancel { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect();
    let later: BTreeSet<u32> = before
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| *p > 195)
        .collect();
    assert_eq!(
        cancelled, later,
        "every request after 195 without data is withdrawn"
    );
    let requested: Vec<u32> = frames
        .iter()
        .filter_map(|m| match m {
            PeerMsg::Request { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect();
    assert_eq!(
        requested.first(),
        Some(&195),
        "the window's first piece goes first: {requested:?}"
    );
    assert!(
        requested.windows(2).all(|w| w[0] < w[1]),
        "in order: {requested:?}"
    );
    net.apply(2, out);
    net.run(100_000);
    assert!(net.completed(2, id));
}
