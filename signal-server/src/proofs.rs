//! Join proofs are taken once.
//!
//! A join proof (`key`, `ts`, `proof`; see `PROTOCOL.md`, "Keys") is good while `ts` is within
//! [`JOIN_PROOF_SKEW`] of the server's clock. Without a memory of the proofs used, one seen
//! in a URL (a proxy's log, a shared screen) would join as its key's id again for the rest of
//! those ten minutes, once its owner had left. The [`ProofLedger`] keeps each accepted
//! proof's id and `ts` until the proof would be stale anyway and refuses it a second time;
//! clients sign a later second for each connection (`swarm_core::client::Client::server_query`).
//! In a cluster, Redis keeps the same memory for every instance (`Cluster::take_proof`).

use std::collections::BTreeSet;

use swarm_core::identity::JOIN_PROOF_SKEW;
use swarm_protocol::PeerId;

/// Proofs kept at most: at about 60 bytes each, 16 MiB. Proofs live at most
/// 2 × [`JOIN_PROOF_SKEW`] (20 minutes), so this is a sustained 218 keyed joins per second.
pub const MAX_PROOFS: usize = 1 << 18;

/// The proofs accepted in the last 2 × [`JOIN_PROOF_SKEW`] seconds, by `ts` and id.
///
/// Bounded by count: when full, the proofs with the earliest `ts` are forgotten and every
/// proof made at or before that second is refused from then on (the floor), so forgetting
/// never lets a used proof in again. Honest clients sign the current second, above the
/// floor unless [`MAX_PROOFS`] keyed joins came within the last seconds.
#[derive(Debug)]
pub struct ProofLedger {
    used: BTreeSet<(u64, PeerId)>,
    /// Proofs made at or before this second are refused: some of them were forgotten.
    floor: Option<u64>,
    capacity: usize,
}

impl Default for ProofLedger {
    fn default() -> Self {
        Self::with_capacity(MAX_PROOFS)
    }
}

impl ProofLedger {
    /// An empty ledger that keeps at most `capacity` proofs (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            used: BTreeSet::new(),
            floor: None,
            capacity: capacity.max(1),
        }
    }

    /// Takes the proof of `id` made at `ts` (already verified), at server time `now` (Unix
    /// seconds): `false` if it was taken before.
    pub fn take(&mut self, id: PeerId, ts: u64, now: u64) -> bool {
        // Proofs made before this are stale now: nobody can present them again.
        let stale = now.saturating_sub(JOIN_PROOF_SKEW);
        while self.used.first().is_some_and(|&(t, _)| t < stale) {
            self.used.pop_first();
        }
        if self.floor.is_some_and(|floor| ts <= floor) || !self.used.insert((ts, id)) {
            return false;
        }
        while self.used.len() > self.capacity {
            if let Some((t, _)) = self.used.pop_first() {
                self.floor = Some(self.floor.map_or(t, |floor| floor.max(t)));
            }
        }
        true
    }

    /// Proofs kept.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether no proof is kept.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn a_proof_is_taken_once_while_it_could_be_presented() {
        let mut ledger = ProofLedger::default();
        let now = 1_000_000;
        assert!(ledger.take(id(1), now, now));
        assert!(!ledger.take(id(1), now, now + 1), "replayed");
        assert!(
            !ledger.take(id(1), now, now + JOIN_PROOF_SKEW),
            "still replayed"
        );
        // The same key's next proof, and another key's proof of the same second, are new.
        assert!(ledger.take(id(1), now + 1, now + 1));
        assert!(ledger.take(id(2), now, now + 1));
        // Once stale (verify_join refuses it anyway), it is forgotten.
        assert!(ledger.take(id(3), now + 2 * JOIN_PROOF_SKEW, now + 2 * JOIN_PROOF_SKEW));
        assert_eq!(ledger.len(), 1, "the stale proofs are gone");
    }

    #[test]
    fn a_full_ledger_forgets_the_oldest_but_refuses_them_for_ever() {
        let mut ledger = ProofLedger::with_capacity(3);
        let now = 5_000;
        for n in 0..3 {
            assert!(ledger.take(id(n), now - 10 + u64::from(n), now));
        }
        // A fourth pushes out the oldest (ts now-10), which stays refused.
        assert!(ledger.take(id(9), now, now));
        assert_eq!(ledger.len(), 3);
        assert!(
            !ledger.take(id(0), now - 10, now),
            "forgotten, still refused"
        );
        assert!(!ledger.take(id(7), now - 10, now), "at the floor");
        assert!(ledger.take(id(7), now - 9 + 100, now), "above the floor");
    }

    proptest! {
        /// Whatever the order and however small the ledger, no proof is taken twice while it
        /// could be presented.
        #[test]
        fn no_proof_is_taken_twice(
            capacity in 1usize..8,
            joins in prop::collection::vec((0u8..6, 0u64..40, 0u64..40), 1..200),
        ) {
            let mut ledger = ProofLedger::with_capacity(capacity);
            let mut taken = BTreeSet::new();
            let mut now = 10_000;
            for (who, age, step) in joins {
                now += step;
                let ts = now - age;
                if ledger.take(id(who), ts, now) {
                    prop_assert!(taken.insert((ts, who)), "{ts} {who} taken twice");
                }
                prop_assert!(ledger.len() <= capacity);
            }
        }
    }
}
