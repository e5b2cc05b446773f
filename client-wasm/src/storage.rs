//! Where downloads are kept, and what is needed to resume them after a reload: a dedicated
//! worker (`js/storage-worker.js`) keeps them in the best storage the origin has ([`Tier`]):
//! the Origin Private File System through synchronous access handles, so each piece goes to
//! its offset on disk as it arrives and memory stays bounded whatever the file size; else
//! IndexedDB (plain `http://` from a LAN address); else the worker's memory, bounded.
//!
//! Each call posts its request at once and returns a future for the reply; the worker handles
//! requests in order, so a read sees every write posted before it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, ArrayBuffer, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobPropertyBag, MessageEvent, Url, Worker};

use crate::error::{ClientError, describe};

const WORKER_SOURCE: &str = include_str!("../js/storage-worker.js");

/// Where the worker keeps content, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// The Origin Private File System (a secure context).
    Opfs,
    /// IndexedDB: works in an insecure context too; slower.
    IndexedDb,
    /// The worker's memory, bounded; nothing survives a reload.
    Memory,
}

impl Tier {
    /// The name the API uses (`swarm.storage`, the `storage` option of `join`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Opfs => "opfs",
            Self::IndexedDb => "indexeddb",
            Self::Memory => "memory",
        }
    }

    /// The tier named `name`.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "opfs" => Some(Self::Opfs),
            "indexeddb" => Some(Self::IndexedDb),
            "memory" => Some(Self::Memory),
            _ => None,
        }
    }
}

/// What the worker found when it started.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    /// The tier it uses.
    pub(crate) tier: Tier,
    /// Whether it can hash pieces (`crypto.subtle`, a secure context).
    pub(crate) hashing: bool,
    /// Why each better tier was passed over.
    pub(crate) skipped: Vec<String>,
}

/// One content the storage keeps from before, as its `list` describes it.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The file name in storage (the content id).
    pub(crate) name: String,
    /// The encoded manifest.
    pub(crate) manifest: Vec<u8>,
    /// For a download, which pieces are stored (bits, most significant first); `None` for
    /// a file shared from the user's disk, of which only the manifest is kept.
    pub(crate) have: Option<Vec<u8>>,
}

type Waiters = Rc<RefCell<HashMap<u32, (Function, Function)>>>;

/// Piece buffers the worker handed back after writing them, kept to be filled again.
type Spare = Rc<RefCell<Vec<ArrayBuffer>>>;

/// Most spare buffers kept (the worker gathers up to 4 MiB of pieces before it writes and
/// hands them back, so a few more than 16 pieces of 256 KiB).
const MAX_SPARE: usize = 32;

/// The storage worker and the replies it owes.
pub(crate) struct Storage {
    worker: Worker,
    url: String,
    next: Cell<u32>,
    waiting: Waiters,
    spare: Spare,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

/// How long the worker may take to say which tier it uses.
const START_MS: i32 = 10_000;

/// Rejects every reply still owed, with `reason`.
fn reject_all(waiting: &Waiters, reason: &str) {
    let owed: Vec<_> = waiting.borrow_mut().drain().collect();
    for (_, (_, reject)) in owed {
        let _ = reject.call1(&JsValue::NULL, &reason.into());
    }
}

fn field(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &key.into()).unwrap_or_default()
}

