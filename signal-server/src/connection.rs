//! One task per WebSocket: join the room, relay `signal` frames, leave.
//!
//! The task owns the socket. It waits on six things at once: the server shutting down, its
//! own outgoing queue overflowing, the client going silent for too long, a frame queued for
//! it by another peer, the next ping, and a frame from its client (rate limited by a token
//! bucket). Frames for the client are written in the order they were queued; `welcome` is
//! written before the task starts reading the queue, so it is always the first frame.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::SinkExt;
use serde_json::value::RawValue;
use swarm_core::room::{JoinError, Joined};
use swarm_protocol::{ClientMsg, ErrorCode, PeerId, RoomName, ServerMsg};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::{issue_resume, unix_now};
use crate::limits::{IpSlot, TokenBucket};
use crate::metrics::Metrics;
use crate::state::{Outbox, Outgoing};
use crate::{AppState, turn};

/// How long a close frame may take to write before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames refused in a row for the rate limit after which the client is disconnected: it is
/// not listening to the `rate-limited` errors.
const MAX_REFUSED_IN_A_ROW: u32 = 100;

/// Why a client may not join: sent as an `error` frame, then the connection is closed.
#[derive(Debug)]
pub(crate) struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 1013 "try again later" for capacity limits, 1008 "policy" for the rest.
    fn close_code(&self) -> u16 {
        match self.code {
            ErrorCode::RoomFull | ErrorCode::ServerFull | ErrorCode::TooManyConnections => {
                close_code::AGAIN
            }
            _ => close_code::POLICY,
        }
    }
}

/// Tells a client why it may not join, and closes the connection.
pub(crate) async fn refuse(mut socket: WebSocket, state: &AppState, refusal: Refusal) {
    info!(code = refusal.code.as_str(), message = %refusal.message, "refused a client");
    state.metrics().error(refusal.code);
    let frame = text(&ServerMsg::error(refusal.code, &refusal.message));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(frame)).await;
    close(&mut socket, refusal.close_code(), refusal.code.as_str()).await;
}

/// Which id a joining client asks for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Claim {
    /// The id its key certifies (`?key=` with a valid proof).
    pub(crate) keyed: Option<PeerId>,
    /// The id its `?resume=` token gives back, if the token is genuine.
    pub(crate) resume: Option<PeerId>,
}

impl Claim {
    /// The id to use, if the client claims one, and whether the client may take over a
    /// member holding it (its resume token is for that id).
    fn id(self) -> Option<(PeerId, bool)> {
        match (self.keyed, self.resume) {
            (Some(keyed), resume) => Some((keyed, resume == Some(keyed))),
            (None, Some(resume)) => Some((resume, true)),
            (None, None) => None,
        }
    }
}

/// How a connection's serving loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client closed the WebSocket (or the server closed it for a policy): it left.
    Closed,
    /// The connection broke or went silent: the client may come back with its resume token.
    Lost,
    /// A resumed connection took this peer's place.
    Replaced,
    /// The server is shutting down.
    Shutdown,
}

/// Close code for a connection whose peer resumed on a newer connection.
const CLOSE_REPLACED: u16 = 4000;

/// Counts an open connection in the metrics for as long as it lives.
struct Counted<'a>(&'a Metrics);

impl<'a> Counted<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.connection_opened();
        Self(metrics)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Serves one client in `room` until it disconnects, falls behind, goes silent, or the server
