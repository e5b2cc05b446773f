//! One task per WebSocket: join the room, relay `signal` frames, leave.
//!
//! The task owns the socket. It waits on seven things at once: the server shutting down, its
//! peer resuming on another connection, its own outgoing queue overflowing, the client going
//! silent for too long, a frame queued for it by another peer, the next ping, and a frame from
//! its client (rate limited by a token bucket). Frames for the client are written in the
//! order they were queued; `welcome` is written before the task starts reading the queue, so
//! it is always the first frame. A write that blocks (the client does not read) still gives
//! way to shutdown, overflow, the idle timeout and its own write timeout.

use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::SinkExt;
use serde_json::value::RawValue;
use swarm_core::room::{JoinError, Joined};
use swarm_protocol::{ClientMsg, ErrorCode, IceServer, PeerId, RoomName, ServerMsg};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::{Fingerprint, ResumeClaim, fingerprint, issue_resume, unix_now};
use crate::cluster::Claimed;
use crate::limits::{IpSlot, TokenBucket};
use crate::metrics::Metrics;
use crate::state::{Outbox, frame_len};
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

/// A key's proof that a joining client passed: the id it certifies, and the proof's time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyProof {
    pub(crate) id: PeerId,
    pub(crate) ts: u64,
}

/// The refusal message for a join proof presented a second time.
pub(crate) use swarm_core::identity::PROOF_USED;

/// Which id a joining client asks for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Claim {
    /// Its key's proof (`?key=` with a valid proof, not used before on this instance).
    pub(crate) keyed: Option<KeyProof>,
    /// What its `?resume=` token claims, if the token is genuine. Whether it is still good
    /// is decided in [`choose_id`].
    pub(crate) resume: Option<ResumeClaim>,
}

impl Claim {
    /// The id the client claims, if any, with the fingerprint of the token it brings for
    /// that id. A keyed id is only ever taken with a fresh proof of its key: its token alone
    /// claims nothing.
    fn id(self) -> Option<(PeerId, Option<Fingerprint>)> {
        match (self.keyed, self.resume) {
            (Some(keyed), resume) => Some((
                keyed.id,
                resume.filter(|r| r.id == keyed.id).map(|r| r.fingerprint),
            )),
            (None, Some(resume)) if !resume.keyed => Some((resume.id, Some(resume.fingerprint))),
            (None, _) => None,
        }
    }

    /// Whether the client proved a key for `id`.
    fn is_keyed(self, id: PeerId) -> bool {
        self.keyed.is_some_and(|k| k.id == id)
    }
}

/// The refusal of a join that claims `id`, which a member of `room` holds, without that
/// member's latest resume token.
fn id_in_use(room: &RoomName, id: PeerId) -> Refusal {
    Refusal::new(
        ErrorCode::IdInUse,
        format!(
            "peer {id} is in room {room} already, and this join has no valid resume token for it"
        ),
    )
}

/// How a joining client takes its place, once [`choose_id`] decided its id.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// As a member joining (in a cluster, possibly one whose token was spent on another
    /// instance).
    Join,
    /// In the place of the member on this instance whose latest token it brings.
    Resume(Fingerprint),
}

/// Decides the id of a client that joins with `claim`: the claimed id if it is free or the
/// client brings the latest resume token of the member holding it, a new random id for a
/// token that is not (or no longer) good, and `id-in-use` for a key whose id someone holds.
/// A token is good once, while its member holds its place: on this instance, or (in a
/// cluster) on any live one.
async fn choose_id(
    state: &AppState,
    room: &RoomName,
    claim: Claim,
) -> Result<(PeerId, Place), Refusal> {
    let Some((id, token)) = claim.id() else {
        return Ok((state.new_peer_id(), Place::Join));
    };
    let keyed = claim.is_keyed(id);
    let here = state.rooms().route(room, id).cloned();
    // The token, if it is the latest of the member holding the id on this instance.
    let resumes_here = token.filter(|token| here.as_ref().is_some_and(|m| m.resumes_with(token)));
    // In a cluster Redis decides (it knows whether the token was spent on another
    // instance); this instance's rooms decide when there is no Redis to ask.
    let verdict = match state.cluster() {
        Some(cluster) => Box::pin(cluster.claim(room, id, token.as_ref())).await,
        None => Claimed::Unknown,
    };
    let free = match verdict {
        Claimed::TakenOver => return Ok((id, resumes_here.map_or(Place::Join, Place::Resume))),
        Claimed::Unknown if resumes_here.is_some() => {
            return Ok((id, resumes_here.map_or(Place::Join, Place::Resume)));
        }
        Claimed::InUse => false,
        Claimed::Free | Claimed::Unknown => here.is_none(),
    };
    match (keyed, free) {
        (true, true) => Ok((id, Place::Join)),
        (true, false) => Err(id_in_use(room, id)),
        // An unkeyed id comes back only through its member's latest token.
        (false, _) => {
            debug!(%room, peer = %id, "a resume token that is not (or no longer) good: a new id");
            Ok((state.new_peer_id(), Place::Join))
        }
    }
}

