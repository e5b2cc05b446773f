//! The relay scenario: N peers join rooms of K, then every peer sends signals to each of its
//! room mates, and every peer checks what it receives.
//!
//! Phases, against one server:
//! 1. **Join**: peers connect (at most `connect_concurrency` handshakes at a time) and wait for
//!    their id. Joins per second = peers joined / time until the last one got its id.
//! 2. **Discovery**: wait until the server's join notifications have reached everyone (where
//!    the protocol has them), so that relaying starts with complete rooms.
//! 3. **Relay**: each peer sends `rounds` signals to each room mate, round-robin, either as
//!    fast as it can or paced so that all peers together send `rate` signals per second. Each
//!    payload holds its send time on the generator's clock; the receiver records the latency.
//!    Relayed per second = signals received / time from the start of the relay to the last
//!    signal received.
//! 4. **Stop**: every peer closes its WebSocket.
//!
//! Server memory is read before the join, once everyone has joined, and after the relay.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::adapter::Event;
use crate::adapter::payload::{self, Clock};
use crate::connect::{self, Socket};
use crate::error::LoadgenError;
use crate::rss;
use crate::stats::Summary;
use crate::target::{ServerKind, Target};

/// How long a peer waits for its close handshake before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the relay scenario.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Peers to open (unless the target names its own number).
    pub peers: usize,
    /// Peers per room; the last room holds the remainder.
    pub room_size: usize,
    /// Signals each peer sends to each room mate.
    pub rounds: usize,
    /// Approximate size of each signal's payload, in bytes.
    pub payload_bytes: usize,
    /// Signals per second for all peers together; 0 sends as fast as possible.
    pub rate: f64,
    /// WebSocket handshakes in flight at once during the join.
    pub connect_concurrency: usize,
    /// Source addresses to spread connections over, round-robin (empty: the kernel's choice).
    pub source_addrs: Vec<IpAddr>,
    /// Limit for each phase (join, discovery, relay).
    pub phase_timeout: Duration,
    /// Distinguishes this run's room names and peer names from other runs'.
    pub run_id: String,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            peers: 1000,
            room_size: 4,
            rounds: 10,
            payload_bytes: 200,
            rate: 0.0,
            connect_concurrency: 64,
            source_addrs: Vec::new(),
            phase_timeout: Duration::from_secs(120),
            run_id: crate::run_id(),
        }
    }
}

/// What one relay run measured against one server.
#[derive(Debug, Clone)]
pub struct RelayReport {
    /// The target's label.
    pub label: String,
    /// The target's protocol.
    pub kind: ServerKind,
    /// Peers the scenario tried to open.
    pub peers: usize,
    /// Peers that got an id.
    pub joined: usize,
    /// The first reason a peer could not join, if any did not.
    pub first_join_error: Option<String>,
    /// From the first connection attempt to the last id assigned.
    pub join_elapsed: Duration,
    /// From each peer's connection attempt to its id.
    pub join_latency: Option<Summary>,
    /// Join notifications (and room mates named in welcomes) received before the relay.
    pub discovered: usize,
    /// How many of those the protocol promises for the rooms as joined.
    pub discoveries_expected: usize,
    /// Signals the peers were to send (and so to receive).
    pub expected: usize,
    /// Signals sent.
    pub sent: usize,
    /// Signals received.
    pub received: usize,
    /// From the start of the relay to the last signal received.
    pub relay_elapsed: Duration,
    /// Relay latency of every signal received.
    pub latency: Option<Summary>,
    /// Frames in which the server refused something (errors, expiries), all phases.
    pub refused: usize,
    /// The first refusal's text.
    pub first_refusal: Option<String>,
    /// Frames the adapter could not read.
    pub unreadable: usize,
    /// Peers whose connection ended before the scenario closed it.
    pub closed_early: usize,
    /// Server resident memory before any peer connected, KiB.
    pub rss_before_kib: Option<u64>,
    /// Server resident memory with every peer joined, KiB.
    pub rss_joined_kib: Option<u64>,
    /// Server resident memory after the relay, peers still connected, KiB.
    pub rss_after_relay_kib: Option<u64>,
}

impl RelayReport {
    /// Peers joined per second.
    pub fn joins_per_sec(&self) -> f64 {
        per_sec(self.joined, self.join_elapsed)
    }

