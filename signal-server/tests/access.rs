//! Who may join, what they are handed, and how the server is run: origin allow-list, room
//! tokens, TURN credentials, `/metrics`, TLS, and the binary's settings — against a real
//! server on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Server};
use futures_util::StreamExt;
use serde_json::json;
use signal_server::Config;
use signal_server::access::issue_token;
use signal_server::config::{TlsConfig, TurnConfig};
use swarm_protocol::RoomName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn expect_refused(client: &mut Client, code: &str) -> String {
    let message = client.expect_error(code).await;
    let (close, reason) = client.expect_close().await;
    assert_eq!(close, CloseCode::Policy);
    assert_eq!(reason, code);
    message
}

#[tokio::test]
async fn only_allowed_origins_may_connect_when_a_list_is_set() {
    let server = Server::start_with(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..Config::default()
    })
    .await;
    let mut good = server
        .connect("/ws/o", &[("origin", "https://app.example")])
        .await;
    assert_eq!(good.recv().await["type"], "welcome");
    let mut bad = server
        .connect("/ws/o", &[("origin", "https://evil.example")])
        .await;
    let message = expect_refused(&mut bad, "origin-not-allowed").await;
    assert!(message.contains("https://evil.example"), "{message}");
    // Not a browser: no Origin header, nothing to protect against.
    let mut tool = server.connect("/ws/o", &[]).await;
    assert_eq!(tool.recv().await["type"], "welcome");
    server.shutdown().await;
}

#[tokio::test]
async fn with_a_secret_joining_needs_a_valid_token_for_that_room() {
    let secret = "correct horse battery staple";
    let server = Server::start_with(Config {
        token_secret: Some(secret.into()),
        ..Config::default()
    })
    .await;
    let room = RoomName::new("vip".to_owned()).expect("room");
    let good = issue_token(secret, &room, now() + 60);
    let mut a = server.connect(&format!("/ws/vip?token={good}"), &[]).await;
    assert_eq!(a.recv().await["type"], "welcome");

    let mut none = server.connect("/ws/vip", &[]).await;
    assert!(
        expect_refused(&mut none, "unauthorized")
            .await
            .contains("needs a token")
    );
    let expired = issue_token(secret, &room, now() - 1);
    let mut late = server
        .connect(&format!("/ws/vip?token={expired}"), &[])
        .await;
    assert!(
        expect_refused(&mut late, "unauthorized")
            .await
            .contains("expired")
    );
    let other_room = RoomName::new("other".to_owned()).expect("room");
    let elsewhere = issue_token(secret, &other_room, now() + 60);
    let mut wrong = server
        .connect(&format!("/ws/vip?token={elsewhere}"), &[])
        .await;
    assert!(
        expect_refused(&mut wrong, "unauthorized")
            .await
            .contains("not valid")
    );
    let forged = issue_token("guess", &room, now() + 60);
    let mut forger = server
        .connect(&format!("/ws/vip?token={forged}"), &[])
        .await;
    expect_refused(&mut forger, "unauthorized").await;
    server.shutdown().await;
}

