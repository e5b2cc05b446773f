//! Per-connection and per-address limits: a token bucket for frame rates, a count of open
//! connections per IP address, and per-address budgets (TURN credentials).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

    /// A full bucket at time `now` holding `count` tokens, refilled at `count` per `period`.
    /// A count of 0 never limits.
    pub fn per_period(count: u32, period: Duration, now: Instant) -> Self {
        let count = f64::from(count);
        Self {
            rate: count / period.as_secs_f64().max(f64::MIN_POSITIVE),
            burst: count,
            tokens: count,
            last: now,
        }
    }

    /// Takes one token at `now`; `false` when the bucket is empty (the frame is refused).
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely by `now`: it then remembers nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// How long until a token is available again.
    pub fn wait(&self) -> Duration {
        if self.rate == 0.0 || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

/// Entries [`IpBudgets`] keeps before it forgets the addresses whose budget refilled.
const BUDGETS_BEFORE_PRUNING: usize = 1024;

/// A token bucket per IP address (per /64 for IPv6, which hands each host a whole /64), for
/// things an address may have a few of per period.
#[derive(Debug)]
pub struct IpBudgets {
    count: u32,
    period: Duration,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl IpBudgets {
    /// `count` per address per `period`; 0 never limits.
    pub fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            buckets: Mutex::default(),
        }
    }

    /// Takes one from `ip`'s budget at `now`; `false` if it is spent.
    pub fn take(&self, ip: IpAddr, now: Instant) -> bool {
        if self.count == 0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= BUDGETS_BEFORE_PRUNING {
            // A full bucket is what a new address gets anyway: forgetting it changes nothing.
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        buckets
            .entry(budget_key(ip))
            .or_insert_with(|| TokenBucket::per_period(self.count, self.period, now))
            .take(now)
    }
}

/// The key an address's budget is kept under: IPv4 as is, IPv6 by its /64 prefix.
fn budget_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Open connections per IP address, limited to a maximum (0: no limit).
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
    fn budgets_are_per_address_and_per_ipv6_prefix() {
        let start = Instant::now();
        let budgets = IpBudgets::new(2, Duration::from_secs(3600));
        let a: IpAddr = [10, 0, 0, 1].into();
        assert!(budgets.take(a, start) && budgets.take(a, start));
        assert!(!budgets.take(a, start), "spent");
        assert!(budgets.take([10, 0, 0, 2].into(), start), "another address");
        // One /64 is one budget.
        let host = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        assert!(budgets.take(host(1), start) && budgets.take(host(2), start));
        assert!(!budgets.take(host(3), start));
        // Two per hour: one more after half an hour.
        let later = start + Duration::from_secs(1800);
        assert!(budgets.take(a, later));
        assert!(!budgets.take(a, later));
        assert!(IpBudgets::new(0, Duration::from_secs(1)).take(a, start));
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
