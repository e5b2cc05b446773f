//! Errors the `Swarm` API throws or rejects with.
//!
//! In JavaScript each is an `Error` whose `name` is `"SwarmError"` and whose `code` is one of
//! the strings below, so callers can branch on `err.code` and show `err.message`.

use swarm_protocol::{RoomNameError, WireError};
use wasm_bindgen::{JsCast, JsValue};

/// Everything that can go wrong in a call to the API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// `invalid-room`: the room name breaks the protocol's rule (checked before connecting).
    #[error("invalid room name: {0}")]
    InvalidRoom(#[from] RoomNameError),
    /// `invalid-url`: the server address is not a `ws:`, `wss:`, `http:` or `https:` URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// `server-unreachable`: the WebSocket failed or closed before the server welcomed us.
    #[error("cannot join through the signalling server at {url}: {reason}")]
    ServerUnreachable { url: String, reason: String },
    /// `unknown-peer`: no open data channel to that peer id.
    #[error("no open connection to peer {0:?}")]
    UnknownPeer(String),
    /// `message-too-large`: the message does not fit in one data-channel frame.
    #[error("{0}")]
    TooLarge(WireError),
    /// `bad-data`: a message must be a string, a Uint8Array or an ArrayBuffer.
    #[error("a message must be a string, a Uint8Array or an ArrayBuffer")]
    BadData,
    /// `unknown-event`: `on`/`off` with an event name the API does not emit.
    #[error("unknown event {0:?}; events are {events}", events = crate::events::EVENT_NAMES)]
    UnknownEvent(String),
    /// `not-a-function`: `on`/`off` with a listener that is not a function.
    #[error("the listener must be a function")]
    NotAFunction,
    /// `send-buffer-full`: too much is already queued on that peer's channel.
    #[error("the send buffer to peer {peer} is full ({buffered} bytes queued); wait and retry")]
    SendBufferFull { peer: String, buffered: u32 },
    /// `send-failed`: the browser refused to send (the channel is closing).
    #[error("sending to peer {peer} failed: {reason}")]
    SendFailed { peer: String, reason: String },
    /// `left`: the swarm has left its room; make a new one with `Swarm.join`.
    #[error("this swarm has left its room")]
    Left,
}

impl ClientError {
    /// The stable code JavaScript sees as `err.code`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidRoom(_) => "invalid-room",
            Self::InvalidUrl { .. } => "invalid-url",
            Self::ServerUnreachable { .. } => "server-unreachable",
            Self::UnknownPeer(_) => "unknown-peer",
            Self::TooLarge(_) => "message-too-large",
            Self::BadData => "bad-data",
            Self::UnknownEvent(_) => "unknown-event",
            Self::NotAFunction => "not-a-function",
            Self::SendBufferFull { .. } => "send-buffer-full",
            Self::SendFailed { .. } => "send-failed",
            Self::Left => "left",
        }
    }
}

impl From<ClientError> for JsValue {
    fn from(err: ClientError) -> Self {
        let js = js_sys::Error::new(&err.to_string());
        js.set_name("SwarmError");
        // Setting a property on a fresh Error object cannot fail.
        let _ = js_sys::Reflect::set(&js, &"code".into(), &err.code().into());
        js.into()
    }
}

/// A short description of a JavaScript exception, for error messages and logs.
pub(crate) fn describe(value: &JsValue) -> String {
    if let Some(err) = value.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", err.name(), err.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}
