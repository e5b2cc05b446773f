//! Where downloads are kept: files in the Origin Private File System, written by a dedicated
//! worker through synchronous access handles (`js/storage-worker.js`), so each piece goes to
//! its offset on disk as it arrives and memory stays bounded whatever the file size.
//!
//! Requests to the worker are answered in order; each call posts its request at once and
//! returns a future for the reply.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, ArrayBuffer, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::{Closure, wasm_bindgen};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobPropertyBag, MessageEvent, Url, Worker};

use crate::error::{ClientError, describe};

/// Name of the OPFS directory the worker keeps downloads in.
const DIRECTORY: &str = "swarm";

const WORKER_SOURCE: &str = include_str!("../js/storage-worker.js");

#[wasm_bindgen]
extern "C" {
    /// `navigator.storage` (`StorageManager`).
    type StorageManager;
    #[wasm_bindgen(method, js_name = getDirectory)]
    fn get_directory(this: &StorageManager) -> Promise;
    #[wasm_bindgen(method)]
    fn estimate(this: &StorageManager) -> Promise;

    /// `FileSystemDirectoryHandle`.
    type DirectoryHandle;
    #[wasm_bindgen(method, js_name = getDirectoryHandle)]
    fn get_directory_handle(this: &DirectoryHandle, name: &str, options: &JsValue) -> Promise;
    #[wasm_bindgen(method, js_name = getFileHandle)]
    fn get_file_handle(this: &DirectoryHandle, name: &str) -> Promise;

    /// `FileSystemFileHandle`.
    type FileHandle;
    #[wasm_bindgen(method, js_name = getFile)]
    fn get_file(this: &FileHandle) -> Promise;
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
}

fn storage_manager() -> Result<StorageManager, ClientError> {
    let unavailable = |reason: &str| ClientError::Storage(reason.to_owned());
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into())
        .map_err(|_| unavailable("no navigator"))?;
    let storage = Reflect::get(&navigator, &"storage".into())
        .ok()
        .filter(|s| !s.is_undefined())
        .ok_or_else(|| unavailable("navigator.storage is not available (insecure context?)"))?;
    Ok(storage.unchecked_into())
}

/// Bytes the browser will still let this origin store, if it says.
pub(crate) async fn free_space() -> Option<f64> {
    let estimate = JsFuture::from(storage_manager().ok()?.estimate())
        .await
        .ok()?;
    let number = |key: &str| Reflect::get(&estimate, &key.into()).ok()?.as_f64();
    Some(number("quota")? - number("usage").unwrap_or(0.0))
}

impl Storage {
    /// Starts the worker.
    pub(crate) fn start() -> Result<Self, ClientError> {
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
                let field = |key: &str| Reflect::get(&reply, &key.into()).unwrap_or_default();
                if let Ok(buffer) = field("buffer").dyn_into::<ArrayBuffer>() {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < MAX_SPARE {
                        spare.push(buffer);
                    }
                }
                let Some(seq) = field("seq").as_f64() else {
                    return;
                };
                let Some((resolve, reject)) = waiting.borrow_mut().remove(&(seq as u32)) else {
                    return;
                };
                if field("ok").as_bool() == Some(true) {
                    let _ = resolve.call1(&JsValue::NULL, &field("data"));
                } else {
                    let _ = reject.call1(&JsValue::NULL, &field("error"));
                }
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Ok(Self {
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

    /// Creates (or reopens) file `name` with `size` bytes.
    pub(crate) fn open(
        &self,
        name: &str,
        size: u64,
    ) -> impl Future<Output = Result<(), ClientError>> + use<> {
        let request = Self::request("open", name);
        let _ = Reflect::set(&request, &"size".into(), &(size as f64).into());
        let reply = self.call(&request, None);
        async move { reply.await.map(drop) }
    }

    /// Writes `data` at `offset` of file `name`. With `sha256`, the worker hashes `data`
    /// first and writes it only if it matches; the future says whether it did (always
    /// `true` without).
    pub(crate) fn write(
        &self,
        name: &str,
        offset: u64,
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
        let _ = Reflect::set(&request, &"data".into(), &buffer);
        if let Some(hash) = sha256 {
            let _ = Reflect::set(&request, &"sha256".into(), &Uint8Array::from(&hash[..]));
        }
        let reply = self.call(&request, Some(&buffer));
        async move { Ok(reply.await?.as_bool() != Some(false)) }
    }

    /// Whether the worker can hash pieces (`crypto.subtle`, in a secure context).
    pub(crate) fn can_hash() -> bool {
        let global = js_sys::global();
        Reflect::get(&global, &"crypto".into())
            .and_then(|crypto| Reflect::get(&crypto, &"subtle".into()))
            .is_ok_and(|subtle| subtle.is_object())
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

    /// Flushes and closes file `name`, so it can be read as a `File`.
    pub(crate) fn close(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ClientError>> + use<> {
        let reply = self.call(&Self::request("close", name), None);
        async move { reply.await.map(drop) }
    }

    /// Deletes file `name`.
    pub(crate) fn remove(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), ClientError>> + use<> {
        let reply = self.call(&Self::request("remove", name), None);
        async move { reply.await.map(drop) }
    }
}

/// The closed file `name` as a `File` (a Blob backed by the disk, not by memory).
pub(crate) async fn file(name: &str) -> Result<web_sys::File, ClientError> {
    let failed = |err: JsValue| ClientError::Storage(describe(&err));
    let root: DirectoryHandle = JsFuture::from(storage_manager()?.get_directory())
        .await
        .map_err(failed)?
        .unchecked_into();
    let dir: DirectoryHandle =
        JsFuture::from(root.get_directory_handle(DIRECTORY, &JsValue::UNDEFINED))
            .await
            .map_err(failed)?
            .unchecked_into();
    let handle: FileHandle = JsFuture::from(dir.get_file_handle(name))
        .await
        .map_err(failed)?
        .unchecked_into();
    Ok(JsFuture::from(handle.get_file())
        .await
        .map_err(failed)?
        .unchecked_into())
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
        self.worker.terminate();
        let _ = Url::revoke_object_url(&self.url);
    }
}
