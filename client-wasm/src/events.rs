//! Listeners registered with `on(event, listener)` on a `Swarm` or a `Download`.

use js_sys::Function;
use tracing::warn;
use wasm_bindgen::JsValue;

use crate::error::ClientError;

/// The events a `Swarm` emits.
pub(crate) const SWARM_EVENTS: &[&str] = &[
    "server",
    "peer-joined",
    "peer-left",
    "peer-rejected",
    "message",
    "file",
    "files",
    "stream",
    "stream-ended",
    "stored",
];

/// The events a `Download` emits.
pub(crate) const DOWNLOAD_EVENTS: &[&str] = &["progress", "done", "error", "bad-peer"];

/// The listeners of each event of one object, in registration order.
#[derive(Debug)]
pub(crate) struct Listeners {
    names: &'static [&'static str],
    by_event: Vec<Vec<Function>>,
}

impl Listeners {
    pub(crate) fn new(names: &'static [&'static str]) -> Self {
        Self {
            names,
            by_event: vec![Vec::new(); names.len()],
        }
    }

    fn index(&self, event: &str) -> Result<usize, ClientError> {
        self.names
            .iter()
            .position(|name| *name == event)
            .ok_or_else(|| ClientError::UnknownEvent {
                event: event.to_owned(),
                expected: self.names.join(", "),
            })
    }

    /// Checks the event name and the listener, then registers it.
    pub(crate) fn add(&mut self, event: &str, listener: JsValue) -> Result<(), ClientError> {
        let i = self.index(event)?;
        let listener = as_function(listener)?;
        self.by_event[i].push(listener);
        Ok(())
    }

    /// Removes one registration of `listener`; `false` if it was not registered.
    pub(crate) fn remove(&mut self, event: &str, listener: JsValue) -> Result<bool, ClientError> {
        let i = self.index(event)?;
        let listener = as_function(listener)?;
        let list = &mut self.by_event[i];
        Ok(match list.iter().position(|f| *f == listener) {
            Some(at) => {
                list.remove(at);
                true
            }
            None => false,
        })
    }

    /// A snapshot of the listeners of `event`, so they can be called without holding a borrow
    /// (a listener may call back into the object, even register more listeners).
    pub(crate) fn snapshot(&self, event: &str) -> Vec<Function> {
        self.index(event)
            .map(|i| self.by_event[i].clone())
            .unwrap_or_default()
    }

    pub(crate) fn clear(&mut self) {
        self.by_event.iter_mut().for_each(Vec::clear);
    }
}

fn as_function(listener: JsValue) -> Result<Function, ClientError> {
    use wasm_bindgen::JsCast;
    listener
        .dyn_into::<Function>()
        .map_err(|_| ClientError::NotAFunction)
}

/// Calls each listener with `args`. A listener that throws is reported on the console and
/// does not stop the others.
pub(crate) fn call_all(event: &str, listeners: &[Function], args: &[JsValue]) {
    for listener in listeners {
        let result = match args {
            [a] => listener.call1(&JsValue::NULL, a),
            [a, b] => listener.call2(&JsValue::NULL, a, b),
            _ => listener.call0(&JsValue::NULL),
        };
        if let Err(err) = result {
            warn!(event, error = %crate::error::describe(&err), "an event listener threw");
        }
    }
}
