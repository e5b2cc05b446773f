//! Errors the `Swarm` API throws or rejects with.
//!
//! In JavaScript each is an `Error` whose `name` is `"SwarmError"` and whose `code` is one of
//! the strings below, so callers can branch on `err.code` and show `err.message`.

use swarm_protocol::{ErrorCode, RoomNameError, WireError};
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
    /// `unknown-event`: `on`/`off` with an event name the object does not emit.
    #[error("unknown event {event:?}; events are {expected}")]
    UnknownEvent { event: String, expected: String },
    /// `file-too-large`: more pieces than a manifest may list.
    #[error("a file of {0} bytes is too large to share")]
    FileTooLarge(u64),
    /// `not-a-function`: `on`/`off` with a listener that is not a function.
    #[error("the listener must be a function")]
    NotAFunction,
    /// `send-buffer-full`: too much is already queued on that peer's channel.
    #[error("the send buffer to peer {peer} is full ({buffered} bytes queued); wait and retry")]
    SendBufferFull { peer: String, buffered: u32 },
    /// `send-failed`: the browser refused to send (the channel is closing).
    #[error("sending to peer {peer} failed: {reason}")]
    SendFailed { peer: String, reason: String },
    /// `storage`: the browser's storage failed (no OPFS, a full disk, a failed read).
    #[error("storage failed: {0}")]
    Storage(String),
    /// `storage-quota`: the file is larger than the storage the browser grants this site.
    #[error(
        "the file needs {needed} bytes but the browser's storage quota leaves only {available} bytes"
    )]
    StorageQuota { needed: u64, available: u64 },
    /// `invalid-content-id`: not 64 lowercase hex digits.
    #[error("not a content id: {0:?} (expected 64 lowercase hex digits)")]
    InvalidContentId(String),
    /// `unknown-content`: nobody in the room offers this content.
    #[error("no peer in the room offers content {0}")]
    UnknownContent(String),
    /// `not-a-file`: `shareFile` needs a File or a Blob.
    #[error("shareFile needs a File or a Blob")]
    NotAFile,
    /// `range-not-satisfiable`: a stream request starts past the end of the file.
    #[error("the range starts past the end of the file ({size} bytes)")]
    RangeNotSatisfiable { size: u64 },
    /// `streaming-unavailable`: the streaming service worker could not be registered, or the
    /// bytes could not be fetched.
    #[error("streaming failed: {0}")]
    Streaming(String),
    /// `not-a-stream`: `publish`/`unpublish` need a MediaStream.
    #[error("publish and unpublish need a MediaStream")]
    NotAStream,
    /// `cancelled`: the download was cancelled.
    #[error("the download of {0} was cancelled")]
    Cancelled(String),
    /// The server refused to let us join; the code is the server's (`unauthorized`,
    /// `origin-not-allowed`, `room-full`, `server-full`, `too-many-connections`, or
    /// `refused` for a code this client does not know).
    #[error("the signalling server refused to let this peer join: {message}")]
    Refused { code: ErrorCode, message: String },
    /// `invalid-option`: a `Swarm.join` option has the wrong type or value.
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
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
            Self::UnknownEvent { .. } => "unknown-event",
            Self::FileTooLarge(_) => "file-too-large",
            Self::NotAFunction => "not-a-function",
            Self::SendBufferFull { .. } => "send-buffer-full",
            Self::SendFailed { .. } => "send-failed",
            Self::Storage(_) => "storage",
            Self::StorageQuota { .. } => "storage-quota",
            Self::InvalidContentId(_) => "invalid-content-id",
            Self::UnknownContent(_) => "unknown-content",
            Self::NotAFile => "not-a-file",
            Self::Cancelled(_) => "cancelled",
            Self::NotAStream => "not-a-stream",
            Self::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            Self::Streaming(_) => "streaming-unavailable",
            Self::Left => "left",
            Self::Refused { code, .. } => match code {
                ErrorCode::Unknown => "refused",
                code => code.as_str(),
            },
            Self::InvalidOption { .. } => "invalid-option",
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
