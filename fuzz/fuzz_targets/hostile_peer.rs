//! A hostile peer against the sharing engine: the input is a run of length-prefixed frames
//! (one length byte, then that many bytes), each handed to a [`Share`] as if peer 9 had
//! sent it, with time moving on and the engine's outputs carried out (pieces it reads are
//! served from memory, pieces it writes are stored). The engine holds one file, announced
//! to peer 9, and is downloading another that peer 9 offers, so every handler is in play.
//!
//! Checked: nothing panics (overflow checks are on), and what the engine sends peer 9 stays
//! within a bound of what peer 9 sent: the replies to requests (pieces of the held file,
//! one manifest per budget window) plus a constant, never a runaway amplification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_core::merkle::manifest_of;
use swarm_core::share::bounds::MANIFEST_BUDGET_BYTES;
use swarm_core::share::{Output, Share, ShareConfig};
use swarm_protocol::ContentId;
use swarm_protocol::content::MIN_PIECE_SIZE;
use swarm_protocol::wire::{BinaryFrame, PeerMsg, decode_binary};

const HOSTILE: u8 = 9;

fuzz_target!(|input: &[u8]| {
    let held: Vec<u8> = (0..4 * MIN_PIECE_SIZE as usize).map(|i| i as u8).collect();
    let (held_id, manifest) = manifest_of("held.bin", "", MIN_PIECE_SIZE, &held);
    let mut share: Share<u8> = Share::new(ShareConfig::default(), 1);
    let mut sent = 0u64;
    let mut requests = 0u64;
    let carry = |share: &mut Share<u8>, out: Vec<Output<u8>>, now: u64, sent: &mut u64| {
        let mut pending = out;
        while let Some(output) = pending.pop() {
            match output {
                Output::Send { to: HOSTILE, frame } => *sent += frame.len() as u64,
                Output::ReadPiece(read) => {
                    let start = read.offset as usize;
                    if let Some(bytes) = held.get(start..start + read.len as usize) {
                        pending.extend(share.piece_read(read.to, read.id, read.piece, bytes));
                    }
                    pending.extend(share.upload_drained(read.to));
                }
                Output::WritePiece(write) => {
                    pending.extend(share.piece_stored(write.id, write.piece, now));
                }
                _ => {}
            }
        }
    };
    let out = share.share(held_id, manifest);
    carry(&mut share, out, 0, &mut sent);
    let out = share.add_peer(HOSTILE);
    carry(&mut share, out, 0, &mut sent);
    // Peer 9 offers a content, and we download it.
    let wanted = ContentId::from_bytes([0x5a; 32]);
    let announce = PeerMsg::Announce {
        id: wanted,
        size: 1 << 20,
        name: "wanted.bin",
        mime: "",
    };
    let out = share.on_message(HOSTILE, announce, 0);
    carry(&mut share, out, 0, &mut sent);
    if let Ok(out) = share.download(wanted, 0) {
        carry(&mut share, out, 0, &mut sent);
    }
    let baseline = sent;
    let mut now = 0;
    let mut rest = input;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        now += 37;
        if let Ok(BinaryFrame::Peer(msg)) = decode_binary(frame) {
            if matches!(
                msg,
                PeerMsg::Request { .. } | PeerMsg::ManifestRequest { .. }
            ) {
                requests += 1;
            }
            let out = share.on_message(HOSTILE, msg, now);
            carry(&mut share, out, now, &mut sent);
        }
        if now % 1000 < 37 {
            let out = share.tick(now);
            carry(&mut share, out, now, &mut sent);
        }
    }
    // Each request is answered by at most a piece (in frames with their headers) or a
    // reject; manifests by at most the budget (plus one) per window; a constant for the rest.
    let windows = now / 10_000 + 1;
    let bound = baseline
        + requests * (u64::from(MIN_PIECE_SIZE) + 4096)
        + windows * (MANIFEST_BUDGET_BYTES + (1 << 20))
        + 64 * 1024;
    assert!(
        sent <= bound,
        "sent {sent} bytes for {} input bytes",
        input.len()
    );
});
