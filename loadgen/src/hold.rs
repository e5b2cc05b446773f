//! The idle hold: open many peers against one server, keep them connected and silent, and
//! weigh the server.
//!
//! One process may only hold 20,000 open files here, so the peers are spread over worker
//! processes (this same binary, run as `loadgen hold-worker`), each holding at most
//! `per_process` peers, and over several source addresses (127.0.0.2, 127.0.0.3, …) so that
//! no address runs out of ephemeral ports.
//!
//! The coordinator talks to each worker over its stdin and stdout, one line at a time:
//! the worker prints `ready CONNECTED FAILED [first error]` once every peer has connected or
//! failed; `check` makes it print `alive N`, the peers still connected; `release` (or the end
//! of stdin) makes it close every peer, print `done` and exit.
//!
//! Server memory is read before any peer connects, after `hold` with every peer connected,
//! and again a moment after all of them have gone.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::connect;
use crate::error::LoadgenError;
use crate::relay::pick;
use crate::rss;
use crate::target::{ServerKind, Target};

/// How long the coordinator waits after the peers leave before weighing the server again.
const AFTER_RELEASE: Duration = Duration::from_secs(2);

/// How long workers get to close their peers and exit.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the idle hold.
#[derive(Debug, Clone)]
pub struct HoldOptions {
    /// Idle peers to hold (unless the target names its own number).
    pub peers: usize,
    /// Peers per room.
    pub room_size: usize,
    /// Peers per worker process.
    pub per_process: usize,
    /// Source addresses, round-robin over all peers.
    pub source_addrs: Vec<IpAddr>,
    /// WebSocket handshakes in flight at once, per worker.
    pub connect_concurrency: usize,
    /// How long to hold every peer before weighing the server.
    pub hold: Duration,
    /// Limit for connecting everyone.
    pub timeout: Duration,
    /// Distinguishes this run's room and peer names.
    pub run_id: String,
    /// The generator binary, run as `hold-worker`.
    pub worker_exe: PathBuf,
}

/// What one idle hold measured against one server.
#[derive(Debug, Clone)]
pub struct HoldReport {
    /// The target's label.
    pub label: String,
    /// The target's protocol.
    pub kind: ServerKind,
    /// Peers asked for.
    pub peers: usize,
    /// Peers that got an id.
    pub connected: usize,
    /// Peers that did not.
    pub failed: usize,
    /// The first reason a peer failed, as its worker saw it.
    pub first_error: Option<String>,
    /// From starting the workers to the last of them ready.
    pub connect_elapsed: Duration,
    /// Peers still connected at the end of the hold.
    pub alive: usize,
    /// Worker processes used.
    pub workers: usize,
    /// Server resident memory before the first connection, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server resident memory at the end of the hold, KiB.
    pub rss_held_kib: Option<u64>,
    /// Server resident memory after every peer left, KiB.
    pub rss_released_kib: Option<u64>,
}

impl HoldReport {
    /// Server memory per idle peer held, KiB.
    pub fn rss_per_peer_kib(&self) -> Option<f64> {
        let (before, held) = (self.rss_before_kib?, self.rss_held_kib?);
        (self.alive > 0).then(|| (held as f64 - before as f64) / self.alive as f64)
    }

    /// Projected server memory for `peers` idle peers, KiB: the idle process plus the
    /// measured cost per peer.
    pub fn projected_kib(&self, peers: usize) -> Option<f64> {
        Some(self.rss_before_kib? as f64 + self.rss_per_peer_kib()? * peers as f64)
    }

    /// Peers connected per second.
    pub fn joins_per_sec(&self) -> f64 {
        let secs = self.connect_elapsed.as_secs_f64();
        if secs > 0.0 {
            self.connected as f64 / secs
        } else {
            0.0
        }
    }
}

/// One worker process, as the coordinator sees it.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn line(&mut self) -> Result<String, LoadgenError> {
        self.lines
            .next_line()
            .await?
            .ok_or_else(|| LoadgenError::Worker("exited without answering".into()))
    }

    async fn say(&mut self, line: &str) -> Result<(), LoadgenError> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