/// How a connection's serving loop ended, for what becomes of the peer's place in its room.
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

/// Why a connection's serving loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The server is shutting down.
    Shutdown,
    /// A resumed connection took this peer's place.
    Replaced,
    /// The client's outgoing queue overflowed (in frames or bytes): it is not reading.
    QueueFull,
    /// A write to the client did not complete within the write timeout: it is not reading.
    WriteTimeout,
    /// Nothing came from the client, not even a pong, for the idle timeout.
    Idle,
    /// The client kept sending after many `rate-limited` errors in a row.
    Flooding,
    /// The client sent a frame over the hard size limit.
    TooBig,
    /// The client sent a close frame.
    ClientClosed,
    /// The connection broke: a read or write failed, or it ended without a close frame.
    Broken,
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

/// What the admission checks found out about a client that may join.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Its place in the per-address count of WebSockets, held until the connection ends
    /// (through the resume grace of a lost connection).
    pub(crate) slot: Option<IpSlot>,
    /// The id it claims.
    pub(crate) claim: Claim,
    /// Its address, for per-address budgets.
    pub(crate) ip: Option<IpAddr>,
}

/// Serves one client in `room` until it disconnects, falls behind, goes silent, or the server
/// stops.
pub(crate) async fn serve(
    mut socket: WebSocket,
    state: AppState,
    room: RoomName,
    admitted: Admitted,
) {
    let Admitted {
        slot: _slot,
        claim,
        ip,
    } = admitted;
    let _counted = Counted::new(state.metrics());
    if let (Some(keyed), Some(cluster)) = (claim.keyed, state.cluster())
        && !Box::pin(cluster.take_proof(keyed.id, keyed.ts)).await
    {
        let refusal = Refusal::new(ErrorCode::InvalidKey, PROOF_USED);
        return Box::pin(refuse(socket, &state, refusal)).await;
    }
    let (id, place) = match Box::pin(choose_id(&state, &room, claim)).await {
        Ok(chosen) => chosen,
        Err(refusal) => return Box::pin(refuse(socket, &state, refusal)).await,
    };
    let resume = issue_resume(state.resume_key(), &room, id, claim.is_keyed(id));
    let resume_fingerprint = fingerprint(&resume);
    let config = state.config();
    let outbox = Outbox::new(
        config.outgoing_queue,
        config.outgoing_queue_bytes,
        state.metrics().queue_bytes().clone(),
        resume_fingerprint,
    );
    let joining = {
        let mut rooms = state.rooms();
        // The member's token was checked in `choose_id`; the place is taken only if it is
        // still that member's (no other connection resumed it meanwhile).
        let old = match place {
            Place::Resume(token)
                if rooms
                    .route(&room, id)
                    .is_some_and(|member| member.resumes_with(&token)) =>
            {
                rooms.replace(&room, id, outbox.clone())
            }
            Place::Resume(_) | Place::Join => None,
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
                JoinError::DuplicateId(_) if claim.id().is_some() => id_in_use(&room, id),
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
        peers.extend(Box::pin(cluster.join(&room, id, &resume_fingerprint)).await);
    }
    info!(%room, peer = %id, others = peers.len(), resumed, "joined");

    // Encoded at once: the message (its peer list, ICE servers, token) is not kept for the
    // life of the connection.
    let welcome = text(&ServerMsg::Welcome {
        id,
        peers,
        ice_servers: ice_servers(&state, id, ip),
        resume: Some(resume),
    });
    let shutdown = state.shutdown_token();
    let conn = Conn {
        state: &state,
        room: &room,
        id,
        outbox: &outbox,
        shutdown: &shutdown,
    };
    let idle = tokio::time::sleep(config.limits.idle_timeout);
    tokio::pin!(idle);
    let welcomed = Box::pin(conn.send(&mut socket, welcome, idle.deadline())).await;
    let joined_frame = text(&ServerMsg::Joined { id });
    for outbox in joined.notify {
        outbox.push(joined_frame.clone());
    }
    let stop = match welcomed {
        Ok(()) => Box::pin(conn.relay(&mut socket, idle)).await,
        Err(stop) => stop,
    };
    let ending = Box::pin(conn.finish(&mut socket, stop)).await;
    drop(socket);
    Box::pin(depart(&state, &room, id, &outbox, ending)).await;
}

/// The ICE servers for `id`'s `welcome`: the configured ones, and fresh TURN credentials
/// unless its address `ip` had its share of them.
fn ice_servers(state: &AppState, id: PeerId, ip: Option<IpAddr>) -> Vec<IceServer> {
    let config = state.config();
    let mut servers = config.ice_servers.clone();
    if let Some(turn) = &config.turn {
        let allowed = ip.is_none_or(|ip| state.turn_budgets().take(ip, std::time::Instant::now()));
        state.metrics().turn_credentials(allowed);
        if allowed {
            servers.push(turn::credentials(turn, id, unix_now()));
        } else {
            debug!(peer = %id, ?ip, "no TURN credentials: this address had its share");
        }
    }
    servers
}

/// The frames a client sent that the rate limit let through or refused.
struct Flood {
    bucket: TokenBucket,
    refused_in_a_row: u32,
}

/// One connection, as the functions that serve it see it.
struct Conn<'a> {
    state: &'a AppState,
    room: &'a RoomName,
    id: PeerId,
    outbox: &'a Outbox,
    shutdown: &'a CancellationToken,
}

