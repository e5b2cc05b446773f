//! Who may connect: the `Origin` allow-list, and room tokens when a secret is set.
//!
//! A token grants joining one room until it expires. It is
//! `{expires}.{signature}`, where `expires` is a Unix time in seconds and `signature` is the
//! unpadded base64url HMAC-SHA256, keyed with the shared secret, of `{room}\n{expires}`.
//! An application server that knows the secret issues tokens to its users (see the README,
//! or `signal-server token`); the signalling server only checks them.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use swarm_protocol::{PeerId, RoomName};

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970): the
/// time tokens and TURN credentials are measured in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The server needs a token and the request has none.
    #[error("this server needs a token to join a room (?token=)")]
    Missing,
    /// Not of the form `{expires}.{signature}`.
    #[error("the token is malformed")]
    Malformed,
    /// The token's time has passed.
    #[error("the token expired")]
    Expired,
    /// The signature does not match this room (or another secret signed it).
    #[error("the token is not valid for this room")]
    BadSignature,
}

/// A token for joining `room` until `expires` (Unix seconds).
pub fn issue_token(secret: &str, room: &RoomName, expires: u64) -> String {
    let signature = URL_SAFE_NO_PAD.encode(mac(secret, room, expires).finalize().into_bytes());
    format!("{expires}.{signature}")
}

/// Checks that `token` lets its bearer join `room` at time `now` (Unix seconds).
pub fn check_token(
    secret: &str,
    room: &RoomName,
    token: Option<&str>,
    now: u64,
) -> Result<(), TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let (expires, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    // Constant-time comparison.
    mac(secret, room, expires)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    if expires <= now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

fn mac(secret: &str, room: &RoomName, expires: u64) -> Hmac<Sha256> {
    let mut mac: Hmac<Sha256> = keyed(secret);
    mac.update(format!("{room}\n{expires}").as_bytes());
    mac
}

/// A MAC keyed with `secret`. HMAC accepts keys of any length, so this cannot fail.
pub(crate) fn keyed<M: KeyInit>(secret: &str) -> M {
    M::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The key `resume` tokens are signed with: derived from `secret`, or random for this
/// process when there is none.
pub fn resume_key(secret: Option<&str>) -> [u8; 32] {
    match secret {
        Some(secret) => {
            let mut mac: Hmac<Sha256> = keyed(secret);
            mac.update(b"swarm-resume-key");
            mac.finalize().into_bytes().into()
        }
        None => rand::random(),
    }
}

/// A `resume` token giving `id` back in `room`: `{id}.{nonce}.{tag}`, with a fresh random
/// nonce each time, so no two tokens are alike. The server keeps the [`fingerprint`] of the
/// latest token of each member and takes only that one, once, while the member holds its
/// place (see `PROTOCOL.md`, "Resuming"). A `keyed` id (its client proved a key) is marked
/// in the MAC: its token takes the id over only together with a fresh proof of that key
/// ([`check_resume`] says which it is), so the token alone is not the id.
pub fn issue_resume(key: &[u8; 32], room: &RoomName, id: PeerId, keyed: bool) -> String {
    let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; RESUME_NONCE_LEN]>());
    let tag = resume_mac(key, room, id, keyed, &nonce)
        .finalize()
        .into_bytes();
    format!(
        "{id}.{nonce}.{}",
        URL_SAFE_NO_PAD.encode(&tag[..RESUME_TAG_LEN])
    )
}

/// What a genuine `resume` token claims. Whether it is still good (the latest token of a
/// member that holds its place) only the room's state can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeClaim {
    /// The id it gives back.
    pub id: PeerId,
    /// Whether that id is keyed: then the token counts only with a fresh proof of the key.
    pub keyed: bool,
    /// The token's [`fingerprint`], to compare with the one its member holds.
    pub fingerprint: Fingerprint,
}

/// SHA-256 of a `resume` token: what the server keeps of it (in memory and, in a cluster,
/// in Redis), so that the token itself is stored nowhere.
pub type Fingerprint = [u8; 32];

/// The [`Fingerprint`] of `token`.
pub fn fingerprint(token: &str) -> Fingerprint {
    Sha256::digest(token.as_bytes()).into()
}

