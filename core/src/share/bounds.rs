//! What one peer may make us hold or send for it. Everything a peer offers or asks is
//! counted against its own budget, so no peer can make us allocate or send much more than
//! it sent (the bounds are in [`PeerBudget`]'s constants). A peer that goes past one is
//! reported with [`super::Output::Abusive`] and the reason; the owner drops it, and every
//! later message of it is ignored.

use swarm_protocol::content::MAX_LABEL_LEN;

/// Contents one peer may offer us at once (announced and not withdrawn). A seeder of more
/// files than this is unusual; a peer announcing fresh ids is making us keep them.
pub const MAX_OFFERS_PER_PEER: usize = 1024;

/// Bytes of piece bits (from `bitfield`s and `have`s) kept for one peer across the contents
/// it offers: 8 Mi pieces, 128 GiB of content at the default piece size. They are kept
/// before the manifest says how many pieces there are, so they need a bound of their own.
pub const MAX_SOURCE_BITS_PER_PEER: usize = 1 << 20;

/// Encoded-manifest bytes served to one peer per [`MANIFEST_WINDOW_MS`] (a manifest of a
/// 1 GiB file at the default piece size is 128 KiB). The first manifest of a window is
/// always served, whatever its size.
pub const MANIFEST_BUDGET_BYTES: u64 = 8 << 20;

/// The window of [`MANIFEST_BUDGET_BYTES`].
pub const MANIFEST_WINDOW_MS: u64 = 10_000;

/// Why a peer is dropped. Each is a bound of this module.
pub mod reason {
    /// More than [`super::MAX_OFFERS_PER_PEER`] contents offered.
    pub const TOO_MANY_OFFERS: &str = "too many contents offered";
    /// An announcement whose name or MIME type is longer than a manifest's may be.
    pub const LABEL_TOO_LONG: &str = "announced name or type too long";
    /// More than [`super::MAX_SOURCE_BITS_PER_PEER`] bytes of piece bits.
    pub const TOO_MANY_PIECE_BITS: &str = "too many piece bits";
    /// More than [`super::MANIFEST_BUDGET_BYTES`] of manifests asked for in a window.
    pub const MANIFEST_REQUESTS: &str = "too many manifest requests";
    /// More than [`crate::node::MAX_UNREAD_BYTES`] sent to it and not read (its send queue
    /// never emptied meanwhile).
    pub const NOT_READING: &str = "does not read what it asks for";
}

/// One peer's use of its budget.
#[derive(Debug, Default)]
pub(super) struct PeerBudget {
    /// Contents it offers.
    offered: usize,
    /// Bytes of piece bits kept for it.
    bits: usize,
    /// Start of the current manifest window, and the manifest bytes served in it.
    manifest_window: (u64, u64),
    /// It went past a bound: ignore it from now on.
    pub(super) dropped: bool,
}

impl PeerBudget {
    /// It offers one more content; `Err` past the bound.
    pub(super) fn offer(&mut self) -> Result<(), &'static str> {
        if self.offered >= MAX_OFFERS_PER_PEER {
            return Err(reason::TOO_MANY_OFFERS);
        }
        self.offered += 1;
        Ok(())
    }

    /// It no longer offers a content whose bits took `bits` bytes.
    pub(super) fn withdraw(&mut self, bits: usize) {
        self.offered = self.offered.saturating_sub(1);
        self.bits = self.bits.saturating_sub(bits);
    }

    /// The bits kept for one of its contents go from `old` to `new` bytes; `Err` past the
    /// bound (nothing is counted then).
    pub(super) fn resize_bits(&mut self, old: usize, new: usize) -> Result<(), &'static str> {
        let total = self.bits.saturating_sub(old).saturating_add(new);
        if total > MAX_SOURCE_BITS_PER_PEER {
            return Err(reason::TOO_MANY_PIECE_BITS);
        }
        self.bits = total;
        Ok(())
    }

    /// It asks for a manifest of `len` bytes at `now`; `Err` past the bound.
    pub(super) fn manifest(&mut self, len: u64, now: u64) -> Result<(), &'static str> {
        let (start, served) = &mut self.manifest_window;
        if now >= start.saturating_add(MANIFEST_WINDOW_MS) {
            (*start, *served) = (now, 0);
        }
        if *served > 0 && served.saturating_add(len) > MANIFEST_BUDGET_BYTES {
            return Err(reason::MANIFEST_REQUESTS);
        }
        *served = served.saturating_add(len);
        Ok(())
    }
}

/// Checks an announcement's labels against what a manifest may hold.
pub(super) fn check_labels(name: &str, mime: &str) -> Result<(), &'static str> {
    if name.len() > MAX_LABEL_LEN || mime.len() > MAX_LABEL_LEN {
        return Err(reason::LABEL_TOO_LONG);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_counted_up_to_the_bound_and_withdrawn() {
        let mut budget = PeerBudget::default();
        for _ in 0..MAX_OFFERS_PER_PEER {
            assert_eq!(budget.offer(), Ok(()));
        }
        assert_eq!(budget.offer(), Err(reason::TOO_MANY_OFFERS));
        budget.withdraw(0);
        assert_eq!(budget.offer(), Ok(()));
    }

    #[test]
    fn piece_bits_are_bounded_across_contents() {
        let mut budget = PeerBudget::default();
        let half = MAX_SOURCE_BITS_PER_PEER / 2;
        assert_eq!(budget.resize_bits(0, half), Ok(()));
        assert_eq!(budget.resize_bits(0, half), Ok(()));
        assert_eq!(budget.resize_bits(0, 1), Err(reason::TOO_MANY_PIECE_BITS));
        // Replacing one content's bits by smaller ones frees the difference.
        assert_eq!(budget.resize_bits(half, 10), Ok(()));
        assert_eq!(budget.resize_bits(0, half - 10), Ok(()));
        budget.withdraw(half);
        assert_eq!(budget.resize_bits(0, half), Ok(()));
    }

    #[test]
    fn manifests_are_served_within_the_budget_of_a_window() {
        let mut budget = PeerBudget::default();
        // The first of a window always goes, even above the budget.
        assert_eq!(budget.manifest(MANIFEST_BUDGET_BYTES * 2, 0), Ok(()));
        assert_eq!(budget.manifest(1, 1), Err(reason::MANIFEST_REQUESTS));
        assert_eq!(budget.manifest(1, MANIFEST_WINDOW_MS), Ok(()));
        assert_eq!(
            budget.manifest(MANIFEST_BUDGET_BYTES - 1, MANIFEST_WINDOW_MS + 1),
            Ok(())
        );
        assert_eq!(
            budget.manifest(1, MANIFEST_WINDOW_MS + 2),
            Err(reason::MANIFEST_REQUESTS)
        );
    }

    #[test]
    fn labels_longer_than_a_manifest_allows_are_refused() {
        let long = "x".repeat(MAX_LABEL_LEN + 1);
        assert_eq!(check_labels("a.bin", "video/webm"), Ok(()));
        assert_eq!(check_labels(&long, ""), Err(reason::LABEL_TOO_LONG));
        assert_eq!(check_labels("", &long), Err(reason::LABEL_TOO_LONG));
    }
}
