//! Signalling protocol v1: JSON text frames between a client and the signalling server.
//!
//! Every frame is one JSON object with a `"type"` field. The server only ever reads the
//! frames a client sends ([`ClientMsg`]); the `data` a peer sends to another peer is carried
//! as raw JSON ([`RawValue`]) and relayed byte for byte, never parsed by the server. Peers
//! read it as [`SignalData`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::PeerId;

/// A frame a client sends to the server.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// Relay `data` to the peer `to` in the same room.
    Signal {
        /// The receiving peer.
        to: PeerId,
        /// Opaque JSON, relayed unchanged.
        data: Box<RawValue>,
    },
}

/// A frame the server sends to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// The first frame on every connection: who you are and who is already here.
    Welcome {
        /// Your own id in this room.
        id: PeerId,
        /// Everyone already in the room; the newcomer offers to each of them.
        peers: Vec<PeerId>,
        /// STUN/TURN servers, in the shape `RTCPeerConnection` takes.
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        /// A token that gives this id back on a later connection to the same room
        /// (`?resume=`), so a short outage is not seen as leaving and joining again.
        /// Extension of v1: absent from servers that do not offer resumption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    /// A peer joined the room.
    Joined {
        /// The newcomer.
        id: PeerId,
    },
    /// A peer's connection ended.
    Left {
        /// The peer that left.
        id: PeerId,
    },
    /// `data` relayed from another peer; `from` is stamped by the server.
    Signal {
        /// The sender, as the server knows it.
        from: PeerId,
        /// Opaque JSON, exactly as the sender wrote it.
        data: Box<RawValue>,
    },
    /// Something the client sent was refused; the connection stays usable.
    Error {
        /// A stable, machine-readable reason.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
}

/// The reason in an `error` frame. New codes may be added; clients must accept codes they do
/// not know (they read as [`ErrorCode::Unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame was not valid JSON, not an object with a known `type`, lacked a field, or
    /// was a binary frame.
    BadMessage,
    /// The `to` of a `signal` names no peer in the sender's room.
    UnknownPeer,
    /// The frame is larger than the server's limit.
    TooLarge,
    /// The client sent frames faster than the server's rate limit; this one was dropped.
    RateLimited,
    /// The room has as many peers as the server allows (the connection is then closed).
    RoomFull,
    /// The server has as many rooms as it allows and this one is new (then closed).
    ServerFull,
    /// The client's address has as many connections open as the server allows (then closed).
    TooManyConnections,
    /// The server needs a valid room token and got none, a bad or an expired one (then
    /// closed).
    Unauthorized,
    /// The page's `Origin` is not on the server's allow-list (then closed).
    OriginNotAllowed,
    /// The join's `key`, `ts` or `proof` is malformed, stale or does not verify (then
    /// closed).
    InvalidKey,
    /// The id that the join's key certifies is in the room already, and the join has no
    /// valid `resume` token for it (then closed).
    IdInUse,
    /// A code this version of the protocol crate does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMessage => "bad-message",
            Self::UnknownPeer => "unknown-peer",
            Self::TooLarge => "too-large",
            Self::RateLimited => "rate-limited",
            Self::RoomFull => "room-full",
            Self::ServerFull => "server-full",
            Self::TooManyConnections => "too-many-connections",
            Self::Unauthorized => "unauthorized",
            Self::OriginNotAllowed => "origin-not-allowed",
            Self::InvalidKey => "invalid-key",
            Self::IdInUse => "id-in-use",
            Self::Unknown => "unknown",
        }
    }
}

/// One STUN or TURN server, in the shape of the WebRTC `RTCIceServer` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// One URL or several, e.g. `stun:stun.example.org:3478`.
    pub urls: IceUrls,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `RTCIceServer.urls`: a single URL or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IceUrls {
    /// A single URL.
    One(String),
    /// Several URLs for the same server.
    Many(Vec<String>),
}

/// What peers put in `data`: a session description or an ICE candidate, or the answer of a
/// peer that has no room for another connection.
///
/// On the wire: `{"sdp":{"type":"offer","sdp":"v=0…"}}`, `{"candidate":{…}}`,
/// `{"candidate":null}` for the end of candidates, and `"busy"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalData {
    /// An offer or an answer.
    Sdp(SessionDescription),
    /// A trickled ICE candidate; `None` ends candidates.
    Candidate(Option<IceCandidateInit>),
    /// The reply to an offer the peer will not answer: its connections are full (a partial
    /// mesh, `swarm_core::mesh`), so the offering side dials someone else at once instead of
    /// waiting for an answer that never comes. An extension of v1.
    Busy,
    /// Any of the above, sealed with the key of a secret room (`{"sealed":"…"}`: base64url
    /// without padding of a 24-byte nonce, then the XChaCha20-Poly1305 ciphertext of the
    /// inner signal's JSON). The server cannot read it; `swarm_core::secret_room` seals and
    /// opens it. An extension of v1.
    Sealed(String),
}

