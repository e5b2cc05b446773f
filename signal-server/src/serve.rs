//! The accept loop: TCP (and TLS) connections served over HTTP/1.1 (or h2c) with WebSocket
//! upgrades, and the client's address in every request.
//!
//! Against clients that hold connections without using them: at most
//! [`crate::config::Limits::tcp_connections_per_ip`] TCP connections per address (further
//! ones are reset at once); the TLS handshake and first request headers due within
//! `handshake_timeout` of the accept, even if the client sends nothing at all; and an HTTP
//! connection on which no byte moves for `http_idle_timeout` closed. A connection upgraded to
//! a WebSocket is then watched by its connection task instead.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, ClusterError};
use crate::limits::IpSlot;
use crate::metrics::TcpClose;
use crate::routes::ClientAddr;
use crate::tls::{self, TlsError};
use crate::{AppState, Config, app};

/// How long [`run`] waits for connections to close after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// TLS was asked for and could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Redis was asked for and could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Serves `listener` until `shutdown` completes, then closes every WebSocket with `1001 going
/// away` and waits (up to 5 s) for the connections to drain.
///
/// The listener is bound by the caller, so tests can bind port 0 and read the real address.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let timeouts = Timeouts {
        handshake: config.limits.handshake_timeout,
        idle: config.limits.http_idle_timeout,
    };
    // Behind a proxy every connection comes from the proxy: only it would be limited.
    let limit_per_ip = !config.trust_forwarded_for;
    let cluster = match &config.redis {
        Some(url) => Some(Cluster::connect(url, config.redis_presence_ttl).await?),
        None => None,
    };
    let state = AppState::new(config);
    let cluster_task = cluster.map(|(cluster, pubsub)| {
        let cluster = Arc::new(cluster);
        state.set_cluster(Arc::clone(&cluster));
        let state = state.clone();
        tokio::spawn(async move {
            cluster.run(state, pubsub).await;
            cluster
        })
    });
    let router = app(state.clone());
    let stopping = state.shutdown_token();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually out of file descriptors: wait for some to free up.
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(stream) = admit_tcp(&state, stream, addr, limit_per_ip) else {
            continue;
        };
        let (router, tls) = (router.clone(), tls.clone());
        let watcher = graceful.watcher();
        let served = Served {
            router,
            addr,
            timeouts,
            state: state.clone(),
            watcher,
        };
        tokio::spawn(async move {
            match tls {
                None => served.serve_http(stream).await,
                Some(tls) => {
                    let activity = Arc::clone(&stream.activity);
                    if let Some(stream) = served.tls_handshake(&tls, stream).await {
                        served.serve_http_on(stream, activity).await;
                    }
                }
            }
        });
    }
    info!("shutting down: closing connections");
    stopping.cancel();
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("some HTTP connections did not close within {DRAIN_TIMEOUT:?}");
    }
    // Upgraded WebSockets are not HTTP connections any more: they are drained separately.
    if !state.drain(DRAIN_TIMEOUT).await {
        warn!("some WebSockets did not close within {DRAIN_TIMEOUT:?}");
    }
    if let Some(task) = cluster_task
        && let Ok(cluster) = task.await
    {
        cluster.stop().await;
    }
    Ok(())
}

/// Admits a freshly accepted connection: within its address's share of TCP connections
/// (when `limit_per_ip`), it is wrapped to be watched; past it, it is reset at once.
fn admit_tcp(
    state: &AppState,
    stream: TcpStream,
    addr: SocketAddr,
    limit_per_ip: bool,
) -> Option<Tracked<TcpStream>> {
    let slot = if limit_per_ip {
        let Some(slot) = state.tcp_slots().acquire(addr.ip()) else {
            debug!(%addr, "too many TCP connections from this address: closing");
            state.metrics().tcp_closed(TcpClose::PerIpLimit);
            // A reset, so that the server keeps no TIME_WAIT state for it.
            let _ = stream.set_zero_linger();
            return None;
        };
        Some(slot)
    } else {
        None
    };
    let _ = stream.set_nodelay(true);
    Some(Tracked::new(stream, state.clone(), slot))
}

/// How long a connection may take to start, and to sit idle.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// From the accept to the end of the TLS handshake and first request headers.
    handshake: Duration,
    /// With no byte moving either way, once the first request came.
    idle: Duration,
}