/// stops. `_slot` holds the client's place in the per-address count until then.
pub(crate) async fn serve(
    mut socket: WebSocket,
    state: AppState,
    room: RoomName,
    _slot: Option<IpSlot>,
    claim: Claim,
) {
    let _counted = Counted::new(state.metrics());
    let (id, may_take_over) = claim.id().unwrap_or_else(|| (state.new_peer_id(), false));
    let outbox = Outbox::new(state.config().outgoing_queue);
    let overflowed = outbox.overflowed().clone();
    let joining = {
        let mut rooms = state.rooms();
        let old = if may_take_over {
            rooms.replace(&room, id, outbox.clone())
        } else {
            None
        };
        match old {
            // A resumed connection: the peer never left, so nobody is told anything.
            Some(old) => {
                old.replaced().cancel();
                let peers = rooms
                    .members(&room)
                    .into_iter()
                    .filter(|p| *p != id)
                    .collect();
                Ok((
                    Joined {
                        peers,
                        notify: Vec::new(),
                    },
                    true,
                ))
            }
            None => rooms
                .join(&room, id, outbox.clone())
                .map(|joined| (joined, false)),
        }
    };
    let (joined, resumed) = match joining {
        Ok(joined) => joined,
        Err(err) => {
            let refusal = match err {
                JoinError::RoomFull(max) => Refusal::new(
                    ErrorCode::RoomFull,
                    format!("room {room} is full ({max} peers)"),
                ),
                JoinError::TooManyRooms(max) => Refusal::new(
                    ErrorCode::ServerFull,
                    format!("this server holds at most {max} rooms"),
                ),
                JoinError::DuplicateId(_) if claim.id().is_some() => Refusal::new(
                    ErrorCode::IdInUse,
                    format!(
                        "peer {id} is in room {room} already, and this join has no valid resume token for it"
                    ),
                ),
                JoinError::DuplicateId(_) => {
                    // 128 random bits never collide in practice; refuse rather than alias two
                    // peers.
                    warn!(%room, %err, "join refused");
                    Box::pin(close(
                        &mut socket,
                        close_code::ERROR,
                        "could not assign a peer id",
                    ))
                    .await;
                    return;
                }
            };
            Box::pin(refuse(socket, &state, refusal)).await;
            return;
        }
    };
    let mut peers = joined.peers;
    if let Some(cluster) = state.cluster() {
        peers.extend(Box::pin(cluster.join(&room, id)).await);
    }
    info!(%room, peer = %id, others = peers.len(), resumed, "joined");

    let config = state.config();
    let mut ice_servers = config.ice_servers.clone();
    if let Some(turn) = &config.turn {
        ice_servers.push(turn::credentials(turn, id, unix_now()));
    }
    let welcome = ServerMsg::Welcome {
        id,
        peers,
        ice_servers,
        resume: Some(issue_resume(state.resume_key(), &room, id)),
    };
    let mut open = Box::pin(socket.send(text(&welcome))).await.is_ok();
    let joined_frame = text(&ServerMsg::Joined { id });
    for outbox in joined.notify {
        outbox.push(joined_frame.clone());
    }

    let limits = &config.limits;
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut bucket = TokenBucket::new(limits.rate, limits.burst, std::time::Instant::now());
    let mut refused_in_a_row = 0;
    let shutdown = state.shutdown_token();
    let replaced = outbox.replaced().clone();
    let guard = SendGuard {
        overflowed: &overflowed,
        shutdown: &shutdown,
    };
    // A welcome that could not be written is a lost connection.
    let mut ending = Ending::Lost;
    while open {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                Box::pin(close(&mut socket, close_code::AWAY, "server shutting down")).await;
                ending = Ending::Shutdown;
                open = false;
            }
            () = replaced.cancelled() => {
                Box::pin(close(&mut socket, CLOSE_REPLACED, "resumed on another connection")).await;
                ending = Ending::Replaced;
                open = false;
            }
            () = overflowed.cancelled() => {
                warn!(%room, peer = %id, "outgoing queue full: disconnecting slow client");
                state.metrics().closed_slow();
                Box::pin(close(&mut socket, close_code::POLICY, "too slow: outgoing queue full")).await;
                ending = Ending::Closed;
                open = false;
            }
            () = &mut idle => {
                info!(%room, peer = %id, "silent for {:?}: disconnecting", limits.idle_timeout);
                state.metrics().closed_idle();
                Box::pin(close(&mut socket, close_code::POLICY, "idle: no frame or pong received")).await;
                ending = Ending::Lost;
                open = false;
            }
            () = outbox.queued() => {
                open = Box::pin(guard.send_all(&mut socket, outbox.take_all(), state.metrics())).await;
            }
            _ = ping.tick() => {
                open = Box::pin(guard.send(&mut socket, Message::Ping(Default::default()))).await;
            }
            incoming = socket.recv() => {
                let now = Instant::now();
                idle.as_mut().reset(now + limits.idle_timeout);
                open = match incoming {
                    Some(Ok(Message::Text(frame))) => {
                        if bucket.take(now.into_std()) {
                            refused_in_a_row = 0;
                            match on_text(&state, &room, id, frame.as_str(), now) {
                                Handled::Relayed => true,
                                Handled::Refused(code, message) => {
                                    Box::pin(reply_error(&mut socket, &state, &guard, code, &message)).await
                                }
                                Handled::Elsewhere { to, data } => {
                                    Box::pin(relay_elsewhere(&mut socket, &state, &guard, &room, id, to, data)).await
                                }
                            }
                        } else if refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
                            Box::pin(close(&mut socket, close_code::POLICY, "rate limit exceeded")).await;
                            ending = Ending::Closed;
                            false
                        } else {
                            refused_in_a_row += 1;
                            let message = format!(
                                "more than {} frames per second (burst {}): frame dropped, retry in {} ms",
                                limits.rate, limits.burst, bucket.wait().as_millis().max(1)
                            );
                            Box::pin(reply_error(&mut socket, &state, &guard, ErrorCode::RateLimited, &message)).await
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let message = "binary frames are not accepted: send JSON text";
                        Box::pin(reply_error(&mut socket, &state, &guard, ErrorCode::BadMessage, message)).await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
                    Some(Ok(Message::Close(_))) => {
                        ending = Ending::Closed;
                        false
                    }
                    None => {
                        ending = Ending::Lost;
                        false
                    }
                    Some(Err(err)) => {
                        ending = Box::pin(on_read_error(&mut socket, &state, err)).await;
                        false
                    }
                };
            }
        }
    }
    drop(socket);
    Box::pin(depart(&state, &room, id, &outbox, ending)).await;
}

