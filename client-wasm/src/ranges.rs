//! Range requests of the media player waiting for their pieces (see [`crate::streaming`]):
//! each is answered as soon as its bytes are verified and stored, and the download's
//! priority window follows the newest one still waiting.

use js_sys::Function;
use swarm_protocol::ContentId;
use wasm_bindgen::JsValue;

use crate::error::ClientError;
use crate::notice::Notice;
use crate::state::State;
use crate::timer::now_ms;

/// A range request waiting for its pieces.
pub(crate) struct RangeWaiter {
    pub(crate) id: ContentId,
    pub(crate) start: u64,
    /// Bytes that must be there to answer.
    pub(crate) len: u64,
    /// Bytes the player wants, fetched first.
    pub(crate) wanted: u64,
    pub(crate) resolve: Function,
    pub(crate) reject: Function,
}

impl State {
    /// Waits for a range: resolved at once if its bytes are here.
    pub(crate) fn wait_for_range(&mut self, waiter: RangeWaiter) {
        let id = waiter.id;
        self.range_waiters.push(waiter);
        self.refresh_ranges(id);
        self.flush();
    }

    /// Answers the waiters of `id` whose bytes are stored, and points the download's
    /// priority at the newest one still waiting.
    pub(crate) fn refresh_ranges(&mut self, id: ContentId) {
        let mut newest_waiting = None;
        let mut ready = Vec::new();
        let node = &self.node;
        self.range_waiters.retain(|waiter| {
            if waiter.id != id {
                return true;
            }
            if node.has_bytes(id, waiter.start, waiter.len) {
                ready.push(waiter.resolve.clone());
                return false;
            }
            newest_waiting = Some(waiter.start..waiter.start + waiter.wanted);
            true
        });
        for resolve in ready {
            self.notify(Notice::Settle(resolve, JsValue::NULL));
        }
        if newest_waiting.is_some() {
            self.node.set_priority(id, newest_waiting, now_ms());
        }
    }

    /// Leaving: every waiting range request fails.
    pub(crate) fn fail_all_ranges(&mut self) {
        for waiter in std::mem::take(&mut self.range_waiters) {
            self.notify(Notice::Settle(
                waiter.reject,
                "the swarm left its room".into(),
            ));
        }
    }

    /// The download of `id` failed: its range requests fail too.
    pub(crate) fn fail_ranges(&mut self, id: ContentId, err: &ClientError) {
        let (failed, kept) = std::mem::take(&mut self.range_waiters)
            .into_iter()
            .partition(|waiter| waiter.id == id);
        self.range_waiters = kept;
        let failed: Vec<RangeWaiter> = failed;
        for waiter in failed {
            self.notify(Notice::Settle(waiter.reject, err.to_string().into()));
        }
    }
}