/// Holds idle peers against `target` and weighs it.
pub async fn run(target: &Target, options: &HoldOptions) -> Result<HoldReport, LoadgenError> {
    let peers = target.peers.unwrap_or(options.peers);
    let per_process = options.per_process.max(1);
    let worker_count = peers.div_ceil(per_process).max(1);
    let rss_before = rss::maybe_rss_kib(target.pid)?;

    let started = Instant::now();
    let mut workers = Vec::with_capacity(worker_count);
    let sources = options
        .source_addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for w in 0..worker_count {
        let first = w * peers / worker_count;
        let count = (w + 1) * peers / worker_count - first;
        let mut child = Command::new(&options.worker_exe)
            .arg("hold-worker")
            .args(["--kind", target.kind.name()])
            .args(["--addr", &target.addr.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--room-size", &options.room_size.to_string()])
            .args(["--run-id", &options.run_id])
            .args(["--source-addrs", &sources])
            .args([
                "--connect-concurrency",
                &options.connect_concurrency.to_string(),
            ])
            .args(["--timeout-secs", &options.timeout.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| LoadgenError::Worker("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadgenError::Worker("no stdout".into()))?;
        workers.push(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }

    let (mut connected, mut failed, mut first_error) = (0, 0, None);
    let deadline = started + options.timeout + Duration::from_secs(10);
    for worker in &mut workers {
        let line = tokio::time::timeout_at(deadline, worker.line())
            .await
            .map_err(|_| LoadgenError::Timeout("workers connecting their peers"))??;
        let mut words = line.splitn(4, ' ');
        let (Some("ready"), Some(ok), Some(bad)) = (words.next(), words.next(), words.next())
        else {
            return Err(LoadgenError::Worker(format!(
                "expected ready, got '{line}'"
            )));
        };
        let number = |text: &str| {
            text.parse::<usize>()
                .map_err(|_| LoadgenError::Worker(format!("bad count in '{line}'")))
        };
        connected += number(ok)?;
        failed += number(bad)?;
        if let Some(err) = words.next() {
            first_error.get_or_insert_with(|| err.to_owned());
        }
    }
    let connect_elapsed = started.elapsed();
    tracing::info!(target = %target.label, connected, failed, ?connect_elapsed, "holding");

    tokio::time::sleep(options.hold).await;
    let rss_held = rss::maybe_rss_kib(target.pid)?;
    let mut alive = 0;
    for worker in &mut workers {
        worker.say("check").await?;
        let line = tokio::time::timeout(RELEASE_TIMEOUT, worker.line())
            .await
            .map_err(|_| LoadgenError::Timeout("workers counting their peers"))??;
        alive += line
            .strip_prefix("alive ")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| LoadgenError::Worker(format!("expected alive, got '{line}'")))?;
    }

    for worker in &mut workers {
        worker.say("release").await?;
    }
    for mut worker in workers {
        let finished = tokio::time::timeout(RELEASE_TIMEOUT, worker.child.wait()).await;
        if !matches!(finished, Ok(Ok(status)) if status.success()) {
            // Stop this worker, which the coordinator started, by its handle.
            let _ = worker.child.kill().await;
            tracing::warn!("a hold worker did not exit cleanly");
        }
    }
    tokio::time::sleep(AFTER_RELEASE).await;
    let rss_released = rss::maybe_rss_kib(target.pid)?;

    Ok(HoldReport {
        label: target.label.clone(),
        kind: target.kind,
        peers,
        connected,
        failed,
        first_error,
        connect_elapsed,
        alive,
        workers: worker_count,
        rss_before_kib: rss_before,
        rss_held_kib: rss_held,
        rss_released_kib: rss_released,
    })
}

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The server's protocol.
    pub kind: ServerKind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Global index of this worker's first peer (names and rooms follow from it).
    pub first: usize,
    /// Peers this worker holds.
    pub count: usize,
    /// Peers per room.
    pub room_size: usize,
    /// Distinguishes this run's room and peer names.
    pub run_id: String,
    /// Source addresses, round-robin by global peer index.
    pub source_addrs: Vec<IpAddr>,
    /// WebSocket handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Limit for one peer to connect and get its id.
    pub timeout: Duration,
}

/// Counters the worker's peers update.
#[derive(Debug, Default)]
struct HoldProgress {
    connected: AtomicUsize,
    failed: AtomicUsize,
    alive: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

/// Runs one worker process: connects its peers, answers the coordinator on stdin and stdout.
pub async fn worker(options: WorkerOptions) -> Result<(), LoadgenError> {
    let progress = Arc::new(HoldProgress::default());
    let permits = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let room_size = options.room_size.max(1);
    let mut tasks = Vec::with_capacity(options.count);
    for index in options.first..options.first + options.count {
        let room = format!("hold{}r{}", options.run_id, index / room_size);
        let name = format!("hold{}p{index}", options.run_id);
        tasks.push(tokio::spawn(idle_peer(
            options.kind,
            options.addr,
            options.kind.ws_path(&room, &name),
            pick(&options.source_addrs, index),
            permits.clone(),
            progress.clone(),
            stop_rx.clone(),
            options.timeout,
        )));
    }
    while progress.connected.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed)
        < options.count
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_error = progress
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .map(|err| format!(" {}", err.replace('\n', " ")))
        .unwrap_or_default();
    tell(&format!(
        "ready {} {}{first_error}",
        progress.connected.load(Ordering::Relaxed),
        progress.failed.load(Ordering::Relaxed)
    ))?;

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(command)) = commands.next_line().await {
        match command.trim() {
            "check" => tell(&format!("alive {}", progress.alive.load(Ordering::Relaxed)))?,
            "release" => break,
            other => tracing::warn!(command = other, "unknown command"),
        }
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    tell("done")
}

/// Writes one line to the coordinator.
fn tell(line: &str) -> Result<(), LoadgenError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// One idle peer: connect, get an id, then only read (and send the keepalive the server
/// needs) until told to stop.
#[allow(clippy::too_many_arguments)]
async fn idle_peer(
    kind: ServerKind,
    addr: SocketAddr,
    path: String,
    source: Option<IpAddr>,
    permits: Arc<Semaphore>,
    progress: Arc<HoldProgress>,
    mut stop: watch::Receiver<bool>,
    timeout: Duration,
) {
    let joining = async {
        let _permit = permits.acquire().await;
        let mut ws = connect::open(addr, source, &path).await?;
        connect::wait_admission(&mut ws, kind, timeout).await?;
        Ok::<_, LoadgenError>(ws)
    };
    let mut ws = match tokio::time::timeout(timeout, joining).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => return failed(&progress, err.to_string()),
        Err(_) => return failed(&progress, "timed out connecting".into()),
    };
    progress.alive.fetch_add(1, Ordering::Relaxed);
    progress.connected.fetch_add(1, Ordering::Relaxed);

    let (keepalive, period) = match kind.keepalive() {
        Some((frame, period)) => (Some(frame), period),
        None => (None, Duration::from_secs(86_400)),
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    let stopped = loop {
        tokio::select! {
            _ = stop.changed() => break true,
            frame = ws.next() => match frame {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break false,
            },
            _ = ticks.tick(), if keepalive.is_some() => {
                if let Some(frame) = keepalive
                    && ws.send(Message::text(frame)).await.is_err()
                {
                    break false;
                }
            }
        }
    };
    progress.alive.fetch_sub(1, Ordering::Relaxed);
    if stopped {
        let closing = async {
            ws.close(None).await?;
            while ws.next().await.is_some() {}
            Ok::<_, LoadgenError>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
}

fn failed(progress: &HoldProgress, err: String) {
    progress
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(err);
    progress.failed.fetch_add(1, Ordering::Relaxed);
}