/// `RTCSessionDescriptionInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// Offer or answer.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text.
    pub sdp: String,
    /// On an offer: the content the offering peer dials us for (it downloads it and found us
    /// as its provider). A peer whose connections are full still answers such an offer for a
    /// content it provides (`swarm_core::mesh`). Absent otherwise; an extension of v1 that
    /// older peers ignore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub want: Option<crate::ContentId>,
    /// The sender's signature over the room, both ids, a nonce and the description's DTLS
    /// fingerprints (`swarm_core::sdp_auth`), so that a server that relays it cannot answer
    /// in the peer's place. Absent from unsigned (v1) peers, which ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SdpAuth>,
}

/// The signature that binds an offer or an answer to its sender's key (an extension of v1;
/// the exact signed bytes are in `PROTOCOL.md`, "Signed offers and answers"). Fields are kept
/// as the sender wrote them: `swarm_core::sdp_auth` checks them and names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdpAuth {
    /// The sender's Ed25519 public key, 64 hex digits (its id is the first 16 bytes of its
    /// SHA-256).
    pub key: String,
    /// 32 hex digits: on an offer, a fresh nonce; on an answer, the nonce of the offer it
    /// answers (zeros if that offer was unsigned).
    pub nonce: String,
    /// The DTLS fingerprints of the description, as `"sha-256 AB:CD:…"`, sorted.
    pub fingerprints: Vec<String>,
    /// The Ed25519 signature, 128 hex digits.
    pub sig: String,
}

/// The `type` of a [`SessionDescription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidateInit {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// Media stream identification tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line.
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u16>,
    /// ICE username fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Why a text frame is not a valid message. Every variant is answered with