/// Takes `id` out of `room` after its connection ended, unless it resumed elsewhere: at once
/// if it closed, after the resume grace if its connection was lost.
async fn depart(state: &AppState, room: &RoomName, id: PeerId, outbox: &Outbox, ending: Ending) {
    let grace = state.config().resume_grace;
    match ending {
        Ending::Replaced => return,
        Ending::Lost if !grace.is_zero() => {
            debug!(%room, peer = %id, "connection lost: holding its place for {grace:?}");
            let shutdown = state.shutdown_token();
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = outbox.replaced().cancelled() => return,
                // Handed over like the open connections (below) in a cluster.
                () = shutdown.cancelled() => if state.cluster().is_some() {
                    return;
                },
            }
        }
        // In a cluster, a graceful shutdown hands its peers over: their places stay in Redis
        // under this instance, they resume on another one, and whoever does not come back
        // is reported left by the others when this instance's presence runs out.
        Ending::Shutdown if state.cluster().is_some() => {
            debug!(%room, peer = %id, "shutting down: leaving its place to another instance");
            return;
        }
        Ending::Closed | Ending::Lost | Ending::Shutdown => {}
    }
    // In a cluster the peer may have come back through another instance, which now owns it.
    let elsewhere = match state.cluster() {
        Some(cluster) if ending != Ending::Closed => {
            Box::pin(cluster.owned_elsewhere(room, id)).await
        }
        _ => false,
    };
    let remaining = {
        let mut rooms = state.rooms();
        if !rooms
            .route(room, id)
            .is_some_and(|handle| handle.same(outbox))
        {
            return;
        }
        rooms.leave(room, id)
    };
    if elsewhere {
        info!(%room, peer = %id, "moved to another instance");
        return;
    }
    info!(%room, peer = %id, ?ending, "left");
    let left_frame = text(&ServerMsg::Left { id });
    let last_here = remaining.is_empty();
    for outbox in remaining {
        outbox.push(left_frame.clone());
    }
    if let Some(cluster) = state.cluster() {
        Box::pin(cluster.leave(room, id, last_here)).await;
    }
}

/// Writes to a client without letting a client that stopped reading hold the task: the
/// write gives up when the outgoing queue overflows or the server shuts down.
struct SendGuard<'a> {
    overflowed: &'a CancellationToken,
    shutdown: &'a CancellationToken,
}

