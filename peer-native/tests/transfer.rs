//! Native-to-native: real `swarm-peer` processes in a room of a real signalling server (in
//! this process, on loopback), connected over WebRTC on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const PEER: &str = env!("CARGO_BIN_EXE_swarm-peer");

/// A signalling server on a loopback port, stopped when dropped.
struct Server {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _www: tempfile::TempDir,
}

async fn server() -> Server {
    let www = tempfile::tempdir().expect("temp dir");
    std::fs::write(www.path().join("index.html"), "<h1>swarm</h1>").expect("page");
    let config = signal_server::Config {
        www: www.path().to_path_buf(),
        ..signal_server::Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(signal_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    Server {
        url: format!("ws://{addr}"),
        _stop: stop,
        _www: www,
    }
}

fn peer(server: &Server, room: &str, args: &[&str]) -> Command {
    let mut command = Command::new(PEER);
    command.args(args).args([
        "--server",
        &server.url,
        "--room",
        room,
        "--bind",
        "127.0.0.1:0",
    ]);
    command
}

/// A seeder process, killed when dropped.
struct Seeder {
    child: Child,
    /// The content ids it printed, in order.
    ids: Vec<String>,
    /// The links it printed.
    links: Vec<String>,
}

impl Drop for Seeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `swarm-peer seed FILES…` and reads the line it prints for each file.
fn seed(server: &Server, room: &str, files: &[&Path]) -> Seeder {
    seed_with(server, room, &[], files)
}

/// [`seed`] with more options (`--max-peers`, `--key`, …).
fn seed_with(server: &Server, room: &str, options: &[&str], files: &[&Path]) -> Seeder {
    let mut command = peer(server, room, &["seed"]);
    command
        .args(options)
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start the seeder");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut ids, mut links) = (Vec::new(), Vec::new());
    for _ in files {
        let line = lines.next().expect("a line per file").expect("readable");
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "id, size, name, link: {line}");
        ids.push(fields[0].to_owned());
        links.push(fields[3].to_owned());
    }
    Seeder { child, ids, links }
}

async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run swarm-peer"))
        .await
        .expect("join")
}

