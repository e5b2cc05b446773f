//! What one download tells the page: its progress, its outcome, and the listeners and
//! promises waiting for them. The shell changes it only while delivering its notices, with
//! nothing of its own borrowed, because every change here calls into JavaScript.

use std::cell::RefCell;

use js_sys::{Function, Object, Promise, Reflect};
use swarm_core::share::Progress;
use swarm_protocol::{ContentId, PeerId};
use wasm_bindgen::JsValue;
use web_sys::Blob;

use crate::error::ClientError;
use crate::events::{DOWNLOAD_EVENTS, Listeners, call_all};

enum Outcome {
    Pending,
    Done(Blob),
    Failed(JsValue),
}

/// The shared state behind every `Download` object for one content.
pub(crate) struct DownloadState {
    id: ContentId,
    /// The file's length.
    total: u64,
    listeners: RefCell<Listeners>,
    outcome: RefCell<Outcome>,
    waiters: RefCell<Vec<(Function, Function)>>,
    progress: RefCell<JsValue>,
}

impl DownloadState {
    pub(crate) fn new(id: ContentId, total: u64) -> Self {
        let progress = progress_object(&Progress::<PeerId> {
            received: 0,
            total,
            peers: 0,
            bytes_per_second: 0.0,
            from: Vec::new(),
        });
        Self {
            id,
            total,
            listeners: RefCell::new(Listeners::new(DOWNLOAD_EVENTS)),
            outcome: RefCell::new(Outcome::Pending),
            waiters: RefCell::new(Vec::new()),
            progress: RefCell::new(progress),
        }
    }

    /// The content id.
    pub(crate) fn id(&self) -> ContentId {
        self.id
    }

    /// The file's length.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The latest progress object.
    pub(crate) fn progress(&self) -> JsValue {
        self.progress.borrow().clone()
    }

    /// Whether it is still running (neither done nor failed).
    pub(crate) fn is_pending(&self) -> bool {
        matches!(*self.outcome.borrow(), Outcome::Pending)
    }

    /// Registers a listener (see `Download.on`).
    pub(crate) fn listen(&self, event: &str, listener: JsValue) -> Result<(), ClientError> {
        self.listeners.borrow_mut().add(event, listener)
    }

    /// A promise of the file (see `Download.blob`).
    pub(crate) fn blob(&self) -> Promise {
        match &*self.outcome.borrow() {
            Outcome::Done(file) => return Promise::resolve(&JsValue::from(file.clone())),
            Outcome::Failed(err) => return Promise::reject(err),
            Outcome::Pending => {}
        }
        Promise::new(&mut |resolve, reject| {
            self.waiters.borrow_mut().push((resolve, reject));
        })
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
