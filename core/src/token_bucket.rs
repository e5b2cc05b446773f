//! A token bucket: at most `burst` events at once, and `per_sec` a second after that. Time
//! is milliseconds passed in; no clock is read here.

/// Allows `burst` events at once and `per_sec` a second on average.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Thousandths of a token, so a slow rate still refills between calls.
    milli: u64,
    burst: u64,
    per_sec: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now` (ms).
    pub fn new(burst: u64, per_sec: u64, now: u64) -> Self {
        Self {
            milli: burst.saturating_mul(1000),
            burst,
            per_sec,
            last_ms: now,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn take(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now);
        let refill = elapsed.saturating_mul(self.per_sec);
        self.milli = self
            .milli
            .saturating_add(refill)
            .min(self.burst.saturating_mul(1000));
        if self.milli < 1000 {
            return false;
        }
        self.milli -= 1000;
        true
    }

    /// Whether the bucket has refilled to its burst by `now`: it is then the same as a new
    /// one, so a holder of many buckets may forget it without giving anyone tokens back.
    pub fn is_full(&self, now: u64) -> bool {
        let refill = now
            .saturating_sub(self.last_ms)
            .saturating_mul(self.per_sec);
        self.milli.saturating_add(refill) >= self.burst.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(3, 2, 0);
        assert!((0..3).all(|_| bucket.take(0)));
        assert!(!bucket.take(0));
        assert!(!bucket.take(499), "half a token");
        assert!(bucket.take(500));
        assert!(!bucket.take(500));
        // Idle for long: full again, not more.
        assert!((0..3).all(|_| bucket.take(60_000)));
        assert!(!bucket.take(60_000));
    }

    #[test]
    fn full_again_once_it_has_refilled_its_burst() {
        let mut bucket = TokenBucket::new(2, 4, 0);
        assert!(bucket.is_full(0));
        assert!(bucket.take(0));
        assert!(!bucket.is_full(0));
        assert!(!bucket.is_full(249), "not quite a token back");
        assert!(bucket.is_full(250));
    }

    #[test]
    fn time_going_back_refills_nothing() {
        let mut bucket = TokenBucket::new(1, 1000, 10_000);
        assert!(bucket.take(10_000));
        assert!(!bucket.take(5_000));
    }
}
