//! Signed offers and answers: a server that relays them cannot answer in a peer's place.
//!
//! WebRTC authenticates a connection by the DTLS certificate fingerprints written in the
//! offer and the answer. Whoever relays those descriptions can replace the fingerprints with
//! its own and sit in the middle of every data channel and media track. So each peer signs the
//! fingerprints of its descriptions with its Ed25519 key (the one its id is the hash of,
//! [`crate::identity`]), together with the room, both ids and a nonce, and the receiver
//! checks the signature against the sender's id and the fingerprints against the description
//! before it applies it ([`verify`]).
//!
//! The nonce binds an answer to its offer: an offer carries a fresh one, the answer signs the
//! offer's nonce, so an answer replayed from another connection or round is refused
//! ([`Rejection::StaleAnswer`]). The exact signed bytes are in `PROTOCOL.md` ("Signed offers
//! and answers").

use swarm_protocol::{PeerId, RoomName, SdpAuth, SdpType, hex};

use crate::identity::{
    Identity, IdentityError, PUBLIC_KEY_LEN, SIGNATURE_LEN, peer_id_of, verify_signature,
};

/// Length of an offer's nonce in bytes.
pub const NONCE_LEN: usize = 16;

/// An offer's nonce.
pub type Nonce = [u8; NONCE_LEN];

/// The nonce an answer signs when the offer it answers carried none (an unsigned offer).
pub const UNSIGNED_OFFER: Nonce = [0; NONCE_LEN];

/// Most fingerprints a description may carry (one per certificate; browsers send one).
pub const MAX_FINGERPRINTS: usize = 8;

/// Longest fingerprint line value accepted (`sha-512` with colons is 199 characters).
pub const MAX_FINGERPRINT_LEN: usize = 256;

/// Why a signal from a peer was refused. Each has a stable [`code`](Rejection::code), which
/// the browser client reports in its `peer-rejected` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Rejection {
    /// An offer or answer without a signature, in a room that requires them.
    #[error("the offer or answer is not signed, and this peer requires signatures")]
    Unsigned,
    /// The signature's fields are not a key, a nonce and a signature in hex, or there are
    /// too many or too long fingerprints.
    #[error("the signature's fields are malformed")]
    MalformedAuth,
    /// The key that signed does not hash to the sender's id.
    #[error("the signing key does not belong to the sender")]
    WrongKey,
    /// The key is not a usable Ed25519 key.
    #[error("the signing key is not a valid Ed25519 key")]
    BadKey,
    /// The signature does not verify: made for another room, pair, kind or nonce, or altered.
    #[error("the signature does not verify for this room, these two peers and this description")]
    BadSignature,
    /// The description's DTLS fingerprints are not the signed ones: someone swapped them.
    #[error("the description's DTLS fingerprint is not the one its sender signed")]
    FingerprintMismatch,
    /// The description has no DTLS fingerprint at all.
    #[error("the description has no DTLS fingerprint")]
    NoFingerprint,
    /// An answer that does not answer our latest offer to that peer (replayed, or stale).
    #[error("an answer to an offer this peer did not make (replayed or stale)")]
    StaleAnswer,
    /// An offer whose nonce was seen before from that peer (replayed).
    #[error("an offer seen before (replayed)")]
    ReplayedOffer,
    /// A description for an open connection whose DTLS fingerprint is not that connection's
    /// (one replayed from an older connection).
    #[error("a description whose DTLS fingerprint is not the one of the open connection")]
    FingerprintChanged,
    /// A signal in the clear in a secret room.
    #[error("a signal in the clear in a secret room")]
    Unsealed,
    /// A sealed signal too short to hold a nonce and a tag, or not base64url.
    #[error("a sealed signal that is truncated or not base64url")]
    Truncated,
    /// A sealed signal that does not open with this room's key: another secret, or altered,
    /// or sealed for another pair of peers.
    #[error("a sealed signal that does not open with this room's secret")]
    CannotOpen,
    /// What a sealed signal holds is not a signal.
    #[error("a sealed signal that holds no readable signal")]
    MalformedSealed,
}

