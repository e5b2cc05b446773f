//! When to try reconnecting to the signalling server: exponential backoff with jitter.
//!
//! The delay doubles with each failed attempt, up to a ceiling, and each delay is drawn at
//! random between half and all of that value ("equal jitter"), so that a room full of peers
//! that lost the same server do not all knock on it in the same instant when it returns.

/// Reconnection delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
}

/// First delay, in milliseconds.
pub const DEFAULT_BASE_MS: u64 = 500;
/// Longest delay, in milliseconds.
pub const DEFAULT_MAX_MS: u64 = 8_000;

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BASE_MS, DEFAULT_MAX_MS)
    }
}

impl Backoff {
    /// Delays starting at `base_ms` and never above `max_ms`.
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Self {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms.max(1)),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, in milliseconds; `random` is uniform in `[0, 1)`
    /// (the caller's generator: core has none).
    pub fn next_delay(&mut self, random: f64) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(32))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + ((ceiling - half) as f64 * random.clamp(0.0, 1.0)) as u64
    }

    /// Attempts made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A connection succeeded: start from the base delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_up_to_the_ceiling_and_reset() {
        let mut b = Backoff::new(500, 8_000);
        let highs: Vec<u64> = (0..7).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(highs, vec![500, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
        assert_eq!(b.attempts(), 7);
        b.reset();
        assert_eq!(b.next_delay(0.0), 250, "half of the base at the low end");
    }

    proptest! {
        #[test]
        fn every_delay_is_within_half_and_all_of_its_ceiling(
            randoms in proptest::collection::vec(0.0f64..1.0, 1..80),
        ) {
            let mut b = Backoff::default();
            for (n, r) in randoms.into_iter().enumerate() {
                let ceiling = (DEFAULT_BASE_MS << n.min(32)).min(DEFAULT_MAX_MS);
                let delay = b.next_delay(r);
                prop_assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay} vs {ceiling}");
            }
        }
    }
}
