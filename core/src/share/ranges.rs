//! Which bytes of a piece or a manifest have arrived, so a chunk that comes twice (a stale
//! chunk of an earlier request for the same piece, still in flight when it was asked again,
//! or a part a hostile peer repeats) is counted once, and a piece or manifest is complete
//! only when every byte is there.

/// Byte ranges received so far: sorted, disjoint and not touching.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    /// Adds bytes `start..end`.
    pub(super) fn add(&mut self, start: u32, end: u32) {
        if start >= end {
            return;
        }
        // Chunks mostly arrive in order, so this is usually one range growing at its end.
        if let Some(last) = self.0.last_mut()
            && last.0 <= start
            && start <= last.1
        {
            last.1 = last.1.max(end);
            return;
        }
        self.0.push((start, end));
        self.0.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
        for (s, e) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// Whether every byte of `0..len` has arrived.
    pub(super) fn covers(&self, len: u32) -> bool {
        matches!(self.0.as_slice(), [(0, end)] if *end >= len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_chunk_that_comes_twice_counts_once() {
        let mut r = Ranges::default();
        r.add(0, 100);
        r.add(0, 100);
        assert!(!r.covers(200));
        r.add(150, 200);
        assert!(!r.covers(200));
        r.add(100, 150);
        assert!(r.covers(200));
        assert_eq!(r, Ranges(vec![(0, 200)]));
    }

    proptest! {
        #[test]
        fn covered_exactly_when_every_byte_arrived(
            chunks in proptest::collection::vec((0u32..64, 1u32..16), 0..24),
        ) {
            let len = 64;
            let mut r = Ranges::default();
            let mut bytes = [false; 64];
            for (start, n) in chunks {
                let end = (start + n).min(len);
                r.add(start, end);
                bytes[start as usize..end as usize].fill(true);
            }
            prop_assert_eq!(r.covers(len), bytes.iter().all(|b| *b));
        }
    }
}
