//! Secret rooms: the server learns neither the room's name nor what peers tell each other.
//!
//! Every member holds a secret (the page carries it in the URL fragment, which browsers never
//! send to a server). From the secret and the room's name, HKDF-SHA-256 derives the name the
//! server sees ([`RoomSecret::server_room`]) and a key with which every signal is sealed
//! (XChaCha20-Poly1305): offers, answers, candidates and `busy` alike. The server relays
//! ciphertext; a peer without the secret can neither read nor forge what members send, and
//! what it sends them does not open ([`Rejection::CannotOpen`]).
//!
//! The associated data binds each sealed signal to the room and to its sender and receiver,
//! so a server cannot hand a signal meant for one peer to another, or claim another sender.
//! Nonces are 24 bytes, drawn from [`Nonces`], and never repeat. The exact derivation, nonce
//! rule and associated data are in `PROTOCOL.md` ("Secret rooms").

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use swarm_protocol::{PeerId, RoomName, hex};

use crate::identity::Identity;
use crate::sdp_auth::Rejection;

/// The HKDF salt of every derivation.
pub const SALT: &[u8] = b"swarm-secret-room-v1";

/// Length of a sealed signal's nonce.
pub const SEAL_NONCE_LEN: usize = 24;

/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;

/// Longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 1024;

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty.
    #[error("the secret is empty")]
    Empty,
    /// The secret is longer than [`MAX_SECRET_LEN`] bytes.
    #[error("the secret is longer than {MAX_SECRET_LEN} bytes")]
    TooLong,
}

/// What a secret gives for one room: the name the server sees and the key of its signals.
#[derive(Clone)]
pub struct RoomSecret {
    key: [u8; 32],
    server_room: RoomName,
}

impl std::fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomSecret")
            .field("server_room", &self.server_room)
            .finish_non_exhaustive()
    }
}

impl RoomSecret {
    /// Derives the server's room name and the signal key of `room` from `secret` (its UTF-8
    /// bytes). The secret must be unguessable: the server sees the derived name and could try
    /// guesses against it offline (the page makes 128-bit random secrets).
    pub fn derive(secret: &str, room: &RoomName) -> Result<Self, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if secret.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong);
        }
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), secret.as_bytes());
        let mut name = [0u8; 16];
        let mut key = [0u8; 32];
        // Both lengths are far below HKDF-SHA-256's limit of 8160 bytes: expand cannot fail.
        let room_info = format!("room\n{room}");
        let key_info = format!("signal-key\n{room}");
        if hkdf.expand(room_info.as_bytes(), &mut name).is_err()
            || hkdf.expand(key_info.as_bytes(), &mut key).is_err()
        {
            unreachable!("HKDF output lengths are valid");
        }
        let server_room = RoomName::new(format!("s-{}", hex::encode(&name)))
            .unwrap_or_else(|_| unreachable!("s- and 32 hex digits make a valid room name"));
        Ok(Self { key, server_room })
    }

    /// The room name the server sees: `s-` and 32 hex digits.
    pub fn server_room(&self) -> &RoomName {
        &self.server_room
    }

    /// The associated data of a signal from `from` to `to`.
    fn associated_data(&self, from: PeerId, to: PeerId) -> Vec<u8> {
        let mut ad = format!("swarm-sealed-v1\n{}\n", self.server_room).into_bytes();
        ad.extend_from_slice(from.as_bytes());
        ad.extend_from_slice(to.as_bytes());
        ad
    }

    /// Seals `plaintext` (a signal's JSON) from `from` to `to` with `nonce` (never used
    /// before with this key: take it from [`Nonces`]). Returns the `sealed` text.
    pub fn seal(
        &self,
        from: PeerId,
        to: PeerId,
        nonce: &[u8; SEAL_NONCE_LEN],
        plaintext: &[u8],
    ) -> String {
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let ad = self.associated_data(from, to);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad: &ad,
                },
            )
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 seals any length we send"));
        let mut out = Vec::with_capacity(SEAL_NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a `sealed` text that `from` sealed for `to`.
    pub fn open(&self, from: PeerId, to: PeerId, sealed: &str) -> Result<Vec<u8>, Rejection> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| Rejection::Truncated)?;
        if bytes.len() < SEAL_NONCE_LEN + TAG_LEN {
            return Err(Rejection::Truncated);
        }
        let (nonce, ciphertext) = bytes.split_at(SEAL_NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let ad = self.associated_data(from, to);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &ad,
                },
            )
            .map_err(|_| Rejection::CannotOpen)
    }
}

