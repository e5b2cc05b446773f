//! The test harness shared by the server's integration tests: a real server on a loopback
//! port, and real WebSocket clients (tokio-tungstenite).

#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signal_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame that must arrive.
pub const ARRIVES: Duration = Duration::from_secs(5);
/// How long a test waits to be sure a frame does not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), signal_server::RunError>>,
    _www: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    pub async fn with_frame_limit(max_frame_len: usize) -> Self {
        Self::start_with(Config {
            max_frame_len,
            ..Config::default()
        })
        .await
    }

    /// A server with `config`, but without the resume grace: a client that drops its
    /// connection is announced as `left` at once, as most tests expect.
    pub async fn start_with(config: Config) -> Self {
        Self::start_resumable(Config {
            resume_grace: Duration::ZERO,
            ..config
        })
        .await
    }

    /// A server with `config` exactly, resume grace included.
    pub async fn start_resumable(mut config: Config) -> Self {
        let www = tempfile::tempdir().expect("temp dir");
        std::fs::write(www.path().join("index.html"), "<h1>swarm</h1>").expect("write page");
        config.www = www.path().to_path_buf();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(signal_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
            _www: www,
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
        result.expect("server ran cleanly");
    }

    pub async fn client(&self, room: &str) -> Client {
        let url = format!("ws://{}/ws/{room}", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut client = Client {
            ws,
            id: String::new(),
            peers: Vec::new(),
            resume: None,
        };
        let welcome = client.read_welcome().await;
        assert_eq!(welcome["iceServers"], json!([]));
        client
    }

    /// A WebSocket to `path` (e.g. `/ws/demo?token=…`) with an optional `Origin` and
    /// `X-Forwarded-For`, before any frame is read.
    pub async fn connect(&self, path: &str, headers: &[(&str, &str)]) -> Client {
        let mut request = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        Client {
            ws,
            id: String::new(),
            peers: Vec::new(),
            resume: None,
        }
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http_get("/metrics").await
    }

    /// Two clients in `room`, after the first has heard the second join.
    pub async fn pair(&self, room: &str) -> (Client, Client) {
        let mut a = self.client(room).await;
        let b = self.client(room).await;
        assert_eq!(a.recv().await, json!({"type": "joined", "id": b.id}));
        (a, b)
    }

    /// The directory the server serves at `/`.
    pub fn www(&self) -> &std::path::Path {
        self._www.path()
    }

    /// A value of `/metrics`: the number on the line that starts with `name` (labels
    /// included, e.g. `signal_disconnects_total{reason="slow"}`).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .expect("a whole number")
    }

    /// Like [`Server::http_get`], but `None` when the server closes or resets the connection
    /// without an answer.
    pub async fn try_get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(self.addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        (!response.is_empty()).then(|| String::from_utf8_lossy(&response).into_owned())
    }

    pub async fn http_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub id: String,
    pub peers: Vec<String>,
    /// The `resume` token of its `welcome`.
    pub resume: Option<String>,
}

impl Client {
    /// Reads the `welcome` (which must be the next frame) and fills `id`, `peers` and
    /// `resume` from it.
    pub async fn read_welcome(&mut self) -> Value {
        let welcome = self.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame is welcome: {welcome}"
        );
        self.id = welcome["id"].as_str().expect("id is a string").to_owned();
        self.peers = welcome["peers"]
            .as_array()
            .expect("peers is an array")
            .iter()
            .map(|p| p.as_str().expect("peer id").to_owned())
            .collect();
        self.resume = welcome["resume"].as_str().map(str::to_owned);
        welcome
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_raw(frame.to_string()).await;
    }

    pub async fn send_raw(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn next_message(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Err(_) => None,
            Ok(None) => panic!("connection ended"),
            Ok(Some(message)) => Some(message.expect("read")),
        }
    }

    /// The next text frame, skipping pings and pongs; panics after [`ARRIVES`].
    pub async fn recv(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + ARRIVES;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await.expect("a frame in time") {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn assert_quiet(&mut self) {
        if let Some(message) = self.next_message(QUIET).await {
            panic!("expected no frame, got {message:?}");
        }
    }

    pub async fn expect_error(&mut self, code: &str) -> String {
        let frame = self.recv().await;
        assert_eq!(frame["type"], "error", "{frame}");
        assert_eq!(frame["code"], code, "{frame}");
        frame["message"].as_str().expect("message").to_owned()
    }

    /// Proves the connection still works by relaying a frame to `other`.
    pub async fn assert_usable(&mut self, other: &mut Client) {
        self.send(json!({"type": "signal", "to": other.id, "data": "still here"}))
            .await;
        let frame = other.recv().await;
        assert_eq!(frame["data"], "still here");
    }

    pub async fn expect_close(&mut self) -> (CloseCode, String) {
        loop {
            match tokio::time::timeout(ARRIVES, self.ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code, frame.reason.to_string());
                }
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// A proof of `identity`'s key to join `room`, signed for a second later than the last one
/// this test binary made (a server takes each proof once, as a client signs a later second
/// for each connection).
pub fn keyed_path(room: &str, identity: &swarm_core::identity::Identity) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LATER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let ts = now + LATER.fetch_add(1, Ordering::Relaxed);
    let proof = identity.join_proof(&swarm_protocol::RoomName::new(room).expect("room"), ts);
    format!("/ws/{room}?{}", proof.query())
}

/// Joins through `path` on `server` and closes again, with `watcher` (in the same room, on
/// any instance) seeing the peer come and go; returns the peer's id.
pub async fn come_and_go(server: &Server, watcher: &mut Client, path: &str) -> String {
    let mut peer = server.connect(path, &[]).await;
    peer.read_welcome().await;
    assert_eq!(
        watcher.recv().await,
        json!({"type": "joined", "id": peer.id})
    );
    peer.ws.close(None).await.expect("close");
    assert_eq!(watcher.recv().await, json!({"type": "left", "id": peer.id}));
    peer.id.clone()
}

/// Checks that joining through `path` on `server` is refused because its join proof was
/// used already.
pub async fn expect_proof_used(server: &Server, path: &str) {
    let mut replay = server.connect(path, &[]).await;
    let message = replay.expect_error("invalid-key").await;
    assert!(message.contains("used already"), "{message}");
    let (code, _) = replay.expect_close().await;
    assert_eq!(
        code,
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy
    );
}
