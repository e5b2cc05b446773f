//! Self-certifying peer identities: an Ed25519 key pair whose public key hashes to the peer id.
//!
//! A client that joins with a key (`?key=…&ts=…&proof=…`, see `PROTOCOL.md`) gets the id
//! `SHA-256(public key)[..16]` instead of a random one. Because the id commits to the key,
//! anyone can check that a message signed by that key comes from that id, without asking the
//! server: that is what makes the origin of a `signal` forwarded through the mesh unforgeable
//! (see [`RelayedSignal`]). It also lets a peer come back with the same id after the server
//! restarted.
//!
//! Signed messages are domain-separated and bound to the room, so a signature made for one
//! purpose or one room is worthless in another.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use swarm_protocol::wire::Relay;
use swarm_protocol::{PeerId, RoomName, hex};

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// How far a join proof's time may be from the server's clock, in seconds.
pub const JOIN_PROOF_SKEW: u64 = 600;

/// The message of the server's `invalid-key` refusal of a join proof it took before (each
/// proof is taken once): a client that gets it joins again with a proof of a later second
/// (another process with the same key joined within the same second).
pub const PROOF_USED: &str =
    "this join proof was used already: sign a new one (a later ts) for each connection";

/// Why a key, a proof or a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not 64 hex digits, or not a valid Ed25519 point.
    #[error("the key is not an Ed25519 public key in 64 hex digits")]
    BadKey,
    /// Not 128 hex digits.
    #[error("the proof is not an Ed25519 signature in 128 hex digits")]
    MalformedProof,
    /// The proof's time is not a number, or too far from now.
    #[error("the proof's time is missing or more than {JOIN_PROOF_SKEW} s from the server's clock")]
    StaleProof,
    /// The signature does not verify with that key.
    #[error("the signature does not match the key")]
    BadSignature,
    /// The key does not hash to the claimed peer id.
    #[error("the key does not belong to peer {0}")]
    WrongPeer(PeerId),
}

/// The peer id that `public_key` certifies: the first 16 bytes of its SHA-256.
pub fn peer_id_of(public_key: &[u8; PUBLIC_KEY_LEN]) -> PeerId {
    let digest = Sha256::digest(public_key);
    let mut id = [0u8; swarm_protocol::peer_id::PEER_ID_LEN];
    let len = id.len();
    id.copy_from_slice(&digest[..len]);
    PeerId::from_bytes(id)
}

/// A peer's key pair.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// What a client adds to `/ws/{room}` to join with its key: `key`, `ts` and `proof`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinProof {
    /// The public key, 64 hex digits.
    pub key: String,
    /// Unix time in seconds when the proof was made.
    pub ts: u64,
    /// The signature of the join message, 128 hex digits.
    pub proof: String,
}

impl JoinProof {
    /// The query-string parameters, `key=…&ts=…&proof=…` (all URL-safe as they are).
    pub fn query(&self) -> String {
        format!("key={}&ts={}&proof={}", self.key, self.ts, self.proof)
    }
}

impl Identity {
    /// The key pair for a 32-byte secret seed (the caller draws it from a cryptographic random
    /// source: core has none of its own).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.verifying_key().to_bytes()
    }

    /// The peer id this key certifies.
    pub fn id(&self) -> PeerId {
        peer_id_of(&self.public_key())
    }

    /// A proof that the bearer holds this key, to join `room` at Unix time `now`.
    pub fn join_proof(&self, room: &RoomName, now: u64) -> JoinProof {
        let signature = self.key.sign(&join_message(room, now));
        JoinProof {
            key: hex::encode(&self.public_key()),
            ts: now,
            proof: hex::encode(&signature.to_bytes()),
        }
    }

    /// Signs a signal from this peer to `target` in `room`, with sequence number `seq`.
    pub fn sign_relay(
        &self,
        room: &RoomName,
        target: PeerId,
        seq: u64,
        data: &[u8],
    ) -> [u8; SIGNATURE_LEN] {
        let message = relay_message(room, self.id(), target, seq, data);
        self.key.sign(&message).to_bytes()
    }
}

impl Identity {
    /// Signs `message` (a domain-separated message of another module, such as
    /// [`crate::sdp_auth`]'s).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// A secret of this key for `label`: SHA-256 of the label and the private key. Nobody
    /// without the key can compute it (used to seed this session's nonces).
    pub(crate) fn secret_digest(&self, label: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(label);
        hash.update(self.key.to_bytes());
        hash.finalize().into()
    }
}