impl Rejection {
    /// Whether the signal was a description that is forged or unsigned (where signatures are
    /// required): a connection still being set up with that peer is then closed and its
    /// candidates dropped. Replays, stale answers and what does not open are only dropped, so
    /// a signal delivered twice, or one injected by whoever relays, cannot cut a setup.
    pub fn closes_setup(self) -> bool {
        matches!(
            self,
            Self::Unsigned
                | Self::MalformedAuth
                | Self::WrongKey
                | Self::BadKey
                | Self::BadSignature
                | Self::FingerprintMismatch
                | Self::NoFingerprint
        )
    }

    /// The stable name of the reason.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::MalformedAuth => "malformed-signature",
            Self::WrongKey => "wrong-key",
            Self::BadKey => "bad-key",
            Self::BadSignature => "bad-signature",
            Self::FingerprintMismatch => "fingerprint-mismatch",
            Self::NoFingerprint => "no-fingerprint",
            Self::StaleAnswer => "stale-answer",
            Self::ReplayedOffer => "replayed-offer",
            Self::FingerprintChanged => "fingerprint-changed",
            Self::Unsealed => "unsealed",
            Self::Truncated => "truncated",
            Self::CannotOpen => "cannot-open",
            Self::MalformedSealed => "malformed-sealed",
        }
    }
}

