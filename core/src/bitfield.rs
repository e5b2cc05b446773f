//! A fixed-size set of piece indices, packed most significant bit first as on the wire.

/// Which pieces of a content someone has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// `len` pieces, none present.
    pub fn new(len: u32) -> Self {
        Self {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    /// `len` pieces, all present.
    pub fn full(len: u32) -> Self {
        let mut field = Self::new(len);
        for i in 0..len {
            field.set(i);
        }
        field
    }

    /// Reads the wire form for `len` pieces; `None` if the length is wrong or a spare bit
    /// past the end is set.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) as usize {
            return None;
        }
        let spare = (8 - len % 8) % 8;
        if spare > 0
            && bytes
                .last()
                .is_some_and(|last| last & ((1u8 << spare) - 1) != 0)
        {
            return None;
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Some(Self {
            bits: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces the field covers.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether it covers no pieces at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces present.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is present.
    pub fn is_complete(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is present (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Marks piece `i` present; returns whether it was new. Ignored past the end.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Marks piece `i` absent; returns whether it was present.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    /// The present pieces, in order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|i| self.get(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_most_significant_bit_first() {
        let mut field = Bitfield::new(10);
        field.set(0);
        field.set(9);
        assert_eq!(field.as_bytes(), &[0x80, 0x40]);
        assert_eq!(field.count(), 2);
        assert!(!field.set(9));
        assert!(!field.set(10));
        assert!(field.clear(9));
        assert!(!field.clear(9));
        assert_eq!(field.as_bytes(), &[0x80, 0x00]);
        assert_eq!(field.count(), 1);
        assert!(!field.get(10));
    }

    #[test]
    fn wrong_lengths_and_spare_bits_are_refused() {
        assert!(Bitfield::from_bytes(&[0xff], 9).is_none());
        assert!(Bitfield::from_bytes(&[0xff, 0x80], 9).is_some());
        assert!(Bitfield::from_bytes(&[0xff, 0x40], 9).is_none());
        assert_eq!(
            Bitfield::from_bytes(&[], 0).map(|f| f.is_complete()),
            Some(true)
        );
    }

    proptest! {
        #[test]
        fn round_trip(len in 0u32..200, picks in proptest::collection::vec(any::<u32>(), 0..50)) {
            let mut field = Bitfield::new(len);
            for p in &picks {
                if len > 0 { field.set(p % len); }
            }
            let back = Bitfield::from_bytes(field.as_bytes(), len).expect("valid");
            prop_assert_eq!(&back, &field);
            prop_assert_eq!(back.iter_ones().count() as u32, back.count());
        }
    }
}
