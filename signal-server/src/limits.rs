//! Per-connection and per-address limits: a token bucket for frame rates, and a count of open
//! WebSockets per IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket: `burst` frames at once, refilled at `rate` frames per second. A rate of 0
/// never limits.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token at `now`; `false` when the bucket is empty (the frame is refused).
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available again.
    pub fn wait(&self) -> Duration {
        if self.rate == 0.0 || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

/// Open WebSockets per IP address, limited to a maximum (0: no limit).
#[derive(Debug, Clone, Default)]
pub struct IpSlots {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl IpSlots {
    /// No connections yet; at most `max` per address.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, held until the guard is dropped; `None` if
    /// the address already has the maximum.
    pub fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            open: Arc::clone(&self.open),
        })
    }

    /// Connections open from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's place in [`IpSlots`]; released on drop.
#[derive(Debug)]
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, start);
        assert!((0..5).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.wait() > Duration::ZERO);
        // 10 per second: one more after 100 ms, not two.
        let later = start + Duration::from_millis(100);
        assert!(bucket.take(later));
        assert!(!bucket.take(later));
        // It never holds more than the burst, however long it rests.
        let much_later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.take(much_later)).count(), 5);
    }

    #[test]
    fn a_zero_rate_never_limits() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0, 0, now);
        assert!((0..10_000).all(|_| bucket.take(now)));
    }

    #[test]
    fn slots_are_counted_per_address_and_released_on_drop() {
        let slots = IpSlots::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = slots.acquire(a).expect("first");
        let second = slots.acquire(a).expect("second");
        assert!(slots.acquire(a).is_none());
        assert!(
            slots.acquire(b).is_some(),
            "another address has its own slots"
        );
        drop(first);
        assert_eq!(slots.count(a), 1);
        let third = slots.acquire(a).expect("a slot came free");
        drop((second, third));
        assert_eq!(slots.count(a), 0);
        assert!(IpSlots::new(0).acquire(a).is_some(), "0 means no limit");
    }
}