impl Storage {
    /// Starts the worker, and has it pick the best tier from `prefer` down (with the memory
    /// tier bounded to `memory_limit` bytes if given, for tests).
    pub(crate) async fn start(
        prefer: Tier,
        memory_limit: Option<usize>,
    ) -> Result<(Self, Started), ClientError> {
        let storage = Self::spawn()?;
        let request = Object::new();
        let _ = Reflect::set(&request, &"op".into(), &"init".into());
        let _ = Reflect::set(&request, &"prefer".into(), &prefer.as_str().into());
        if let Some(limit) = memory_limit {
            let _ = Reflect::set(&request, &"memoryLimit".into(), &(limit as f64).into());
        }
        let reply = storage.call(&request, None);
        // A worker that never starts (one the page's Content-Security-Policy blocks may not
        // even fire `error`) must not hold up `join`.
        let waiting = Rc::clone(&storage.waiting);
        let _deadline = crate::timer::Timeout::start(START_MS, move || {
            reject_all(
                &waiting,
                "the storage worker did not start (blocked by the page's Content-Security-Policy?)",
            );
        });
        let reply = reply.await?;
        let tier = field(&reply, "tier")
            .as_string()
            .and_then(|t| Tier::parse(&t))
            .ok_or_else(|| ClientError::Storage("the storage worker named no tier".into()))?;
        let skipped = Array::from(&field(&reply, "skipped"))
            .iter()
            .filter_map(|reason| reason.as_string())
            .collect();
        let started = Started {
            tier,
            hashing: field(&reply, "hashing").as_bool() == Some(true),
            skipped,
        };
        Ok((storage, started))
    }

