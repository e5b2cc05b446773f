//! Negotiation roles and the perfect-negotiation pattern.
//!
//! Two peers that both (re)negotiate at the same moment must not deadlock ("glare"). The
//! perfect-negotiation pattern (W3C WebRTC spec, §10.7) resolves it with fixed roles: the
//! *polite* peer rolls back its own offer and accepts the other's; the *impolite* peer ignores
//! the colliding offer. The roles come from the two ids, so both sides agree without talking.
//!
//! [`Negotiation`] holds the three flags of that pattern; the I/O shell calls it around its
//! asynchronous `setLocalDescription`/`setRemoteDescription` calls.

use swarm_protocol::{PeerId, SdpType};

/// Whether `local` is the polite side towards `remote`: the peer with the smaller id is polite.
pub fn is_polite(local: PeerId, remote: PeerId) -> bool {
    local < remote
}

/// Whether `local` keeps the `swarm` channel it created when `remote` created one too (both
/// offered at once: a peer dialled a provider that was dialling it). The polite side keeps
/// its own and only reads what arrives on the other until the impolite side closes it; the
/// impolite side adopts the polite side's channel and closes its own. So exactly one channel
/// survives and the connection with it.
pub fn keeps_own_channel(local: PeerId, remote: PeerId) -> bool {
    is_polite(local, remote)
}

/// What to do with a description that arrived from the remote peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteDescription {
    /// A colliding offer on the impolite side: drop it (and the candidates that follow it).
    Ignore,
    /// Apply it with `setRemoteDescription` (rolling back our own offer if needed); if it is an
    /// offer, then answer it.
    Apply {
        /// The description is an offer, so an answer must be created and sent.
        answer: bool,
    },
}

/// Perfect-negotiation state for one peer connection.
#[derive(Debug, Clone)]
pub struct Negotiation {
    polite: bool,
    making_offer: bool,
    ignore_offer: bool,
    setting_remote_answer: bool,
}

impl Negotiation {
    /// State for a connection from `local` to `remote`.
    pub fn new(local: PeerId, remote: PeerId) -> Self {
        Self {
            polite: is_polite(local, remote),
            making_offer: false,
            ignore_offer: false,
            setting_remote_answer: false,
        }
    }

    /// Whether this side is the polite one.
    pub fn polite(&self) -> bool {
        self.polite
    }

    /// Call before creating and setting a local offer (on `negotiationneeded`).
    pub fn begin_offer(&mut self) {
        self.making_offer = true;
    }

    /// Call once the local offer is set (or failed).
    pub fn end_offer(&mut self) {
        self.making_offer = false;
    }

    /// Decides what to do with a remote description. `signaling_stable` is whether the
    /// connection's `signalingState` is `"stable"` right now.
    ///
    /// After [`RemoteDescription::Apply`], call [`Negotiation::remote_applied`] once
    /// `setRemoteDescription` has finished.
    pub fn on_remote_description(
        &mut self,
        kind: SdpType,
        signaling_stable: bool,
    ) -> RemoteDescription {
        let ready_for_offer =
            !self.making_offer && (signaling_stable || self.setting_remote_answer);
        let collision = kind == SdpType::Offer && !ready_for_offer;
        self.ignore_offer = !self.polite && collision;
        if self.ignore_offer {
            return RemoteDescription::Ignore;
        }
        self.setting_remote_answer = kind == SdpType::Answer;
        RemoteDescription::Apply {
            answer: kind == SdpType::Offer,
        }
    }

    /// Call when `setRemoteDescription` has finished (successfully or not).
    pub fn remote_applied(&mut self) {
        self.setting_remote_answer = false;
    }

    /// Whether a failure to add a remote ICE candidate is expected: it belongs to an offer
    /// that was ignored, so it must not be reported.
    pub fn candidate_error_expected(&self) -> bool {
        self.ignore_offer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Negotiation, Negotiation) {
        let (a, b) = (PeerId::from_bytes([1; 16]), PeerId::from_bytes([2; 16]));
        (Negotiation::new(a, b), Negotiation::new(b, a))
    }

    #[test]
    fn when_both_create_the_channel_exactly_one_keeps_its_own() {
        let (a, b) = (PeerId::from_bytes([1; 16]), PeerId::from_bytes([2; 16]));
        assert!(keeps_own_channel(a, b));
        assert!(!keeps_own_channel(b, a));
    }

    #[test]
    fn exactly_one_side_is_polite() {
        let (a, b) = pair();
        assert!(a.polite());
        assert!(!b.polite());
    }

    #[test]
    fn an_offer_in_stable_state_is_answered() {
        let (_, mut b) = pair();
        assert_eq!(
            b.on_remote_description(SdpType::Offer, true),
            RemoteDescription::Apply { answer: true }
        );
    }

    #[test]
    fn glare_impolite_ignores_and_polite_yields() {
        let (mut polite, mut impolite) = pair();
        polite.begin_offer();
        impolite.begin_offer();
        // Both offers cross on the wire.
        assert_eq!(
            impolite.on_remote_description(SdpType::Offer, false),
            RemoteDescription::Ignore
        );
        assert!(impolite.candidate_error_expected());
        assert_eq!(
            polite.on_remote_description(SdpType::Offer, false),
            RemoteDescription::Apply { answer: true }
        );
        assert!(!polite.candidate_error_expected());
    }

    #[test]
    fn an_offer_while_our_offer_is_pending_collides_even_when_stable() {
        let (_, mut impolite) = pair();
        impolite.begin_offer();
        assert_eq!(
            impolite.on_remote_description(SdpType::Offer, true),
            RemoteDescription::Ignore
        );
        impolite.end_offer();
        assert_eq!(
            impolite.on_remote_description(SdpType::Offer, true),
            RemoteDescription::Apply { answer: true }
        );
        assert!(!impolite.candidate_error_expected());
    }

    #[test]
    fn an_offer_right_behind_an_answer_being_applied_is_not_a_collision() {
        let (_, mut impolite) = pair();
        assert_eq!(
            impolite.on_remote_description(SdpType::Answer, false),
            RemoteDescription::Apply { answer: false }
        );
        // setRemoteDescription(answer) still in flight: state is not yet "stable".
        assert_eq!(
            impolite.on_remote_description(SdpType::Offer, false),
            RemoteDescription::Apply { answer: true }
        );
        impolite.remote_applied();
        assert_eq!(
            impolite.on_remote_description(SdpType::Offer, false),
            RemoteDescription::Ignore
        );
    }
}
