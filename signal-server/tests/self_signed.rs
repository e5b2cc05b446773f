//! `--tls-self-signed`, through the real binary on loopback and real TLS: the page over
//! https and a join over wss to a client that trusts exactly the certificate the server made,
//! the printed fingerprint against the served certificate, the certificate kept across
//! restarts, the names given in it, and the settings and directories that are refused.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A `signal-server` process, killed on drop.
struct Running {
    child: Child,
    /// What it printed on stdout up to and including `listening on …`.
    lines: Vec<String>,
    /// Its stderr so far (logs).
    stderr: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl Running {
    /// Starts the binary with `args` (after `--listen 127.0.0.1:0 --www WWW`) and the
    /// environment `env`, and waits for `listening on`.
    fn start(www: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = binary(www, args, env).spawn().expect("start signal-server");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                collected.lock().expect("lock").push_str(&text);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = Vec::new();
        let addr = loop {
            let mut line = String::new();
            let read = stdout.read_line(&mut line).expect("read stdout");
            assert!(
                read > 0,
                "signal-server exited before listening: {lines:?}\n{}",
                stderr.lock().expect("lock")
            );
            let line = line.trim().to_owned();
            lines.push(line.clone());
            if let Some(addr) = line.strip_prefix("listening on https://") {
                break addr.parse().expect("an address");
            }
            assert!(!line.starts_with("listening on"), "not https: {line}");
        };
        Self {
            child,
            lines,
            stderr,
            addr,
        }
    }

    /// The fingerprint it printed.
    fn fingerprint(&self) -> &str {
        self.line("certificate SHA-256 ")
    }

    /// The rest of the printed line that starts with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {:?}", self.lines))
    }

