//! Signalling protocol v1 against a real server on a loopback port, driven by real
//! WebSocket clients (tokio-tungstenite).

mod common;

use common::{ARRIVES, Server};
use futures_util::SinkExt;
use serde_json::json;
use signal_server::Config;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn welcome_joined_and_left() {
    let server = Server::start().await;
    let mut a = server.client("demo").await;
    assert!(a.peers.is_empty());
    assert_eq!(a.id.len(), 32);
    assert!(
        a.id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    let mut b = server.client("demo").await;
    assert_eq!(b.peers, vec![a.id.clone()]);
    assert_ne!(a.id, b.id);
    assert_eq!(a.recv().await, json!({"type": "joined", "id": b.id}));

    let c = server.client("demo").await;
    assert_eq!(c.peers, vec![a.id.clone(), b.id.clone()]);
    assert_eq!(a.recv().await, json!({"type": "joined", "id": c.id}));
    assert_eq!(b.recv().await, json!({"type": "joined", "id": c.id}));

    let c_id = c.id.clone();
    drop(c);
    assert_eq!(a.recv().await, json!({"type": "left", "id": c_id}));
    assert_eq!(b.recv().await, json!({"type": "left", "id": c_id}));
    server.shutdown().await;
}

#[tokio::test]
async fn a_clean_close_also_announces_left() {
    let server = Server::start().await;
    let (mut a, mut b) = server.pair("demo").await;
    b.ws.close(None).await.expect("close");
    assert_eq!(a.recv().await, json!({"type": "left", "id": b.id}));
    server.shutdown().await;
}

#[tokio::test]
async fn signal_is_relayed_with_from_stamped_by_the_server() {
    let server = Server::start().await;
    let (mut a, mut b) = server.pair("demo").await;

    let data = json!({"sdp": {"type": "offer", "sdp": "v=0\r\n"}});
    // A forged `from` is ignored: the server writes the sender's real id.
    b.send(json!({"type": "signal", "to": a.id, "from": "f".repeat(32), "data": data}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "signal", "from": b.id, "data": data})
    );

    let candidate = json!({"candidate": null});
    a.send(json!({"type": "signal", "to": b.id, "data": candidate}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "signal", "from": a.id, "data": candidate})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn data_is_relayed_without_being_rewritten() {
    let server = Server::start().await;
    let (mut a, mut b) = server.pair("demo").await;
    let raw = format!(
        r#"{{"type":"signal","to":"{}","data":{{"z" : 1.50, "a":"\u00e9"}}}}"#,
        a.id
    );
    b.send_raw(raw).await;
    let Some(Message::Text(text)) = a.next_message(ARRIVES).await else {
        panic!("expected the relayed frame");
    };
    assert!(
        text.ends_with(r#""data":{"z" : 1.50, "a":"\u00e9"}}"#),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn no_relay_across_rooms() {
    let server = Server::start().await;
    let mut a = server.client("room-a").await;
    let mut b = server.client("room-b").await;
    assert!(
        b.peers.is_empty(),
        "a room does not list another room's peers"
    );
    b.send(json!({"type": "signal", "to": a.id, "data": 1}))
        .await;
    let message = b.expect_error("unknown-peer").await;
    assert!(message.contains(&a.id), "{message}");
    a.assert_quiet().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_target_is_an_error_and_the_connection_stays_usable() {
    let server = Server::start().await;
    let (mut a, mut b) = server.pair("demo").await;
    a.send(json!({"type": "signal", "to": "0".repeat(32), "data": 1}))
        .await;
    a.expect_error("unknown-peer").await;
    a.assert_usable(&mut b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_are_bad_messages_and_the_connection_stays_usable() {
    let server = Server::start().await;
    let (mut a, mut b) = server.pair("demo").await;
    let bad = [
        "{not json".to_owned(),
        "[]".to_owned(),
        json!({"type": "dance"}).to_string(),
        json!({"to": b.id, "data": 1}).to_string(),
        json!({"type": "signal", "data": 1}).to_string(),
        json!({"type": "signal", "to": b.id}).to_string(),
        json!({"type": "signal", "to": "not-an-id", "data": 1}).to_string(),
    ];
    for frame in bad {
        a.send_raw(frame.clone()).await;
        let message = a.expect_error("bad-message").await;
        assert!(!message.is_empty(), "{frame} explained");
    }
    a.ws.send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    a.expect_error("bad-message").await;
    a.assert_usable(&mut b).await;
    b.assert_quiet().await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_frames_are_refused_and_the_connection_stays_usable() {
    let server = Server::with_frame_limit(1000).await;
    let (mut a, mut b) = server.pair("demo").await;
    let big = json!({"type": "signal", "to": b.id, "data": "x".repeat(2000)});
    a.send(big).await;
    let message = a.expect_error("too-large").await;
    assert!(message.contains("1000"), "{message}");
    b.assert_quiet().await;
    a.assert_usable(&mut b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn frames_past_the_hard_limit_close_the_connection_with_1009() {
    let server = Server::with_frame_limit(1000).await;
    let (mut a, mut b) = server.pair("demo").await;
    a.send_raw("x".repeat(20_000)).await;
    let (code, _) = a.expect_close().await;
    assert_eq!(code, CloseCode::Size);
    assert_eq!(b.recv().await, json!({"type": "left", "id": a.id}));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_room_names_are_refused_with_400_before_the_upgrade() {
    let server = Server::start().await;
    let too_long = "x".repeat(65);
    for room in ["a%20b", "caf%C3%A9", "a.b%2Fc", too_long.as_str()] {
        let url = format!("ws://{}/ws/{room}", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "room {room:?}");
            }
            other => panic!("room {room:?} should be refused, got {other:?}"),
        }
        let plain = server.http_get(&format!("/ws/{room}")).await;
        assert!(
            plain.starts_with("HTTP/1.1 400"),
            "plain GET of {room:?}: {plain}"
        );
    }
    let longest = "x".repeat(64);
    server.client(&longest).await;
    server.client("A-z_0.9").await;
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_and_the_page_are_served() {
    let server = Server::start().await;
    let health = server.http_get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let page = server.http_get("/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<h1>swarm</h1>"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("cache-control: no-cache"),
        "{page}"
    );
    let missing = server.http_get("/nope.js").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    server.shutdown().await;
}

#[tokio::test]
async fn ids_are_unique_across_many_joins() {
    let server = Server::start().await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        let client = server.client("many").await;
        assert!(ids.insert(client.id.clone()), "duplicate id");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_going_away() {
    let server = Server::start().await;
    let mut a = server.client("demo").await;
    let mut b = server.client("other").await;
    let stopping = tokio::spawn(server.shutdown());
    let (code, reason) = a.expect_close().await;
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("shutting down"), "{reason}");
    assert_eq!(b.expect_close().await.0, CloseCode::Away);
    stopping.await.expect("shutdown completes");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_without_stalling_the_room() {
    let server = Server::start_with(Config {
        outgoing_queue: 4,
        ..Config::default()
    })
    .await;
    let slow = server.client("demo").await;
    let mut fast = server.client("demo").await;
    let mut other = server.client("demo").await;
    // `slow` never reads while `fast` sends it far more than the kernel's socket buffers hold.
    let chunk = "x".repeat(60_000);
    for _ in 0..500 {
        fast.send(json!({"type": "signal", "to": slow.id, "data": chunk}))
            .await;
    }
    // The slow client is dropped, and the room keeps working for everyone else.
    let slow_id = slow.id.clone();
    loop {
        let frame = other.recv().await;
        if frame == json!({"type": "left", "id": slow_id}) {
            break;
        }
    }
    fast.assert_usable(&mut other).await;
    drop(slow);
    server.shutdown().await;
}