/// Checks that `signature` is `public`'s signature of `message`, strictly (weak keys and
/// non-canonical signatures refused).
pub(crate) fn verify_signature(
    public: &[u8; PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), IdentityError> {
    strong_key(public)?
        .verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| IdentityError::BadSignature)
}

/// Checks a join proof (`key`, `ts`, `proof` from the query string) at Unix time `now`;
/// returns the peer id the key certifies.
pub fn verify_join(
    room: &RoomName,
    key: &str,
    ts: Option<u64>,
    proof: Option<&str>,
    now: u64,
) -> Result<PeerId, IdentityError> {
    let public: [u8; PUBLIC_KEY_LEN] = hex::decode(key).ok_or(IdentityError::BadKey)?;
    let verifying = strong_key(&public)?;
    let ts = ts.ok_or(IdentityError::StaleProof)?;
    if ts.abs_diff(now) > JOIN_PROOF_SKEW {
        return Err(IdentityError::StaleProof);
    }
    let proof: [u8; SIGNATURE_LEN] = proof
        .and_then(hex::decode)
        .ok_or(IdentityError::MalformedProof)?;
    verifying
        .verify_strict(&join_message(room, ts), &Signature::from_bytes(&proof))
        .map_err(|_| IdentityError::BadSignature)?;
    Ok(peer_id_of(&public))
}

/// A `signal` forwarded through the mesh, as its signer made it.
#[derive(Debug, Clone, Copy)]
pub struct RelayedSignal<'a> {
    /// The peer that wrote it.
    pub origin: PeerId,
    /// The peer it is for.
    pub target: PeerId,
    /// The origin's sequence number (each signal gets a new one; replays are dropped).
    pub seq: u64,
    /// The origin's public key.
    pub public_key: &'a [u8; PUBLIC_KEY_LEN],
    /// The origin's signature.
    pub signature: &'a [u8; SIGNATURE_LEN],
    /// The signal's JSON, as in a server `signal` frame's `data`.
    pub data: &'a [u8],
}

impl<'a> From<&Relay<'a>> for RelayedSignal<'a> {
    /// The signed part of a relay frame.
    fn from(relay: &Relay<'a>) -> Self {
        Self {
            origin: relay.origin,
            target: relay.target,
            seq: relay.seq,
            public_key: relay.public_key,
            signature: relay.signature,
            data: relay.data,
        }
    }
}

impl RelayedSignal<'_> {
    /// Checks that `origin` wrote this, for `target`, in `room`: the key must hash to
    /// `origin` and the signature must verify. A forwarder can neither change the message
    /// nor claim another origin.
    pub fn verify(&self, room: &RoomName) -> Result<(), IdentityError> {
        if peer_id_of(self.public_key) != self.origin {
            return Err(IdentityError::WrongPeer(self.origin));
        }
        let verifying = strong_key(self.public_key)?;
        let message = relay_message(room, self.origin, self.target, self.seq, self.data);
        verifying
            .verify_strict(&message, &Signature::from_bytes(self.signature))
            .map_err(|_| IdentityError::BadSignature)
    }
}

/// A public key fit to check signatures with: a valid point, and not one of small order (a
/// weak key, for which one signature verifies for every message). Signatures are checked
/// with `verify_strict`, which also refuses non-canonical encodings.
fn strong_key(public: &[u8; PUBLIC_KEY_LEN]) -> Result<VerifyingKey, IdentityError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| IdentityError::BadKey)?;
    if key.is_weak() {
        return Err(IdentityError::BadKey);
    }
    Ok(key)
}

fn join_message(room: &RoomName, ts: u64) -> Vec<u8> {
    format!("swarm-join\n{room}\n{ts}").into_bytes()
}

