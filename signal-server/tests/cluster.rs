//! Several signal-server instances sharing rooms through a real `redis-server` on loopback.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, Server, come_and_go, expect_proof_used, keyed_path};
use serde_json::json;
use signal_server::Config;
use swarm_core::identity::Identity;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A `redis-server` on a Unix socket of its own (no TCP port, so no race with the ports
/// other tests pick), killed on drop.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (the test command installs it)");
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Self {
                    child,
                    url: format!("redis+unix://{}", socket.display()),
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start");
    }

    fn config(&self) -> Config {
        Config {
            redis: Some(self.url.clone()),
            redis_presence_ttl: Duration::from_secs(3),
            ..Config::default()
        }
    }
}

impl Redis {
    /// Instances that resume each other's peers: one resume secret, this grace.
    fn resumable(&self, grace: Duration) -> Config {
        Config {
            resume_grace: grace,
            resume_secret: Some("shared-resume-secret".into()),
            ..self.config()
        }
    }
}

/// The JSON frames `client` receives within `duration` (pings skipped).
async fn frames_within(client: &mut Client, duration: Duration) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline {
        let Some(message) = client.next_message(Duration::from_millis(300)).await else {
            continue;
        };
        match message.to_text() {
            Ok(text) if !text.is_empty() => {
                frames.push(serde_json::from_str(text).expect("json"));
            }
            _ => {} // a ping
        }
    }
    frames
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn peers_on_two_instances_meet_signal_and_leave() {
    let redis = Redis::start();
    let one = Server::start_with(redis.config()).await;
    let two = Server::start_with(redis.config()).await;

    let mut a = one.client("shared").await;
    let mut b = two.client("shared").await;
    assert_eq!(
        b.peers,
        vec![a.id.clone()],
        "b's welcome names a, on the other instance"
    );
    assert_eq!(a.recv().await, json!({"type": "joined", "id": b.id}));
    a.assert_usable(&mut b).await;
    b.assert_usable(&mut a).await;

    // A third peer, on the first instance, hears of both, once.
    let mut c = one.client("shared").await;
    let known: BTreeSet<_> = c.peers.iter().cloned().collect();
    assert_eq!(known, BTreeSet::from([a.id.clone(), b.id.clone()]));
    assert_eq!(a.recv().await, json!({"type": "joined", "id": c.id}));
    assert_eq!(b.recv().await, json!({"type": "joined", "id": c.id}));
    c.assert_usable(&mut b).await;

    // Another room on the same instances stays apart.
    let other = two.client("elsewhere").await;
    assert!(other.peers.is_empty());
    b.send(json!({"type": "signal", "to": other.id, "data": 1}))
        .await;
    b.expect_error("unknown-peer").await;

    drop(b);
    assert_eq!(a.recv().await["type"], "left");
    assert_eq!(c.recv().await["type"], "left");
    a.assert_quiet().await;
    c.assert_quiet().await;
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn concurrent_joins_across_instances_tell_every_pair_exactly_once() {
    let redis = Redis::start();
    let servers = [
        Server::start_with(redis.config()).await,
        Server::start_with(redis.config()).await,
        Server::start_with(redis.config()).await,
    ];
    let joins = (0..12).map(|n| servers[n % 3].client("crowd"));
    let mut clients: Vec<Client> = futures_util::future::join_all(joins).await;
    let ids: BTreeSet<String> = clients.iter().map(|c| c.id.clone()).collect();
    for client in &mut clients {
        let mut heard: Vec<String> = client.peers.clone();
        while heard.len() < ids.len() - 1 {
            let frame = client.recv().await;
            assert_eq!(frame["type"], "joined", "{frame}");
            heard.push(frame["id"].as_str().expect("id").to_owned());
        }
        let unique: BTreeSet<String> = heard.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            heard.len(),
            "nobody is announced twice: {heard:?}"
        );
        let mut expected = ids.clone();
        expected.remove(&client.id);
        assert_eq!(unique, expected);
    }
    for client in &mut clients {
        client.assert_quiet().await;
    }
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn the_peers_of_an_instance_that_dies_are_gone_within_the_presence_ttl() {
    let redis = Redis::start();
    let one = Server::start_with(redis.config()).await;
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_signal-server"))
        .args(["--listen", "127.0.0.1:0", "--redis", &redis.url])
        .args(["--redis-presence-ttl", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a second instance");
    let mut line = String::new();
    BufReader::new(doomed.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .to_owned();

    let mut a = one.client("fragile").await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/fragile"))
        .await
        .expect("connect to the second instance");
    let mut b = Client {
        ws,
        id: String::new(),
        peers: Vec::new(),
        resume: None,
    };
    let welcome = b.recv().await;
    assert_eq!(welcome["peers"], json!([a.id]));
    let b_id = welcome["id"].as_str().expect("id").to_owned();
    assert_eq!(a.recv().await, json!({"type": "joined", "id": b_id}));

    // Killed outright: no goodbye to Redis.
    doomed.kill().expect("kill");
    let _ = doomed.wait();
    let started = std::time::Instant::now();
    let left = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            if let Some(tokio_tungstenite::tungstenite::Message::Text(text)) =
                a.next_message(Duration::from_secs(1)).await
            {
                return text.to_string();
            }
        }
    })
    .await
    .expect("left within the TTL and a reaper round");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&left).expect("JSON"),
        json!({"type": "left", "id": b_id})
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the TTL ran out"
    );
    // And the room's record no longer lists it.
    let c = one.client("fragile").await;
    assert_eq!(c.peers, vec![a.id.clone()]);
    one.shutdown().await;
}

