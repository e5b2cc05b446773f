//! HTTP routes.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use swarm_core::identity::verify_join;
use swarm_protocol::{ErrorCode, RoomName};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

use crate::access::{check_resume, check_token, origin_allowed, unix_now};
use crate::connection::{self, Claim, Refusal};
use crate::limits::IpSlot;
use crate::{AppState, Config};

/// The address of the client at the other end of the TCP connection, put in each request's
/// extensions by the server's accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The query string of `/ws/{room}`.
#[derive(Debug, Deserialize)]
struct JoinQuery {
    /// A room token, when the server needs one.
    token: Option<String>,
    /// A `resume` token from an earlier `welcome`.
    resume: Option<String>,
    /// The client's Ed25519 public key (64 hex digits): its id is then the key's hash.
    key: Option<String>,
    /// With `key`: the Unix time (seconds) the proof was made.
    ts: Option<String>,
    /// With `key`: the signature of `swarm-join\n{room}\n{ts}` (128 hex digits).
    proof: Option<String>,
}

/// Size of each WebSocket's read buffer, allocated at the upgrade and kept for the life of the
/// connection (it grows for a larger frame). tungstenite's default of 128 KiB would make every
/// idle connection cost a quarter of a megabyte with the write buffer; frames are mostly a few
/// hundred bytes, so 1 KiB costs little in extra reads.
const READ_BUFFER: usize = 1024;

/// Bytes of queued frames gathered before they are written to the socket (a batch is flushed
/// at its end anyway).
const WRITE_BUFFER: usize = 4 * 1024;

/// The whole HTTP surface:
/// - `GET /ws/{room}`: WebSocket upgrade into `room` (HTTP 400 for an invalid room name);
/// - `GET /healthz`: `ok` while the server runs;
/// - `GET /metrics`: counters in the Prometheus text format;
/// - everything else: files from [`crate::Config::www`], revalidated on every load so a
///   rebuilt client is picked up at once.
pub fn app(state: AppState) -> Router {
    let static_files = ServeDir::new(&state.config().www).append_index_html_on_directories(true);
    Router::new()
        .route("/ws/{room}", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback_service(SetResponseHeader::if_not_present(
            static_files,
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.render_metrics(),
    )
}

async fn websocket(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<JoinQuery>, QueryRejection>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The room is checked first, so a bad name is a 400 whether or not this is an upgrade.
    let room = match RoomName::new(room) {
        Ok(room) => room,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let query = query.map(|Query(query)| query).ok();
    let client_ip = client_ip(state.config(), client.map(|Extension(c)| c.0), &headers);
    // Refusals are told over the WebSocket (an error frame, then a close code), since a
    // browser cannot read the HTTP status of a failed upgrade.
    let admission = admit(&state, &room, query.as_ref(), client_ip, &headers);
    let hard_limit = state.config().hard_frame_limit();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            let tracker = state.connections().clone();
            tracker.track_future(async move {
                match admission {
                    Ok((slot, claim)) => connection::serve(socket, state, room, slot, claim).await,
                    Err(refusal) => connection::refuse(socket, &state, refusal).await,
                }
            })
        })
}

/// The checks before a client may join: page origin, room token, key proof, connections per
/// address. Returns the client's place in the per-address count and the id it claims.
fn admit(
    state: &AppState,
    room: &RoomName,
    query: Option<&JoinQuery>,
    client_ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<(Option<IpSlot>, Claim), Refusal> {
    let param = |get: fn(&JoinQuery) -> &Option<String>| query.and_then(|q| get(q).as_deref());
    let config = state.config();
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(not text)"));
    if !origin_allowed(&config.allowed_origins, origin) {
        return Err(Refusal::new(
            ErrorCode::OriginNotAllowed,
            format!(
                "pages from {} may not use this server",
                origin.unwrap_or("")
            ),
        ));
    }
    if let Some(secret) = &config.token_secret {
        check_token(secret, room, param(|q| &q.token), unix_now())
            .map_err(|err| Refusal::new(ErrorCode::Unauthorized, err.to_string()))?;
    }
    let keyed = match param(|q| &q.key) {
        Some(key) => {
            let ts = param(|q| &q.ts).and_then(|ts| ts.parse().ok());
            let id = verify_join(room, key, ts, param(|q| &q.proof), unix_now())
                .map_err(|err| Refusal::new(ErrorCode::InvalidKey, err.to_string()))?;
            Some(id)
        }
        None => None,
    };
    let resume =
        param(|q| &q.resume).and_then(|token| check_resume(state.resume_key(), room, token));
    let claim = Claim { keyed, resume };
    let Some(ip) = client_ip else {
        return Ok((None, claim));
    };
    match state.ip_slots().acquire(ip) {
        Some(slot) => Ok((Some(slot), claim)),
        None => Err(Refusal::new(
            ErrorCode::TooManyConnections,
            format!(
                "{ip} already has {} connections open",
                config.limits.connections_per_ip
            ),
        )),
    }
}

/// The client's address: the TCP peer, or behind a trusted proxy the last
/// `X-Forwarded-For` entry.
fn client_ip(config: &Config, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    if config.trust_forwarded_for {
        // The proxy appends the address it saw, so only the last entry is trustworthy.
        let last = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if last.is_some() {
            return last;
        }
    }
    peer.map(|addr| addr.ip())
}
