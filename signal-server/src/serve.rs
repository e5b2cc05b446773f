//! The accept loop: TCP (and TLS) connections served over HTTP/1.1 with WebSocket upgrades,
//! with a time limit on the handshake and the client's address in every request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, ClusterError};
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
    let handshake_timeout = config.limits.handshake_timeout;
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
        let _ = stream.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => serve_http(stream, router, addr, handshake_timeout, watcher).await,
                Some(tls) => {
                    if let Some(stream) = tls_handshake(&tls, stream, handshake_timeout, addr).await
                    {
                        serve_http(stream, router, addr, handshake_timeout, watcher).await;
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

/// Serves HTTP/1.1 (and h2c) on one connection, the request headers due within `timeout`,
/// with the client's address in every request.
async fn serve_http<I>(
    io: I,
    router: Router,
    addr: SocketAddr,
    timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(addr));
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(connection.into_owned()).await {
        debug!(%addr, %err, "HTTP connection ended with an error");
    }
}

async fn tls_handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    addr: SocketAddr,
) -> Option<impl AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    match tokio::time::timeout(timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            debug!(%addr, %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%addr, "TLS handshake timed out");
            None
        }
    }
}
