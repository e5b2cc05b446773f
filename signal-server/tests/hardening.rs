//! The server against hostile clients, on loopback: connections that never speak or sit
//! idle, too many connections from one address, clients that stop reading, binary floods,
//! TURN credentials for the taking, and paths that no file can have.

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{ARRIVES, Client, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signal_server::Config;
use signal_server::config::{Limits, TurnConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn with_limits(limits: Limits) -> Config {
    Config {
        limits,
        ..Config::default()
    }
}

/// Whether the server closes (or resets) `stream` within `wait`, reading whatever it sends.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// Sends `GET /healthz` on a kept-alive connection and reads the answer.
async fn healthz_on(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    let mut chunk = [0; 1024];
    while !response.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(ARRIVES, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "the connection stays open while it is used");
        response.extend_from_slice(&chunk[..n]);
    }
}

// --- Connections that hold a socket without using it ------------------------------------

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let server = Server::start_with(with_limits(Limits {
        handshake_timeout: ms(500),
        ..Limits::default()
    }))
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    assert!(
        closed_within(&mut silent, ARRIVES).await,
        "a socket that never sends a byte is closed"
    );
    assert!(started.elapsed() >= ms(400), "{:?}", started.elapsed());
    let closed = server
        .metric("signal_tcp_closed_total{reason=\"handshake-timeout\"}")
        .await;
    assert_eq!(closed, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn an_h2c_connection_without_a_request_is_closed_after_the_handshake_timeout() {
    let server = Server::start_with(with_limits(Limits {
        handshake_timeout: ms(500),
        ..Limits::default()
    }))
    .await;
    let mut h2 = TcpStream::connect(server.addr).await.expect("connect");
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    assert!(closed_within(&mut h2, ARRIVES).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_kept_alive_connection_stays_open_while_used_and_is_closed_once_silent() {
    let server = Server::start_with(with_limits(Limits {
        handshake_timeout: ms(400),
        http_idle_timeout: ms(600),
        ..Limits::default()
    }))
    .await;
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    // Five requests 200 ms apart: longer in all than either timeout, never idle for one.
    for _ in 0..5 {
        healthz_on(&mut conn).await;
        tokio::time::sleep(ms(200)).await;
    }
    // Waiting for its next request, it has the handshake timeout (hyper's header timeout).
    assert!(
        closed_within(&mut conn, ARRIVES).await,
        "a silent keep-alive connection is closed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_file_is_closed_after_the_http_idle_timeout() {
    let server = Server::start_with(with_limits(Limits {
        handshake_timeout: ms(300),
        http_idle_timeout: ms(600),
        ..Limits::default()
    }))
    .await;
    // Far more than the kernel buffers of a connection nobody reads.
    std::fs::write(server.www().join("big.bin"), vec![0; 32 << 20]).expect("write file");
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let name = "signal_tcp_closed_total{reason=\"http-idle\"}";
    let started = Instant::now();
    while server.metric(name).await == 0 {
        assert!(
            started.elapsed() < ARRIVES,
            "the stalled download is closed"
        );
        tokio::time::sleep(ms(100)).await;
    }
    // Only the connection of that last `/metrics` request may still be open.
    assert!(server.metric("signal_tcp_connections").await <= 2);
    server.shutdown().await;
}

#[tokio::test]
async fn an_h2c_connection_is_closed_once_idle_after_its_request() {
    let server = Server::start_with(with_limits(Limits {
        handshake_timeout: ms(300),
        http_idle_timeout: ms(600),
        ..Limits::default()
    }))
    .await;
    let mut h2 = TcpStream::connect(server.addr).await.expect("connect");
    // Preface, empty SETTINGS, then HEADERS (stream 1, END_STREAM | END_HEADERS) for
    // `GET /` from the static table: :method GET, :scheme http, :path /.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    h2.write_all(b"\x00\x00\x03\x01\x05\x00\x00\x00\x01\x82\x86\x84")
        .await
        .expect("write");
    assert!(closed_within(&mut h2, ARRIVES).await);
    let idle = server
        .metric("signal_tcp_closed_total{reason=\"http-idle\"}")
        .await;
    assert_eq!(idle, 1, "closed for idling after its request was answered");
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_connections_per_address_are_limited_and_a_slot_frees_on_close() {
    let server = Server::start_with(with_limits(Limits {
        tcp_connections_per_ip: 3,
        ..Limits::default()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Reset at once: the reset may even beat the end of `connect`.
    let fourth_closed = match TcpStream::connect(server.addr).await {
        Ok(mut fourth) => closed_within(&mut fourth, ms(2000)).await,
        Err(_) => true,
    };
    assert!(
        fourth_closed,
        "the fourth connection from the address is closed at once"
    );
    for stream in &mut held {
        assert!(!closed_within(stream, ms(50)).await, "the first three stay");
    }
    drop(held.pop());
    let mut answer = None;
    for _ in 0..50 {
        answer = server.try_get("/healthz").await;
        if answer.is_some() {
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    let answer = answer.expect("a new connection works once one closed");
    assert!(answer.ends_with("ok"), "{answer}");
    let refused = server
        .metric("signal_tcp_closed_total{reason=\"per-ip-limit\"}")
        .await;
    assert!(refused >= 1);
    assert_eq!(server.metric("signal_tcp_connections").await, 3);
    server.shutdown().await;
}

// --- Clients that stop reading -----------------------------------------------------------

/// A signal of about 60 kB.
fn big_signal(to: &str) -> Value {
    json!({"type": "signal", "to": to, "data": "x".repeat(60_000)})
}

/// Sends `victim` about 24 MB (far more than the kernel buffers of a loopback connection
/// hold when nobody reads), then waits until `sender` hears that it left, and returns how
/// long that took after the last send.
async fn flood_until_left(sender: &mut Client, victim: &str) -> Duration {
    for _ in 0..400 {
        sender.send(big_signal(victim)).await;
    }
    let sent = Instant::now();
    loop {
        let frame = sender.recv().await;
        if frame == json!({"type": "left", "id": victim}) {
            return sent.elapsed();
        }
        // Signals sent after the victim was gone.
        assert_eq!(frame["code"], "unknown-peer", "{frame}");
    }
}

/// Reads what the server wrote before it dropped `client`, until the connection ends; a
/// close frame, if the server could still write one, must say "too slow".
async fn expect_dropped_as_slow(client: &mut Client) {
    let ended = tokio::time::timeout(ARRIVES, async {
        while let Some(Ok(message)) = client.ws.next().await {
            if let Message::Close(Some(frame)) = message {
                assert_eq!(frame.code, CloseCode::Policy);
                assert!(frame.reason.contains("too slow"), "{}", frame.reason);
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow client's connection ends");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_once_its_queue_passes_the_byte_bound() {
    const BOUND: usize = 256 * 1024;
    // With the resume grace on: a slow client is not held as if its network failed.
    let server = Server::start_resumable(Config {
        outgoing_queue: 100_000,
        outgoing_queue_bytes: BOUND,
        limits: Limits {
            write_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        ..Config::default()
    })
    .await;
    let (mut sender, mut victim) = server.pair("slow").await;
    let took = flood_until_left(&mut sender, &victim.id).await;
    assert!(
        took < ARRIVES,
        "left {took:?} after the flood, not after the grace"
    );
    assert_eq!(
        server
            .metric("signal_disconnects_total{reason=\"slow\"}")
            .await,
        1
    );
    let peak = server.metric("signal_outgoing_queue_peak_bytes").await;
    assert!(peak <= BOUND as u64, "a queue held {peak} bytes");
    assert!(
        peak > BOUND as u64 / 2,
        "the flood filled the queue: {peak}"
    );
    let mut queued = u64::MAX;
    for _ in 0..50 {
        queued = server.metric("signal_outgoing_queue_bytes").await;
        if queued == 0 {
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    assert_eq!(queued, 0, "nothing stays queued for a dropped client");
    expect_dropped_as_slow(&mut victim).await;
    // It left (its place was not held), and its resume token went with its place: it comes
    // back as a newcomer with a new id.
    let resume = victim.resume.clone().expect("a resume token");
    let mut back = server
        .connect(&format!("/ws/slow?resume={resume}"), &[])
        .await;
    back.read_welcome().await;
    assert_ne!(back.id, victim.id);
    loop {
        let frame = sender.recv().await;
        if frame["type"] == "joined" {
            assert_eq!(frame["id"], back.id.as_str());
            break;
        }
        assert_eq!(
            frame["code"], "unknown-peer",
            "the rest of the flood: {frame}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = Server::start_with(Config {
        outgoing_queue: 100_000,
        outgoing_queue_bytes: 64 * 1024 * 1024,
        limits: Limits {
            write_timeout: ms(500),
            ..Limits::default()
        },
        ..Config::default()
    })
    .await;
    let (mut sender, mut victim) = server.pair("stuck").await;
    let took = flood_until_left(&mut sender, &victim.id).await;
    assert!(took < ARRIVES, "{took:?}");
    assert_eq!(
        server
            .metric("signal_disconnects_total{reason=\"slow\"}")
            .await,
        1
    );
    expect_dropped_as_slow(&mut victim).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_idle_timeout_runs_on_while_a_write_is_blocked() {
    let server = Server::start_with(Config {
        outgoing_queue: 100_000,
        outgoing_queue_bytes: 64 * 1024 * 1024,
        limits: Limits {
            write_timeout: Duration::from_secs(60),
            idle_timeout: ms(1500),
            ping_interval: ms(300),
            ..Limits::default()
        },
        ..Config::default()
    })
    .await;
    let (mut sender, victim) = server.pair("blocked").await;
    let took = flood_until_left(&mut sender, &victim.id).await;
    assert!(took < ARRIVES, "{took:?}");
    assert!(
        server
            .metric("signal_disconnects_total{reason=\"idle\"}")
            .await
            >= 1
    );
    assert_eq!(
        server
            .metric("signal_disconnects_total{reason=\"slow\"}")
            .await,
        0
    );
    server.shutdown().await;
}

// --- Floods ------------------------------------------------------------------------------

#[tokio::test]
async fn binary_frames_count_against_the_rate_and_a_binary_flood_is_closed() {
    let server = Server::start_with(with_limits(Limits {
        rate: 5,
        burst: 10,
        ..Limits::default()
    }))
    .await;
    let mut client = server.client("binary").await;
    let sent = 1000;
    for _ in 0..sent {
        if client.ws.send(Message::binary(vec![0; 16])).await.is_err() {
            break;
        }
    }
    let (mut bad, mut limited) = (0, 0);
    let (code, reason) = loop {
        let next = tokio::time::timeout(ARRIVES, client.ws.next())
            .await
            .expect("the server answers in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                match frame["code"].as_str() {
                    Some("bad-message") => bad += 1,
                    Some("rate-limited") => limited += 1,
                    _ => panic!("unexpected frame {frame}"),
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => break (frame.code, frame.reason.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "rate limit exceeded")
    );
    assert!((10..=12).contains(&bad), "the burst is answered: {bad}");
    assert!(limited >= 100, "{limited}");
    assert!(bad + limited < sent, "not every frame is answered");
    server.shutdown().await;
}

// --- TURN credentials --------------------------------------------------------------------

#[tokio::test]
async fn turn_credentials_are_limited_per_address() {
    let server = Server::start_with(Config {
        turn: Some(TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: "north".into(),
            ttl: Duration::from_secs(600),
        }),
        limits: Limits {
            turn_credentials_per_ip: 2,
            ..Limits::default()
        },
        ..Config::default()
    })
    .await;
    let mut clients = Vec::new();
    for n in 0..3 {
        let mut client = server.connect("/ws/turn", &[]).await;
        let welcome = client.read_welcome().await;
        let servers = welcome["iceServers"].as_array().expect("iceServers");
        if n < 2 {
            assert_eq!(servers.len(), 1, "{welcome}");
            assert!(servers[0]["credential"].is_string(), "{welcome}");
        } else {
            assert!(
                servers.is_empty(),
                "the third gets no TURN server: {welcome}"
            );
            assert_eq!(client.peers.len(), 2, "it joined all the same");
        }
        clients.push(client);
    }
    let issued = "signal_turn_credentials_total{result=\"issued\"}";
    let refused = "signal_turn_credentials_total{result=\"refused\"}";
    assert_eq!(server.metric(issued).await, 2);
    assert_eq!(server.metric(refused).await, 1);
    server.shutdown().await;
}

// --- Static files ------------------------------------------------------------------------

/// Everything written through `tracing` on this thread while it is set (the tests run the
/// server on their own single-threaded runtime, so that is the server's logs too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn status(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("")
}

/// The value of header `name` (lower case) in a raw HTTP/1.1 response.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn a_path_too_long_for_a_file_is_answered_414_without_an_error_log() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let server = Server::start().await;
    let long_segment = format!("/{}", "a".repeat(256));
    assert_eq!(status(&server.http_get(&long_segment).await), "414");
    let deep = format!("/{}", "a/".repeat(1100));
    assert_eq!(status(&server.http_get(&deep).await), "414");
    // At the limits, and percent-encoded names that decode to fewer bytes: just not found.
    let longest = format!("/{}", "a".repeat(255));
    assert_eq!(status(&server.http_get(&longest).await), "404");
    let encoded = format!("/{}", "%61".repeat(200));
    assert_eq!(status(&server.http_get(&encoded).await), "404");
    server.shutdown().await;
    let logs = logs.text();
    assert!(!logs.contains("ERROR"), "{logs}");
}

#[tokio::test]
async fn a_directory_redirect_never_points_at_another_host() {
    let server = Server::start().await;
    std::fs::create_dir(server.www().join("pkg")).expect("mkdir");
    for path in ["/pkg", "//pkg", "///pkg"] {
        let response = server.http_get(path).await;
        assert_eq!(status(&response), "307", "{path}: {response}");
        assert_eq!(header(&response, "location"), Some("/pkg/"), "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_has_a_content_security_policy_and_every_answer_says_nosniff() {
    let server = Server::start().await;
    let page = server.http_get("/").await;
    assert_eq!(status(&page), "200");
    assert_eq!(header(&page, "x-content-type-options"), Some("nosniff"));
    let policy = header(&page, "content-security-policy").expect("a policy");
    for part in [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "worker-src 'self' blob:",
        // Swarm.join may name any signalling server.
        "connect-src 'self' ws: wss:",
        "media-src 'self' blob:",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(policy.contains(part), "{part:?} missing from {policy}");
    }
    let health = server.http_get("/healthz").await;
    assert_eq!(header(&health, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&health, "content-security-policy"), None);
    server.shutdown().await;

    let server = Server::start_with(Config {
        content_security_policy: false,
        ..Config::default()
    })
    .await;
    let page = server.http_get("/").await;
    assert_eq!(header(&page, "content-security-policy"), None);
    assert_eq!(header(&page, "x-content-type-options"), Some("nosniff"));
    server.shutdown().await;
}
