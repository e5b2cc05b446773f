//! Data-channel frames from other peers: decoding never panics, and what decodes re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_protocol::wire::{BinaryFrame, decode_binary};

fuzz_target!(|frame: &[u8]| {
    if let Ok(BinaryFrame::Peer(msg)) = decode_binary(frame) {
        assert_eq!(msg.encode(), frame, "decoding is exact");
    }
});