/// What `token` claims in `room`, if it is genuine (signed with `key` for `room`).
pub fn check_resume(key: &[u8; 32], room: &RoomName, token: &str) -> Option<ResumeClaim> {
    let mut parts = token.split('.');
    let (id, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let id: PeerId = id.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if tag.len() != RESUME_TAG_LEN || nonce.len() > 2 * RESUME_NONCE_LEN {
        return None;
    }
    // Constant-time comparisons of the truncated tag.
    [false, true].into_iter().find_map(|keyed| {
        resume_mac(key, room, id, keyed, nonce)
            .verify_truncated_left(&tag)
            .ok()
            .map(|()| ResumeClaim {
                id,
                keyed,
                fingerprint: fingerprint(token),
            })
    })
}

/// Bytes of HMAC kept in a resume token (128 bits).
const RESUME_TAG_LEN: usize = 16;

/// Random bytes in each resume token.
const RESUME_NONCE_LEN: usize = 12;

fn resume_mac(
    key: &[u8; 32],
    room: &RoomName,
    id: PeerId,
    keyed: bool,
    nonce: &str,
) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    let kind = if keyed { "resume-keyed" } else { "resume" };
    mac.update(format!("{kind}\n{room}\n{id}\n{nonce}").as_bytes());
    mac
}

/// Whether a page at `origin` may connect. An empty allow-list allows all; with a list, a
/// request without an `Origin` header (not a browser) is allowed too, since only browsers
/// can be made to connect by a foreign page.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        _ if allowed.is_empty() => true,
        None => true,
        Some(origin) => allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name.to_owned()).expect("valid room")
    }

    #[test]
    fn a_token_opens_its_room_until_it_expires() {
        let token = issue_token("s3cret", &room("demo"), 1_000);
        assert_eq!(
            check_token("s3cret", &room("demo"), Some(&token), 999),
            Ok(())
        );
        assert_eq!(
            check_token("s3cret", &room("demo"), Some(&token), 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check_token("s3cret", &room("other"), Some(&token), 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            check_token("another", &room("demo"), Some(&token), 999),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_and_malformed_tokens_are_refused() {
        let token = issue_token("s3cret", &room("demo"), 1_000);
        let (_, signature) = token.split_once('.').expect("has a dot");
        let later = format!("2000.{signature}");
        assert_eq!(
            check_token("s3cret", &room("demo"), Some(&later), 999),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "1000", "x.abc", "1000.!!!", ".abc"] {
            assert_eq!(
                check_token("s3cret", &room("demo"), Some(bad), 999),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_token("s3cret", &room("demo"), None, 999),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn a_resume_token_gives_back_its_id_in_its_room_only() {
        let key = resume_key(Some("s3cret"));
        let id = PeerId::from_bytes([7; 16]);
        let claim = |key: &[u8; 32], room_name: &str, token: &str| {
            check_resume(key, &room(room_name), token).map(|c| (c.id, c.keyed))
        };
        let token = issue_resume(&key, &room("demo"), id, false);
        assert!(token.starts_with(&id.to_string()));
        assert_eq!(claim(&key, "demo", &token), Some((id, false)));
        assert_eq!(
            check_resume(&key, &room("demo"), &token).map(|c| c.fingerprint),
            Some(fingerprint(&token))
        );
        let again = issue_resume(&key, &room("demo"), id, false);
        assert_ne!(again, token, "every token is new");
        assert_ne!(fingerprint(&again), fingerprint(&token));
        let keyed = issue_resume(&key, &room("demo"), id, true);
        assert_eq!(claim(&key, "demo", &keyed), Some((id, true)));
        assert_eq!(
            claim(&resume_key(Some("s3cret")), "demo", &token),
            Some((id, false)),
            "the same secret gives the same key (other instances)"
        );
        assert_eq!(claim(&key, "other", &token), None);
        assert_eq!(claim(&resume_key(None), "demo", &token), None);
        let (_, rest) = token.split_once('.').expect("dot");
        let other = PeerId::from_bytes([8; 16]);
        assert_eq!(claim(&key, "demo", &format!("{other}.{rest}")), None);
        let (nonce, tag) = rest.split_once('.').expect("two dots");
        assert_eq!(claim(&key, "demo", &format!("{id}.x{nonce}.{tag}")), None);
        let short = &tag[..4];
        assert_eq!(claim(&key, "demo", &format!("{id}.{nonce}.{short}")), None);
        for bad in [
            "",
            ".",
            "x.y",
            "x.y.z",
            &id.to_string(),
            &format!("{token}.x"),
        ] {
            assert_eq!(claim(&key, "demo", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origins_are_checked_against_the_list() {
        let list = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(&[], Some("https://evil.example")));
        assert!(origin_allowed(&list, Some("https://app.example")));
        assert!(origin_allowed(&list, Some("HTTPS://APP.EXAMPLE")));
        assert!(!origin_allowed(&list, Some("https://evil.example")));
        assert!(!origin_allowed(&list, Some("null")));
        assert!(origin_allowed(&list, None));
    }
}