/// A session's nonces: each is the first `N` bytes of SHA-256(session key ‖ counter), where
/// the session key is SHA-256 of a label, a secret of the peer's private key, the session's
/// start time and 64 random bits, and the counter counts up from 0. Within a session no two
/// inputs are equal; across sessions the keys differ. So no nonce repeats, and none can be
/// predicted by anyone without the private key.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces for a session of `identity` that started at `start_ms` (wall clock), with
    /// `random` drawn by the caller.
    pub fn new(identity: &Identity, start_ms: u64, random: u64) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"swarm-nonces-v1\n");
        hash.update(identity.secret_digest(b"swarm-nonces-v1\n"));
        hash.update(start_ms.to_be_bytes());
        hash.update(random.to_be_bytes());
        Self {
            key: hash.finalize().into(),
            counter: 0,
        }
    }

    /// The next nonce.
    pub fn draw<const N: usize>(&mut self) -> [u8; N] {
        const { assert!(N <= 32) };
        let mut hash = Sha256::new();
        hash.update(self.key);
        hash.update(self.counter.to_be_bytes());
        self.counter += 1;
        let digest = hash.finalize();
        let mut out = [0u8; N];
        out.copy_from_slice(&digest[..N]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name.to_owned()).expect("room")
    }

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn the_server_sees_a_name_that_depends_on_secret_and_room() {
        let a = RoomSecret::derive("k1", &room("demo")).expect("secret");
        let again = RoomSecret::derive("k1", &room("demo")).expect("secret");
        let other_secret = RoomSecret::derive("k2", &room("demo")).expect("secret");
        let other_room = RoomSecret::derive("k1", &room("demo2")).expect("secret");
        assert_eq!(a.server_room(), again.server_room());
        assert_ne!(a.server_room(), other_secret.server_room());
        assert_ne!(a.server_room(), other_room.server_room());
        let name = a.server_room().to_string();
        assert!(name.starts_with("s-") && name.len() == 34, "{name}");
        assert!(!name.contains("demo"));
        assert_eq!(
            RoomSecret::derive("", &room("demo")).map(|_| ()),
            Err(SecretError::Empty)
        );
        assert_eq!(
            RoomSecret::derive(&"x".repeat(MAX_SECRET_LEN + 1), &room("demo")).map(|_| ()),
            Err(SecretError::TooLong)
        );
    }

    #[test]
    fn sealed_signals_open_only_for_the_same_secret_room_and_pair() {
        let secret = RoomSecret::derive("k1", &room("demo")).expect("secret");
        let mut nonces = Nonces::new(&Identity::from_seed([1; 32]), 1, 2);
        let text = br#"{"sdp":{"type":"offer","sdp":"v=0"}}"#;
        let sealed = secret.seal(id(1), id(2), &nonces.draw(), text);
        assert!(!sealed.contains("sdp"));
        assert_eq!(secret.open(id(1), id(2), &sealed), Ok(text.to_vec()));
        // Wrong secret, other room, other pair, other direction.
        for other in [
            RoomSecret::derive("k2", &room("demo")).expect("secret"),
            RoomSecret::derive("k1", &room("other")).expect("secret"),
        ] {
            assert_eq!(
                other.open(id(1), id(2), &sealed),
                Err(Rejection::CannotOpen)
            );
        }
        assert_eq!(
            secret.open(id(3), id(2), &sealed),
            Err(Rejection::CannotOpen)
        );
        assert_eq!(
            secret.open(id(1), id(3), &sealed),
            Err(Rejection::CannotOpen)
        );
        assert_eq!(
            secret.open(id(2), id(1), &sealed),
            Err(Rejection::CannotOpen)
        );
        // Truncated: a byte short of the tag, and shorter than a nonce and a tag.
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).expect("base64");
        let cut = URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]);
        assert_eq!(secret.open(id(1), id(2), &cut), Err(Rejection::CannotOpen));
        let tiny = URL_SAFE_NO_PAD.encode(&bytes[..SEAL_NONCE_LEN + TAG_LEN - 1]);
        assert_eq!(secret.open(id(1), id(2), &tiny), Err(Rejection::Truncated));
        assert_eq!(
            secret.open(id(1), id(2), "not base64!"),
            Err(Rejection::Truncated)
        );
        // One bit flipped anywhere.
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(
            secret.open(id(1), id(2), &URL_SAFE_NO_PAD.encode(&flipped)),
            Err(Rejection::CannotOpen)
        );
    }

    #[test]
    fn nonces_do_not_repeat_within_or_across_sessions() {
        let identity = Identity::from_seed([1; 32]);
        let mut seen = std::collections::HashSet::new();
        for (start, random) in [(1, 1), (1, 2), (2, 1)] {
            let mut nonces = Nonces::new(&identity, start, random);
            for _ in 0..1000 {
                assert!(seen.insert(nonces.draw::<SEAL_NONCE_LEN>()));
            }
        }
        // Another key, same start and randomness: other nonces.
        let mut other = Nonces::new(&Identity::from_seed([2; 32]), 1, 1);
        assert!(seen.insert(other.draw::<SEAL_NONCE_LEN>()));
    }

    proptest! {
        /// Whatever text arrives as `sealed`, opening it never panics, and only what was
        /// sealed opens.
        #[test]
        fn open_is_total(text in ".{0,300}") {
            let secret = RoomSecret::derive("k", &room("r")).expect("secret");
            prop_assert!(secret.open(id(1), id(2), &text).is_err());
        }

        /// Anything sealed opens to itself.
        #[test]
        fn seal_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..2000), secret in ".{1,40}") {
            let secret = RoomSecret::derive(&secret, &room("r")).expect("secret");
            let mut nonces = Nonces::new(&Identity::from_seed([3; 32]), 5, 6);
            let sealed = secret.seal(id(1), id(2), &nonces.draw(), &plaintext);
            prop_assert_eq!(secret.open(id(1), id(2), &sealed), Ok(plaintext));
        }
    }
}
