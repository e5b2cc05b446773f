//! The server's limits against a real server on loopback: each is answered with an `error`
//! frame and, where the client cannot stay, a close code that says why.

mod common;

use std::time::Duration;

use common::{ARRIVES, Client, Server};
use futures_util::StreamExt;
use serde_json::json;
use signal_server::Config;
use signal_server::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn with_limits(limits: Limits) -> Config {
    Config {
        limits,
        ..Config::default()
    }
}

/// The client is told `code` in an error frame, then closed with `close`.
async fn expect_refused(client: &mut Client, code: &str, close: CloseCode) {
    let message = client.expect_error(code).await;
    assert!(!message.is_empty());
    let (got, reason) = client.expect_close().await;
    assert_eq!(got, close, "{reason}");
    assert_eq!(reason, code);
}

#[tokio::test]
async fn frames_over_the_rate_are_refused_and_the_connection_stays_usable() {
    let server = Server::start_with(with_limits(Limits {
        rate: 5,
        burst: 10,
        ..Limits::default()
    }))
    .await;
    let (mut a, mut b) = server.pair("rate").await;
    for n in 0..30 {
        a.send(json!({"type": "signal", "to": b.id, "data": n}))
            .await;
    }
    let mut relayed = 0;
    let mut limited = 0;
    for _ in 0..30 {
        // Errors come back to a; relayed frames go to b.
        let frame = a.recv().await;
        assert_eq!(frame["code"], "rate-limited", "{frame}");
        limited += 1;
        if limited + 10 >= 30 {
            break;
        }
    }
    while relayed < 10 {
        let frame = b.recv().await;
        assert_eq!(frame["type"], "signal");
        relayed += 1;
    }
    assert_eq!(
        (relayed, limited),
        (10, 20),
        "the burst goes through, the rest is refused"
    );
    // At 5 per second the bucket has room again shortly.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.assert_usable(&mut b).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("signal_errors_total{code=\"rate-limited\"} 20"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_room_refuses_newcomers_with_1013_and_other_rooms_still_open() {
    let server = Server::start_with(with_limits(Limits {
        peers_per_room: 2,
        ..Limits::default()
    }))
    .await;
    let (_a, _b) = server.pair("small").await;
    let mut c = server.connect("/ws/small", &[]).await;
    expect_refused(&mut c, "room-full", CloseCode::Again).await;
    let _d = server.client("another").await;
    server.shutdown().await;
}

#[tokio::test]
async fn past_the_room_limit_new_rooms_are_refused_but_existing_ones_open() {
    let server = Server::start_with(with_limits(Limits {
        rooms: 1,
        ..Limits::default()
    }))
    .await;
    let _a = server.client("first").await;
    let mut b = server.connect("/ws/second", &[]).await;
    expect_refused(&mut b, "server-full", CloseCode::Again).await;
    let _c = server.client("first").await;
    server.shutdown().await;
}

#[tokio::test]
async fn connections_per_address_are_limited_and_freed_on_close() {
    let server = Server::start_with(with_limits(Limits {
        connections_per_ip: 2,
        ..Limits::default()
    }))
    .await;
    let (a, _b) = server.pair("busy").await;
    let mut c = server.connect("/ws/busy", &[]).await;
    expect_refused(&mut c, "too-many-connections", CloseCode::Again).await;
    // The page itself is not a WebSocket and is never limited.
    assert!(server.http_get("/healthz").await.ends_with("ok"));
    drop(a);
    let mut joined = false;
    for _ in 0..50 {
        let mut d = server.connect("/ws/busy", &[]).await;
        let frame = d.recv().await;
        if frame["type"] == "welcome" {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(joined, "a slot comes free when a connection closes");
    server.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    let server = Server::start_with(Config {
        trust_forwarded_for: true,
        ..with_limits(Limits {
            connections_per_ip: 1,
            ..Limits::default()
        })
    })
    .await;
    let mut a = server
        .connect("/ws/proxy", &[("x-forwarded-for", "203.0.113.7")])
        .await;
    assert_eq!(a.recv().await["type"], "welcome");
    let mut b = server
        .connect("/ws/proxy", &[("x-forwarded-for", "10.0.0.1, 203.0.113.8")])
        .await;
    assert_eq!(
        b.recv().await["type"],
        "welcome",
        "another client behind the proxy"
    );
    let mut c = server
        .connect("/ws/proxy", &[("x-forwarded-for", "203.0.113.7")])
        .await;
    expect_refused(&mut c, "too-many-connections", CloseCode::Again).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout_but_one_that_answers_pings_stays() {
    let server = Server::start_with(with_limits(Limits {
        idle_timeout: Duration::from_millis(1500),
        ping_interval: Duration::from_millis(300),
        ..Limits::default()
    }))
    .await;
    let (mut alive, mut silent) = server.pair("idle").await;
    // `alive` reads (tungstenite answers pings while reading); `silent` reads nothing.
    let left = alive.recv().await;
    assert_eq!(left, json!({"type": "left", "id": silent.id}));
    // `silent` is gone (reading now, it meets the buffered pings, and then the close frame or
    // a broken pipe when it answers them).
    let ended = tokio::time::timeout(ARRIVES, async {
        while let Some(Ok(message)) = silent.ws.next().await {
            if let Message::Close(Some(frame)) = message {
                assert_eq!(frame.code, CloseCode::Policy);
                assert!(frame.reason.contains("idle"), "{}", frame.reason);
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the silent client's connection ends");
    // `alive` keeps answering pings for longer than the idle timeout and stays.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if let Some(Message::Text(text)) = alive.next_message(Duration::from_millis(100)).await {
            panic!("unexpected frame {text}");
        }
    }
    let mut other = server.client("idle").await;
    assert_eq!(other.peers, vec![alive.id.clone()]);
    assert_eq!(
        alive.recv().await,
        json!({"type": "joined", "id": other.id})
    );
    other.assert_usable(&mut alive).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("signal_disconnects_total{reason=\"idle\"} 1"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_its_request_is_closed_after_the_handshake_timeout() {
    let server = Server::start_with(with_limits(Limits {
        handshake_timeout: Duration::from_millis(500),
        ..Limits::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /ws/slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(ARRIVES, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server hangs up on a client that dawdles");
    server.shutdown().await;
}
