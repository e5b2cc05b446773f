//! Data-channel frames from other peers: decoding never panics, and what decodes re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_protocol::wire::{BinaryFrame, decode_binary};

fuzz_target!(|frame: &[u8]| {
    match decode_binary(frame) {
        Ok(BinaryFrame::Peer(msg)) => assert_eq!(msg.encode(), frame, "decoding is exact"),
        Ok(BinaryFrame::Relay(relay)) => {
            assert_eq!(
                relay.encode().ok().as_deref(),
                Some(frame),
                "decoding is exact"
            )
        }
        _ => {}
    }
});