impl SendGuard<'_> {
    /// Writes `batch` with one flush at the end and records the relay latency of each
    /// relayed frame; returns whether the connection is still usable.
    async fn send_all(
        &self,
        socket: &mut WebSocket,
        batch: VecDeque<Outgoing>,
        metrics: &Metrics,
    ) -> bool {
        if batch.is_empty() {
            return true;
        }
        // Frames are cheap to clone (shared bytes): the batch is kept to time each one after
        // the flush.
        let write = async {
            for out in &batch {
                socket.feed(out.frame.clone()).await?;
            }
            socket.flush().await
        };
        let sent = self.guarded(write).await;
        if sent {
            for since in batch.iter().filter_map(|out| out.relayed_at) {
                metrics.relayed(since.elapsed());
            }
        }
        sent
    }

    /// Sends `frame`; returns whether the connection is still usable.
    async fn send(&self, socket: &mut WebSocket, frame: Message) -> bool {
        self.guarded(socket.send(frame)).await
    }

    /// Runs a write to the client; `false` if it failed or was given up.
    async fn guarded<E>(&self, write: impl Future<Output = Result<(), E>>) -> bool {
        // A client that stops reading blocks the write once the kernel's buffers are full;
        // overflow or shutdown then ends the connection without waiting for it.
        tokio::select! {
            sent = write => sent.is_ok(),
            () = self.overflowed.cancelled() => {
                debug!("client stopped reading: dropping the connection");
                false
            }
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// What became of one text frame from the client.
enum Handled {
    /// Relayed to a peer on this instance.
    Relayed,
    /// Refused: tell the client.
    Refused(ErrorCode, String),
    /// For a peer not on this instance: try the other instances.
    Elsewhere { to: PeerId, data: Box<RawValue> },
}

/// Handles one text frame without waiting for anything: the common case, a `signal` to a peer
/// on this instance, is only a parse, a lookup and a queue push.
fn on_text(
    state: &AppState,
    room: &RoomName,
    from: PeerId,
    frame: &str,
    received: Instant,
) -> Handled {
    let limit = state.config().max_frame_len;
    if frame.len() > limit {
        let message = format!(
            "frame of {} bytes is larger than the limit of {limit} bytes",
            frame.len()
        );
        return Handled::Refused(ErrorCode::TooLarge, message);
    }
    let msg = match ClientMsg::parse(frame) {
        Ok(msg) => msg,
        Err(err) => return Handled::Refused(ErrorCode::BadMessage, err.to_string()),
    };
    match msg {
        ClientMsg::Signal { to, data } => {
            let target = state.rooms().route(room, to).cloned();
            match target {
                Some(outbox) => {
                    outbox
                        .push_relayed(text(&ServerMsg::Signal { from, data }), received.into_std());
                    Handled::Relayed
                }
                None => Handled::Elsewhere { to, data },
            }
        }
    }
}

/// Relays a `signal` to `to` on another instance, or tells the client there is no such peer;
/// returns whether the connection is still usable.
async fn relay_elsewhere(
    socket: &mut WebSocket,
    state: &AppState,
    guard: &SendGuard<'_>,
    room: &RoomName,
    from: PeerId,
    to: PeerId,
    data: Box<RawValue>,
) -> bool {
    if let Some(cluster) = state.cluster()
        && cluster.relay(room, from, to, data).await
    {
        return true;
    }
    let message = format!("no peer {to} in room {room}");
    reply_error(socket, state, guard, ErrorCode::UnknownPeer, &message).await
}

/// A read failed. A frame over the hard size limit gets close code 1009 (the client is
/// closed); anything else means the connection is already broken (lost).
async fn on_read_error(socket: &mut WebSocket, state: &AppState, err: axum::Error) -> Ending {
    let too_big = err
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)));
    if too_big {
        let reason = format!(
            "frame larger than {} bytes",
            state.config().hard_frame_limit()
        );
        close(socket, close_code::SIZE, &reason).await;
        Ending::Closed
    } else {
        debug!("connection broken");
        Ending::Lost
    }
}

async fn reply_error(
    socket: &mut WebSocket,
    state: &AppState,
    guard: &SendGuard<'_>,
    code: ErrorCode,
    message: &str,
) -> bool {
    debug!(code = code.as_str(), message, "refused a frame");
    state.metrics().error(code);
    guard
        .send(socket, text(&ServerMsg::error(code, message)))
        .await
}

/// Sends a close frame, giving up after [`CLOSE_TIMEOUT`] if the client does not read.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    // The peer may already be gone or stuck; there is nothing more to do then.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// A protocol frame as a WebSocket text message.
pub(crate) fn text(msg: &ServerMsg) -> Message {
    Message::Text(msg.to_json().into())
}
