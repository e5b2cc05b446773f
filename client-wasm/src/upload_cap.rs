//! **Testing and benchmarks only**: a token bucket that caps how fast this peer uploads
//! peer-protocol frames, across all its peers (`swarm._capUpload(bytesPerSecond)`).

use std::cell::Cell;

/// How many seconds of tokens the bucket holds at most (the largest burst).
const BURST_SECONDS: f64 = 0.25;

/// The upload cap shared by every channel of one session; off unless set.
#[derive(Debug, Default)]
pub(crate) struct UploadCap {
    bytes_per_second: Cell<f64>,
    tokens: Cell<f64>,
    last_ms: Cell<f64>,
}

impl UploadCap {
    /// Sets the cap; 0 turns it off.
    pub(crate) fn set(&self, bytes_per_second: f64) {
        self.bytes_per_second.set(bytes_per_second.max(0.0));
        self.tokens.set(0.0);
        self.last_ms.set(js_sys::Date::now());
    }

    /// Whether a frame of `len` bytes may go now; if so, it is paid for. A frame may take the
    /// bucket below zero, so the average rate is exact whatever the frame sizes.
    pub(crate) fn take(&self, len: usize) -> bool {
        let rate = self.bytes_per_second.get();
        if rate <= 0.0 {
            return true;
        }
        let now = js_sys::Date::now();
        let elapsed = (now - self.last_ms.get()).max(0.0) / 1000.0;
        self.last_ms.set(now);
        let tokens = (self.tokens.get() + elapsed * rate).min(rate * BURST_SECONDS);
        if tokens <= 0.0 {
            self.tokens.set(tokens);
            return false;
        }
        self.tokens.set(tokens - len as f64);
        true
    }
}