#[tokio::test]
async fn a_peer_lost_on_one_instance_resumes_on_another_and_nobody_sees_it_leave() {
    let redis = Redis::start();
    let grace = Duration::from_millis(2500);
    let one = Server::start_resumable(redis.resumable(grace)).await;
    let two = Server::start_resumable(redis.resumable(grace)).await;

    let mut a = one.client("moving").await;
    let mut b = one.connect("/ws/moving", &[]).await;
    b.read_welcome().await;
    assert_eq!(a.recv().await, json!({"type": "joined", "id": b.id}));
    let (b_id, token) = (b.id.clone(), b.resume.clone().expect("a resume token"));
    drop(b); // lost without a close frame, as when a network drops

    // It comes back through the other instance within the grace.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = two
        .connect(&format!("/ws/moving?resume={token}"), &[])
        .await;
    b.read_welcome().await;
    assert_eq!(b.id, b_id, "the same id on the other instance");
    assert_eq!(b.peers, vec![a.id.clone()]);

    // Until well after the grace ran out on the first instance, `a` hears no `left`. It may
    // hear `joined` for the peer it already knows (the second instance announces it); the
    // client ignores that.
    for frame in frames_within(&mut a, grace + Duration::from_secs(2)).await {
        assert_eq!(
            frame,
            json!({"type": "joined", "id": b_id}),
            "unexpected {frame}"
        );
    }
    // Signals still cross between the instances, both ways.
    a.assert_usable(&mut b).await;
    b.assert_usable(&mut a).await;
}

