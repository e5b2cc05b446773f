//! Resumption: a peer whose connection is lost keeps its place for the grace period and gets
//! its id back with the `resume` token of its `welcome`, once, while it holds that place; a
//! peer that joins with a key gets the id its key certifies, on any server, after any
//! restart, with each proof of its key taken once.

mod common;

use std::time::Duration;

use common::{Client, QUIET, Server, come_and_go, expect_proof_used, keyed_path};
use serde_json::json;
use signal_server::Config;
use swarm_core::identity::Identity;
use swarm_protocol::RoomName;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const GRACE: Duration = Duration::from_millis(2500);

fn resumable() -> Config {
    Config {
        resume_grace: GRACE,
        resume_secret: Some("resume-secret".into()),
        ..Config::default()
    }
}

/// Connects to `path` and reads the welcome.
async fn join(server: &Server, path: &str) -> Client {
    let mut client = server.connect(path, &[]).await;
    client.read_welcome().await;
    client
}

fn resume_path(room: &str, client: &Client) -> String {
    let token = client
        .resume
        .as_deref()
        .expect("welcome has a resume token");
    format!("/ws/{room}?resume={token}")
}

/// Waits `wait` and checks that nothing but pings arrived.
async fn quiet_for(client: &mut Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if let Some(message) = client.next_message(QUIET).await {
            assert!(
                message.is_ping() || message.is_pong(),
                "unexpected {message:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_lost_connection_resumed_within_the_grace_is_seen_by_nobody() {
    let server = Server::start_resumable(resumable()).await;
    let (mut a, b) = server.pair("r").await;
    let path = resume_path("r", &b);
    let b_id = b.id.clone();
    drop(b); // the TCP connection ends without a close frame: lost, not left
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = join(&server, &path).await;
    assert_eq!(b.id, b_id, "same id again");
    assert_eq!(b.peers, vec![a.id.clone()]);
    assert!(b.resume.is_some());
    // Neither `left` nor `joined`, not even once the grace of the lost connection has run out.
    quiet_for(&mut a, GRACE + Duration::from_millis(500)).await;
    a.assert_usable(&mut b).await;
    b.assert_usable(&mut a).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_lost_peer_that_does_not_come_back_leaves_after_the_grace() {
    let server = Server::start_resumable(resumable()).await;
    let (mut a, b) = server.pair("r").await;
    let b_id = b.id.clone();
    drop(b);
    let started = tokio::time::Instant::now();
    quiet_for(&mut a, GRACE - Duration::from_millis(700)).await;
    assert_eq!(a.recv().await, json!({"type": "left", "id": b_id}));
    assert!(started.elapsed() >= GRACE - Duration::from_millis(100));
    server.shutdown().await;
}

#[tokio::test]
async fn a_closed_connection_leaves_at_once_despite_the_grace() {
    let server = Server::start_resumable(resumable()).await;
    let (mut a, mut b) = server.pair("r").await;
    b.ws.close(None).await.expect("close");
    let frame = tokio::time::timeout(Duration::from_secs(1), a.recv())
        .await
        .expect("left well before the grace");
    assert_eq!(frame, json!({"type": "left", "id": b.id}));
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_while_the_old_connection_still_looks_alive_replaces_it() {
    let server = Server::start_resumable(resumable()).await;
    let (mut a, mut old) = server.pair("r").await;
    let mut new = join(&server, &resume_path("r", &old)).await;
    assert_eq!(new.id, old.id);
    let (code, _) = old.expect_close().await;
    assert_eq!(code, CloseCode::from(4000));
    quiet_for(&mut a, Duration::from_millis(800)).await;
    a.assert_usable(&mut new).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_forged_or_foreign_resume_token_gives_a_new_id() {
    let server = Server::start_resumable(resumable()).await;
    let (mut a, b) = server.pair("r").await;
    let token = b.resume.clone().expect("token");
    let (_, tag) = token.split_once('.').expect("dot");
    // Someone else's id with b's tag, and b's token in another room.
    let forged = format!("/ws/r?resume={}.{tag}", a.id);
    let c = join(&server, &forged).await;
    assert_ne!(c.id, a.id);
    assert_ne!(c.id, b.id);
    assert_eq!(a.recv().await, json!({"type": "joined", "id": c.id}));
    let d = join(&server, &format!("/ws/elsewhere?resume={token}")).await;
    assert_ne!(d.id, b.id);
    server.shutdown().await;
}

#[tokio::test]
async fn a_resume_token_is_good_once() {
    let server = Server::start_resumable(resumable()).await;
    let (mut a, b) = server.pair("r").await;
    let first = resume_path("r", &b);
    drop(b);
    let b = join(&server, &first).await;
    assert_ne!(
        resume_path("r", &b),
        first,
        "a new token in the new welcome"
    );
    // The spent token again (b's connection lost once more): it gives nothing back.
    let b_id = b.id.clone();
    let second = resume_path("r", &b);
    drop(b);
    let thief = join(&server, &first).await;
    assert_ne!(thief.id, b_id, "a spent token gets a new id");
    assert_eq!(a.recv().await, json!({"type": "joined", "id": thief.id}));
    // The latest token still works, and nobody heard b leave.
    let b = join(&server, &second).await;
    assert_eq!(b.id, b_id);
    quiet_for(&mut a, Duration::from_millis(500)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_resume_token_dies_with_its_place() {
    // After the grace (or a restart, even with the same secret) the token gives nothing back:
    // a stolen token is not the id for ever.
    let first = Server::start_resumable(resumable()).await;
    let (mut a, b) = first.pair("r").await;
    let path = resume_path("r", &b);
    let b_id = b.id.clone();
    drop(b);
    assert_eq!(a.recv().await, json!({"type": "left", "id": b_id}));
    let late = join(&first, &path).await;
    assert_ne!(late.id, b_id, "after the grace");
    let path = resume_path("r", &late);
    first.shutdown().await;
    let second = Server::start_resumable(resumable()).await;
    let after_restart = join(&second, &path).await;
    assert_ne!(after_restart.id, late.id, "after a restart");
    second.shutdown().await;
}

#[tokio::test]
async fn a_key_gives_its_own_id_which_only_its_resume_token_can_take_over() {
    let server = Server::start_resumable(resumable()).await;
    let identity = Identity::from_seed([42; 32]);
    let mut a = join(&server, &keyed_path("k", &identity)).await;
    assert_eq!(a.id, identity.id().to_string());

    // The same key again while it is in the room, without its token: refused.
    let mut twin = server.connect(&keyed_path("k", &identity), &[]).await;
    twin.expect_error("id-in-use").await;
    let (code, _) = twin.expect_close().await;
    assert_eq!(code, CloseCode::Policy);

    // With its token: it takes over.
    let token = a.resume.clone().expect("token");
    let path = format!("{}&resume={token}", keyed_path("k", &identity));
    let again = join(&server, &path).await;
    assert_eq!(again.id, a.id);
    assert_eq!(a.expect_close().await.0, CloseCode::from(4000));
    server.shutdown().await;
}

#[tokio::test]
async fn a_keyed_peers_resume_token_without_its_key_takes_nothing_over() {
    // The token was a bearer credential: whoever had it took the keyed id over (and the
    // owner was told, with close 4000, not to come back).
    let server = Server::start_resumable(resumable()).await;
    let identity = Identity::from_seed([43; 32]);
    let mut a = join(&server, &keyed_path("k", &identity)).await;
    let token = a.resume.clone().expect("token");
    let thief = join(&server, &format!("/ws/k?resume={token}")).await;
    assert_ne!(thief.id, a.id, "a fresh id, not the keyed one");
    // The owner is still there and hears of the newcomer.
    assert_eq!(a.recv().await, json!({"type": "joined", "id": thief.id}));
    server.shutdown().await;
}

#[tokio::test]
async fn a_key_gives_the_same_id_after_a_restart_even_without_a_shared_secret() {
    let identity = Identity::from_seed([9; 32]);
    let first = Server::start_resumable(Config::default()).await;
    let a = join(&first, &keyed_path("k", &identity)).await;
    first.shutdown().await;
    let second = Server::start_resumable(Config::default()).await;
    let a2 = join(&second, &keyed_path("k", &identity)).await;
    assert_eq!(a2.id, a.id);
    second.shutdown().await;
}

#[tokio::test]
async fn bad_keys_and_proofs_are_refused() {
    let server = Server::start_resumable(resumable()).await;
    let identity = Identity::from_seed([5; 32]);
    let good = keyed_path("k", &identity);
    let other_room = keyed_path("other", &identity).replace("/ws/other", "/ws/k");
    let stale = {
        let proof = identity.join_proof(&RoomName::new("k").expect("room"), 1_000);
        format!("/ws/k?{}", proof.query())
    };
    let no_proof = good.split("&proof=").next().expect("prefix").to_owned();
    for path in [
        "/ws/k?key=abc&ts=1&proof=00".to_owned(),
        other_room,
        stale,
        no_proof,
        good.replace("&ts=", "&ts=x"),
    ] {
        let mut client = server.connect(&path, &[]).await;
        let message = client.expect_error("invalid-key").await;
        assert!(!message.is_empty());
        assert_eq!(client.expect_close().await.0, CloseCode::Policy, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_join_proof_is_taken_once() {
    // A proof seen once (a log, a shared screen) used to join as the key's id again for ten
    // minutes once its owner had left.
    let server = Server::start_resumable(resumable()).await;
    let identity = Identity::from_seed([6; 32]);
    let path = keyed_path("k", &identity);
    let mut watcher = server.client("k").await;
    come_and_go(&server, &mut watcher, &path).await;
    expect_proof_used(&server, &path).await;
    // A fresh proof of the same key joins.
    let again = join(&server, &keyed_path("k", &identity)).await;
    assert_eq!(again.id, identity.id().to_string());
    server.shutdown().await;
}
