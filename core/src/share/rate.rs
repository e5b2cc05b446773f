//! Transfer speed over a sliding window.

use std::collections::VecDeque;

/// Length of the window speeds are averaged over, in milliseconds.
const WINDOW_MS: u64 = 2_000;

/// Bytes received recently, to report a speed that follows changes within seconds.
#[derive(Debug, Clone)]
pub struct RateMeter {
    started: u64,
    samples: VecDeque<(u64, u64)>,
    in_window: u64,
}

impl RateMeter {
    /// A meter that starts counting at `now`.
    pub fn new(now: u64) -> Self {
        Self {
            started: now,
            samples: VecDeque::new(),
            in_window: 0,
        }
    }

    /// `bytes` arrived at `now`.
    pub fn add(&mut self, now: u64, bytes: u64) {
        self.samples.push_back((now, bytes));
        self.in_window += bytes;
        self.trim(now);
    }

    /// Bytes per second over the last two seconds (or since the start, if sooner).
    pub fn per_second(&mut self, now: u64) -> f64 {
        self.trim(now);
        let span = now.saturating_sub(self.started).clamp(1, WINDOW_MS);
        self.in_window as f64 * 1000.0 / span as f64
    }

    fn trim(&mut self, now: u64) {
        while let Some(&(at, bytes)) = self.samples.front() {
            if at + WINDOW_MS > now {
                break;
            }
            self.samples.pop_front();
            self.in_window -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_over_the_window_and_forgets_old_bytes() {
        let mut meter = RateMeter::new(0);
        meter.add(500, 1000);
        assert_eq!(meter.per_second(1000), 1000.0);
        meter.add(1500, 1000);
        assert_eq!(meter.per_second(2000), 1000.0);
        assert_eq!(meter.per_second(2600), 500.0);
        assert_eq!(meter.per_second(10_000), 0.0);
    }
}
