//! State shared by every connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use swarm_core::room::{RoomLimits, Rooms};
use swarm_protocol::PeerId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;
use crate::access::Fingerprint;
use crate::cluster::Cluster;
use crate::limits::IpBudgets;
use crate::limits::IpSlots;
use crate::metrics::{Gauges, Metrics, QueueBytes};
use crate::proofs::ProofLedger;

/// A frame waiting in a peer's outgoing queue.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) frame: Message,
    /// For a relayed `signal`: when it arrived, to measure relay latency.
    pub(crate) relayed_at: Option<Instant>,
}

/// The bytes a frame takes in an outgoing queue (its payload; the frame header and the
/// bookkeeping are a few dozen bytes more).
pub(crate) fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(close) => close.as_ref().map_or(0, |c| c.reason.len()),
    }
}

/// The way to reach one connected peer: its outgoing queue, bounded in frames and in bytes,
/// and a token that its connection task watches to be told it fell too far behind.
///
/// A plain deque behind a lock rather than a channel: an idle peer's empty queue allocates
/// nothing (a tokio channel allocates a block of 32 slots up front), and the connection task
/// takes everything queued at once and writes it with a single flush.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    inner: Arc<OutboxInner>,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Outgoing>,
    /// Bytes of `frames` and of the batch the connection task is writing.
    bytes: usize,
}

#[derive(Debug)]
struct OutboxInner {
    queue: Mutex<Queue>,
    capacity: usize,
    max_bytes: usize,
    /// The server-wide count of queued bytes, kept up to date by every queue.
    gauge: QueueBytes,
    /// Woken when a frame is queued; a wake-up with nobody waiting is kept for the next wait.
    queued: Notify,
    overflowed: CancellationToken,
    /// Cancelled when a resumed connection takes over this peer's place in its room.
    replaced: CancellationToken,
    /// The fingerprint of the `resume` token in this connection's `welcome`: the one token
    /// that may take its place.
    resume: Fingerprint,
}

impl Drop for OutboxInner {
    fn drop(&mut self) {
        let queue = self.queue.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.gauge.removed(queue.bytes);
    }
}

impl Outbox {
    /// An empty queue that overflows past `capacity` frames or `max_bytes` bytes (a frame is
    /// always accepted into an empty queue), counting its bytes in `gauge`, for a connection
    /// whose `welcome` carries the resume token with fingerprint `resume`.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        gauge: QueueBytes,
        resume: Fingerprint,
    ) -> Self {
        Self {
            inner: Arc::new(OutboxInner {
                queue: Mutex::default(),
                capacity: capacity.max(1),
                max_bytes,
                gauge,
                queued: Notify::new(),
                overflowed: CancellationToken::new(),
                replaced: CancellationToken::new(),
                resume,
            }),
        }
    }

    /// Whether a resume token with fingerprint `token` may take this connection's place: it
    /// is the one in this connection's `welcome`.
    pub(crate) fn resumes_with(&self, token: &Fingerprint) -> bool {
        self.inner.resume == *token
    }

    /// Cancelled once the queue overflowed.
    pub(crate) fn overflowed(&self) -> &CancellationToken {
        &self.inner.overflowed
    }

    /// Cancelled once a resumed connection took over this peer.
    pub(crate) fn replaced(&self) -> &CancellationToken {
        &self.inner.replaced
    }

    /// Whether `self` and `other` are the same queue (the same connection).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Waits until something may have been queued.
    pub(crate) async fn queued(&self) {
        self.inner.queued.notified().await;
    }

    /// Everything queued so far, oldest first. Its bytes still count against the bound until
    /// [`Outbox::written`] says the batch is gone.
    pub(crate) fn take_all(&self) -> VecDeque<Outgoing> {
        std::mem::take(&mut self.lock().frames)
    }

    /// A batch of `bytes` from [`Outbox::take_all`] was written (or given up on).
    pub(crate) fn written(&self, bytes: usize) {
        let mut queue = self.lock();
        let bytes = bytes.min(queue.bytes);
        queue.bytes -= bytes;
        drop(queue);
        self.inner.gauge.removed(bytes);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame without waiting. A full queue (in frames or in bytes) means the peer is
    /// not reading: it is disconnected rather than allowed to stall whoever is sending to it,
    /// and nothing more is queued for it.
    pub(crate) fn push(&self, frame: Message) {
        self.push_outgoing(Outgoing {
            frame,
            relayed_at: None,
        });
    }

    /// Queues a relayed `signal` that arrived at `since`.
    pub(crate) fn push_relayed(&self, frame: Message, since: Instant) {
        self.push_outgoing(Outgoing {
            frame,
            relayed_at: Some(since),
        });
    }

    fn push_outgoing(&self, outgoing: Outgoing) {
        if self.inner.overflowed.is_cancelled() {
            return;
        }
        let len = frame_len(&outgoing.frame);
        let mut queue = self.lock();
        let too_many = queue.frames.len() >= self.inner.capacity;
        let too_big = queue.bytes > 0 && queue.bytes.saturating_add(len) > self.inner.max_bytes;
        if too_many || too_big {
            drop(queue);
            self.inner.overflowed.cancel();
            return;
        }
        queue.frames.push_back(outgoing);
        queue.bytes += len;
        let bytes = queue.bytes;
        drop(queue);
        self.inner.gauge.added(len, bytes);
        self.inner.queued.notify_one();
    }
}