    fn spawn() -> Result<Self, ClientError> {
        let failed = |err: JsValue| ClientError::Storage(describe(&err));
        let parts = Array::of1(&WORKER_SOURCE.into());
        let options = BlobPropertyBag::new();
        options.set_type("text/javascript");
        let blob = Blob::new_with_str_sequence_and_options(&parts, &options).map_err(failed)?;
        let url = Url::create_object_url_with_blob(&blob).map_err(failed)?;
        let worker = Worker::new(&url).map_err(failed)?;
        let waiting: Waiters = Rc::default();
        let spare: Spare = Rc::default();
        let on_message = {
            let waiting = Rc::clone(&waiting);
            let spare = Rc::clone(&spare);
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let reply = event.data();
                if let Ok(buffer) = field(&reply, "buffer").dyn_into::<ArrayBuffer>() {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < MAX_SPARE {
                        spare.push(buffer);
                    }
                }
                let Some(seq) = field(&reply, "seq").as_f64() else {
                    return;
                };
                let Some((resolve, reject)) = waiting.borrow_mut().remove(&(seq as u32)) else {
                    return;
                };
                if field(&reply, "ok").as_bool() == Some(true) {
                    let _ = resolve.call1(&JsValue::NULL, &field(&reply, "data"));
                } else {
                    let _ = reject.call1(&JsValue::NULL, &field(&reply, "error"));
                }
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let on_error = {
            let waiting = Rc::clone(&waiting);
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_event: web_sys::Event| {
                reject_all(&waiting, "the storage worker failed to load or stopped");
            })
        };
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self {
            _on_error: on_error,
            worker,
            url,
            next: Cell::new(0),
            waiting,
            spare,
            _on_message: on_message,
        })
    }

    /// Posts `request` now; the future resolves with the reply's `data`.
    fn call(
        &self,
        request: &Object,
        transfer: Option<&JsValue>,
    ) -> impl Future<Output = Result<JsValue, ClientError>> + use<> {
        let seq = self.next.get();
        self.next.set(seq.wrapping_add(1));
        let _ = Reflect::set(request, &"seq".into(), &seq.into());
        let waiting = Rc::clone(&self.waiting);
        let reply = Promise::new(&mut |resolve, reject| {
            waiting.borrow_mut().insert(seq, (resolve, reject));
        });
        let posted = match transfer {
            Some(buffer) => self
                .worker
                .post_message_with_transfer(request, &Array::of1(buffer)),
            None => self.worker.post_message(request),
        };
        if let Err(err) = &posted {
            self.waiting.borrow_mut().remove(&seq);
            tracing::warn!(error = %describe(err), "cannot post to the storage worker");
        }
        async move {
            posted.map_err(|err| ClientError::Storage(describe(&err)))?;
            JsFuture::from(reply)
                .await
                .map_err(|err| ClientError::Storage(describe(&err)))
        }
    }

    fn request(op: &str, name: &str) -> Object {
        let request = Object::new();
        let _ = Reflect::set(&request, &"op".into(), &op.into());
        let _ = Reflect::set(&request, &"name".into(), &name.into());
        request
    }

    /// Creates (or reopens, keeping what it holds) the download `name` of `size` bytes in
    /// pieces of `piece_size`, and keeps its encoded `manifest` beside it.
    pub(crate) fn open(
        &self,
        name: &str,
        size: u64,
        piece_size: u32,
        manifest: &[u8],
    ) -> impl Future<Output = Result<(), ClientError>> + use<> {
        let request = Self::request("open", name);
        let _ = Reflect::set(&request, &"size".into(), &(size as f64).into());
        let _ = Reflect::set(&request, &"pieceSize".into(), &piece_size.into());
        let _ = Reflect::set(&request, &"manifest".into(), &bytes_buffer(manifest));
        let reply = self.call(&request, None);
        async move { reply.await.map(drop) }
    }

    /// Keeps the encoded `manifest` of a file shared from the user's disk (not its bytes),
    /// so that after a reload it is listed as not available until shared again.
    pub(crate) fn remember(
        &self,
        name: &str,
        manifest: &[u8],
    ) -> impl Future<Output = Result<(), ClientError>> + use<> {
        let request = Self::request("remember", name);
        let _ = Reflect::set(&request, &"manifest".into(), &bytes_buffer(manifest));
        let reply = self.call(&request, None);
        async move { reply.await.map(drop) }
    }

    /// Writes piece `piece`, `data`, at `offset` of file `name`, and marks it stored. With
    /// `sha256`, the worker hashes `data` first and writes it only if it matches; the future
    /// says whether it did (always `true` without).
    pub(crate) fn write(
        &self,
        name: &str,
        offset: u64,
        piece: u32,
        data: &[u8],
        sha256: Option<&[u8; 32]>,
    ) -> impl Future<Output = Result<bool, ClientError>> + use<> {
        let request = Self::request("write", name);
        // A buffer the worker handed back if one fits: a fresh one is allocated and faulted
        // in, which cost more than the copy (measured). `Uint8Array::from` would copy from a
        // view of the module's memory byte by byte; `set` is one memcpy.
        let len = data.len() as u32;
        let reused = self
            .spare
            .borrow_mut()
            .pop()
            .filter(|b| b.byte_length() == len);
        let bytes = match reused {
            Some(buffer) => Uint8Array::new(&buffer),
            None => Uint8Array::new_with_length(len),
        };
        bytes.copy_from(data);
        let buffer = bytes.buffer();
        let _ = Reflect::set(&request, &"offset".into(), &(offset as f64).into());
        let _ = Reflect::set(&request, &"piece".into(), &piece.into());
        let _ = Reflect::set(&request, &"data".into(), &buffer);
        if let Some(hash) = sha256 {
            let _ = Reflect::set(&request, &"sha256".into(), &Uint8Array::from(&hash[..]));
        }
        let reply = self.call(&request, Some(&buffer));
        async move { Ok(reply.await?.as_bool() != Some(false)) }
    }

    /// Reads `len` bytes at `offset` of file `name`.
    pub(crate) fn read(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<Vec<u8>, ClientError>> + use<> {
        let request = Self::request("read", name);
        let _ = Reflect::set(&request, &"offset".into(), &(offset as f64).into());
        let _ = Reflect::set(&request, &"len".into(), &len.into());
        let reply = self.call(&request, None);
        async move { Ok(Uint8Array::new(&reply.await?).to_vec()) }
    }

    /// Whether the `len` stored bytes at `offset` of file `name` hash to `sha256` (hashed by
    /// the worker: only when it said it can).
    pub(crate) fn check(
        &self,
        name: &str,
        offset: u64,
        len: u32,
        sha256: &[u8; 32],
    ) -> impl Future<Output = Result<bool, ClientError>> + use<> {
        let request = Self::request("check", name);
        let _ = Reflect::set(&request, &"offset".into(), &(offset as f64).into());
        let _ = Reflect::set(&request, &"len".into(), &len.into());
        let _ = Reflect::set(&request, &"sha256".into(), &Uint8Array::from(&sha256[..]));
        let reply = self.call(&request, None);
        async move { Ok(reply.await?.as_bool() == Some(true)) }
    }

    /// Finishes download `name` (every piece is stored) and hands out the file as a Blob,
    /// backed by the storage rather than by memory where the tier allows it.
    pub(crate) fn close(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Blob, ClientError>> + use<> {
        let reply = self.call(&Self::request("close", name), None);
        async move { blob_reply(reply.await?) }
    }

    /// The complete file `name` kept from before, as a Blob.
    pub(crate) fn file(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Blob, ClientError>> + use<> {
        let reply = self.call(&Self::request("file", name), None);
        async move { blob_reply(reply.await?) }
    }

    /// Deletes `name`: its data, its manifest and its stored pieces.
    pub(crate) fn remove(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ClientError>> + use<> {
        let reply = self.call(&Self::request("remove", name), None);
        async move { reply.await.map(drop) }
    }

    /// Everything kept from before.
    pub(crate) fn list(&self) -> impl Future<Output = Result<Vec<Kept>, ClientError>> + use<> {
        let request = Object::new();
        let _ = Reflect::set(&request, &"op".into(), &"list".into());
        let reply = self.call(&request, None);
        async move {
            let entries = Array::from(&reply.await?);
            Ok(entries
                .iter()
                .filter_map(|entry| {
                    let name = field(&entry, "name").as_string()?;
                    let manifest = field(&entry, "manifest");
                    let manifest = manifest.dyn_ref::<ArrayBuffer>()?;
                    let have = field(&entry, "have");
                    let have = (field(&entry, "kind").as_string().as_deref() == Some("download"))
                        .then(|| {
                            have.dyn_ref::<Uint8Array>()
                                .map(Uint8Array::to_vec)
                                .unwrap_or_default()
                        });
                    Some(Kept {
                        name,
                        manifest: Uint8Array::new(manifest).to_vec(),
                        have,
                    })
                })
                .collect())
        }
    }

    /// `(quota, usage)` of the tier in bytes, if it says.
    pub(crate) fn estimate(
        &self,
    ) -> impl Future<Output = Result<Option<(f64, f64)>, ClientError>> + use<> {
        let request = Object::new();
        let _ = Reflect::set(&request, &"op".into(), &"estimate".into());
        let reply = self.call(&request, None);
        async move {
            let reply = reply.await?;
            let quota = field(&reply, "quota").as_f64();
            Ok(quota.map(|quota| (quota, field(&reply, "usage").as_f64().unwrap_or(0.0))))
        }
    }
}

/// `bytes` as an ArrayBuffer of their own.
fn bytes_buffer(bytes: &[u8]) -> JsValue {
    Uint8Array::from(bytes).buffer().into()
}

fn blob_reply(reply: JsValue) -> Result<Blob, ClientError> {
    reply
        .dyn_into::<Blob>()
        .map_err(|_| ClientError::Storage("the storage worker sent no file".into()))
}

/// Reads `len` bytes at `offset` of a Blob (a shared `File`, or a finished download).
pub(crate) async fn read_blob(blob: &Blob, offset: u64, len: u32) -> Result<Vec<u8>, ClientError> {
    let failed = |err: JsValue| ClientError::Storage(describe(&err));
    let end = offset + u64::from(len);
    let slice = blob
        .slice_with_f64_and_f64(offset as f64, end as f64)
        .map_err(failed)?;
    let buffer = JsFuture::from(slice.array_buffer()).await.map_err(failed)?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.worker.set_onmessage(None);
        self.worker.set_onerror(None);
        self.worker.terminate();
        let _ = Url::revoke_object_url(&self.url);
    }
}