/// The DTLS fingerprints of an SDP description (`fingerprint` attribute lines at session or
/// media level), normalised as `"{hash function in lowercase} {hex in uppercase}"`, sorted and
/// without repeats. The attribute name is matched without regard to case, as some browsers'
/// parsers do (Firefox takes `a=FINGERPRINT:` and accepts a certificate that matches any
/// fingerprint listed), and a line that names the attribute but is not a hash function and a
/// digest is kept as it stands, lowercased: either way it takes part in the comparison with
/// the signed fingerprints, so no fingerprint a browser could use escapes the check.
pub fn fingerprints(sdp: &str) -> Vec<String> {
    let mut found: Vec<String> = sdp
        .split(['\n', '\r'])
        .filter_map(|line| {
            let (name, value) = line.trim().strip_prefix("a=")?.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("fingerprint")
                .then_some(value)
        })
        .map(|value| {
            let mut parts = value.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(function), Some(digest)) => format!(
                    "{} {}",
                    function.to_ascii_lowercase(),
                    digest.to_ascii_uppercase()
                ),
                _ => value.trim().to_ascii_lowercase(),
            }
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The bytes a peer signs for a description of `kind` from `from` to `to` in `room`.
fn message(
    room: &RoomName,
    kind: SdpType,
    from: PeerId,
    to: PeerId,
    nonce: &Nonce,
    fingerprints: &[String],
) -> Vec<u8> {
    let kind = match kind {
        SdpType::Offer => "offer",
        SdpType::Answer => "answer",
    };
    let mut out = format!("swarm-sdp-v1\n{room}\n{kind}\n").into_bytes();
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(nonce);
    for fingerprint in fingerprints {
        out.extend_from_slice(fingerprint.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Signs a description of `kind` with text `sdp`, from `identity` to `to` in `room`, with
/// `nonce` (a fresh one for an offer; the offer's for an answer).
pub fn sign(
    identity: &Identity,
    room: &RoomName,
    kind: SdpType,
    to: PeerId,
    nonce: &Nonce,
    sdp: &str,
) -> SdpAuth {
    let fingerprints = fingerprints(sdp);
    let signature = identity.sign(&message(
        room,
        kind,
        identity.id(),
        to,
        nonce,
        &fingerprints,
    ));
    SdpAuth {
        key: hex::encode(&identity.public_key()),
        nonce: hex::encode(nonce),
        fingerprints,
        sig: hex::encode(&signature),
    }
}

/// Checks that `auth` is `from`'s signature of a description of `kind` with text `sdp`, for
/// `to` in `room`, and that the description's fingerprints are the signed ones. Returns the
/// signed nonce (the caller checks it against the offers it made or saw).
pub fn verify(
    auth: &SdpAuth,
    room: &RoomName,
    kind: SdpType,
    from: PeerId,
    to: PeerId,
    sdp: &str,
) -> Result<Nonce, Rejection> {
    let key: [u8; PUBLIC_KEY_LEN] = hex::decode(&auth.key).ok_or(Rejection::MalformedAuth)?;
    let nonce: Nonce = hex::decode(&auth.nonce).ok_or(Rejection::MalformedAuth)?;
    let signature: [u8; SIGNATURE_LEN] = hex::decode(&auth.sig).ok_or(Rejection::MalformedAuth)?;
    if auth.fingerprints.len() > MAX_FINGERPRINTS
        || auth
            .fingerprints
            .iter()
            .any(|f| f.len() > MAX_FINGERPRINT_LEN)
    {
        return Err(Rejection::MalformedAuth);
    }
    if peer_id_of(&key) != from {
        return Err(Rejection::WrongKey);
    }
    verify_signature(
        &key,
        &message(room, kind, from, to, &nonce, &auth.fingerprints),
        &signature,
    )
    .map_err(|err| match err {
        IdentityError::BadKey => Rejection::BadKey,
        _ => Rejection::BadSignature,
    })?;
    let actual = fingerprints(sdp);
    if actual.is_empty() {
        return Err(Rejection::NoFingerprint);
    }
    if actual != auth.fingerprints {
        return Err(Rejection::FingerprintMismatch);
    }
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP_A: &str = "a=fingerprint:sha-256 AA:BB:CC\r\n";
    const FP_M: &str = "a=fingerprint:sha-256 11:22:33\r\n";

    fn room(name: &str) -> RoomName {
        RoomName::new(name.to_owned()).expect("room")
    }

    fn key(n: u8) -> Identity {
        Identity::from_seed([n; 32])
    }

    fn sdp(fingerprint: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n{fingerprint}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        )
    }

    #[test]
    fn a_fingerprint_line_in_other_letters_or_form_is_not_missed() {
        // A server adds its own fingerprint in capitals (Firefox parses attribute names
        // without regard to case and accepts any listed fingerprint).
        let (a, b) = (key(1), key(2));
        let text = sdp(FP_A);
        let auth = sign(
            &a,
            &room("r"),
            SdpType::Offer,
            b.id(),
            &[7; NONCE_LEN],
            &text,
        );
        for added in [
            "a=FINGERPRINT:sha-256 EE:EE\r\n",
            "a=Fingerprint:sha-256 EE:EE\r\n",
            "a=fingerprint :sha-256 EE:EE\r\n",
            "a=fingerprint:sha-256\r\n",
            "a=fingerprint:sha-256 EE:EE\n",
            "\ra=fingerprint:sha-256 EE:EE\r",
        ] {
            let tampered = format!("{text}{added}");
            assert_eq!(
                verify(&auth, &room("r"), SdpType::Offer, a.id(), b.id(), &tampered),
                Err(Rejection::FingerprintMismatch),
                "{added:?}"
            );
        }
    }

    #[test]
    fn fingerprints_are_normalised_sorted_and_unique() {
        let text = "a=fingerprint:SHA-256 ab:cd\r\nm=audio\r\na=fingerprint:sha-256 AB:CD\r\na=fingerprint:sha-1 01:02\r\n";
        assert_eq!(fingerprints(text), vec!["sha-1 01:02", "sha-256 AB:CD"]);
        assert!(fingerprints("v=0\r\n").is_empty());
    }

    #[test]
    fn a_signed_description_verifies_and_gives_its_nonce() {
        let (a, b) = (key(1), key(2));
        let nonce = [7; NONCE_LEN];
        let text = sdp(FP_A);
        let auth = sign(&a, &room("r"), SdpType::Offer, b.id(), &nonce, &text);
        assert_eq!(
            verify(&auth, &room("r"), SdpType::Offer, a.id(), b.id(), &text),
            Ok(nonce)
        );
    }

    #[test]
    fn every_tampering_is_refused_by_name() {
        let (a, b, c) = (key(1), key(2), key(3));
        let nonce = [7; NONCE_LEN];
        let text = sdp(FP_A);
        let r = room("r");
        let auth = sign(&a, &r, SdpType::Offer, b.id(), &nonce, &text);
        // The fingerprint swapped in the description (a man in the middle's own).
        assert_eq!(
            verify(&auth, &r, SdpType::Offer, a.id(), b.id(), &sdp(FP_M)),
            Err(Rejection::FingerprintMismatch)
        );
        // The signed fingerprints swapped too: the signature no longer verifies.
        let mut swapped = auth.clone();
        swapped.fingerprints = fingerprints(&sdp(FP_M));
        assert_eq!(
            verify(&swapped, &r, SdpType::Offer, a.id(), b.id(), &sdp(FP_M)),
            Err(Rejection::BadSignature)
        );
        // Another room, another receiver, another kind, another nonce.
        assert_eq!(
            verify(&auth, &room("other"), SdpType::Offer, a.id(), b.id(), &text),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(&auth, &r, SdpType::Offer, a.id(), c.id(), &text),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(&auth, &r, SdpType::Answer, a.id(), b.id(), &text),
            Err(Rejection::BadSignature)
        );
        let mut renonced = auth.clone();
        renonced.nonce = hex::encode(&[8; NONCE_LEN]);
        assert_eq!(
            verify(&renonced, &r, SdpType::Offer, a.id(), b.id(), &text),
            Err(Rejection::BadSignature)
        );
        // Claimed by another sender (the server stamps another `from`).
        assert_eq!(
            verify(&auth, &r, SdpType::Offer, c.id(), b.id(), &text),
            Err(Rejection::WrongKey)
        );
        // C signs with its own key but the server says it is from A.
        let forged = sign(&c, &r, SdpType::Offer, b.id(), &nonce, &text);
        assert_eq!(
            verify(&forged, &r, SdpType::Offer, a.id(), b.id(), &text),
            Err(Rejection::WrongKey)
        );
        // Malformed fields.
        let mut short = auth.clone();
        short.sig.pop();
        assert_eq!(
            verify(&short, &r, SdpType::Offer, a.id(), b.id(), &text),
            Err(Rejection::MalformedAuth)
        );
        let mut many = auth.clone();
        many.fingerprints = vec!["sha-256 AA".into(); MAX_FINGERPRINTS + 1];
        assert_eq!(
            verify(&many, &r, SdpType::Offer, a.id(), b.id(), &text),
            Err(Rejection::MalformedAuth)
        );
        // A description without any fingerprint cannot be checked.
        let bare = sign(&a, &r, SdpType::Offer, b.id(), &nonce, "v=0\r\n");
        assert_eq!(
            verify(&bare, &r, SdpType::Offer, a.id(), b.id(), "v=0\r\n"),
            Err(Rejection::NoFingerprint)
        );
    }

    #[test]
    fn codes_are_distinct() {
        let all = [
            Rejection::Unsigned,
            Rejection::MalformedAuth,
            Rejection::WrongKey,
            Rejection::BadKey,
            Rejection::BadSignature,
            Rejection::FingerprintMismatch,
            Rejection::NoFingerprint,
            Rejection::StaleAnswer,
            Rejection::ReplayedOffer,
            Rejection::FingerprintChanged,
            Rejection::Unsealed,
            Rejection::Truncated,
            Rejection::CannotOpen,
            Rejection::MalformedSealed,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
    }

    proptest! {
        /// Whatever the fields of a signature hold, checking it never panics, and only the
        /// genuine one verifies.
        #[test]
        fn verify_is_total(key_hex in "[0-9a-f]{0,66}", nonce_hex in "[0-9a-f]{0,34}",
                           sig_hex in "[0-9a-f]{0,130}", fps in proptest::collection::vec(".{0,40}", 0..10),
                           text in ".{0,200}") {
            let auth = SdpAuth { key: key_hex, nonce: nonce_hex, fingerprints: fps, sig: sig_hex };
            let a = key(1);
            prop_assert!(verify(&auth, &room("r"), SdpType::Offer, a.id(), key(2).id(), &text).is_err());
        }

        /// A signature verifies for exactly the description's fingerprints.
        #[test]
        fn round_trip_over_fingerprints(hexes in proptest::collection::vec("[0-9A-F]{2}(:[0-9A-F]{2}){1,31}", 1..4), nonce in any::<[u8; 16]>()) {
            let text: String = hexes.iter().map(|h| format!("a=fingerprint:sha-256 {h}\r\n")).collect();
            let (a, b) = (key(1), key(2));
            let auth = sign(&a, &room("r"), SdpType::Answer, b.id(), &nonce, &text);
            prop_assert_eq!(verify(&auth, &room("r"), SdpType::Answer, a.id(), b.id(), &text), Ok(nonce));
        }
    }
}
