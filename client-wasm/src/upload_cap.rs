//! **Testing and benchmarks only**: a token bucket that caps how fast this peer uploads
//! peer-protocol frames, across all its peers (`swarm._capUpload(bytesPerSecond)`).

/// How many seconds of tokens the bucket holds at most (the largest burst).
const BURST_SECONDS: f64 = 0.25;

/// The upload cap shared by every channel of one swarm; off unless set.
#[derive(Debug, Default)]
pub(crate) struct UploadCap {
    bytes_per_second: f64,
    tokens: f64,
    last_ms: u64,
}

impl UploadCap {
    /// Sets the cap at `now` (milliseconds); 0 turns it off.
    pub(crate) fn set(&mut self, bytes_per_second: f64, now: u64) {
        self.bytes_per_second = bytes_per_second.max(0.0);
        self.tokens = 0.0;
        self.last_ms = now;
    }

    /// Whether a frame of `len` bytes may go at `now`; if so, it is paid for. A frame may
    /// take the bucket below zero, so the average rate is exact whatever the frame sizes.
    pub(crate) fn take(&mut self, len: usize, now: u64) -> bool {
        let rate = self.bytes_per_second;
        if rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now);
        let tokens = (self.tokens + elapsed * rate).min(rate * BURST_SECONDS);
        if tokens <= 0.0 {
            self.tokens = tokens;
            return false;
        }
        self.tokens = tokens - len as f64;
        true
    }
}