/// What serving one accepted connection needs.
struct Served {
    router: Router,
    addr: SocketAddr,
    timeouts: Timeouts,
    state: AppState,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Served {
    /// Serves HTTP on a plain TCP connection.
    async fn serve_http(self, stream: Tracked<TcpStream>) {
        let activity = Arc::clone(&stream.activity);
        self.serve_http_on(stream, activity).await;
    }

    /// Serves HTTP/1.1 (and h2c) on one connection whose progress `activity` records, with the
    /// client's address in every request, until it ends or [`watchdog`] closes it.
    async fn serve_http_on<I>(self, io: I, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            router,
            addr,
            timeouts,
            state,
            watcher,
        } = self;
        let requested = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            requested.requested.store(true, Relaxed);
            request.extensions_mut().insert(ClientAddr(addr));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.handshake);
        // No HTTP/2 pings: they would keep an idle connection busy; the watchdog closes it.
        builder.http2().timer(TokioTimer::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let connection = watcher.watch(connection.into_owned());
        tokio::select! {
            served = connection => if let Err(err) = served {
                debug!(%addr, %err, "HTTP connection ended with an error");
            },
            reason = watchdog(&activity, timeouts) => {
                debug!(%addr, reason = reason.as_str(), "closing the connection");
                state.metrics().tcp_closed(reason);
            }
        }
    }

    /// The TLS handshake, due within the handshake timeout of the accept.
    async fn tls_handshake(
        &self,
        tls: &TlsAcceptor,
        stream: Tracked<TcpStream>,
    ) -> Option<impl AsyncRead + AsyncWrite + Unpin + Send + 'static> {
        let deadline = stream.activity.accepted + self.timeouts.handshake;
        let addr = self.addr;
        match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                debug!(%addr, %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(%addr, "TLS handshake timed out");
                self.state.metrics().tcp_closed(TcpClose::HandshakeTimeout);
                None
            }
        }
    }
}

/// Completes when an HTTP connection should be closed: no request yet at the handshake
/// deadline, or (after that) no byte moved for the idle timeout.
async fn watchdog(activity: &Activity, timeouts: Timeouts) -> TcpClose {
    tokio::time::sleep_until(activity.accepted + timeouts.handshake).await;
    if !activity.requested.load(Relaxed) {
        return TcpClose::HandshakeTimeout;
    }
    loop {
        let deadline = activity.last_progress() + timeouts.idle;
        if Instant::now() >= deadline {
            return TcpClose::HttpIdle;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// When bytes last moved on a connection, and whether a request has come.
#[derive(Debug)]
struct Activity {
    accepted: Instant,
    /// Milliseconds from `accepted` to the last read or write that moved bytes.
    last: AtomicU64,
    /// Set by the first request's headers.
    requested: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let millis = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Relaxed);
    }

    fn last_progress(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last.load(Relaxed))
    }
}

/// A TCP connection as the server serves it: it records in [`Activity`] when bytes move,
/// and holds the connection's place in the per-address count (and in the
/// `signal_tcp_connections` gauge) until it is dropped, which after a WebSocket upgrade is
/// when the WebSocket ends.
struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
    _open: OpenTcp,
}

/// A served TCP connection's place in the counts, given back on drop.
struct OpenTcp {
    state: AppState,
    _slot: Option<IpSlot>,
}

impl Drop for OpenTcp {
    fn drop(&mut self) {
        self.state.metrics().tcp_ended();
    }
}

impl<I> Tracked<I> {
    fn new(io: I, state: AppState, slot: Option<IpSlot>) -> Self {
        state.metrics().tcp_opened();
        Self {
            io,
            activity: Arc::new(Activity {
                accepted: Instant::now(),
                last: AtomicU64::new(0),
                requested: AtomicBool::new(false),
            }),
            _open: OpenTcp { state, _slot: slot },
        }
    }

    /// Notes progress when `poll` moved `n` bytes.
    fn note<T>(
        &self,
        poll: Poll<io::Result<T>>,
        moved: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(done)) = &poll
            && moved(done)
        {
            self.activity.touch();
        }
        poll
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let after = buf.filled().len();
        this.note(poll, |()| after > before)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
