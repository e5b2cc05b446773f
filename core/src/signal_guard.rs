//! What a peer does to every signal it sends and receives, on every path (the server or the
//! mesh): signs its offers and answers ([`crate::sdp_auth`]), seals everything in a secret
//! room ([`crate::secret_room`]), and on receipt opens, checks and refuses with a named
//! [`Rejection`] before anything is applied to a connection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use swarm_protocol::{PeerId, RoomName, SdpType, SignalData};

use crate::identity::Identity;
use crate::sdp_auth::{self, Nonce, Rejection, UNSIGNED_OFFER};
use crate::secret_room::{Nonces, RoomSecret, SEAL_NONCE_LEN};

/// Most peers whose offers and answers are tracked at once; past it the lowest id is
/// forgotten (its next answer is then refused as stale, and it offers again).
pub const MAX_TRACKED_PEERS: usize = 4096;

/// Offer nonces remembered per peer, to refuse replays.
pub const SEEN_OFFERS_PER_PEER: usize = 32;

/// How a peer treats signals: whether it refuses unsigned offers and answers, and the secret
/// of a secret room.
#[derive(Debug, Clone, Default)]
pub struct SignalPolicy {
    /// Refuse offers and answers that are not signed (protocol v1 peers).
    pub require_signed: bool,
    /// The secret room's key: every signal is sealed, and unsealed ones refused.
    pub secret: Option<RoomSecret>,
}

/// The per-peer state of signing and checking.
#[derive(Debug)]
pub struct SignalGuard {
    room: RoomName,
    identity: Identity,
    policy: SignalPolicy,
    nonces: Nonces,
    /// The nonce of our latest offer to each peer, until its answer arrives.
    ours: BTreeMap<PeerId, Nonce>,
    /// The nonce of each peer's latest offer to us (what our answer signs).
    theirs: BTreeMap<PeerId, Nonce>,
    /// Offer nonces taken from each peer, newest last.
    seen: BTreeMap<PeerId, VecDeque<Nonce>>,
    /// Peers whose last description was refused as forged or unsigned: their candidates are
    /// dropped until one of their descriptions passes (no connection is made for what follows
    /// a refused offer).
    refused: BTreeSet<PeerId>,
    /// The DTLS fingerprints of the last description that passed from each peer: once its
    /// channel is open, a later description on that connection must carry the same (the
    /// certificate of a connection never changes), so one replayed from an older connection
    /// is refused even once its nonce is forgotten. Until then each description that passes
    /// replaces them (an offer refused as busy, or a connection given up, leaves its
    /// fingerprints here, and the next attempt has a new certificate).
    current: BTreeMap<PeerId, Vec<String>>,
    /// Peers whose channel is open: kept when fresh keys fill the maps.
    connected: BTreeSet<PeerId>,
}

