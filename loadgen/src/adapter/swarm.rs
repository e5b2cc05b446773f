//! Our `signal-server`, signalling protocol v1 (`protocol/PROTOCOL.md`):
//! `GET /ws/{room}`; `welcome` (id and peers), `joined`, `left`, `signal` with `from`, `error`.

use serde::Deserialize;

use super::Event;
use super::payload::Stamp;

pub(super) fn path(room: &str) -> String {
    format!("/ws/{room}")
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Incoming {
    Welcome {
        id: String,
        peers: Vec<String>,
    },
    Joined,
    Left,
    Signal {
        data: Stamp,
    },
    Error {
        code: String,
        message: String,
    },
    #[serde(other)]
    Unknown,
}

pub(super) fn parse(frame: &str) -> Event {
    match serde_json::from_str::<Incoming>(frame) {
        Ok(Incoming::Welcome { id, peers }) => Event::Assigned {
            id: Some(id),
            known_peers: peers.len(),
        },
        Ok(Incoming::Joined) => Event::Discovered,
        Ok(Incoming::Left) => Event::Left,
        Ok(Incoming::Signal { data }) => Event::Signal {
            sent_at_ns: data.ts,
        },
        Ok(Incoming::Error { code, message }) => Event::Refused(format!("{code}: {message}")),
        Ok(Incoming::Unknown) => Event::Other,
        Err(_) => Event::Unreadable,
    }
}

pub(super) fn signal(to_json: &str, payload: &str) -> String {
    format!(r#"{{"type":"signal","to":{to_json},"data":{payload}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_frames_of_protocol_v1() {
        assert_eq!(
            parse(r#"{"type":"welcome","id":"ab","peers":["c","d"],"iceServers":[]}"#),
            Event::Assigned {
                id: Some("ab".into()),
                known_peers: 2
            }
        );
        assert_eq!(parse(r#"{"type":"joined","id":"ab"}"#), Event::Discovered);
        assert_eq!(parse(r#"{"type":"left","id":"ab"}"#), Event::Left);
        assert_eq!(
            parse(r#"{"type":"signal","from":"ab","data":{"ts":7,"pad":"x"}}"#),
            Event::Signal { sent_at_ns: 7 }
        );
        assert!(matches!(
            parse(r#"{"type":"error","code":"too-large","message":"m"}"#),
            Event::Refused(_)
        ));
        assert_eq!(parse(r#"{"type":"future"}"#), Event::Other);
        assert_eq!(parse("not json"), Event::Unreadable);
        assert_eq!(
            signal(r#""ab""#, r#"{"ts":1}"#),
            r#"{"type":"signal","to":"ab","data":{"ts":1}}"#
        );
    }
}
