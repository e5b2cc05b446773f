//! Time-limited TURN credentials in the format of the TURN REST API
//! (draft-uberti-behave-turn-rest), which coturn accepts with `use-auth-secret` and the same
//! `static-auth-secret`: the user name is `{expires}:{peer id}` and the password is the
//! base64 HMAC-SHA1 of the user name, keyed with the shared secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use swarm_protocol::signal::IceUrls;
use swarm_protocol::{IceServer, PeerId};

use crate::access::keyed;
use crate::config::TurnConfig;

/// The TURN entry for `welcome.iceServers`: `turn`'s URLs with credentials for `peer` that
/// expire `turn.ttl` after `now` (Unix seconds).
pub fn credentials(turn: &TurnConfig, peer: PeerId, now: u64) -> IceServer {
    let expires = now.saturating_add(turn.ttl.as_secs());
    let username = format!("{expires}:{peer}");
    IceServer {
        urls: IceUrls::Many(turn.urls.clone()),
        credential: Some(password(&turn.secret, &username)),
        username: Some(username),
    }
}

/// The password the TURN server derives for `username`.
pub fn password(secret: &str, username: &str) -> String {
    let mut mac: Hmac<Sha1> = keyed(secret);
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_format() {
        let turn = TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: "north".into(),
            ttl: Duration::from_secs(3600),
        };
        let peer = PeerId::from_bytes([7; 16]);
        let server = credentials(&turn, peer, 1_000);
        assert_eq!(
            server.username.as_deref(),
            Some(format!("4600:{peer}").as_str())
        );
        assert_eq!(
            server.credential.as_deref(),
            Some(password("north", &format!("4600:{peer}")).as_str())
        );
        // The computation coturn does, as openssl writes it:
        // printf '4600:x' | openssl dgst -binary -sha1 -hmac north | base64
        assert_eq!(password("north", "4600:x"), "f1OaN9S/3BoWFUk+8MoFgST2CN4=");
    }
}
