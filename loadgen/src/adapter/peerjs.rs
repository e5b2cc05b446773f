//! The PeerJS server (`peer` 1.0 on npm). Its protocol, from `peer`'s `dist/bin/peerjs.js`:
//! - the WebSocket is at `{path}peerjs?key=KEY&id=ID&token=TOKEN`: the client picks its own id
//!   (default key `peerjs`, default path `/`);
//! - the server answers `{"type":"OPEN"}`, or `{"type":"ERROR","payload":{"msg":…}}` and
//!   closes (bad key, or more than `concurrent_limit` clients), or `{"type":"ID-TAKEN",…}`;
//! - clients send `{"type":"OFFER"|"ANSWER"|"CANDIDATE","dst":ID,"payload":…}`; the server
//!   adds `src` and forwards the object to `dst` (queued for up to `expire_timeout` if `dst`
//!   is not connected, then answered with `EXPIRE`);
//! - there are no rooms and no join notifications;
//! - clients send `{"type":"HEARTBEAT"}`: a client silent for `alive_timeout` (60 s from the
//!   command line) is disconnected.

use std::time::Duration;

use serde::Deserialize;

use super::Event;
use super::payload::Stamp;

/// The server's default key.
const KEY: &str = "peerjs";

/// The heartbeat frame, sent well within the command line's 60 s `alive_timeout`.
pub(super) const KEEPALIVE: (&str, Duration) = (r#"{"type":"HEARTBEAT"}"#, Duration::from_secs(20));

pub(super) fn path(name: &str) -> String {
    format!("/peerjs?key={KEY}&id={name}&token=t{name}")
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Incoming {
    #[serde(rename = "OPEN")]
    Open,
    #[serde(rename = "OFFER", alias = "ANSWER", alias = "CANDIDATE")]
    Relayed { payload: Stamp },
    #[serde(rename = "LEAVE")]
    Leave,
    #[serde(rename = "ERROR")]
    Error { payload: ErrorPayload },
    #[serde(rename = "ID-TAKEN")]
    IdTaken,
    #[serde(rename = "EXPIRE")]
    Expire,
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct ErrorPayload {
    #[serde(default)]
    msg: String,
}

pub(super) fn parse(frame: &str) -> Event {
    match serde_json::from_str::<Incoming>(frame) {
        Ok(Incoming::Open) => Event::Assigned {
            id: None,
            known_peers: 0,
        },
        Ok(Incoming::Relayed { payload }) => Event::Signal {
            sent_at_ns: payload.ts,
        },
        Ok(Incoming::Leave) => Event::Left,
        Ok(Incoming::Error { payload }) => Event::Refused(payload.msg),
        Ok(Incoming::IdTaken) => Event::Refused("ID is taken".into()),
        Ok(Incoming::Expire) => Event::Refused("message expired undelivered".into()),
        Ok(Incoming::Unknown) => Event::Other,
        Err(_) => Event::Unreadable,
    }
}

pub(super) fn signal(to_json: &str, payload: &str) -> String {
    format!(r#"{{"type":"CANDIDATE","dst":{to_json},"payload":{payload}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peerjs_messages() {
        assert_eq!(
            parse(r#"{"type":"OPEN"}"#),
            Event::Assigned {
                id: None,
                known_peers: 0
            }
        );
        for kind in ["OFFER", "ANSWER", "CANDIDATE"] {
            assert_eq!(
                parse(&format!(
                    r#"{{"type":"{kind}","src":"a","dst":"b","payload":{{"ts":5,"pad":""}}}}"#
                )),
                Event::Signal { sent_at_ns: 5 }
            );
        }
        assert_eq!(
            parse(
                r#"{"type":"ERROR","payload":{"msg":"Server has reached its concurrent user limit"}}"#
            ),
            Event::Refused("Server has reached its concurrent user limit".into())
        );
        assert!(matches!(
            parse(r#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#),
            Event::Refused(_)
        ));
        assert_eq!(parse(r#"{"type":"HEARTBEAT"}"#), Event::Other);
        assert_eq!(parse("[]"), Event::Unreadable);
        assert_eq!(path("p1"), "/peerjs?key=peerjs&id=p1&token=tp1");
        assert_eq!(
            signal(r#""b""#, "{}"),
            r#"{"type":"CANDIDATE","dst":"b","payload":{}}"#
        );
    }
}