impl SignalGuard {
    /// The guard of `identity` in `room` (the name the server sees), for a session that
    /// started at `start_ms` with `random` drawn by the caller (seeds the nonces).
    pub fn new(
        room: RoomName,
        identity: Identity,
        policy: SignalPolicy,
        start_ms: u64,
        random: u64,
    ) -> Self {
        let nonces = Nonces::new(&identity, start_ms, random);
        Self {
            room,
            identity,
            policy,
            nonces,
            ours: BTreeMap::new(),
            theirs: BTreeMap::new(),
            seen: BTreeMap::new(),
            refused: BTreeSet::new(),
            current: BTreeMap::new(),
            connected: BTreeSet::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &SignalPolicy {
        &self.policy
    }

    /// `data` as it goes to `to`: offers and answers signed, everything sealed in a secret room.
    pub fn outgoing(&mut self, to: PeerId, data: SignalData) -> SignalData {
        let data = match data {
            SignalData::Sdp(mut description) => {
                let nonce = match description.kind {
                    SdpType::Offer => {
                        let nonce = self.nonces.draw();
                        self.track(to);
                        self.ours.insert(to, nonce);
                        nonce
                    }
                    SdpType::Answer => self.theirs.get(&to).copied().unwrap_or(UNSIGNED_OFFER),
                };
                description.auth = Some(sdp_auth::sign(
                    &self.identity,
                    &self.room,
                    description.kind,
                    to,
                    &nonce,
                    &description.sdp,
                ));
                SignalData::Sdp(description)
            }
            other => other,
        };
        match &self.policy.secret {
            Some(secret) => {
                let json = serde_json::to_vec(&data).unwrap_or_default();
                let nonce: [u8; SEAL_NONCE_LEN] = self.nonces.draw();
                SignalData::Sealed(secret.seal(self.identity.id(), to, &nonce, &json))
            }
            None => data,
        }
    }

    /// Opens and checks `data` from `from` (`open`: whether our channel to it is open): what
    /// may be applied to the connection, `None` for a candidate (or `busy`) that follows a
    /// description refused as forged or unsigned (dropped without a word), or why it is
    /// refused.
    pub fn incoming(
        &mut self,
        from: PeerId,
        data: SignalData,
        open: bool,
    ) -> Result<Option<SignalData>, Rejection> {
        match self.check(from, data, open) {
            Ok(data @ SignalData::Sdp(_)) => {
                self.refused.remove(&from);
                Ok(Some(data))
            }
            Ok(_) if self.refused.contains(&from) => Ok(None),
            Ok(data) => Ok(Some(data)),
            Err(reason) => {
                if reason.closes_setup() {
                    if self.refused.len() >= MAX_TRACKED_PEERS {
                        self.refused.pop_first();
                    }
                    self.refused.insert(from);
                }
                Err(reason)
            }
        }
    }

    fn check(
        &mut self,
        from: PeerId,
        data: SignalData,
        open: bool,
    ) -> Result<SignalData, Rejection> {
        let data = match (&self.policy.secret, data) {
            (Some(secret), SignalData::Sealed(sealed)) => {
                let json = secret.open(from, self.identity.id(), &sealed)?;
                match serde_json::from_slice::<SignalData>(&json) {
                    Ok(SignalData::Sealed(_)) | Err(_) => return Err(Rejection::MalformedSealed),
                    Ok(inner) => inner,
                }
            }
            (Some(_), _) => return Err(Rejection::Unsealed),
            // Sealed data outside a secret room cannot be read: it is not for us.
            (None, SignalData::Sealed(_)) => return Err(Rejection::CannotOpen),
            (None, data) => data,
        };
        let SignalData::Sdp(description) = &data else {
            return Ok(data);
        };
        let fingerprints = sdp_auth::fingerprints(&description.sdp);
        let Some(auth) = &description.auth else {
            if self.policy.require_signed {
                return Err(Rejection::Unsigned);
            }
            self.same_connection(from, fingerprints, open)?;
            match description.kind {
                SdpType::Offer => {
                    self.theirs.remove(&from);
                }
                SdpType::Answer => {
                    self.ours.remove(&from);
                }
            }
            return Ok(data);
        };
        let nonce = sdp_auth::verify(
            auth,
            &self.room,
            description.kind,
            from,
            self.identity.id(),
            &description.sdp,
        )?;
        if description.kind == SdpType::Answer && self.ours.get(&from) != Some(&nonce) {
            return Err(Rejection::StaleAnswer);
        }
        if description.kind == SdpType::Offer
            && self
                .seen
                .get(&from)
                .is_some_and(|seen| seen.contains(&nonce))
        {
            return Err(Rejection::ReplayedOffer);
        }
        self.same_connection(from, fingerprints, open)?;
        match description.kind {
            SdpType::Offer => {
                self.track(from);
                let seen = self.seen.entry(from).or_default();
                if seen.len() >= SEEN_OFFERS_PER_PEER {
                    seen.pop_front();
                }
                seen.push_back(nonce);
                self.theirs.insert(from, nonce);
            }
            SdpType::Answer => {
                self.ours.remove(&from);
            }
        }
        Ok(data)
    }

    /// Refuses a description from `from` for an open connection whose fingerprints are not
    /// that connection's (one replayed from an older connection); before the channel opens,
    /// notes them as the connection's.
    fn same_connection(
        &mut self,
        from: PeerId,
        fingerprints: Vec<String>,
        open: bool,
    ) -> Result<(), Rejection> {
        match self.current.get(&from) {
            Some(current) if open && *current != fingerprints => Err(Rejection::FingerprintChanged),
            Some(current) if *current == fingerprints => Ok(()),
            _ => {
                self.track(from);
                self.current.insert(from, fingerprints);
                Ok(())
            }
        }
    }

    /// The connection to `peer` ended: its pending offers are forgotten (the offers seen
    /// stay, so a replay is still refused).
    pub fn forget(&mut self, peer: PeerId) {
        self.ours.remove(&peer);
        self.theirs.remove(&peer);
        self.current.remove(&peer);
        self.connected.remove(&peer);
    }

    /// The channel to `peer` opened: what is tracked of it is kept when fresh keys fill the
    /// maps (at most [`MAX_TRACKED_PEERS`] connections are counted).
    pub fn opened(&mut self, peer: PeerId) {
        if self.connected.len() < MAX_TRACKED_PEERS {
            self.connected.insert(peer);
        }
    }

    /// `peer` left the room: a later join of the same id starts afresh (the offers seen stay).
    pub fn left(&mut self, peer: PeerId) {
        self.forget(peer);
        self.refused.remove(&peer);
    }

    /// Makes room for one more tracked peer in each map: past the bound, a peer whose
    /// channel is not open is forgotten first (so fresh keys cannot push out the peers we are
    /// connected to).
    fn track(&mut self, peer: PeerId) {
        fn make_room<V>(map: &mut BTreeMap<PeerId, V>, keep: &BTreeSet<PeerId>, peer: PeerId) {
            if map.len() < MAX_TRACKED_PEERS || map.contains_key(&peer) {
                return;
            }
            let victim = map
                .keys()
                .copied()
                .find(|p| *p != peer && !keep.contains(p))
                .or_else(|| map.keys().copied().find(|p| *p != peer));
            if let Some(victim) = victim {
                map.remove(&victim);
            }
        }
        make_room(&mut self.seen, &self.connected, peer);
        make_room(&mut self.ours, &self.connected, peer);
        make_room(&mut self.theirs, &self.connected, peer);
        make_room(&mut self.current, &self.connected, peer);
    }

    /// Peers tracked (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.seen
            .len()
            .max(self.ours.len())
            .max(self.theirs.len())
            .max(self.current.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_protocol::{IceCandidateInit, SessionDescription};

    fn room() -> RoomName {
        RoomName::new("r".to_owned()).expect("room")
    }

    fn guard(n: u8, policy: SignalPolicy) -> SignalGuard {
        SignalGuard::new(room(), Identity::from_seed([n; 32]), policy, 1, n.into())
    }

    fn id(n: u8) -> PeerId {
        Identity::from_seed([n; 32]).id()
    }

    fn description(kind: SdpType, fingerprint: &str) -> SignalData {
        SignalData::Sdp(SessionDescription {
            kind,
            sdp: format!("v=0\r\na=fingerprint:sha-256 {fingerprint}\r\n"),
            want: None,
            auth: None,
        })
    }

    fn signed() -> SignalPolicy {
        SignalPolicy {
            require_signed: true,
            secret: None,
        }
    }

    fn secret(text: &str) -> SignalPolicy {
        SignalPolicy {
            require_signed: true,
            secret: Some(RoomSecret::derive(text, &room()).expect("secret")),
        }
    }

    #[test]
    fn offer_and_answer_pass_between_signing_peers() {
        let (mut a, mut b) = (guard(1, signed()), guard(2, signed()));
        let offer = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert!(matches!(b.incoming(id(1), offer, false), Ok(Some(_))));
        let answer = b.outgoing(id(1), description(SdpType::Answer, "BB"));
        assert!(matches!(
            a.incoming(id(2), answer.clone(), false),
            Ok(Some(_))
        ));
        // The same answer again, or one for an older offer: stale.
        assert_eq!(
            a.incoming(id(2), answer.clone(), false),
            Err(Rejection::StaleAnswer)
        );
        let _newer = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert_eq!(
            a.incoming(id(2), answer, false),
            Err(Rejection::StaleAnswer)
        );
    }

    #[test]
    fn a_description_for_an_open_connection_keeps_its_fingerprint() {
        let (mut a, mut b) = (guard(1, signed()), guard(2, signed()));
        let first = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert!(matches!(b.incoming(id(1), first, false), Ok(Some(_))));
        // A renegotiation on the same connection carries the same certificate.
        let again = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert!(matches!(b.incoming(id(1), again, true), Ok(Some(_))));
        // One from an older connection (its nonce long forgotten) has another: refused, and
        // not as a forgery (it closes nothing).
        let old = a.outgoing(id(2), description(SdpType::Offer, "CC"));
        assert_eq!(
            b.incoming(id(1), old.clone(), true),
            Err(Rejection::FingerprintChanged)
        );
        assert!(!Rejection::FingerprintChanged.closes_setup());
        // Before a channel opens, each attempt may have a new certificate (an offer refused
        // as busy, a connection given up and tried again)...
        let retry = a.outgoing(id(2), description(SdpType::Offer, "DD"));
        assert!(matches!(b.incoming(id(1), retry, false), Ok(Some(_))));
        // ...and once it is open, its certificate is the one that holds.
        let stray = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert_eq!(
            b.incoming(id(1), stray, true),
            Err(Rejection::FingerprintChanged)
        );
        // Once that connection is gone, a new one may have a new certificate.
        b.forget(id(1));
        let fresh = a.outgoing(id(2), description(SdpType::Offer, "CC"));
        assert!(matches!(b.incoming(id(1), fresh, true), Ok(Some(_))));
    }

    #[test]
    fn fresh_keys_cannot_push_out_the_peers_we_are_connected_to() {
        let (mut a, mut b) = (guard(1, signed()), guard(2, signed()));
        let offer = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert!(matches!(
            b.incoming(id(1), offer.clone(), false),
            Ok(Some(_))
        ));
        for n in 0..(MAX_TRACKED_PEERS as u32 + 50) {
            let mut seed = [9u8; 32];
            seed[..4].copy_from_slice(&n.to_be_bytes());
            let fake = Identity::from_seed(seed);
            let mut sender = SignalGuard::new(room(), fake.clone(), signed(), 1, 1);
            let fake_offer = sender.outgoing(id(2), description(SdpType::Offer, "FF"));
            assert!(b.incoming(fake.id(), fake_offer, false).is_ok());
        }
        assert!(b.tracked() <= MAX_TRACKED_PEERS);
        // The replay of the connected peer's offer is still refused.
        assert_eq!(
            b.incoming(id(1), offer, false),
            Err(Rejection::ReplayedOffer)
        );
    }

    #[test]
    fn a_replayed_offer_is_refused() {
        let (mut a, mut b) = (guard(1, signed()), guard(2, signed()));
        let offer = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        assert!(b.incoming(id(1), offer.clone(), false).is_ok());
        b.left(id(1));
        assert_eq!(
            b.incoming(id(1), offer, false),
            Err(Rejection::ReplayedOffer)
        );
    }

    #[test]
    fn unsigned_descriptions_pass_only_where_allowed() {
        let mut open = guard(2, SignalPolicy::default());
        let mut strict = guard(3, signed());
        let offer = description(SdpType::Offer, "AA");
        assert!(open.incoming(id(1), offer.clone(), false).is_ok());
        assert_eq!(
            strict.incoming(id(1), offer, false),
            Err(Rejection::Unsigned)
        );
        // Candidates carry no signature and pass.
        let candidate = SignalData::Candidate(Some(IceCandidateInit {
            candidate: "candidate:1 1 udp 1 10.0.0.1 1 typ host".into(),
            sdp_mid: None,
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }));
        assert_eq!(
            strict.incoming(id(1), candidate.clone(), false),
            Ok(None),
            "after its refused offer, dropped without a word"
        );
        assert_eq!(
            strict.incoming(id(5), candidate.clone(), false),
            Ok(Some(candidate))
        );
        // A signature present but broken is refused even where none is required.
        let mut a = guard(1, SignalPolicy::default());
        let SignalData::Sdp(mut forged) = a.outgoing(id(2), description(SdpType::Offer, "AA"))
        else {
            panic!("an offer");
        };
        forged.sdp = forged.sdp.replace("AA", "EE");
        assert_eq!(
            open.incoming(id(1), SignalData::Sdp(forged), false),
            Err(Rejection::FingerprintMismatch)
        );
    }

    #[test]
    fn secret_rooms_seal_everything_and_refuse_the_rest() {
        let (mut a, mut b) = (guard(1, secret("k")), guard(2, secret("k")));
        let offer = a.outgoing(id(2), description(SdpType::Offer, "AA"));
        let SignalData::Sealed(text) = &offer else {
            panic!("sealed: {offer:?}");
        };
        assert!(!text.contains("fingerprint"));
        assert!(matches!(
            b.incoming(id(1), offer, false),
            Ok(Some(SignalData::Sdp(_)))
        ));
        let busy = a.outgoing(id(2), SignalData::Busy);
        assert_eq!(b.incoming(id(1), busy, false), Ok(Some(SignalData::Busy)));
        // In the clear: refused.
        assert_eq!(
            b.incoming(id(1), SignalData::Busy, false),
            Err(Rejection::Unsealed)
        );
        // From a peer with another secret: does not open.
        let mut intruder = guard(3, secret("guess"));
        let theirs = intruder.outgoing(id(2), description(SdpType::Offer, "CC"));
        assert_eq!(b.incoming(id(3), theirs, false), Err(Rejection::CannotOpen));
        // Truncated.
        assert_eq!(
            b.incoming(id(1), SignalData::Sealed("AAAA".into()), false),
            Err(Rejection::Truncated)
        );
        // Sealed data outside a secret room is not for us.
        let mut plain = guard(4, SignalPolicy::default());
        assert_eq!(
            plain.incoming(id(1), SignalData::Sealed("AAAA".into()), false),
            Err(Rejection::CannotOpen)
        );
    }

    #[test]
    fn tracked_peers_are_bounded() {
        let mut a = guard(1, signed());
        for n in 0..(MAX_TRACKED_PEERS + 10) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
            a.outgoing(PeerId::from_bytes(bytes), description(SdpType::Offer, "AA"));
        }
        assert!(a.tracked() <= MAX_TRACKED_PEERS);
    }
}
