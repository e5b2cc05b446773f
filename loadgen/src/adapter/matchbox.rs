//! `matchbox_server` 0.15 (crates.io). Its protocol, from `matchbox_protocol`'s serde enums
//! (externally tagged JSON) and `matchbox_signaling`'s router:
//! - the room is the path: `GET /{room}`;
//! - the server sends `{"IdAssigned":"UUID"}` first, then `{"NewPeer":"UUID"}` when a peer
//!   joins the room (only to the peers already there: newcomers are not told who is there),
//!   `{"PeerLeft":"UUID"}`, and `{"Signal":{"sender":"UUID","data":…}}`;
//! - clients send `{"Signal":{"receiver":"UUID","data":…}}` (any peer, rooms are not checked)
//!   and may send `"KeepAlive"`, which the server ignores. A signal for an unknown peer is
//!   dropped silently.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Event;
use super::payload::Stamp;

pub(super) fn path(room: &str) -> String {
    format!("/{room}")
}

#[derive(Deserialize)]
enum Incoming {
    IdAssigned(String),
    NewPeer(IgnoredAny),
    PeerLeft(IgnoredAny),
    Signal { data: Stamp },
}

pub(super) fn parse(frame: &str) -> Event {
    match serde_json::from_str::<Incoming>(frame) {
        Ok(Incoming::IdAssigned(id)) => Event::Assigned {
            id: Some(id),
            known_peers: 0,
        },
        Ok(Incoming::NewPeer(_)) => Event::Discovered,
        Ok(Incoming::PeerLeft(_)) => Event::Left,
        Ok(Incoming::Signal { data }) => Event::Signal {
            sent_at_ns: data.ts,
        },
        Err(_) => Event::Unreadable,
    }
}

pub(super) fn signal(to_json: &str, payload: &str) -> String {
    format!(r#"{{"Signal":{{"receiver":{to_json},"data":{payload}}}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    #[test]
    fn reads_matchbox_events() {
        assert_eq!(
            parse(&format!(r#"{{"IdAssigned":"{UUID}"}}"#)),
            Event::Assigned {
                id: Some(UUID.into()),
                known_peers: 0
            }
        );
        assert_eq!(
            parse(&format!(r#"{{"NewPeer":"{UUID}"}}"#)),
            Event::Discovered
        );
        assert_eq!(parse(&format!(r#"{{"PeerLeft":"{UUID}"}}"#)), Event::Left);
        assert_eq!(
            parse(&format!(
                r#"{{"Signal":{{"sender":"{UUID}","data":{{"ts":9,"pad":""}}}}}}"#
            )),
            Event::Signal { sent_at_ns: 9 }
        );
        assert_eq!(parse(r#"{"Other":1}"#), Event::Unreadable);
        assert_eq!(
            signal(&format!(r#""{UUID}""#), "{}"),
            format!(r#"{{"Signal":{{"receiver":"{UUID}","data":{{}}}}}}"#)
        );
    }
}