/// Shared server state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    /// A std mutex: it is never held across an `.await`, and every critical section is a few
    /// map operations.
    rooms: Mutex<Rooms<Outbox>>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    metrics: Metrics,
    ip_slots: IpSlots,
    /// Open TCP connections per client address.
    tcp_slots: IpSlots,
    /// TURN credentials handed out per client address.
    turn_budgets: IpBudgets,
    /// Set once at start when rooms are shared through Redis.
    cluster: OnceLock<Arc<Cluster>>,
    /// The key `resume` tokens are signed with.
    resume_key: [u8; 32],
    /// The join proofs taken (each is good once).
    proofs: Mutex<ProofLedger>,
}

impl AppState {
    /// Fresh state with no rooms.
    pub fn new(config: Config) -> Self {
        let limits = RoomLimits {
            rooms: config.limits.rooms,
            peers_per_room: config.limits.peers_per_room,
        };
        let ip_slots = IpSlots::new(config.limits.connections_per_ip);
        let tcp_slots = IpSlots::new(config.limits.tcp_connections_per_ip);
        let turn_budgets = IpBudgets::new(
            config.limits.turn_credentials_per_ip,
            crate::config::TURN_CREDENTIALS_PERIOD,
        );
        let resume_key = crate::access::resume_key(config.resume_secret.as_deref());
        Self {
            shared: Arc::new(Shared {
                config,
                rooms: Mutex::new(Rooms::with_limits(limits)),
                shutdown: CancellationToken::new(),
                connections: TaskTracker::new(),
                metrics: Metrics::default(),
                ip_slots,
                tcp_slots,
                turn_budgets,
                cluster: OnceLock::new(),
                resume_key,
                proofs: Mutex::default(),
            }),
        }
    }

    /// Shares rooms with other instances through `cluster` from now on.
    pub(crate) fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.shared.cluster.set(cluster);
    }

    /// The link to other instances, with `--redis`.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.shared.cluster.get()
    }

    /// The key `resume` tokens are signed with.
    pub(crate) fn resume_key(&self) -> &[u8; 32] {
        &self.shared.resume_key
    }

    /// Takes the join proof of `id` made at `ts` on this instance, at Unix time `now`:
    /// `false` if it was taken before (see [`crate::proofs`]).
    pub(crate) fn take_proof(&self, id: PeerId, ts: u64, now: u64) -> bool {
        self.shared
            .proofs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(id, ts, now)
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The text of `/metrics`.
    pub fn render_metrics(&self) -> String {
        let gauges = {
            let rooms = self.rooms();
            Gauges {
                rooms: rooms.room_count(),
                peers: rooms.peer_count(),
            }
        };
        self.shared.metrics.render(gauges)
    }

    /// Open WebSockets per client address.
    pub(crate) fn ip_slots(&self) -> &IpSlots {
        &self.shared.ip_slots
    }

    /// Open TCP connections per client address.
    pub(crate) fn tcp_slots(&self) -> &IpSlots {
        &self.shared.tcp_slots
    }

    /// TURN credentials handed out per client address.
    pub(crate) fn turn_budgets(&self) -> &IpBudgets {
        &self.shared.turn_budgets
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Cancelled when the server begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Waits up to `timeout` for every connection task to end; `false` if some did not.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.shared.connections.close();
        tokio::time::timeout(timeout, self.shared.connections.wait())
            .await
            .is_ok()
    }

    pub(crate) fn connections(&self) -> &TaskTracker {
        &self.shared.connections
    }

    /// The room registry. A poisoned lock is taken over: the registry's invariants hold
    /// between its method calls, so a panic elsewhere cannot leave it half-updated.
    pub(crate) fn rooms(&self) -> MutexGuard<'_, Rooms<Outbox>> {
        self.shared
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new unguessable peer id: 128 bits from a cryptographically secure generator.
    pub(crate) fn new_peer_id(&self) -> PeerId {
        PeerId::from_bytes(rand::random())
    }
}