#[tokio::test]
async fn a_graceful_shutdown_hands_its_peers_to_another_instance_without_a_left() {
    let redis = Redis::start();
    let grace = Duration::from_secs(5);
    let one = Server::start_resumable(redis.resumable(grace)).await;
    let two = Server::start_resumable(redis.resumable(grace)).await;

    let mut a = one.client("handover").await;
    let mut b = two.connect("/ws/handover", &[]).await;
    b.read_welcome().await;
    assert_eq!(a.recv().await, json!({"type": "joined", "id": b.id}));
    let mut c = two.connect("/ws/handover", &[]).await;
    c.read_welcome().await;
    assert_eq!(a.recv().await, json!({"type": "joined", "id": c.id}));
    let (b_id, c_id) = (b.id.clone(), c.id.clone());
    let token = b.resume.clone().expect("a resume token");

    // The second instance stops gracefully; b comes back through the first one, c does not.
    two.shutdown().await;
    drop((b, c));
    let mut b = one
        .connect(&format!("/ws/handover?resume={token}"), &[])
        .await;
    b.read_welcome().await;
    assert_eq!(b.id, b_id, "the same id on the other instance");
    // c's place is still held (it may come back too), so b may be told of it.
    assert!(b.peers.contains(&a.id), "{:?}", b.peers);
    assert!(
        b.peers.iter().all(|p| *p == a.id || *p == c_id),
        "{:?}",
        b.peers
    );

    // `a` hears c leave once the stopped instance's presence runs out (3 s TTL, plus a
    // reaper round), and never hears b leave (a repeated `joined` for b is tolerated).
    let mut heard_c_leave = false;
    for frame in frames_within(&mut a, Duration::from_secs(9)).await {
        if frame == json!({"type": "left", "id": c_id}) {
            heard_c_leave = true;
        } else {
            assert_eq!(
                frame,
                json!({"type": "joined", "id": b_id}),
                "unexpected {frame}"
            );
        }
    }
    assert!(
        heard_c_leave,
        "the peer that did not come back is reported left"
    );
    // A newcomer meets exactly a and b.
    let late = one.client("handover").await;
    let mut peers = late.peers.clone();
    peers.sort();
    let mut expected = vec![a.id.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(peers, expected);
    // b may have been told c left, too (it was told of c); then signals still flow.
    while b.next_message(Duration::from_millis(300)).await.is_some() {}
    a.assert_usable(&mut b).await;
    one.shutdown().await;
}

#[tokio::test]
async fn a_join_proof_is_taken_once_in_the_whole_cluster() {
    let redis = Redis::start();
    let one = Server::start_with(redis.config()).await;
    let two = Server::start_with(redis.config()).await;
    let identity = Identity::from_seed([31; 32]);
    let path = keyed_path("proofs", &identity);
    let mut watcher = two.client("proofs").await;
    come_and_go(&one, &mut watcher, &path).await;
    // The same proof on the other instance: refused there too.
    expect_proof_used(&two, &path).await;
}

#[tokio::test]
async fn a_keyed_id_is_in_use_across_the_cluster_unless_its_latest_token_takes_it_over() {
    let redis = Redis::start();
    let grace = Duration::from_secs(5);
    let one = Server::start_resumable(redis.resumable(grace)).await;
    let two = Server::start_resumable(redis.resumable(grace)).await;
    let identity = Identity::from_seed([32; 32]);
    let mut watcher = one.client("keyed").await;
    let mut owner = one.connect(&keyed_path("keyed", &identity), &[]).await;
    owner.read_welcome().await;
    assert_eq!(
        watcher.recv().await,
        json!({"type": "joined", "id": owner.id})
    );

    // The same key through the other instance, without the token: the id is in use.
    let mut twin = two.connect(&keyed_path("keyed", &identity), &[]).await;
    twin.expect_error("id-in-use").await;
    assert_eq!(twin.expect_close().await.0, CloseCode::Policy);

    // With its latest token it takes over: the old connection is closed with 4000, and the
    // watcher never hears the id leave (a repeated `joined` is tolerated).
    let token = owner.resume.clone().expect("a resume token");
    let path = format!("{}&resume={token}", keyed_path("keyed", &identity));
    let mut moved = two.connect(&path, &[]).await;
    moved.read_welcome().await;
    assert_eq!(moved.id, owner.id);
    assert_eq!(moved.peers, vec![watcher.id.clone()]);
    assert_eq!(owner.expect_close().await.0, CloseCode::from(4000));
    for frame in frames_within(&mut watcher, Duration::from_secs(2)).await {
        assert_eq!(
            frame,
            json!({"type": "joined", "id": owner.id}),
            "unexpected {frame}"
        );
    }
    watcher.assert_usable(&mut moved).await;
    moved.assert_usable(&mut watcher).await;

    // The spent token, on either instance, takes nothing over.
    for server in [&one, &two] {
        let again = format!("{}&resume={token}", keyed_path("keyed", &identity));
        let mut late = server.connect(&again, &[]).await;
        late.expect_error("id-in-use").await;
    }
}

#[tokio::test]
async fn a_resume_token_is_good_once_in_the_whole_cluster() {
    let redis = Redis::start();
    let grace = Duration::from_secs(5);
    let one = Server::start_resumable(redis.resumable(grace)).await;
    let two = Server::start_resumable(redis.resumable(grace)).await;
    let mut a = one.client("once").await;
    let mut b = one.connect("/ws/once", &[]).await;
    b.read_welcome().await;
    assert_eq!(a.recv().await, json!({"type": "joined", "id": b.id}));
    let (b_id, token) = (b.id.clone(), b.resume.clone().expect("a resume token"));
    drop(b);
    let mut back = two.connect(&format!("/ws/once?resume={token}"), &[]).await;
    back.read_welcome().await;
    assert_eq!(back.id, b_id);
    // The same token again, on either instance: a new id, and b keeps its place.
    let mut thieves = Vec::new();
    for server in [&one, &two] {
        let mut thief = server
            .connect(&format!("/ws/once?resume={token}"), &[])
            .await;
        thief.read_welcome().await;
        assert_ne!(thief.id, b_id);
        thieves.push(thief.id.clone());
    }
    // `a` hears the thieves join (and may hear b's `joined` again), never b leave.
    let mut heard = BTreeSet::new();
    for frame in frames_within(&mut a, Duration::from_secs(1)).await {
        assert_eq!(frame["type"], "joined", "unexpected {frame}");
        heard.insert(frame["id"].as_str().expect("id").to_owned());
    }
    heard.remove(&b_id);
    assert_eq!(heard, thieves.into_iter().collect::<BTreeSet<_>>());
    for frame in frames_within(&mut back, Duration::from_millis(300)).await {
        assert_eq!(frame["type"], "joined", "unexpected {frame}");
    }
    back.assert_usable(&mut a).await;
    a.assert_usable(&mut back).await;
}
