//! Media files that play while they download. A service worker (`www/swarm-sw.js`) answers
//! HTTP range requests for `stream/<contentId>`; it asks this page (through `js/stream.js`)
//! for the bytes, and they come from here: the download of that content gets a priority
//! window at the requested position, and the reply goes out as soon as those pieces are
//! verified and stored. So `<video src=…>` plays any format the browser supports, seeks
//! anywhere, and needs no demuxing in our code.

use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use swarm_protocol::ContentId;
use wasm_bindgen::prelude::{Closure, wasm_bindgen};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::error::{ClientError, describe};
use crate::session::Session;
use crate::storage;

/// Most bytes one range reply carries; the media element asks again for the rest.
const REPLY_LEN: u64 = 1024 * 1024;

#[wasm_bindgen(module = "/js/stream.js")]
extern "C" {
    #[wasm_bindgen(js_name = addRangeReader)]
    fn add_range_reader(read: &Function) -> Function;

    #[wasm_bindgen(js_name = registerStreamWorker)]
    fn register_stream_worker(url: &str) -> Promise;
}

/// A range request waiting for its pieces.
pub(crate) struct RangeWaiter {
    id: ContentId,
    start: u64,
    /// Bytes that must be there to answer.
    len: u64,
    /// Bytes the player wants, fetched first.
    wanted: u64,
    resolve: Function,
    reject: Function,
}

/// The registration of this session's range reader with the page bridge.
pub(crate) struct RangeReader {
    remove: Function,
    _read: Closure<dyn FnMut(String, f64, f64) -> Promise>,
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        let _ = self.remove.call0(&JsValue::NULL);
    }
}

impl Session {
    /// The URL under which `id` plays while it downloads (see the module docs). Starts the
    /// download if needed.
    pub(crate) async fn stream_url(
        self: &Rc<Self>,
        id: &str,
        worker: &str,
    ) -> Result<String, ClientError> {
        self.check_joined()?;
        let content: ContentId = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        let complete = self
            .files_list()
            .iter()
            .any(|f| f.id == content && f.complete);
        if !complete {
            self.start_download(id)?;
        }
        self.install_range_reader();
        let scope = JsFuture::from(register_stream_worker(worker))
            .await
            .map_err(|err| ClientError::Streaming(describe(&err)))?;
        let scope = scope.as_string().unwrap_or_default();
        Ok(format!("{scope}stream/{content}"))
    }

    fn install_range_reader(self: &Rc<Self>) {
        if self.range_reader.borrow().is_some() {
            return;
        }
        let session = Rc::downgrade(self);
        let read = Closure::<dyn FnMut(String, f64, f64) -> Promise>::new(
            move |id: String, start: f64, end: f64| {
                let session = session.clone();
                future_to_promise(async move {
                    let session = session.upgrade().ok_or(ClientError::Left)?;
                    let end = (end >= 0.0).then_some(end as u64);
                    Ok(session.read_range(&id, start as u64, end).await?)
                })
            },
        );
        let remove = add_range_reader(read.as_ref().unchecked_ref());
        *self.range_reader.borrow_mut() = Some(RangeReader {
            remove,
            _read: read,
        });
    }

    /// Bytes `start..=end` of `id` (at most [`REPLY_LEN`]), once they are verified here:
    /// `{size, mime, start, data}`.
    async fn read_range(
        self: &Rc<Self>,
        id: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<JsValue, ClientError> {
        self.check_joined()?;
        let content: ContentId = id
            .parse()
            .map_err(|_| ClientError::UnknownContent(id.to_owned()))?;
        let info = self
            .files_list()
            .into_iter()
            .find(|f| f.id == content)
            .ok_or_else(|| ClientError::UnknownContent(id.to_owned()))?;
        if start >= info.size {
            return Err(ClientError::RangeNotSatisfiable { size: info.size });
        }
        let last = end.unwrap_or(u64::MAX).min(info.size - 1);
        let mut len = (last.saturating_sub(start) + 1).min(REPLY_LEN);
        if !info.complete {
            // The download may have been cancelled since: it runs again for the player.
            self.start_download(id)?;
            // Answer as soon as the piece at `start` is here, with as much as follows it
            // without a gap: the element asks again for the rest.
            self.wait_for_bytes(content, start, 1, len).await?;
            len = len.min(self.files.stored_run(content, start, len)).max(1);
        }
        let blob = self.files.blob(content);
        // At most REPLY_LEN, which fits in u32.
        let bytes = match blob {
            Some(blob) => storage::read_blob(&blob, start, len as u32).await?,
            None => self.files.read_stored(content, start, len as u32).await?,
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
        self: &Rc<Self>,
        id: ContentId,
        start: u64,
        len: u64,
        wanted: u64,
    ) -> Result<(), ClientError> {
        let promise = Promise::new(&mut |resolve, reject| {
            self.range_waiters.borrow_mut().push(RangeWaiter {
                id,
                start,
                len,
                wanted,
                resolve,
                reject,
            });
        });
        self.refresh_ranges(id);
        JsFuture::from(promise)
            .await
            .map(drop)
            .map_err(|err| ClientError::Streaming(describe(&err)))
    }

    /// Answers the waiters of `id` whose bytes are stored, and points the download's
    /// priority at the newest one still waiting.
    pub(crate) fn refresh_ranges(self: &Rc<Self>, id: ContentId) {
        let mut newest_waiting = None;
        self.range_waiters.borrow_mut().retain(|waiter| {
            if waiter.id != id {
                return true;
            }
            if self.files.has_bytes(id, waiter.start, waiter.len) {
                let _ = waiter.resolve.call0(&JsValue::NULL);
                return false;
            }
            newest_waiting = Some(waiter.start..waiter.start + waiter.wanted);
            true
        });
        if newest_waiting.is_some() {
            let out = self.files_set_priority(id, newest_waiting);
            self.apply_share(out);
        }
    }

    /// Leaving: every waiting range request fails.
    pub(crate) fn fail_all_ranges(&self) {
        for waiter in self.range_waiters.take() {
            let _ = waiter
                .reject
                .call1(&JsValue::NULL, &"the swarm left its room".into());
        }
    }

    /// The download of `id` failed: its range requests fail too.
    pub(crate) fn fail_ranges(&self, id: ContentId, err: &ClientError) {
        let message: JsValue = err.to_string().into();
        self.range_waiters.borrow_mut().retain(|waiter| {
            if waiter.id == id {
                let _ = waiter.reject.call1(&JsValue::NULL, &message);
                return false;
            }
            true
        });
    }
}
