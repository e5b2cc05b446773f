//! The `Swarm` class: what a web page uses.

use std::rc::Rc;

use js_sys::{Array, Function};
use swarm_protocol::RoomName;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::channel::OutgoingMessage;
use crate::error::ClientError;
use crate::events::EventKind;
use crate::session::Session;
use crate::signalling::room_url;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Events a Swarm emits, and the arguments its listeners receive. */
export interface SwarmEvents {
  /** A data channel to this peer opened: it can be sent to. */
  "peer-joined": (id: string) => void;
  /** A peer that had joined is gone (closed, failed, or left the room). */
  "peer-left": (id: string) => void;
  /** A message from a peer: a string if it was sent as one, otherwise bytes. */
  "message": (from: string, data: string | Uint8Array) => void;
}

/** What can be sent: text, or bytes (at most 65535 bytes; text at most 65536 UTF-8 bytes). */
export type SwarmMessage = string | Uint8Array | ArrayBuffer;

/** The `code` of every error the API throws or rejects with (`err.name === "SwarmError"`). */
export type SwarmErrorCode =
  | "invalid-room" | "invalid-url" | "server-unreachable" | "unknown-peer"
  | "message-too-large" | "bad-data" | "unknown-event" | "not-a-function"
  | "send-buffer-full" | "send-failed" | "left";
"#;

/// A member of one room: connected to the others directly over WebRTC data channels.
#[wasm_bindgen]
pub struct Swarm {
    session: Rc<Session>,
}

#[wasm_bindgen]
impl Swarm {
    /// Joins `room` through the signalling server at `server` (`ws://host:port`, or an
    /// `http(s)://` origin such as `location.origin`). Resolves once the server has welcomed
    /// this peer; connections to the peers already there are then being made. Rejects with a
    /// `SwarmError` (`invalid-room`, `invalid-url`, `server-unreachable`).
    pub async fn join(server: String, room: String) -> Result<Swarm, JsValue> {
        let room = RoomName::new(room).map_err(ClientError::from)?;
        let url = room_url(&server, &room)?;
        let session = Session::new(url, room);
        if let Err(err) = session.connect().await {
            session.leave();
            return Err(err);
        }
        Ok(Swarm { session })
    }

    /// This peer's id in the room (32 hex digits).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.session
            .me()
            .map(|id| id.to_string())
            .unwrap_or_default()
    }

    /// The room's name.
    #[wasm_bindgen(getter)]
    pub fn room(&self) -> String {
        self.session.room().to_string()
    }

    /// The ids of the peers with an open data channel, sorted.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn peers(&self) -> Array {
        self.session
            .open_peers()
            .into_iter()
            .map(|id| JsValue::from(id.to_string()))
            .collect()
    }

    /// Registers `listener` for `event`: `'peer-joined'`, `'peer-left'` or `'message'`.
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "keyof SwarmEvents")] event: &str,
        #[wasm_bindgen(unchecked_param_type = "SwarmEvents[keyof SwarmEvents]")] listener: JsValue,
    ) -> Result<(), JsValue> {
        let kind = EventKind::parse(event)?;
        let listener = listener
            .dyn_into::<Function>()
            .map_err(|_| ClientError::NotAFunction)?;
        self.session.listeners().add(kind, listener);
        Ok(())
    }

    /// Removes a listener registered with `on`. Returns whether it was registered.
    pub fn off(
        &self,
        #[wasm_bindgen(unchecked_param_type = "keyof SwarmEvents")] event: &str,
        #[wasm_bindgen(unchecked_param_type = "SwarmEvents[keyof SwarmEvents]")] listener: JsValue,
    ) -> Result<bool, JsValue> {
        let kind = EventKind::parse(event)?;
        let listener = listener
            .dyn_into::<Function>()
            .map_err(|_| ClientError::NotAFunction)?;
        Ok(self.session.listeners().remove(kind, &listener))
    }

    /// Sends `data` to the peer `id` over its data channel. Throws a `SwarmError`
    /// (`unknown-peer`, `bad-data`, `message-too-large`, `send-buffer-full`, `send-failed`,
    /// `left`).
    pub fn send(
        &self,
        id: &str,
        #[wasm_bindgen(unchecked_param_type = "SwarmMessage")] data: JsValue,
    ) -> Result<(), JsValue> {
        self.session.check_joined()?;
        let message = OutgoingMessage::from_js(&data)?;
        Ok(self.session.send_to(id, &message)?)
    }

    /// Sends `data` to every peer with an open data channel; returns how many peers it was
    /// sent to. Throws like `send` for bad data.
    pub fn broadcast(
        &self,
        #[wasm_bindgen(unchecked_param_type = "SwarmMessage")] data: JsValue,
    ) -> Result<u32, JsValue> {
        self.session.check_joined()?;
        let message = OutgoingMessage::from_js(&data)?;
        Ok(self.session.broadcast(&message)?)
    }

    /// Leaves the room: closes every peer connection and the signalling connection, and
    /// removes all listeners. Calling it again does nothing.
    pub fn leave(&self) {
        self.session.leave();
    }
}
