//! The `Download` class: one content being fetched, with progress events and the finished
//! file as a Blob.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use js_sys::{Function, Object, Promise, Reflect};
use swarm_core::share::Progress;
use swarm_protocol::{ContentId, PeerId};
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;
use web_sys::Blob;

use crate::error::ClientError;
use crate::events::{DOWNLOAD_EVENTS, Listeners, call_all};
use crate::session::Session;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Where a download stands. */
export interface DownloadProgress {
  /** Verified bytes. */
  received: number;
  /** File length in bytes. */
  total: number;
  /** Peers it is fetching from. */
  peers: number;
  /** Speed over the last two seconds. */
  bytesPerSecond: number;
  /** Piece bytes received from each peer so far, by peer id. */
  from: Record<string, number>;
}

/** Events a Download emits, and the arguments its listeners receive. */
export interface DownloadEvents {
  "progress": (progress: DownloadProgress) => void;
  /** Every piece is verified and stored; the file is ready. */
  "done": (file: Blob) => void;
  /** The download ended without the file (`err.code`: "cancelled", "storage", "storage-quota", …). */
  "error": (err: Error) => void;
  /** A peer sent data that failed verification and is no longer used for this file. */
  "bad-peer": (peerId: string, reason: string) => void;
}
"#;

enum Outcome {
    Pending,
    Done(Blob),
    Failed(JsValue),
}

/// The shared state behind every `Download` object for one content.
pub(crate) struct DownloadState {
    id: ContentId,
    session: Weak<Session>,
    listeners: RefCell<Listeners>,
    outcome: RefCell<Outcome>,
    waiters: RefCell<Vec<(Function, Function)>>,
    progress: RefCell<JsValue>,
    cancelled: std::cell::Cell<bool>,
}

impl DownloadState {
    pub(crate) fn new(id: ContentId, session: Weak<Session>, total: u64) -> Rc<Self> {
        let progress = progress_object(&Progress::<PeerId> {
            received: 0,
            total,
            peers: 0,
            bytes_per_second: 0.0,
            from: Vec::new(),
        });
        Rc::new(Self {
            id,
            session,
            listeners: RefCell::new(Listeners::new(DOWNLOAD_EVENTS)),
            outcome: RefCell::new(Outcome::Pending),
            waiters: RefCell::new(Vec::new()),
            progress: RefCell::new(progress),
            cancelled: std::cell::Cell::new(false),
        })
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    pub(crate) fn on_progress(&self, progress: &Progress<PeerId>) {
        let object = progress_object(progress);
        *self.progress.borrow_mut() = object.clone();
        self.emit("progress", &[object]);
    }

    pub(crate) fn on_bad_peer(&self, peer: PeerId, reason: &str) {
        self.emit("bad-peer", &[peer.to_string().into(), reason.into()]);
    }

    /// The file is complete.
    pub(crate) fn complete(&self, file: Blob) {
        if !matches!(*self.outcome.borrow(), Outcome::Pending) {
            return;
        }
        // Everything is here, whatever the last progress event said.
        let progress = self.progress.borrow().clone();
        if let Ok(total) = Reflect::get(&progress, &"total".into()) {
            let _ = Reflect::set(&progress, &"received".into(), &total);
        }
        *self.outcome.borrow_mut() = Outcome::Done(file.clone());
        for (resolve, _) in self.waiters.take() {
            let _ = resolve.call1(&JsValue::NULL, &file);
        }
        self.emit("done", &[file.into()]);
    }

    /// The download ended without the file.
    pub(crate) fn fail(&self, err: ClientError) {
        if !matches!(*self.outcome.borrow(), Outcome::Pending) {
            return;
        }
        let err: JsValue = err.into();
        *self.outcome.borrow_mut() = Outcome::Failed(err.clone());
        for (_, reject) in self.waiters.take() {
            let _ = reject.call1(&JsValue::NULL, &err);
        }
        self.emit("error", &[err]);
    }

    fn emit(&self, event: &str, args: &[JsValue]) {
        let listeners = self.listeners.borrow().snapshot(event);
        call_all(event, &listeners, args);
    }
}

fn progress_object(progress: &Progress<PeerId>) -> JsValue {
    let object = Object::new();
    let set = |key: &str, value: JsValue| {
        let _ = Reflect::set(&object, &key.into(), &value);
    };
    set("received", (progress.received as f64).into());
    set("total", (progress.total as f64).into());
    set("peers", (progress.peers as u32).into());
    set("bytesPerSecond", progress.bytes_per_second.into());
    let from = Object::new();
    for (peer, bytes) in &progress.from {
        let _ = Reflect::set(&from, &peer.to_string().into(), &(*bytes as f64).into());
    }
    set("from", from.into());
    object.into()
}

/// One content being fetched from the room.
#[wasm_bindgen]
pub struct Download {
    state: Rc<DownloadState>,
}

impl Download {
    pub(crate) fn new(state: Rc<DownloadState>) -> Self {
        Self { state }
    }
}

#[wasm_bindgen]
impl Download {
    /// The content id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.state.id.to_string()
    }

    /// The latest progress.
    #[wasm_bindgen(getter, unchecked_return_type = "DownloadProgress")]
    pub fn progress(&self) -> JsValue {
        self.state.progress.borrow().clone()
    }

    /// Registers `listener` for `event`: `'progress'`, `'done'`, `'error'` or `'bad-peer'`.
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "keyof DownloadEvents")] event: &str,
        #[wasm_bindgen(unchecked_param_type = "DownloadEvents[keyof DownloadEvents]")]
        listener: JsValue,
    ) -> Result<(), JsValue> {
        Ok(self.state.listeners.borrow_mut().add(event, listener)?)
    }

    /// Resolves with the file (a Blob backed by the browser's storage, not by memory) once
    /// every piece is verified; rejects with a `SwarmError` if the download fails or is
    /// cancelled.
    #[wasm_bindgen(unchecked_return_type = "Promise<Blob>")]
    pub fn blob(&self) -> Promise {
        match &*self.state.outcome.borrow() {
            Outcome::Done(file) => return Promise::resolve(&JsValue::from(file.clone())),
            Outcome::Failed(err) => return Promise::reject(err),
            Outcome::Pending => {}
        }
        let state = Rc::clone(&self.state);
        Promise::new(&mut |resolve, reject| {
            state.waiters.borrow_mut().push((resolve, reject));
        })
    }

    /// Stops the download and deletes what it stored; `blob()` rejects with `cancelled`.
    /// Does nothing once the download has finished.
    pub fn cancel(&self) {
        if !matches!(*self.state.outcome.borrow(), Outcome::Pending) {
            return;
        }
        self.state.cancelled.set(true);
        match self.state.session.upgrade() {
            Some(session) => session.cancel_download(self.state.id),
            None => self
                .state
                .fail(ClientError::Cancelled(self.state.id.to_string())),
        }
    }
}
