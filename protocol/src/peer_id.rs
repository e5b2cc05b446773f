//! Peer identifiers.

/// Number of random bytes in a [`PeerId`] (128 bits).
pub const PEER_ID_LEN: usize = 16;

/// A peer's identity inside a room: 128 random bits chosen by the server, so ids are
/// unguessable and a client cannot pick its own.
///
/// On the wire it is 32 lowercase hexadecimal digits. Ordering is by the raw bytes, which is
/// the same as ordering the hex strings; it decides the polite side of a negotiation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; PEER_ID_LEN]);

/// Why a string is not a [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a peer id: expected {} lowercase hex digits", PEER_ID_LEN * 2)]
pub struct PeerIdError;

impl PeerId {
    /// Wraps raw bytes (the server fills them from a cryptographic random source).
    pub const fn from_bytes(bytes: [u8; PEER_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; PEER_ID_LEN] {
        &self.0
    }
}

crate::hex::text_form!(PeerId, PeerIdError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_as_32_lowercase_hex_digits() {
        let id = PeerId::from_bytes([0xab; PEER_ID_LEN]);
        assert_eq!(id.to_string(), "ab".repeat(16));
    }

    #[test]
    fn rejects_wrong_length_uppercase_and_non_hex() {
        assert_eq!("ab".parse::<PeerId>(), Err(PeerIdError));
        assert_eq!("AB".repeat(16).parse::<PeerId>(), Err(PeerIdError));
        assert_eq!("zz".repeat(16).parse::<PeerId>(), Err(PeerIdError));
        assert_eq!("é".repeat(16).parse::<PeerId>(), Err(PeerIdError));
    }

    #[test]
    fn serializes_as_a_json_string() {
        let id = PeerId::from_bytes([1; PEER_ID_LEN]);
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{}\"", "01".repeat(16)));
        assert_eq!(serde_json::from_str::<PeerId>(&json).expect("parse"), id);
    }

    proptest! {
        #[test]
        fn text_round_trip(bytes in any::<[u8; PEER_ID_LEN]>()) {
            let id = PeerId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<PeerId>(), Ok(id));
        }

        #[test]
        fn order_matches_string_order(a in any::<[u8; PEER_ID_LEN]>(), b in any::<[u8; PEER_ID_LEN]>()) {
            let (a, b) = (PeerId::from_bytes(a), PeerId::from_bytes(b));
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }
    }
}