fn relay_message(
    room: &RoomName,
    origin: PeerId,
    target: PeerId,
    seq: u64,
    data: &[u8],
) -> Vec<u8> {
    let mut message = format!("swarm-relay\n{room}\n").into_bytes();
    message.extend_from_slice(origin.as_bytes());
    message.extend_from_slice(target.as_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(data);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).expect("room")
    }

    #[test]
    fn the_id_is_the_hash_of_the_key_and_differs_per_key() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        assert_eq!(a.id(), peer_id_of(&a.public_key()));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), Identity::from_seed([1; 32]).id(), "stable per seed");
    }

    #[test]
    fn a_join_proof_verifies_for_its_room_and_time_only() {
        let me = Identity::from_seed([7; 32]);
        let p = me.join_proof(&room("demo"), 1_000_000);
        let check = |r: &str, now: u64, proof: &str| {
            verify_join(&room(r), &p.key, Some(p.ts), Some(proof), now)
        };
        assert_eq!(check("demo", 1_000_000, &p.proof), Ok(me.id()));
        assert_eq!(
            check("demo", 1_000_000 + JOIN_PROOF_SKEW, &p.proof),
            Ok(me.id())
        );
        assert_eq!(
            check("other", 1_000_000, &p.proof),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            check("demo", 1_000_000 + JOIN_PROOF_SKEW + 1, &p.proof),
            Err(IdentityError::StaleProof)
        );
        assert_eq!(
            check("demo", 1_000_000, "00"),
            Err(IdentityError::MalformedProof)
        );
        assert_eq!(
            verify_join(&room("demo"), "xyz", Some(p.ts), Some(&p.proof), 1_000_000),
            Err(IdentityError::BadKey)
        );
        assert_eq!(
            verify_join(&room("demo"), &p.key, None, Some(&p.proof), 1_000_000),
            Err(IdentityError::StaleProof)
        );
        // Someone else's key with this proof.
        let other = Identity::from_seed([8; 32]).join_proof(&room("demo"), 1_000_000);
        assert_eq!(
            verify_join(
                &room("demo"),
                &other.key,
                Some(p.ts),
                Some(&p.proof),
                1_000_000
            ),
            Err(IdentityError::BadSignature)
        );
        assert!(p.query().starts_with("key="));
    }

    #[test]
    fn a_relayed_signal_cannot_be_altered_or_claimed_by_another() {
        let (alice, mallory) = (Identity::from_seed([1; 32]), Identity::from_seed([3; 32]));
        let bob = Identity::from_seed([2; 32]).id();
        let data = br#"{"candidate":null}"#;
        let signature = alice.sign_relay(&room("r"), bob, 9, data);
        let key = alice.public_key();
        let genuine = RelayedSignal {
            origin: alice.id(),
            target: bob,
            seq: 9,
            public_key: &key,
            signature: &signature,
            data,
        };
        assert_eq!(genuine.verify(&room("r")), Ok(()));
        assert_eq!(genuine.verify(&room("s")), Err(IdentityError::BadSignature));
        let altered = RelayedSignal {
            data: br#"{"candidate":{}}"#,
            ..genuine
        };
        assert_eq!(altered.verify(&room("r")), Err(IdentityError::BadSignature));
        let replayed_seq = RelayedSignal { seq: 10, ..genuine };
        assert_eq!(
            replayed_seq.verify(&room("r")),
            Err(IdentityError::BadSignature)
        );
        // Mallory claims Alice's origin with her own key: the key does not hash to Alice.
        let mkey = mallory.public_key();
        let msig = mallory.sign_relay(&room("r"), bob, 9, data);
        let forged = RelayedSignal {
            public_key: &mkey,
            signature: &msig,
            ..genuine
        };
        assert_eq!(
            forged.verify(&room("r")),
            Err(IdentityError::WrongPeer(alice.id()))
        );
        // ... or with Alice's key but her own signature.
        let forged = RelayedSignal {
            signature: &msig,
            ..genuine
        };
        assert_eq!(forged.verify(&room("r")), Err(IdentityError::BadSignature));
    }

    #[test]
    fn a_weak_key_with_a_universal_signature_is_refused() {
        // The identity point as the key and (identity, 0) as the signature: the plain
        // Ed25519 equation holds for every message.
        let mut weak = [0u8; PUBLIC_KEY_LEN];
        weak[0] = 1;
        let mut universal = [0u8; SIGNATURE_LEN];
        universal[0] = 1;
        let origin = peer_id_of(&weak);
        let bob = Identity::from_seed([2; 32]).id();
        let signal = RelayedSignal {
            origin,
            target: bob,
            seq: 1,
            public_key: &weak,
            signature: &universal,
            data: b"{}",
        };
        // Lenient verification would take it: the attack is real.
        use ed25519_dalek::Verifier;
        let lenient = VerifyingKey::from_bytes(&weak).expect("a valid point");
        let message = relay_message(&room("r"), origin, bob, 1, b"{}");
        assert!(
            lenient
                .verify(&message, &Signature::from_bytes(&universal))
                .is_ok()
        );
        assert_eq!(signal.verify(&room("r")), Err(IdentityError::BadKey));
        let proof = hex::encode(&universal);
        assert_eq!(
            verify_join(
                &room("r"),
                &hex::encode(&weak),
                Some(100),
                Some(&proof),
                100
            ),
            Err(IdentityError::BadKey)
        );
    }
}