/// [`ErrorCode::BadMessage`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, not an object, or a field of the wrong type.
    #[error("invalid JSON frame: {0}")]
    Json(#[from] serde_json::Error),
    /// The `type` is not one this side accepts.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A field the `type` requires is absent (or `null`).
    #[error("a {kind:?} message needs the field {field:?}")]
    MissingField {
        /// The message type.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// Serialises a frame. Cannot fail: every type here maps to a JSON object with string keys.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("protocol types always serialise")
}

fn required<T>(value: Option<T>, kind: &'static str, field: &'static str) -> Result<T, ParseError> {
    value.ok_or(ParseError::MissingField { kind, field })
}

/// The fields any client frame may carry; the `type` decides which are needed. A flat shape is
/// used instead of serde's internally tagged enums because those cannot hold a [`RawValue`].
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    to: Option<PeerId>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

impl ClientMsg {
    /// Parses one text frame from a client.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let frame: ClientFrame<'_> = serde_json::from_str(text)?;
        match frame.kind.as_ref() {
            "signal" => Ok(Self::Signal {
                to: required(frame.to, "signal", "to")?,
                data: required(frame.data, "signal", "data")?.to_owned(),
            }),
            other => Err(ParseError::UnknownType(other.to_owned())),
        }
    }

    /// A `signal` frame carrying `data` to `to`.
    pub fn signal(to: PeerId, data: &SignalData) -> Self {
        let raw = serde_json::value::to_raw_value(data).expect("signal data always serialises");
        Self::Signal { to, data: raw }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

#[derive(Deserialize)]
struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<PeerId>,
    #[serde(default)]
    peers: Option<Vec<PeerId>>,
    #[serde(default, rename = "iceServers")]
    ice_servers: Option<Vec<IceServer>>,
    #[serde(default)]
    resume: Option<String>,
    #[serde(default)]
    from: Option<PeerId>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<ErrorCode>,
    #[serde(default)]
    message: Option<String>,
}

impl ServerMsg {
    /// Parses one text frame from the server.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let frame: ServerFrame<'_> = serde_json::from_str(text)?;
        Ok(match frame.kind.as_ref() {
            "welcome" => Self::Welcome {
                id: required(frame.id, "welcome", "id")?,
                peers: required(frame.peers, "welcome", "peers")?,
                ice_servers: frame.ice_servers.unwrap_or_default(),
                resume: frame.resume,
            },
            "joined" => Self::Joined {
                id: required(frame.id, "joined", "id")?,
            },
            "left" => Self::Left {
                id: required(frame.id, "left", "id")?,
            },
            "signal" => Self::Signal {
                from: required(frame.from, "signal", "from")?,
                data: required(frame.data, "signal", "data")?.to_owned(),
            },
            "error" => Self::Error {
                code: required(frame.code, "error", "code")?,
                message: frame.message.unwrap_or_default(),
            },
            other => return Err(ParseError::UnknownType(other.to_owned())),
        })
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl SignalData {
    /// Reads the `data` of a relayed `signal` frame.
    pub fn parse(data: &RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(data.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    fn raw(value: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&value).expect("raw")
    }

    fn as_value(json: &str) -> Value {
        serde_json::from_str(json).expect("valid JSON")
    }

    #[test]
    fn welcome_has_the_documented_shape() {
        let msg = ServerMsg::Welcome {
            id: id(1),
            peers: vec![id(2), id(3)],
            ice_servers: vec![IceServer {
                urls: IceUrls::One("stun:127.0.0.1:3478".into()),
                username: None,
                credential: None,
            }],
            resume: None,
        };
        assert_eq!(
            as_value(&msg.to_json()),
            json!({"type": "welcome", "id": id(1).to_string(),
                   "peers": [id(2).to_string(), id(3).to_string()],
                   "iceServers": [{"urls": "stun:127.0.0.1:3478"}]})
        );
    }

    #[test]
    fn joined_left_and_error_have_the_documented_shapes() {
        assert_eq!(
            as_value(&ServerMsg::Joined { id: id(4) }.to_json()),
            json!({"type": "joined", "id": id(4).to_string()})
        );
        assert_eq!(
            as_value(&ServerMsg::Left { id: id(4) }.to_json()),
            json!({"type": "left", "id": id(4).to_string()})
        );
        assert_eq!(
            as_value(&ServerMsg::error(ErrorCode::UnknownPeer, "no such peer").to_json()),
            json!({"type": "error", "code": "unknown-peer", "message": "no such peer"})
        );
    }

    #[test]
    fn relayed_data_is_kept_byte_for_byte() {
        let text = r#"{"type":"signal","to":"0202020202020202020202020202020202020202","data":{"z":1,  "a":[1.50,"\u00e9"]}}"#;
        // The `to` above is 40 digits: not a peer id.
        assert!(matches!(ClientMsg::parse(text), Err(ParseError::Json(_))));
        let text = format!(
            r#"{{"type":"signal","to":"{}","data":{{"z":1,  "a":[1.50,"\u00e9"]}}}}"#,
            id(2)
        );
        let ClientMsg::Signal { to, data } = ClientMsg::parse(&text).expect("valid");
        assert_eq!(to, id(2));
        assert_eq!(data.get(), r#"{"z":1,  "a":[1.50,"\u00e9"]}"#);
        let out = ServerMsg::Signal { from: id(1), data }.to_json();
        assert_eq!(
            out,
            format!(
                r#"{{"type":"signal","from":"{}","data":{{"z":1,  "a":[1.50,"\u00e9"]}}}}"#,
                id(1)
            )
        );
    }

    #[test]
    fn client_frames_that_are_refused() {
        assert!(matches!(
            ClientMsg::parse("not json"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            ClientMsg::parse("[1,2]"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            ClientMsg::parse(r#"{"to":"x"}"#),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            ClientMsg::parse(r#"{"type":"dance"}"#),
            Err(ParseError::UnknownType(t)) if t == "dance"
        ));
        let missing_data = format!(r#"{{"type":"signal","to":"{}"}}"#, id(1));
        assert!(matches!(
            ClientMsg::parse(&missing_data),
            Err(ParseError::MissingField { field: "data", .. })
        ));
        assert!(matches!(
            ClientMsg::parse(r#"{"type":"signal","data":{}}"#),
            Err(ParseError::MissingField { field: "to", .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let text = format!(r#"{{"type":"signal","to":"{}","data":1,"hop":3}}"#, id(1));
        assert!(ClientMsg::parse(&text).is_ok());
    }

    #[test]
    fn signal_data_shapes() {
        let offer = SignalData::Sdp(SessionDescription {
            kind: SdpType::Offer,
            sdp: "v=0\r\n".into(),
            want: None,
            auth: None,
        });
        assert_eq!(
            serde_json::to_value(&offer).expect("json"),
            json!({"sdp": {"type": "offer", "sdp": "v=0\r\n"}})
        );
        let wanted = "ab".repeat(32);
        let for_content = SignalData::Sdp(SessionDescription {
            kind: SdpType::Offer,
            sdp: "v=0\r\n".into(),
            want: Some(wanted.parse().expect("content id")),
            auth: None,
        });
        let value = json!({"sdp": {"type": "offer", "sdp": "v=0\r\n", "want": wanted}});
        assert_eq!(serde_json::to_value(&for_content).expect("json"), value);
        assert_eq!(
            serde_json::from_value::<SignalData>(value).expect("parse"),
            for_content
        );
        let bad = json!({"sdp": {"type": "offer", "sdp": "", "want": "not hex"}});
        assert!(serde_json::from_value::<SignalData>(bad).is_err());
        assert_eq!(
            serde_json::to_value(SignalData::Busy).expect("json"),
            json!("busy")
        );
        assert_eq!(
            serde_json::from_value::<SignalData>(json!("busy")).expect("parse"),
            SignalData::Busy
        );
        let candidate = SignalData::Candidate(Some(IceCandidateInit {
            candidate: "candidate:1 1 udp 1 10.77.0.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }));
        assert_eq!(
            serde_json::to_value(&candidate).expect("json"),
            json!({"candidate": {"candidate": "candidate:1 1 udp 1 10.77.0.1 5000 typ host",
                                 "sdpMid": "0", "sdpMLineIndex": 0}})
        );
        let end = SignalData::Candidate(None);
        assert_eq!(
            serde_json::to_value(&end).expect("json"),
            json!({"candidate": null})
        );
        let signed = SignalData::Sdp(SessionDescription {
            kind: SdpType::Answer,
            sdp: "v=0\r\n".into(),
            want: None,
            auth: Some(SdpAuth {
                key: "ab".repeat(32),
                nonce: "00".repeat(16),
                fingerprints: vec!["sha-256 AB:CD".into()],
                sig: "cd".repeat(64),
            }),
        });
        assert_eq!(
            serde_json::to_value(&signed).expect("json"),
            json!({"sdp": {"type": "answer", "sdp": "v=0\r\n", "auth": {
                "key": "ab".repeat(32), "nonce": "00".repeat(16),
                "fingerprints": ["sha-256 AB:CD"], "sig": "cd".repeat(64)}}})
        );
        let sealed = SignalData::Sealed("AAEC".into());
        assert_eq!(
            serde_json::to_value(&sealed).expect("json"),
            json!({"sealed": "AAEC"})
        );
        for data in [offer, candidate, end, signed, sealed] {
            let raw = raw(serde_json::to_value(&data).expect("json"));
            assert_eq!(SignalData::parse(&raw).expect("parse"), data);
        }
    }

    proptest! {
        /// Whatever a peer writes in `data`, reading it never panics, and what reads back
        /// writes out and reads again to the same value.
        #[test]
        fn signal_data_parse_is_total(text in any::<String>(), key in "[0-9a-f]{0,70}", fps in proptest::collection::vec(any::<String>(), 0..4)) {
            let candidates = [
                text.clone(),
                json!({"sealed": text}).to_string(),
                json!({"sdp": {"type": "offer", "sdp": text, "auth": {"key": key, "nonce": "", "fingerprints": fps, "sig": ""}}}).to_string(),
            ];
            for candidate in candidates {
                if let Ok(data) = serde_json::from_str::<SignalData>(&candidate) {
                    let again = serde_json::to_string(&data).expect("json");
                    prop_assert_eq!(serde_json::from_str::<SignalData>(&again).expect("parse"), data);
                }
            }
        }
    }

    #[test]
    fn server_frames_parse_back() {
        let msgs = [
            ServerMsg::Welcome {
                id: id(1),
                peers: vec![],
                ice_servers: vec![],
                resume: Some("0123.abc".into()),
            },
            ServerMsg::Joined { id: id(2) },
            ServerMsg::Left { id: id(3) },
            ServerMsg::Signal {
                from: id(4),
                data: raw(json!({"candidate": null})),
            },
            ServerMsg::error(ErrorCode::TooLarge, "frame of 70000 bytes"),
        ];
        for msg in msgs {
            let text = msg.to_json();
            let back = ServerMsg::parse(&text).expect("parses");
            assert_eq!(back.to_json(), text);
        }
    }

    #[test]
    fn unknown_error_codes_are_accepted() {
        let msg =
            ServerMsg::parse(r#"{"type":"error","code":"a-code-from-the-future","message":"m"}"#)
                .expect("parses");
        assert!(matches!(
            msg,
            ServerMsg::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC*") {
            let _ = ClientMsg::parse(&text);
            let _ = ServerMsg::parse(&text);
        }

        #[test]
        fn signal_round_trip(bytes in any::<[u8; 16]>(), sdp in "\\PC*") {
            let data = SignalData::Sdp(SessionDescription { kind: SdpType::Answer, sdp, want: None, auth: None });
            let msg = ClientMsg::signal(PeerId::from_bytes(bytes), &data);
            let ClientMsg::Signal { to, data: raw } = ClientMsg::parse(&msg.to_json()).expect("parses");
            prop_assert_eq!(to, PeerId::from_bytes(bytes));
            prop_assert_eq!(SignalData::parse(&raw).expect("data"), data);
        }
    }
}
