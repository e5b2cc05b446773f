//! Listeners registered with `swarm.on(event, listener)`.

use js_sys::Function;
use tracing::warn;
use wasm_bindgen::JsValue;

use crate::error::ClientError;

/// The events a `Swarm` emits, as listed in error messages.
pub(crate) const EVENT_NAMES: &str = "'peer-joined', 'peer-left', 'message'";

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// `(id)`: a data channel to a peer opened.
    PeerJoined,
    /// `(id)`: a peer that had joined is gone.
    PeerLeft,
    /// `(from, data)`: a message arrived; `data` is a string or a Uint8Array.
    Message,
}

impl EventKind {
    const ALL: [Self; 3] = [Self::PeerJoined, Self::PeerLeft, Self::Message];

    fn name(self) -> &'static str {
        match self {
            Self::PeerJoined => "peer-joined",
            Self::PeerLeft => "peer-left",
            Self::Message => "message",
        }
    }

    pub(crate) fn parse(name: &str) -> Result<Self, ClientError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| ClientError::UnknownEvent(name.to_owned()))
    }
}

/// The listeners of each event, in registration order.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    by_kind: [Vec<Function>; EventKind::ALL.len()],
}

impl Listeners {
    pub(crate) fn add(&mut self, kind: EventKind, listener: Function) {
        self.by_kind[kind as usize].push(listener);
    }

    /// Removes one registration of `listener`; `false` if it was not registered.
    pub(crate) fn remove(&mut self, kind: EventKind, listener: &Function) -> bool {
        let list = &mut self.by_kind[kind as usize];
        match list.iter().position(|f| f == listener) {
            Some(i) => {
                list.remove(i);
                true
            }
            None => false,
        }
    }

    /// A snapshot of the listeners, so they can be called without holding a borrow (a
    /// listener may call back into the swarm, even register more listeners).
    pub(crate) fn snapshot(&self, kind: EventKind) -> Vec<Function> {
        self.by_kind[kind as usize].clone()
    }

    pub(crate) fn clear(&mut self) {
        self.by_kind.iter_mut().for_each(Vec::clear);
    }
}

/// Calls each listener with `args`. A listener that throws is reported on the console and
/// does not stop the others.
pub(crate) fn call_all(kind: EventKind, listeners: &[Function], args: &[JsValue]) {
    for listener in listeners {
        let result = match args {
            [a] => listener.call1(&JsValue::NULL, a),
            [a, b] => listener.call2(&JsValue::NULL, a, b),
            _ => listener.call0(&JsValue::NULL),
        };
        if let Err(err) = result {
            warn!(
                event = kind.name(),
                error = %crate::error::describe(&err),
                "an event listener threw"
            );
        }
    }
}
