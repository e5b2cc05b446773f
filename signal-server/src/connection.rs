//! One task per WebSocket: join the room, relay `signal` frames, leave.
//!
//! The task owns the socket. It waits on four things at once: the server shutting down, its
//! own outgoing queue overflowing, a frame queued for it by another peer, and a frame from its
//! client. Frames for the client are written in the order they were queued; `welcome` is
//! written before the task starts reading the queue, so it is always the first frame.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use swarm_protocol::{ClientMsg, ErrorCode, PeerId, RoomName, ServerMsg};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::AppState;
use crate::state::Outbox;

/// How long a close frame may take to write before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one client in `room` until it disconnects, falls behind, or the server stops.
pub(crate) async fn serve(mut socket: WebSocket, state: AppState, room: RoomName) {
    let id = state.new_peer_id();
    let (queue, mut outgoing) = mpsc::channel(state.config().outgoing_queue.max(1));
    let overflowed = CancellationToken::new();
    let joining = state
        .rooms()
        .join(&room, id, Outbox::new(queue, overflowed.clone()));
    let joined = match joining {
        Ok(joined) => joined,
        Err(err) => {
            // 128 random bits never collide in practice; refuse rather than alias two peers.
            warn!(%room, %err, "join refused");
            close(&mut socket, close_code::ERROR, "could not assign a peer id").await;
            return;
        }
    };
    info!(%room, peer = %id, others = joined.peers.len(), "joined");

    let welcome = ServerMsg::Welcome {
        id,
        peers: joined.peers,
        ice_servers: state.config().ice_servers.clone(),
    };
    let mut open = socket.send(text(&welcome)).await.is_ok();
    let joined_frame = text(&ServerMsg::Joined { id });
    for outbox in joined.notify {
        outbox.push(joined_frame.clone());
    }

    let shutdown = state.shutdown_token();
    while open {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                close(&mut socket, close_code::AWAY, "server shutting down").await;
                open = false;
            }
            () = overflowed.cancelled() => {
                warn!(%room, peer = %id, "outgoing queue full: disconnecting slow client");
                close(&mut socket, close_code::POLICY, "too slow: outgoing queue full").await;
                open = false;
            }
            Some(frame) = outgoing.recv() => {
                // A client that stops reading blocks this write once the kernel's buffers are
                // full; overflow or shutdown then ends the connection without waiting for it.
                open = tokio::select! {
                    sent = socket.send(frame) => sent.is_ok(),
                    () = overflowed.cancelled() => {
                        warn!(%room, peer = %id, "client stopped reading: dropping the connection");
                        false
                    }
                    () = shutdown.cancelled() => false,
                };
            }
            incoming = socket.recv() => {
                open = match incoming {
                    Some(Ok(Message::Text(frame))) => on_text(&mut socket, &state, &room, id, frame.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        reply_error(&mut socket, ErrorCode::BadMessage, "binary frames are not accepted: send JSON text").await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
                    Some(Ok(Message::Close(_))) | None => false,
                    Some(Err(err)) => {
                        on_read_error(&mut socket, &state, err).await;
                        false
                    }
                };
            }
        }
    }

    let remaining = state.rooms().leave(&room, id);
    info!(%room, peer = %id, "left");
    let left_frame = text(&ServerMsg::Left { id });
    for outbox in remaining {
        outbox.push(left_frame.clone());
    }
}

/// Handles one text frame; returns whether the connection is still usable.
async fn on_text(
    socket: &mut WebSocket,
    state: &AppState,
    room: &RoomName,
    from: PeerId,
    frame: &str,
) -> bool {
    let limit = state.config().max_frame_len;
    if frame.len() > limit {
        let message = format!(
            "frame of {} bytes is larger than the limit of {limit} bytes",
            frame.len()
        );
        return reply_error(socket, ErrorCode::TooLarge, &message).await;
    }
    let msg = match ClientMsg::parse(frame) {
        Ok(msg) => msg,
        Err(err) => return reply_error(socket, ErrorCode::BadMessage, &err.to_string()).await,
    };
    match msg {
        ClientMsg::Signal { to, data } => {
            let target = state.rooms().route(room, to).cloned();
            match target {
                Some(outbox) => {
                    outbox.push(text(&ServerMsg::Signal { from, data }));
                    true
                }
                None => {
                    let message = format!("no peer {to} in room {room}");
                    reply_error(socket, ErrorCode::UnknownPeer, &message).await
                }
            }
        }
    }
}

/// A read failed. A frame over the hard size limit gets close code 1009; anything else means
/// the connection is already broken.
async fn on_read_error(socket: &mut WebSocket, state: &AppState, err: axum::Error) {
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
    } else {
        debug!("connection broken");
    }
}

async fn reply_error(socket: &mut WebSocket, code: ErrorCode, message: &str) -> bool {
    debug!(code = code.as_str(), message, "refused a frame");
    socket
        .send(text(&ServerMsg::error(code, message)))
        .await
        .is_ok()
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

fn text(msg: &ServerMsg) -> Message {
    Message::Text(msg.to_json().into())
}
