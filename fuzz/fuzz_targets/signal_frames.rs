//! Signalling frames from the network: whatever the bytes, parsing returns a value or an
//! error, never panics, and what parses re-encodes to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_protocol::{ClientMsg, ServerMsg};

fuzz_target!(|text: &str| {
    if let Ok(msg) = ClientMsg::parse(text) {
        let again = ClientMsg::parse(&msg.to_json()).expect("a parsed frame re-parses");
        assert_eq!(again.to_json(), msg.to_json());
    }
    if let Ok(msg) = ServerMsg::parse(text) {
        let again = ServerMsg::parse(&msg.to_json()).expect("a parsed frame re-parses");
        assert_eq!(again.to_json(), msg.to_json());
    }
});