    /// Waits (up to 5 s) until its logs contain `text`.
    fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.stderr.lock().expect("lock").contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(www: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signal-server"));
    command
        .args(["--listen", "127.0.0.1:0", "--www"])
        .arg(www)
        .args(args)
        .env_remove("SIGNAL_LISTEN")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the binary to its end; returns its stdout, stderr and exit status.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (String, String, Option<i32>) {
    let www = tempfile::tempdir().expect("temp dir");
    let output = binary(www.path(), args, env).output().expect("run");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

fn www() -> tempfile::TempDir {
    let www = tempfile::tempdir().expect("temp dir");
    std::fs::write(www.path().join("index.html"), "<h1>swarm over tls</h1>").expect("write");
    www
}

/// The certificate the server keeps in `dir`.
fn kept_certificate(dir: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(dir.join("cert.pem")).expect("cert.pem")
}

/// A TLS client whose only trust anchor is `cert`.
fn trusting(cert: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn name(text: &str) -> ServerName<'static> {
    ServerName::try_from(text.to_owned()).expect("a server name")
}

/// `GET path` over TLS to `addr` as `host`: the response, and the certificate served.
async fn get(
    connector: &TlsConnector,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> (String, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .connect(name(host), tcp)
        .await
        .expect("TLS handshake");
    let served = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    (String::from_utf8_lossy(&response).into_owned(), served)
}

fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect();
    hex.join(":")
}

/// The subject alternative names of `der`, as text.
fn names_in(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    let san = cert
        .subject_alternative_name()
        .expect("one SAN extension")
        .expect("names");
    san.value
        .general_names
        .iter()
        .map(|general| match general {
            x509_parser::extensions::GeneralName::DNSName(dns) => (*dns).to_owned(),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("v4")).to_string(),
                _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("v6")).to_string(),
            },
            other => panic!("unexpected name {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn the_page_and_a_join_are_served_over_tls_to_a_client_that_trusts_only_that_certificate() {
    let www = www();
    let dir = tempfile::tempdir().expect("temp dir");
    let tls_dir = dir.path().join("tls");
    let tls_dir_arg = tls_dir.to_str().expect("utf-8");
    let server = Running::start(
        www.path(),
        &["--tls-self-signed", "--tls-dir", tls_dir_arg],
        &[],
    );
    let port = server.addr.port();
    let made = format!(
        "certificate {} (self-signed, made now) for localhost, ",
        tls_dir.join("cert.pem").display()
    );
    assert!(server.lines[0].starts_with(&made), "{:?}", server.lines);
    assert!(
        server.lines[0].ends_with(", 127.0.0.1"),
        "{:?}",
        server.lines
    );
    let opens: Vec<&str> = server
        .lines
        .iter()
        .filter_map(|line| line.strip_prefix("open "))
        .collect();
    assert_eq!(
        opens,
        [
            format!("https://127.0.0.1:{port}/"),
            format!("https://localhost:{port}/")
        ]
    );
    assert_eq!(
        server.lines.last().map(String::as_str),
        Some(format!("listening on https://127.0.0.1:{port}").as_str())
    );

    let cert = kept_certificate(&tls_dir);
    let connector = trusting(cert.clone());
    // By name and by address, both in the certificate.
    for host in ["localhost", "127.0.0.1"] {
        let (page, served) = get(&connector, server.addr, host, "/").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.ends_with("<h1>swarm over tls</h1>"), "{page}");
        assert_eq!(served, cert.to_vec());
        // What it printed is the SHA-256 of what it serves.
        assert_eq!(server.fingerprint(), fingerprint(&served));
    }
    assert!(
        server.logged(server.fingerprint()),
        "no log line with the fingerprint"
    );

    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let tls = connector
        .connect(name("localhost"), tcp)
        .await
        .expect("TLS handshake");
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws/lan", tls)
        .await
        .expect("WebSocket over TLS");
    let Some(Ok(Message::Text(welcome))) = ws.next().await else {
        panic!("no welcome over wss");
    };
    assert!(welcome.contains("\"type\":\"welcome\""), "{welcome}");

    // A client that trusts another certificate gets nowhere: the trust above was real.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let stranger = trusting(other.cert.der().clone());
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    assert!(stranger.connect(name("localhost"), tcp).await.is_err());
    // Nor does a name the certificate is not for.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    assert!(
        connector
            .connect(name("elsewhere.test"), tcp)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_restart_reuses_the_certificate() {
    let www = www();
    let dir = tempfile::tempdir().expect("temp dir");
    let tls_dir = dir.path().join("tls");
    let tls_dir_arg = tls_dir.to_str().expect("utf-8");
    let first = Running::start(
        www.path(),
        &["--tls-self-signed", "--tls-dir", tls_dir_arg],
        &[],
    );
    let fingerprint_before = first.fingerprint().to_owned();
    let pem_before = std::fs::read(tls_dir.join("cert.pem")).expect("cert");
    let key_before = std::fs::read(tls_dir.join("key.pem")).expect("key");
    drop(first);

    // The same settings from the TOML file this time.
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        format!("tls-self-signed = true\ntls-dir = {tls_dir_arg:?}\n"),
    )
    .expect("write");
    let again = Running::start(
        www.path(),
        &["--config", file.to_str().expect("utf-8")],
        &[],
    );
    assert!(
        again.lines[0].contains("(self-signed, reused)"),
        "{:?}",
        again.lines
    );
    assert_eq!(again.fingerprint(), fingerprint_before);
    assert_eq!(
        std::fs::read(tls_dir.join("cert.pem")).expect("cert"),
        pem_before
    );
    assert_eq!(
        std::fs::read(tls_dir.join("key.pem")).expect("key"),
        key_before
    );
    // And that is what it serves.
    let connector = trusting(CertificateDer::from_pem_slice(&pem_before).expect("pem"));
    let (health, served) = get(&connector, again.addr, "localhost", "/healthz").await;
    assert!(health.ends_with("ok"), "{health}");
    assert_eq!(fingerprint(&served), fingerprint_before);
}

#[tokio::test]
async fn names_given_are_in_the_certificate() {
    let www = www();
    let dir = tempfile::tempdir().expect("temp dir");
    let tls_dir = dir.path().join("tls");
    let tls_dir_arg = tls_dir.to_str().expect("utf-8");
    let plain = Running::start(
        www.path(),
        &["--tls-self-signed", "--tls-dir", tls_dir_arg],
        &[],
    );
    let plain_fingerprint = plain.fingerprint().to_owned();
    let plain_names = names_in(&kept_certificate(&tls_dir));
    drop(plain);
    let hostname = gethostname::gethostname()
        .into_string()
        .expect("a UTF-8 hostname")
        .to_ascii_lowercase();
    for expected in ["localhost", "127.0.0.1", hostname.as_str()] {
        assert!(
            plain_names.iter().any(|n| n == expected),
            "{expected} not in {plain_names:?}"
        );
    }

    // The switch and the directory from the environment this time; the names as one flag
    // repeated, or a comma-separated list.
    let named = Running::start(
        www.path(),
        &[
            "--tls-name",
            "Swarm.Test",
            "--tls-name",
            "192.0.2.7,2001:db8::7",
        ],
        &[
            ("SIGNAL_TLS_SELF_SIGNED", "true"),
            ("SIGNAL_TLS_DIR", tls_dir_arg),
        ],
    );
    // Other names: another certificate.
    assert!(
        named.lines[0].contains(
            "(self-signed, made anew: the names changed (new: swarm.test, 192.0.2.7, 2001:db8::7))"
        ),
        "{:?}",
        named.lines
    );
    assert_ne!(named.fingerprint(), plain_fingerprint);
    let port = named.addr.port();
    assert!(
        named
            .lines
            .contains(&format!("open https://swarm.test:{port}/")),
        "{:?}",
        named.lines
    );
    assert!(
        named
            .lines
            .contains(&format!("open https://[2001:db8::7]:{port}/")),
        "{:?}",
        named.lines
    );

    let cert = kept_certificate(&tls_dir);
    let names = names_in(&cert);
    let mut expected = plain_names.clone();
    expected.extend(["swarm.test", "192.0.2.7", "2001:db8::7"].map(String::from));
    expected.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    // A client that knows the server by a given name accepts it.
    let connector = trusting(cert.clone());
    let (health, served) = get(&connector, named.addr, "swarm.test", "/healthz").await;
    assert!(health.ends_with("ok"), "{health}");
    assert_eq!(served, cert.to_vec());
    assert_eq!(named.fingerprint(), fingerprint(&served));
}

#[test]
fn a_certificate_of_its_own_with_self_signed_is_refused() {
    for (args, env) in [
        (
            &[
                "--tls-self-signed",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ][..],
            &[][..],
        ),
        (
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
            &[("SIGNAL_TLS_SELF_SIGNED", "true")][..],
        ),
    ] {
        let (stdout, stderr, code) = refused(args, env);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains("--tls-self-signed makes its own certificate")
                && stderr.contains("--tls-cert"),
            "{stderr}"
        );
    }
    let (_, stderr, code) = refused(&["--tls-name", "a.lan"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-name and --tls-dir go with --tls-self-signed"),
        "{stderr}"
    );
    let (_, stderr, code) = refused(&["--tls-self-signed", "--tls-name", "a b"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"a b\" is not a DNS name"), "{stderr}");
}

#[test]
fn an_unwritable_certificate_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let tls_dir = file.join("tls");
    let (stdout, stderr, code) = refused(
        &[
            "--tls-self-signed",
            "--tls-dir",
            tls_dir.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "signal-server: cannot write the self-signed certificate to {}",
            tls_dir.display()
        )) && stderr.contains("--tls-dir must name a directory this user can write"),
        "{stderr}"
    );
}