    /// Signals relayed per second.
    pub fn relayed_per_sec(&self) -> f64 {
        per_sec(self.received, self.relay_elapsed)
    }

    /// Signals sent but never received.
    pub fn lost(&self) -> usize {
        self.expected.saturating_sub(self.received)
    }

    /// Growth of server memory per joined peer, KiB.
    pub fn rss_per_peer_kib(&self) -> Option<f64> {
        let (before, joined) = (self.rss_before_kib?, self.rss_joined_kib?);
        (self.joined > 0).then(|| (joined as f64 - before as f64) / self.joined as f64)
    }
}

fn per_sec(count: usize, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// Counters every peer task updates and the scenario watches.
#[derive(Debug, Default)]
struct Progress {
    discovered: AtomicUsize,
    done: AtomicUsize,
}

/// Who a peer is.
#[derive(Debug, Clone)]
struct PeerSpec {
    index: usize,
    room: usize,
    path: String,
    source: Option<IpAddr>,
}

/// A peer telling the scenario how its join went.
#[derive(Debug)]
struct JoinNote {
    index: usize,
    result: Result<(String, Duration), String>,
}

/// What a joined peer is to send.
#[derive(Debug)]
struct Plan {
    /// Room mates' ids as JSON string literals.
    targets: Vec<String>,
    rounds: usize,
    /// When the first signal goes out.
    start: Instant,
    /// Time between two signals of this peer (zero: as fast as possible).
    interval: Duration,
    padding: Arc<str>,
}

/// What a peer task hands back when it ends.
#[derive(Debug, Default)]
struct PeerOutcome {
    sent: usize,
    received: usize,
    latencies: Vec<Duration>,
    last_signal_ns: u64,
    refused: usize,
    first_refusal: Option<String>,
    unreadable: usize,
    closed_early: bool,
}

/// Everything a peer task shares with the others.
#[derive(Debug, Clone)]
struct Shared {
    kind: ServerKind,
    addr: std::net::SocketAddr,
    clock: Clock,
    permits: Arc<Semaphore>,
    progress: Arc<Progress>,
    admission_timeout: Duration,
}

/// Runs the relay scenario against `target`.
pub async fn run(target: &Target, options: &RelayOptions) -> Result<RelayReport, LoadgenError> {
    let peers = target.peers.unwrap_or(options.peers);
    let room_size = options.room_size.max(1);
    let rss_before = rss::maybe_rss_kib(target.pid)?;
    let shared = Shared {
        kind: target.kind,
        addr: target.addr,
        clock: Clock::start(),
        permits: Arc::new(Semaphore::new(options.connect_concurrency.max(1))),
        progress: Arc::new(Progress::default()),
        admission_timeout: options.phase_timeout,
    };
    let (notes_tx, mut notes_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut plans = Vec::with_capacity(peers);
    let mut tasks = Vec::with_capacity(peers);

    // 1. Join.
    let join_start = Instant::now();
    for index in 0..peers {
        let room = index / room_size;
        let name = format!("lg{}p{index}", options.run_id);
        let spec = PeerSpec {
            index,
            room,
            path: target
                .kind
                .ws_path(&format!("lg{}r{room}", options.run_id), &name),
            source: pick(&options.source_addrs, index),
        };
        let (plan_tx, plan_rx) = oneshot::channel();
        plans.push(Some(plan_tx));
        tasks.push(tokio::spawn(peer(
            shared.clone(),
            spec,
            name,
            notes_tx.clone(),
            plan_rx,
            stop_rx.clone(),
        )));
    }
    drop(notes_tx);

    let mut ids: Vec<Option<String>> = vec![None; peers];
    let mut join_latencies = Vec::with_capacity(peers);
    let mut first_join_error = None;
    let mut join_end = join_start;
    let join_deadline = Instant::now() + options.phase_timeout;
    for _ in 0..peers {
        match tokio::time::timeout_at(join_deadline, notes_rx.recv()).await {
            Ok(Some(JoinNote { index, result })) => match result {
                Ok((id, latency)) => {
                    ids[index] = Some(serde_json::Value::String(id).to_string());
                    join_latencies.push(latency);
                    join_end = Instant::now();
                }
                Err(err) => {
                    first_join_error.get_or_insert(err);
                }
            },
            Ok(None) => break,
            Err(_) => {
                first_join_error.get_or_insert_with(|| "join phase timed out".into());
                break;
            }
        }
    }
    let joined = join_latencies.len();
    tracing::info!(target = %target.label, joined, peers, "joined");

    // 2. Discovery.
    let mut room_members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (index, id) in ids.iter().enumerate() {
        if id.is_some() {
            room_members
                .entry(index / room_size)
                .or_default()
                .push(index);
        }
    }
    let discoveries_expected: usize = room_members
        .values()
        .map(|members| target.kind.discoveries_per_room(members.len()))
        .sum();
    let discovery_deadline = Instant::now() + options.phase_timeout;
    while shared.progress.discovered.load(Ordering::Relaxed) < discoveries_expected
        && Instant::now() < discovery_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let discovered = shared.progress.discovered.load(Ordering::Relaxed);
    let rss_joined = rss::maybe_rss_kib(target.pid)?;

    // 3. Relay.
    let interval = if options.rate > 0.0 && joined > 0 {
        Duration::from_secs_f64(joined as f64 / options.rate)
    } else {
        Duration::ZERO
    };
    let padding: Arc<str> = payload::padding(options.payload_bytes).into();
    let relay_start = Instant::now() + Duration::from_millis(100);
    let relay_start_ns = shared.clock.now_ns() + 100_000_000;
    let mut expected = 0;
    let mut planned = 0;
    for members in room_members.values() {
        for &me in members {
            let targets: Vec<String> = members
                .iter()
                .filter(|&&other| other != me)
                .filter_map(|&other| ids[other].clone())
                .collect();
            expected += targets.len() * options.rounds;
            // Spread the peers' send times evenly over one interval.
            let offset = interval.mul_f64(planned as f64 / joined.max(1) as f64);
            planned += 1;
            let plan = Plan {
                targets,
                rounds: options.rounds,
                start: relay_start + offset,
                interval,
                padding: padding.clone(),
            };
            if let Some(plan_tx) = plans[me].take() {
                // A peer that is gone already counts as closed early.
                let _ = plan_tx.send(plan);
            }
        }
    }
    drop(plans);
    let relay_deadline = Instant::now() + options.phase_timeout;
    while shared.progress.done.load(Ordering::Relaxed) < planned && Instant::now() < relay_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_after_relay = rss::maybe_rss_kib(target.pid)?;

    // 4. Stop.
    let _ = stop_tx.send(true);
    let mut outcome = PeerOutcome::default();
    let mut latencies = Vec::with_capacity(expected);
    let mut closed_early = 0;
    for task in tasks {
        // A task that panicked contributes nothing; the totals show what went missing.
        if let Ok(peer) = task.await {
            outcome.sent += peer.sent;
            outcome.received += peer.received;
            outcome.last_signal_ns = outcome.last_signal_ns.max(peer.last_signal_ns);
            outcome.refused += peer.refused;
            outcome.unreadable += peer.unreadable;
            closed_early += usize::from(peer.closed_early);
            if outcome.first_refusal.is_none() {
                outcome.first_refusal = peer.first_refusal;
            }
            latencies.extend(peer.latencies);
        }
    }
    let relay_elapsed = Duration::from_nanos(outcome.last_signal_ns.saturating_sub(relay_start_ns));
    Ok(RelayReport {
        label: target.label.clone(),
        kind: target.kind,
        peers,
        joined,
        first_join_error,
        join_elapsed: join_end - join_start,
        join_latency: Summary::of(&mut join_latencies),
        discovered,
        discoveries_expected,
        expected,
        sent: outcome.sent,
        received: outcome.received,
        relay_elapsed,
        latency: Summary::of(&mut latencies),
        refused: outcome.refused,
        first_refusal: outcome.first_refusal,
        unreadable: outcome.unreadable,
        closed_early,
        rss_before_kib: rss_before,
        rss_joined_kib: rss_joined,
        rss_after_relay_kib: rss_after_relay,
    })
}

/// The source address for connection `index`, round-robin.
pub(crate) fn pick(addrs: &[IpAddr], index: usize) -> Option<IpAddr> {
    (!addrs.is_empty()).then(|| addrs[index % addrs.len()])
}

/// One peer: join, wait for its plan, relay, stop.
async fn peer(
    shared: Shared,
    spec: PeerSpec,
    name: String,
    notes: mpsc::UnboundedSender<JoinNote>,
    plan_rx: oneshot::Receiver<Plan>,
    mut stop: watch::Receiver<bool>,
) -> PeerOutcome {
    let mut outcome = PeerOutcome::default();
    let joining = async {
        // The semaphore is never closed; a failure to acquire would only mean no limit.
        let _permit = shared.permits.acquire().await;
        let started = Instant::now();
        let mut ws = connect::open(shared.addr, spec.source, &spec.path).await?;
        let admission =
            connect::wait_admission(&mut ws, shared.kind, shared.admission_timeout).await?;
        Ok::<_, LoadgenError>((ws, admission, started.elapsed()))
    };
    let mut ws = match joining.await {
        Ok((ws, admission, latency)) => {
            shared
                .progress
                .discovered
                .fetch_add(admission.discovered, Ordering::Relaxed);
            let id = admission.id.unwrap_or(name);
            let _ = notes.send(JoinNote {
                index: spec.index,
                result: Ok((id, latency)),
            });
            ws
        }
        Err(err) => {
            let _ = notes.send(JoinNote {
                index: spec.index,
                result: Err(format!("room {}: {err}", spec.room)),
            });
            return outcome;
        }
    };
    drop(notes);

    // Wait for the plan, reading (join notifications) meanwhile.
    let mut plan_rx = plan_rx;
    let plan = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                close(&mut ws).await;
                return outcome;
            }
            plan = &mut plan_rx => match plan {
                Ok(plan) => break plan,
                Err(_) => {
                    close(&mut ws).await;
                    return outcome;
                }
            },
            frame = ws.next() => {
                if !on_frame(&shared, &mut outcome, frame) {
                    outcome.closed_early = true;
                    return outcome;
                }
            }
        }
    };

    let to_send = plan.targets.len() * plan.rounds;
    let to_receive = to_send; // every room mate sends as many to this peer
    let mut done = false;
    let far = Instant::now() + Duration::from_secs(86_400);
    loop {
        if !done && outcome.sent == to_send && outcome.received >= to_receive {
            done = true;
            shared.progress.done.fetch_add(1, Ordering::Relaxed);
        }
        let next_send = (outcome.sent < to_send)
            .then(|| plan.start + plan.interval.mul_f64(outcome.sent as f64));
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = ws.next() => {
                if !on_frame(&shared, &mut outcome, frame) {
                    outcome.closed_early = true;
                    return outcome;
                }
            }
            () = tokio::time::sleep_until(next_send.unwrap_or(far)), if next_send.is_some() => {
                let to = &plan.targets[outcome.sent % plan.targets.len()];
                let body = payload::encode(shared.clock.now_ns(), &plan.padding);
                let frame = shared.kind.signal_frame(to, &body);
                if ws.send(Message::text(frame)).await.is_err() {
                    outcome.closed_early = true;
                    return outcome;
                }
                outcome.sent += 1;
            }
        }
    }
    close(&mut ws).await;
    outcome
}

/// Accounts for one frame; `false` when the connection has ended.
fn on_frame(
    shared: &Shared,
    outcome: &mut PeerOutcome,
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> bool {
    let text = match frame {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
        Some(Ok(_)) => return true,
    };
    match shared.kind.parse(text.as_str()) {
        Event::Signal { sent_at_ns } => {
            outcome.received += 1;
            outcome.latencies.push(shared.clock.since(sent_at_ns));
            outcome.last_signal_ns = shared.clock.now_ns();
        }
        Event::Discovered => {
            shared.progress.discovered.fetch_add(1, Ordering::Relaxed);
        }
        Event::Refused(why) => {
            outcome.refused += 1;
            outcome.first_refusal.get_or_insert(why);
        }
        Event::Unreadable => outcome.unreadable += 1,
        Event::Assigned { .. } | Event::Left | Event::Other => {}
    }
    true
}

/// Closes cleanly if the server answers in time, and drops the connection either way.
async fn close(ws: &mut Socket) {
    let closing = async {
        ws.close(None).await?;
        while ws.next().await.is_some() {}
        Ok::<_, LoadgenError>(())
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}
