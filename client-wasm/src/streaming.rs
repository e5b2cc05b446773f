//! Media files that play while they download. A service worker (`www/swarm-sw.js`) answers
//! HTTP range requests for `stream/<contentId>`; it asks this page (through `js/stream.js`)
//! for the bytes, and they come from here: the download of that content gets a priority
//! window at the requested position, and the reply goes out as soon as those pieces are
//! verified and stored. So `<video src=…>` plays any format the browser supports, seeks
//! anywhere, and needs no demuxing in our code.
//!
//! Where no service worker can be registered (an insecure context, or a certificate the
//! browser only has an exception for), a WebM file plays through MediaSource instead, fed in
//! order from the same range reads (`mediaSourceUrl` in `js/stream.js`); other formats get
//! `streaming-unavailable` with both reasons.

use std::rc::{Rc, Weak};

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use swarm_protocol::ContentId;
use wasm_bindgen::prelude::{Closure, wasm_bindgen};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::error::{ClientError, describe};
use crate::ranges::RangeWaiter;
use crate::shell::Shell;
use crate::storage;

/// Most bytes one range reply carries; the media element asks again for the rest.
const REPLY_LEN: u64 = 1024 * 1024;

#[wasm_bindgen(module = "/js/stream.js")]
extern "C" {
    #[wasm_bindgen(js_name = addRangeReader)]
    fn add_range_reader(read: &Function) -> Function;

    #[wasm_bindgen(js_name = registerStreamWorker)]
    fn register_stream_worker(url: &str) -> Promise;

    #[wasm_bindgen(js_name = mediaSourceUrl)]
    fn media_source_url(id: &str) -> Promise;
}

/// The registration of a swarm's range reader with the page bridge.
pub(crate) struct RangeReader {
    remove: Function,
    _read: Closure<dyn FnMut(String, f64, f64) -> Promise>,
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        let _ = self.remove.call0(&JsValue::NULL);
    }
}

/// The URL under which `id` plays while it downloads (see the module docs). Starts the
/// download if needed.
pub(crate) async fn stream_url(
    shell: &Rc<Shell>,
    id: &str,
    worker: &str,
) -> Result<String, ClientError> {
    let content: ContentId = id
        .parse()
        .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
    shell.with(|state| {
        state.check_joined()?;
        let complete = state
            .files_list()
            .iter()
            .any(|f| f.id == content && f.complete);
        if !complete {
            state.start_download(id)?;
        }
        Ok::<_, ClientError>(())
    })?;
    let worker_failed = match JsFuture::from(register_stream_worker(worker)).await {
        Ok(scope) => {
            let scope = scope.as_string().unwrap_or_default();
            return Ok(format!("{scope}stream/{content}"));
        }
        Err(err) => describe(&err),
    };
    // No service worker here: a WebM plays through MediaSource instead.
    match JsFuture::from(media_source_url(id)).await {
        Ok(url) => Ok(url.as_string().unwrap_or_default()),
        Err(err) => Err(ClientError::Streaming(format!(
            "{worker_failed}; and {}",
            describe(&err)
        ))),
    }
}

impl RangeReader {
    /// Registers a reader of `shell`'s contents with the page bridge; dropping it removes it.
    pub(crate) fn register(shell: Weak<Shell>) -> Self {
        let read = Closure::<dyn FnMut(String, f64, f64) -> Promise>::new(
            move |id: String, start: f64, end: f64| {
                let shell = shell.clone();
                future_to_promise(async move {
                    let shell = shell.upgrade().ok_or(ClientError::Left)?;
                    let end = (end >= 0.0).then_some(end as u64);
                    Ok(read_range(&shell, &id, start as u64, end).await?)
                })
            },
        );
        let remove = add_range_reader(read.as_ref().unchecked_ref());
        Self {
            remove,
            _read: read,
        }
    }
}

/// Bytes `start..=end` of `id` (at most [`REPLY_LEN`]), once they are verified here:
/// `{size, mime, start, data}`.
async fn read_range(
    shell: &Rc<Shell>,
    id: &str,
    start: u64,
    end: Option<u64>,
) -> Result<JsValue, ClientError> {
    let content: ContentId = id
        .parse()
        .map_err(|_| ClientError::UnknownContent(id.to_owned()))?;
    let info = shell.read(|state| {
        state.check_joined()?;
        state
            .files_list()
            .into_iter()
            .find(|f| f.id == content)
            .ok_or_else(|| ClientError::UnknownContent(id.to_owned()))
    })?;
    if start >= info.size {
        return Err(ClientError::RangeNotSatisfiable { size: info.size });
    }
    let last = end.unwrap_or(u64::MAX).min(info.size - 1);
    let mut len = (last.saturating_sub(start) + 1).min(REPLY_LEN);
    if !info.complete {
        // The download may have been cancelled since: it runs again for the player.
        shell.with(|state| state.start_download(id))?;
        // Answer as soon as the piece at `start` is here, with as much as follows it
        // without a gap: the element asks again for the rest.
        wait_for_bytes(shell, content, start, 1, len).await?;
        len = len
            .min(shell.read(|state| state.node.stored_run(content, start, len)))
            .max(1);
    }
    let (blob, stored) = shell.with(|state| (state.blob(content), state.storage()));
    // At most REPLY_LEN, which fits in u32.
    let bytes = match blob {
        Some(blob) => storage::read_blob(&blob, start, len as u32).await?,
        None => {
            stored?
                .read(&content.to_string(), start, len as u32)
                .await?
        }
    };
    let reply = Object::new();
    let _ = Reflect::set(&reply, &"size".into(), &(info.size as f64).into());
    let _ = Reflect::set(&reply, &"mime".into(), &info.mime.as_str().into());
    let _ = Reflect::set(&reply, &"start".into(), &(start as f64).into());
    let _ = Reflect::set(&reply, &"data".into(), &Uint8Array::from(bytes.as_slice()));
    Ok(reply.into())
}

/// Resolves once `len` bytes at `start` of `id` are stored; meanwhile the `wanted` bytes
/// from `start` are fetched first.
async fn wait_for_bytes(
    shell: &Rc<Shell>,
    id: ContentId,
    start: u64,
    len: u64,
    wanted: u64,
) -> Result<(), ClientError> {
    let mut waiter = None;
    let promise = Promise::new(&mut |resolve, reject| {
        waiter = Some(RangeWaiter {
            id,
            start,
            len,
            wanted,
            resolve,
            reject,
        });
    });
    if let Some(waiter) = waiter {
        shell.with(|state| state.wait_for_range(waiter));
    }
    JsFuture::from(promise)
        .await
        .map(drop)
        .map_err(|err| ClientError::Streaming(describe(&err)))
}
