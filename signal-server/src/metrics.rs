//! Counters for `/metrics`, in the Prometheus text exposition format.
//!
//! Plain atomics: updating a counter never takes a lock, and rendering reads each one once.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use swarm_protocol::ErrorCode;

/// Upper bounds of the relay latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Every error code the server sends, in the order they are rendered.
const ERROR_CODES: [ErrorCode; 9] = [
    ErrorCode::BadMessage,
    ErrorCode::UnknownPeer,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::RoomFull,
    ErrorCode::ServerFull,
    ErrorCode::TooManyConnections,
    ErrorCode::Unauthorized,
    ErrorCode::OriginNotAllowed,
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    relayed_total: AtomicU64,
    errors: [AtomicU64; ERROR_CODES.len()],
    closed_slow: AtomicU64,
    closed_idle: AtomicU64,
    queued: QueueBytes,
    tcp_open: AtomicU64,
    tcp_closed: [AtomicU64; TcpClose::ALL.len()],
    turn_issued: AtomicU64,
    turn_refused: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

/// Why the server closed a TCP connection that was not (yet) a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpClose {
    /// Its address had the most TCP connections open that the server allows.
    PerIpLimit,
    /// The TLS handshake and first request headers did not arrive in time.
    HandshakeTimeout,
    /// No byte moved either way for the HTTP idle timeout.
    HttpIdle,
}

impl TcpClose {
    const ALL: [Self; 3] = [Self::PerIpLimit, Self::HandshakeTimeout, Self::HttpIdle];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerIpLimit => "per-ip-limit",
            Self::HandshakeTimeout => "handshake-timeout",
            Self::HttpIdle => "http-idle",
        }
    }
}

/// Bytes of frames waiting for clients: a handle each outgoing queue keeps, to count what it
/// holds. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct QueueBytes(Arc<QueueBytesInner>);

#[derive(Debug, Default)]
struct QueueBytesInner {
    total: AtomicU64,
    peak: AtomicU64,
}

impl QueueBytes {
    /// One queue grew by `added` bytes, to `queue` bytes.
    pub fn added(&self, added: usize, queue: usize) {
        self.0.total.fetch_add(added as u64, Relaxed);
        self.0.peak.fetch_max(queue as u64, Relaxed);
    }

    /// A queue let go of `removed` bytes (written, or dropped with its connection).
    pub fn removed(&self, removed: usize) {
        self.0.total.fetch_sub(removed as u64, Relaxed);
    }
}

/// Values read from elsewhere at render time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Peers in rooms.
    pub peers: usize,
}

impl Metrics {
    /// A WebSocket was accepted.
    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    /// A WebSocket ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    /// An `error` frame with `code` was sent.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// A client was disconnected for not reading.
    pub fn closed_slow(&self) {
        self.closed_slow.fetch_add(1, Relaxed);
    }

    /// A client was disconnected for silence.
    pub fn closed_idle(&self) {
        self.closed_idle.fetch_add(1, Relaxed);
    }

    /// The handle outgoing queues count their bytes with.
    pub fn queue_bytes(&self) -> &QueueBytes {
        &self.queued
    }

    /// A TCP connection was accepted and is being served.
    pub fn tcp_opened(&self) {
        self.tcp_open.fetch_add(1, Relaxed);
    }

    /// A served TCP connection ended.
    pub fn tcp_ended(&self) {
        self.tcp_open.fetch_sub(1, Relaxed);
    }

    /// The server closed a TCP connection for `reason`.
    pub fn tcp_closed(&self, reason: TcpClose) {
        if let Some(i) = TcpClose::ALL.iter().position(|r| *r == reason) {
            self.tcp_closed[i].fetch_add(1, Relaxed);
        }
    }