fn random_file(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
    let mut bytes = vec![0u8; len];
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ len as u64;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).expect("read")).to_vec()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_peer_downloads_from_a_native_seeder_byte_identical() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let source = random_file(dir.path(), "video.webm", 20 * 1024 * 1024 + 12_345);
    let seeder = seed(&server, "native", &[&source]);
    assert_eq!(seeder.ids[0].len(), 64);
    assert!(
        seeder.links[0].ends_with(&format!("/#native/{}", seeder.ids[0])),
        "{}",
        seeder.links[0]
    );

    let target = dir.path().join("copy.webm");
    let target_arg = target.to_str().expect("utf-8 path");
    let output = run(peer(
        &server,
        "native",
        &["get", &seeder.ids[0], "-o", target_arg],
    ))
    .await;
    assert!(output.status.success(), "get failed: {}", stderr(&output));
    assert_eq!(sha256(&target), sha256(&source));
    assert!(!dir.path().join("copy.webm.swarm-part").exists());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("saved "), "{stdout}");

    // The downloader refuses to overwrite what it saved.
    let output = run(peer(
        &server,
        "native",
        &["get", &seeder.ids[0], "-o", target_arg],
    ))
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("exists already"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_lists_the_seeder_and_its_files() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let one = random_file(dir.path(), "one.bin", 300_000);
    let two = random_file(dir.path(), "two.txt", 1_000);
    let seeder = seed(&server, "lobby", &[&one, &two]);
    let output = run(peer(&server, "lobby", &["peers", "--wait", "3"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let connected = stdout
        .lines()
        .filter(|line| line.starts_with("peer\t") && line.ends_with("\tconnected"))
        .count();
    assert_eq!(connected, 1, "{stdout}");
    for id in &seeder.ids {
        assert!(
            stdout.contains(&format!("file\t{id}\t")),
            "{id} missing: {stdout}"
        );
    }
    assert!(
        stdout.contains("\t300000\t1 source(s)\tone.bin"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_lines_reach_the_other_peer() {
    let server = server().await;
    let mut listener = peer(&server, "chat", &["chat"]);
    listener
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut listener = listener.spawn().expect("start the listener");
    let _keep_stdin_open = listener.stdin.take();
    let stdout = listener.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    // The talker waits for the connection, then says one line and leaves at end of input.
    let mut talker = peer(&server, "chat", &["chat"]);
    talker
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut talker = talker.spawn().expect("start the talker");
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        use std::io::Write;
        let mut stdin = talker.stdin.take().expect("stdin");
        writeln!(stdin, "hello from the command line").expect("write");
    }
    let line = tokio::task::spawn_blocking(move || lines_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("a line arrives");
    assert!(line.ends_with(": hello from the command line"), "{line}");
    let _ = talker.wait();
    let _ = listener.kill();
    let _ = listener.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_non_zero_with_a_clear_message() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("never.bin");
    let absent = "ab".repeat(32);

    let target_arg = target.to_str().expect("utf-8 path");
    let output = run(peer(
        &server,
        "empty",
        &["get", &absent, "--wait", "1", "-o", target_arg],
    ))
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("no peer in room empty offers content {absent}")),
        "{}",
        stderr(&output)
    );
    assert!(!target.exists());

    let output = run(peer(&server, "empty", &["get", "not-an-id", "-o", "x"])).await;
    assert!(
        stderr(&output).contains("bad content id \"not-an-id\""),
        "{}",
        stderr(&output)
    );

    let output = run(peer(&server, "bad room!", &["peers"])).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("bad room name"),
        "{}",
        stderr(&output)
    );

    let output = run(peer(&server, "r", &["seed", "/nonexistent/file.bin"])).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read /nonexistent/file.bin"),
        "{}",
        stderr(&output)
    );

    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut unreachable = Command::new(PEER);
    unreachable.args([
        "peers",
        "--server",
        &format!("ws://127.0.0.1:{port}"),
        "--room",
        "r",
    ]);
    let output = run(unreachable).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot join through ws://127.0.0.1:{port}")),
        "{}",
        stderr(&output)
    );

    let mut bad_url = Command::new(PEER);
    bad_url.args(["peers", "--server", "ftp://example", "--room", "r"]);
    let output = run(bad_url).await;
    assert!(
        stderr(&output).contains("bad server URL"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_keeps_the_same_id_across_runs() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("peer.key");
    let key_arg = key.to_str().expect("utf-8 path");
    let me = |output: &Output| {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("me\t").map(str::to_owned))
            .unwrap_or_else(|| panic!("no id in {stdout}"))
    };
    let args = ["peers", "--wait", "0", "--key", key_arg];
    let first = run(peer(&server, "keys", &args)).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(key.exists(), "the key file is created");
    let second = run(peer(&server, "keys", &args)).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(me(&first), me(&second));
    // Without the key, another id.
    let fresh = run(peer(&server, "keys", &["peers", "--wait", "0"])).await;
    assert_ne!(me(&fresh), me(&first));

    std::fs::write(&key, "not a key").expect("write");
    let output = run(peer(&server, "keys", &args)).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("expected 64 hex digits"),
        "{}",
        stderr(&output)
    );
}

/// Key seeds for three peers a, b, c such that c's id is closer (XOR) to b's than to a's: a
/// newcomer capped at one connection offers to the closest member only.
fn keys_for_a_line() -> [[u8; 32]; 3] {
    use swarm_core::identity::Identity;
    let id = |seed: [u8; 32]| *Identity::from_seed(seed).id().as_bytes();
    let xor = |x: [u8; 16], y: [u8; 16]| u128::from_be_bytes(x) ^ u128::from_be_bytes(y);
    let (a, b) = ([1u8; 32], [2u8; 32]);
    (3u8..=255)
        .map(|n| [n; 32])
        .find(|c| xor(id(*c), id(b)) < xor(id(*c), id(a)))
        .map(|c| [a, b, c])
        .expect("some seed is closer to b")
}

/// Key files for [`keys_for_a_line`] in `dir`, and the ids they give.
/// Writes a key file for each of `keys` in `dir`: their paths, and the ids they give.
fn write_key_files(dir: &Path, keys: &[[u8; 32]]) -> (Vec<String>, Vec<String>) {
    use swarm_core::identity::Identity;
    let key_files: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, seed)| {
            let path = dir.join(format!("key-{i}"));
            std::fs::write(&path, swarm_protocol::hex::encode(seed)).expect("key file");
            path.to_str().expect("utf-8").to_owned()
        })
        .collect();
    let ids: Vec<String> = keys
        .iter()
        .map(|seed| Identity::from_seed(*seed).id().to_string())
        .collect();
    (key_files, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_downloads_from_a_provider_it_only_heard_of_by_gossip() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (key_files, ids) = write_key_files(dir.path(), &keys_for_a_line());
    let capped = |i: usize| ["--max-peers", "1", "--key", key_files[i].as_str()];

    // a seeds the file; b (seeding something else) joins and connects to a.
    let source = random_file(dir.path(), "rare.bin", 3 * 1024 * 1024 + 7);
    let other = random_file(dir.path(), "other.bin", 1000);
    let a = seed_with(&server, "line", &capped(0), &[&source]);
    let _b = seed_with(&server, "line", &capped(1), &[&other]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // c offers to b only (its closest); it hears of a's file from b's records, dials a and
    // downloads it from there.
    let target = dir.path().join("copy.bin");
    let mut get = peer(
        &server,
        "line",
        &["get", &a.ids[0], "-o", target.to_str().expect("utf-8")],
    );
    get.args(capped(2));
    fetched_through_b(run(get).await, &target, &source, &ids);
}

/// Checks that c's `get` (`output`) saved `source` to `target`, meeting b (`ids[1]`) first
/// and then a (`ids[0]`); returns c's log.
fn fetched_through_b(output: Output, target: &Path, source: &Path, ids: &[String]) -> String {
    let log = stderr(&output);
    assert!(output.status.success(), "get failed: {log}");
    assert_eq!(sha256(target), sha256(source));
    let joined: Vec<&str> = log
        .lines()
        .filter_map(|line| line.strip_prefix("peer joined: "))
        .collect();
    assert_eq!(
        joined.first(),
        Some(&ids[1].as_str()),
        "c meets b first (a {}, b {}): {log}",
        ids[0],
        ids[1]
    );
    assert!(joined.contains(&ids[0].as_str()), "then a: {log}");
    log
}

/// Key seeds for a line a - b - c around content `id`: b is closer to the content's key than
/// a (so a's record moves on to b once they are connected), and c is closer to b than to a
/// (so with one connection each, c connects to b).
fn keys_around(id: &str) -> [[u8; 32]; 3] {
    use swarm_core::identity::Identity;
    use swarm_core::kademlia::Key;
    let content: swarm_protocol::ContentId = id.parse().expect("a content id");
    let key = Key::for_content(&content);
    let peer = |seed: u8| Identity::from_seed([seed; 32]).id();
    let xor = |x: swarm_protocol::PeerId, y: swarm_protocol::PeerId| {
        u128::from_be_bytes(*x.as_bytes()) ^ u128::from_be_bytes(*y.as_bytes())
    };
    let a = 1u8;
    let b = (2u8..=255)
        .find(|b| key.distance(&Key::from(peer(*b))) < key.distance(&Key::from(peer(a))))
        .expect("a seed closer to the key");
    let c = (2u8..=255)
        .filter(|c| *c != b)
        .find(|c| xor(peer(*c), peer(b)) < xor(peer(*c), peer(a)))
        .expect("a seed closer to b");
    [[a; 32], [b; 32], [c; 32]]
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_large_room_a_peer_finds_a_provider_through_the_structured_layer() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let source = random_file(dir.path(), "rare.bin", 2 * 1024 * 1024 + 3);
    let other = random_file(dir.path(), "other.bin", 1000);
    // The content id first (a peer with a throwaway key prints it), then keys around it.
    let probe = seed_with(&server, "probe", &[], &[&source]);
    let id = probe.ids[0].clone();
    drop(probe);
    let (key_files, ids) = write_key_files(dir.path(), &keys_around(&id));
    // `--dht-above 0`: every room counts as large, so nothing is flooded or passed on.
    let capped = |i: usize| {
        [
            "--max-peers",
            "1",
            "--dht-above",
            "0",
            "--key",
            key_files[i].as_str(),
        ]
    };
    let a = seed_with(&server, "dht", &capped(0), &[&source]);
    assert_eq!(a.ids[0], id);
    let _b = seed_with(&server, "dht", &capped(1), &[&other]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // c connects to b only. b knows a's file (a told its neighbour) but does not pass it on
    // in a large room: c learns of it by looking it up, dials a, and downloads it.
    let target = dir.path().join("copy.bin");
    let mut get = peer(
        &server,
        "dht",
        &[
            "get",
            &id,
            "--wait",
            "30",
            "-o",
            target.to_str().expect("utf-8"),
        ],
    );
    get.args(capped(2))
        .env("SWARM_LOG", "warn,swarm_core=debug");
    let log = fetched_through_b(run(get).await, &target, &source, &ids);
    assert!(log.contains("heard of a provider"), "{log}");
}
