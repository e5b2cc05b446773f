//! The WebSocket to the signalling server.

use swarm_protocol::{ClientMsg, RoomName};
use tracing::warn;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{CloseEvent, Event, MessageEvent, WebSocket};

use crate::error::{ClientError, describe};
use crate::inbox::{self, Inbox};

/// Close code sent when the application leaves the room.
const NORMAL_CLOSURE: u16 = 1000;

/// The socket and the callbacks it calls; dropping it unregisters them and closes the socket.
pub(crate) struct SignalSocket {
    ws: WebSocket,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(Event)>,
}

/// `ws[s]://host/ws/{room}` from what the application passed: a `ws:`/`wss:` base URL, or an
/// `http:`/`https:` one (such as the page's own origin), with or without a trailing slash.
pub(crate) fn room_url(server: &str, room: &RoomName) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: server.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = server
        .split_once("://")
        .ok_or_else(|| invalid("expected ws://, wss://, http:// or https://"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(invalid("expected ws://, wss://, http:// or https://")),
    };
    let base = rest.trim_end_matches('/');
    if base.is_empty() {
        return Err(invalid("no host"));
    }
    Ok(format!("{scheme}://{base}/ws/{room}"))
}

impl SignalSocket {
    /// Opens the socket; its frames and its end are posted to `inbox` as events of
    /// connection `serial`.
    pub(crate) fn connect(url: &str, inbox: Inbox, serial: u32) -> Result<Self, ClientError> {
        let ws = WebSocket::new(url).map_err(|err| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: describe(&err),
        })?;

        let on_message = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                match event.data().as_string() {
                    Some(text) => inbox.post(inbox::Event::ServerFrame {
                        socket: serial,
                        text,
                    }),
                    None => warn!("ignoring a binary frame from the signalling server"),
                }
            })
        };
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            inbox.post(inbox::Event::ServerClosed {
                socket: serial,
                code: event.code(),
                reason: event.reason(),
            });
        });
        // An `error` event is always followed by `close`, which carries the details.
        let on_error = Closure::<dyn FnMut(Event)>::new(|_: Event| {});

        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self {
            ws,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        })
    }

    /// Sends one frame; `false` if the socket is not open.
    pub(crate) fn send(&self, msg: &ClientMsg) -> bool {
        if self.ws.ready_state() != WebSocket::OPEN {
            return false;
        }
        match self.ws.send_with_str(&msg.to_json()) {
            Ok(()) => true,
            Err(err) => {
                warn!(error = %describe(&err), "cannot send to the signalling server");
                false
            }
        }
    }
}

impl Drop for SignalSocket {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self
            .ws
            .close_with_code_and_reason(NORMAL_CLOSURE, "leaving");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(server: &str) -> Result<String, String> {
        let room = RoomName::new("demo").expect("room");
        room_url(server, &room).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_websocket_and_http_bases() {
        assert_eq!(
            url("ws://127.0.0.1:8080"),
            Ok("ws://127.0.0.1:8080/ws/demo".into())
        );
        assert_eq!(
            url("wss://example.org/"),
            Ok("wss://example.org/ws/demo".into())
        );
        assert_eq!(url("http://h:1"), Ok("ws://h:1/ws/demo".into()));
        assert_eq!(url("HTTPS://h"), Ok("wss://h/ws/demo".into()));
        assert_eq!(url("ws://h/prefix/"), Ok("ws://h/prefix/ws/demo".into()));
    }

    #[test]
    fn refuses_other_schemes_and_empty_hosts() {
        assert!(url("ftp://h").is_err());
        assert!(url("127.0.0.1:8080").is_err());
        assert!(url("ws://").is_err());
    }
}