    /// TURN credentials were put in a `welcome` (`true`), or left out because the client's
    /// address had its share (`false`).
    pub fn turn_credentials(&self, issued: bool) {
        let counter = if issued {
            &self.turn_issued
        } else {
            &self.turn_refused
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A `signal` reached its recipient's socket `latency` after it arrived.
    pub fn relayed(&self, latency: Duration) {
        self.relayed_total.fetch_add(1, Relaxed);
        let seconds = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Signals relayed so far.
    pub fn relayed_total(&self) -> u64 {
        self.relayed_total.load(Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |value: u64| vec![(String::new(), value.to_string())];
        metric(
            "signal_connections_total",
            "counter",
            "WebSocket connections accepted.",
            &one(self.connections_total.load(Relaxed)),
        );
        metric(
            "signal_connections",
            "gauge",
            "WebSocket connections open.",
            &one(self.connections_open.load(Relaxed)),
        );
        metric(
            "signal_rooms",
            "gauge",
            "Rooms with at least one peer.",
            &one(gauges.rooms as u64),
        );
        metric(
            "signal_peers",
            "gauge",
            "Peers in rooms.",
            &one(gauges.peers as u64),
        );
        metric(
            "signal_messages_relayed_total",
            "counter",
            "Signal frames delivered to their recipient's socket.",
            &one(self.relayed_total()),
        );
        let errors: Vec<_> = ERROR_CODES
            .iter()
            .zip(&self.errors)
            .map(|(code, n)| {
                (
                    format!("{{code=\"{}\"}}", code.as_str()),
                    n.load(Relaxed).to_string(),
                )
            })
            .collect();
        metric(
            "signal_errors_total",
            "counter",
            "Error frames sent, by code.",
            &errors,
        );
        metric(
            "signal_disconnects_total",
            "counter",
            "Clients disconnected by the server, by reason.",
            &[
                (
                    "{reason=\"slow\"}".to_owned(),
                    self.closed_slow.load(Relaxed).to_string(),
                ),
                (
                    "{reason=\"idle\"}".to_owned(),
                    self.closed_idle.load(Relaxed).to_string(),
                ),
            ],
        );
        metric(
            "signal_outgoing_queue_bytes",
            "gauge",
            "Bytes of frames waiting for WebSocket clients (queued or being written).",
            &one(self.queued.0.total.load(Relaxed)),
        );
        metric(
            "signal_outgoing_queue_peak_bytes",
            "gauge",
            "The most bytes one client's outgoing queue has held since the server started.",
            &one(self.queued.0.peak.load(Relaxed)),
        );
        metric(
            "signal_tcp_connections",
            "gauge",
            "TCP connections open (HTTP and WebSocket).",
            &one(self.tcp_open.load(Relaxed)),
        );
        let tcp_closed: Vec<_> = TcpClose::ALL
            .iter()
            .zip(&self.tcp_closed)
            .map(|(reason, n)| {
                (
                    format!("{{reason=\"{}\"}}", reason.as_str()),
                    n.load(Relaxed).to_string(),
                )
            })
            .collect();
        metric(
            "signal_tcp_closed_total",
            "counter",
            "TCP connections closed by the server before they carried a WebSocket, by reason.",
            &tcp_closed,
        );
        metric(
            "signal_turn_credentials_total",
            "counter",
            "TURN credentials put in welcome frames (issued) or left out for the per-address limit (refused).",
            &[
                (
                    "{result=\"issued\"}".to_owned(),
                    self.turn_issued.load(Relaxed).to_string(),
                ),
                (
                    "{result=\"refused\"}".to_owned(),
                    self.turn_refused.load(Relaxed).to_string(),
                ),
            ],
        );
        let mut cumulative = 0;
        let mut buckets: Vec<_> = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(le, n)| {
                cumulative += n.load(Relaxed);
                (format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string())
            })
            .collect();
        let count = self.latency_count.load(Relaxed);
        buckets.push(("_bucket{le=\"+Inf\"}".to_owned(), count.to_string()));
        let sum = self.latency_sum_nanos.load(Relaxed) as f64 / 1e9;
        buckets.push(("_sum".to_owned(), sum.to_string()));
        buckets.push(("_count".to_owned(), count.to_string()));
        metric(
            "signal_relay_latency_seconds",
            "histogram",
            "Time from a signal frame's arrival to its write on the recipient's socket.",
            &buckets,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.error(ErrorCode::RateLimited);
        metrics.relayed(Duration::from_micros(80));
        metrics.relayed(Duration::from_millis(3));
        let text = metrics.render(Gauges { rooms: 1, peers: 2 });
        for line in [
            "signal_connections_total 2",
            "signal_connections 1",
            "signal_rooms 1",
            "signal_peers 2",
            "signal_messages_relayed_total 2",
            "signal_errors_total{code=\"rate-limited\"} 1",
            "signal_errors_total{code=\"bad-message\"} 0",
            "signal_relay_latency_seconds_bucket{le=\"0.00005\"} 0",
            "signal_relay_latency_seconds_bucket{le=\"0.0001\"} 1",
            "signal_relay_latency_seconds_bucket{le=\"0.005\"} 2",
            "signal_relay_latency_seconds_bucket{le=\"+Inf\"} 2",
            "signal_relay_latency_seconds_count 2",
            "# TYPE signal_relay_latency_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