impl Conn<'_> {
    /// Relays frames both ways until something stops the connection: the server shutting
    /// down, the peer resuming elsewhere, the client falling behind or going silent (`idle`
    /// is reset by every frame it sends), or the connection ending.
    async fn relay(&self, socket: &mut WebSocket, mut idle: Pin<&mut Sleep>) -> Stop {
        let limits = &self.state.config().limits;
        let mut ping =
            tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flood = Flood {
            bucket: TokenBucket::new(limits.rate, limits.burst, std::time::Instant::now()),
            refused_in_a_row: 0,
        };
        loop {
            let step = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => Err(Stop::Shutdown),
                () = self.outbox.replaced().cancelled() => Err(Stop::Replaced),
                () = self.outbox.overflowed().cancelled() => Err(Stop::QueueFull),
                () = &mut idle => Err(Stop::Idle),
                () = self.outbox.queued() => {
                    Box::pin(self.send_queued(socket, idle.deadline())).await
                }
                _ = ping.tick() => {
                    let ping = Message::Ping(Default::default());
                    Box::pin(self.send(socket, ping, idle.deadline())).await
                }
                incoming = socket.recv() => {
                    let now = Instant::now();
                    idle.as_mut().reset(now + limits.idle_timeout);
                    Box::pin(self.on_incoming(socket, &mut flood, incoming, now)).await
                }
            };
            if let Err(stop) = step {
                return stop;
            }
        }
    }

    /// Handles one frame (or the end of the stream) from the client, received at `now`.
    /// Every frame but a close takes a token from the rate limit: text, binary, ping and pong
    /// alike, so that no kind of frame floods the server unchecked.
    async fn on_incoming(
        &self,
        socket: &mut WebSocket,
        flood: &mut Flood,
        incoming: Option<Result<Message, axum::Error>>,
        now: Instant,
    ) -> Result<(), Stop> {
        let idle_at = now + self.state.config().limits.idle_timeout;
        let frame = match incoming {
            None => return Err(Stop::Broken),
            Some(Err(err)) => return Err(read_error(err)),
            Some(Ok(Message::Close(_))) => return Err(Stop::ClientClosed),
            Some(Ok(frame)) => frame,
        };
        if !flood.bucket.take(now.into_std()) {
            return self.rate_limited(socket, flood, &frame, idle_at).await;
        }
        flood.refused_in_a_row = 0;
        match frame {
            Message::Text(text) => {
                match on_text(self.state, self.room, self.id, text.as_str(), now) {
                    Handled::Relayed => Ok(()),
                    Handled::Refused(code, message) => {
                        self.reply_error(socket, code, &message, idle_at).await
                    }
                    Handled::Elsewhere { to, data } => {
                        Box::pin(self.relay_elsewhere(socket, to, data, idle_at)).await
                    }
                }
            }
            Message::Binary(_) => {
                let message = "binary frames are not accepted: send JSON text";
                self.reply_error(socket, ErrorCode::BadMessage, message, idle_at)
                    .await
            }
            // tungstenite answers pings by itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(()),
        }
    }

    /// A frame over the rate: a data frame is answered `rate-limited` (a control frame is
    /// dropped silently); a client that goes on regardless is disconnected.
    async fn rate_limited(
        &self,
        socket: &mut WebSocket,
        flood: &mut Flood,
        frame: &Message,
        idle_at: Instant,
    ) -> Result<(), Stop> {
        if flood.refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
            return Err(Stop::Flooding);
        }
        flood.refused_in_a_row += 1;
        if !matches!(frame, Message::Text(_) | Message::Binary(_)) {
            return Ok(());
        }
        let limits = &self.state.config().limits;
        let message = format!(
            "more than {} frames per second (burst {}): frame dropped, retry in {} ms",
            limits.rate,
            limits.burst,
            flood.bucket.wait().as_millis().max(1)
        );
        self.reply_error(socket, ErrorCode::RateLimited, &message, idle_at)
            .await
    }

    /// Relays a `signal` to `to` on another instance, or tells the client there is no such
    /// peer.
    async fn relay_elsewhere(
        &self,
        socket: &mut WebSocket,
        to: PeerId,
        data: Box<RawValue>,
        idle_at: Instant,
    ) -> Result<(), Stop> {
        if let Some(cluster) = self.state.cluster()
            && cluster.relay(self.room, self.id, to, data).await
        {
            return Ok(());
        }
        let message = format!("no peer {to} in room {}", self.room);
        self.reply_error(socket, ErrorCode::UnknownPeer, &message, idle_at)
            .await
    }

    async fn reply_error(
        &self,
        socket: &mut WebSocket,
        code: ErrorCode,
        message: &str,
        idle_at: Instant,
    ) -> Result<(), Stop> {
        debug!(code = code.as_str(), message, "refused a frame");
        self.state.metrics().error(code);
        let frame = text(&ServerMsg::error(code, message));
        self.send(socket, frame, idle_at).await
    }

    /// Writes everything queued for the client with one flush at the end, and records the
    /// relay latency of each relayed frame.
    async fn send_queued(&self, socket: &mut WebSocket, idle_at: Instant) -> Result<(), Stop> {
        let batch = self.outbox.take_all();
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch.iter().map(|out| frame_len(&out.frame)).sum();
        // Frames are cheap to clone (shared bytes): the batch is kept to time each one after
        // the flush.
        let write = async {
            for out in &batch {
                socket.feed(out.frame.clone()).await?;
            }
            socket.flush().await
        };
        let sent = self.guarded(write, idle_at).await;
        // Written or given up on, the batch is gone when this returns.
        self.outbox.written(bytes);
        if sent.is_ok() {
            let metrics = self.state.metrics();
            for since in batch.iter().filter_map(|out| out.relayed_at) {
                metrics.relayed(since.elapsed());
            }
        }
        sent
    }

    /// Sends one frame.
    async fn send(
        &self,
        socket: &mut WebSocket,
        frame: Message,
        idle_at: Instant,
    ) -> Result<(), Stop> {
        self.guarded(socket.send(frame), idle_at).await
    }

    /// Runs a write to the client without letting a client that stopped reading hold the
    /// task. A client that stops reading blocks the write once the kernel's buffers are
    /// full; the write is then given up on when it takes longer than the write timeout,
    /// when the outgoing queue overflows, when the client has been silent until `idle_at`
    /// (the idle timeout runs on while the write waits), or when the peer resumes elsewhere
    /// or the server shuts down.
    async fn guarded<E>(
        &self,
        write: impl Future<Output = Result<(), E>>,
        idle_at: Instant,
    ) -> Result<(), Stop> {
        let timeout = self.state.config().limits.write_timeout;
        tokio::select! {
            biased;
            sent = tokio::time::timeout(timeout, write) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Broken),
                Err(_) => Err(Stop::WriteTimeout),
            },
            () = self.shutdown.cancelled() => Err(Stop::Shutdown),
            () = self.outbox.replaced().cancelled() => Err(Stop::Replaced),
            () = self.outbox.overflowed().cancelled() => Err(Stop::QueueFull),
            () = tokio::time::sleep_until(idle_at) => Err(Stop::Idle),
        }
    }

    /// Tells the client why its connection ends (when there is a reason to give), counts it,
    /// and says what becomes of its place in the room.
    ///
    /// A client the server drops for being too slow has left, like one that closed: it was
    /// not the network that failed but the client that did not read, and holding its place
    /// through the resume grace would keep queueing frames for it.
    async fn finish(&self, socket: &mut WebSocket, stop: Stop) -> Ending {
        let (room, peer, metrics) = (self.room, self.id, self.state.metrics());
        let config = self.state.config();
        match stop {
            Stop::Shutdown => {
                close(socket, close_code::AWAY, "server shutting down").await;
                Ending::Shutdown
            }
            Stop::Replaced => {
                close(socket, CLOSE_REPLACED, "resumed on another connection").await;
                Ending::Replaced
            }
            Stop::QueueFull => {
                warn!(%room, %peer, "outgoing queue full: disconnecting slow client");
                metrics.closed_slow();
                close(socket, close_code::POLICY, "too slow: outgoing queue full").await;
                Ending::Closed
            }
            Stop::WriteTimeout => {
                let timeout = config.limits.write_timeout;
                warn!(%room, %peer, "a write took over {timeout:?}: disconnecting slow client");
                metrics.closed_slow();
                close(socket, close_code::POLICY, "too slow: write timed out").await;
                Ending::Closed
            }
            Stop::Idle => {
                let timeout = config.limits.idle_timeout;
                info!(%room, %peer, "silent for {timeout:?}: disconnecting");
                metrics.closed_idle();
                close(
                    socket,
                    close_code::POLICY,
                    "idle: no frame or pong received",
                )
                .await;
                Ending::Lost
            }
            Stop::Flooding => {
                info!(%room, %peer, "ignored {MAX_REFUSED_IN_A_ROW} rate-limited errors: disconnecting");
                close(socket, close_code::POLICY, "rate limit exceeded").await;
                Ending::Closed
            }
            Stop::TooBig => {
                let reason = format!("frame larger than {} bytes", config.hard_frame_limit());
                close(socket, close_code::SIZE, &reason).await;
                Ending::Closed
            }
            Stop::ClientClosed => Ending::Closed,
            Stop::Broken => {
                debug!(%room, %peer, "connection broken");
                Ending::Lost
            }
        }
    }
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

/// Why a read failed: a frame over the hard size limit (the client gets close code 1009), or
/// a broken connection.
fn read_error(err: axum::Error) -> Stop {
    let too_big = err
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)));
    if too_big { Stop::TooBig } else { Stop::Broken }
}

/// Sends a close frame, giving up after [`CLOSE_TIMEOUT`] if the client does not read, then
/// waits (as long again at most) for the client's close frame, discarding what it still
/// sends. Dropping a socket with unread frames in its buffer would reset the connection,
/// and a reset can destroy what the client had yet to read: the close frame and the
/// errors before it.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let sent = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    // The peer may already be gone or stuck; there is nothing more to do then.
    if matches!(sent, Ok(Ok(()))) {
        let drain = async { while let Some(Ok(_)) = socket.recv().await {} };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    }
}

/// A protocol frame as a WebSocket text message.
pub(crate) fn text(msg: &ServerMsg) -> Message {
    Message::Text(msg.to_json().into())
}
