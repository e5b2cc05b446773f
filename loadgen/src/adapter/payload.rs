//! The payload every signal carries, and the clock its timestamp comes from.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// A monotonic clock shared by all peers of one generator process: senders stamp payloads with
/// it and receivers subtract, so both ends read the same clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the clock's zero.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long ago `sent_at_ns` was (zero for a time in the future, which a single
    /// monotonic clock cannot produce unless the payload was forged).
    pub fn since(&self, sent_at_ns: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(sent_at_ns))
    }
}

/// The part of a payload a receiver reads; anything else in it (the padding) is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Stamp {
    /// Send time on the generator's [`Clock`].
    pub(crate) ts: u64,
}

/// The padding for payloads of about `bytes` bytes in total.
pub fn padding(bytes: usize) -> String {
    // `{"ts":` + up to 20 digits + `,"pad":"` + `"}`: about 36 bytes of structure.
    "x".repeat(bytes.saturating_sub(36))
}

/// A payload: `{"ts":SENT_AT_NS,"pad":"xxx…"}`.
pub fn encode(sent_at_ns: u64, padding: &str) -> String {
    format!(r#"{{"ts":{sent_at_ns},"pad":"{padding}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_has_about_the_asked_size() {
        let pad = padding(200);
        let text = encode(12_345_678_901, &pad);
        let stamp: Stamp = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(stamp.ts, 12_345_678_901);
        assert!((190..=210).contains(&text.len()), "{} bytes", text.len());
    }
}