#[tokio::test]
async fn welcome_carries_stun_and_fresh_turn_credentials() {
    let server = Server::start_with(Config {
        ice_servers: vec![swarm_protocol::IceServer {
            urls: swarm_protocol::signal::IceUrls::One("stun:stun.example:3478".into()),
            username: None,
            credential: None,
        }],
        turn: Some(TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: "north".into(),
            ttl: Duration::from_secs(600),
        }),
        ..Config::default()
    })
    .await;
    let mut client = server.connect("/ws/ice", &[]).await;
    let welcome = client.recv().await;
    let ice = welcome["iceServers"].as_array().expect("list");
    assert_eq!(ice[0], json!({"urls": "stun:stun.example:3478"}));
    assert_eq!(ice[1]["urls"], json!(["turn:127.0.0.1:3478"]));
    let username = ice[1]["username"].as_str().expect("username");
    let (expires, peer) = username.split_once(':').expect("expires:peer");
    assert_eq!(peer, welcome["id"]);
    let expires: u64 = expires.parse().expect("a number");
    assert!(
        expires >= now() + 590 && expires <= now() + 610,
        "{expires}"
    );
    assert_eq!(
        ice[1]["credential"].as_str(),
        Some(signal_server::turn::password("north", username).as_str())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_connections_relays_and_errors() {
    let server = Server::start().await;
    let (mut a, mut b) = server.pair("m").await;
    a.assert_usable(&mut b).await;
    a.send(json!({"type": "signal", "to": "00000000000000000000000000000000", "data": 1}))
        .await;
    a.expect_error("unknown-peer").await;
    let metrics = server.metrics().await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    for line in [
        "signal_connections_total 2",
        "signal_connections 2",
        "signal_rooms 1",
        "signal_peers 2",
        "signal_messages_relayed_total 1",
        "signal_errors_total{code=\"unknown-peer\"} 1",
        "signal_relay_latency_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tls_serves_wss_and_https() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let server = Server::start_with(Config {
        tls: Some(TlsConfig {
            cert: cert_path,
            key: key_path,
        }),
        ..Config::default()
    })
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.cert.der().clone())
        .expect("trust the test cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");

    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("TLS handshake");
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws/secure", tls)
        .await
        .expect("WebSocket over TLS");
    let Some(Ok(Message::Text(welcome))) = ws.next().await else {
        panic!("no welcome over TLS");
    };
    assert!(welcome.contains("\"type\":\"welcome\""), "{welcome}");

    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut https = connector.connect(name, tcp).await.expect("TLS handshake");
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    let _ = https.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("ok"),
        "{response}"
    );

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("ok"));
    server.shutdown().await;
}

/// Runs the real binary with `args` and the environment `env`; returns its first stdout line
/// (or its stderr and exit status when it stops at once).
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Result<String, (String, Option<i32>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_signal-server"))
        .args(args)
        .env_remove("SIGNAL_LISTEN")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start signal-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.is_empty() {
        let output = child.wait_with_output().expect("wait");
        return Err((
            String::from_utf8_lossy(&output.stderr).into_owned(),
            output.status.code(),
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(line.trim().to_owned())
}

#[test]
fn the_binary_reads_a_toml_file_and_flags_and_environment_win_over_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("server.toml");
    // A free port, found by binding and letting go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{port}\"\nmax-rooms = 10\n"),
    )
    .expect("write");
    let config = file.to_str().expect("utf-8 path");
    assert_eq!(
        run_binary(&["--config", config], &[]),
        Ok(format!("listening on http://127.0.0.1:{port}"))
    );
    // The environment wins over the file.
    assert_eq!(
        run_binary(&["--config", config], &[("SIGNAL_LISTEN", "127.0.0.1:0")])
            .map(|l| l.ends_with(&format!(":{port}"))),
        Ok(false)
    );

    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax-room = 10\n").expect("write");
    let (stderr, code) = run_binary(&["--config", config], &[]).expect_err("unknown key");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("max-room"), "{stderr}");
    let (stderr, code) = run_binary(&["--turn-secret", "x"], &[]).expect_err("turn without url");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--turn-url"), "{stderr}");
}

#[test]
fn the_token_command_prints_a_token_the_server_accepts() {
    let token = run_binary(
        &[
            "--token-secret",
            "k",
            "token",
            "--room",
            "demo",
            "--ttl",
            "60",
        ],
        &[],
    )
    .expect("a token");
    let room = RoomName::new("demo".to_owned()).expect("room");
    assert_eq!(
        signal_server::access::check_token("k", &room, Some(&token), now()),
        Ok(())
    );
    let (stderr, code) = run_binary(&["token", "--room", "demo"], &[]).expect_err("no secret");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--token-secret"), "{stderr}");
}

#[tokio::test]
async fn the_server_runs_on_a_listener_bound_anywhere_on_loopback() {
    // Guards the accept loop itself: a second address works like the first.
    let listener = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(signal_server::run(listener, Config::default(), async {
        let _ = stopped.await;
    }));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/x"))
        .await
        .expect("connect");
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    let _ = stop.send(());
    task.await.expect("task").expect("ran cleanly");
}
