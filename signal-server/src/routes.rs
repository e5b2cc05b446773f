//! HTTP routes.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use swarm_core::identity::verify_join;
use swarm_protocol::{ErrorCode, RoomName};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::access::{check_resume, check_token, origin_allowed, unix_now};
use crate::connection::{self, Admitted, Claim, KeyProof, PROOF_USED, Refusal};
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

/// Longest path segment a static file request may have, in bytes once percent-decoded: the
/// longest file name Linux and most file systems allow.
const MAX_SEGMENT_LEN: usize = 255;

/// Longest path a static file request may have, in bytes once percent-decoded (well below
/// the 4,096 bytes Linux allows for a whole path, `--www` included).
const MAX_PATH_LEN: usize = 2048;

/// The whole HTTP surface:
/// - `GET /ws/{room}`: WebSocket upgrade into `room` (HTTP 400 for an invalid room name);
/// - `GET /healthz`: `ok` while the server runs;
/// - `GET /metrics`: counters in the Prometheus text format;
/// - everything else: files from [`crate::Config::www`], revalidated on every load so a
///   rebuilt client is picked up at once (see [`static_file`]).
///
/// Every response says `X-Content-Type-Options: nosniff`.
pub fn app(state: AppState) -> Router {
    let files = ServeDir::new(&state.config().www).append_index_html_on_directories(true);
    Router::new()
        .route("/ws/{room}", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(move |State(state): State<AppState>, request: Request| {
            static_file(files.clone(), state, request)
        })
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// A file from `--www`, with `Cache-Control: no-cache` and (unless turned off) the page's
/// [`content_security_policy`]. A path that no file can have (a segment over 255 bytes, or
/// over 2,048 bytes in all) is answered 414 without touching the disk, and a redirect (to a
/// directory's trailing slash) never points at another host.
async fn static_file(files: ServeDir, state: AppState, request: Request) -> Response {
    if !path_fits(request.uri().path()) {
        return (StatusCode::URI_TOO_LONG, "path too long\n").into_response();
    }
    let Ok(response) = files.oneshot(request).await;
    let mut response = response.map(axum::body::Body::new);
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    if let Some(location) = headers.get(header::LOCATION)
        && let Some(local) = same_host_location(location)
    {
        headers.insert(header::LOCATION, local);
    }
    if state.config().content_security_policy {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

/// Whether `path` (as sent, percent-encoded) fits [`MAX_SEGMENT_LEN`] and [`MAX_PATH_LEN`]
/// once decoded.
fn path_fits(path: &str) -> bool {
    decoded_len(path) <= MAX_PATH_LEN && path.split('/').all(|s| decoded_len(s) <= MAX_SEGMENT_LEN)
}

/// The length in bytes of `text` once percent-decoded: each `%XX` is one byte.
fn decoded_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut len, mut i) = (0, 0);
    while i < bytes.len() {
        let escaped = bytes[i] == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        i += if escaped { 3 } else { 1 };
        len += 1;
    }
    len
}

/// For a `Location` that a browser would read as another host (`//host/…`, or `/\host/…`,
/// which browsers treat alike), the same path on this host: its leading slashes and
/// backslashes folded into one slash. `None` for any other location.
fn same_host_location(location: &HeaderValue) -> Option<HeaderValue> {
    let location = location.to_str().unwrap_or("//");
    let path = location.trim_start_matches(['/', '\\']);
    if location.len() - path.len() < 2 && !location.starts_with('\\') {
        return None;
    }
    HeaderValue::from_str(&format!("/{path}")).ok()
}

/// The `Content-Security-Policy` of the bundled page (`www/`): its own scripts and module
/// worker, WebAssembly (`'wasm-unsafe-eval'`), the storage worker it starts from a `blob:`
/// URL and the streaming service worker, WebSockets to any signalling server (`Swarm.join`
/// takes any server's URL, not only this one's), `blob:` media and images, the `data:` icon,
/// and no framing by other pages (`frame-ancestors 'none'`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     worker-src 'self' blob:; connect-src 'self' ws: wss:; img-src 'self' data: blob:; \
     media-src 'self' blob:; style-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

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
                    Ok(admitted) => connection::serve(socket, state, room, admitted).await,
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
) -> Result<Admitted, Refusal> {
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
    let now = unix_now();
    let keyed = match param(|q| &q.key) {
        Some(key) => {
            let ts = param(|q| &q.ts).and_then(|ts| ts.parse().ok());
            let id = verify_join(room, key, ts, param(|q| &q.proof), now)
                .map_err(|err| Refusal::new(ErrorCode::InvalidKey, err.to_string()))?;
            // verify_join refuses a proof without a time.
            let ts = ts.unwrap_or_default();
            if !state.take_proof(id, ts, now) {
                return Err(Refusal::new(ErrorCode::InvalidKey, PROOF_USED));
            }
            Some(KeyProof { id, ts })
        }
        None => None,
    };
    let resume =
        param(|q| &q.resume).and_then(|token| check_resume(state.resume_key(), room, token));
    let claim = Claim { keyed, resume };
    let Some(ip) = client_ip else {
        return Ok(Admitted {
            slot: None,
            claim,
            ip: None,
        });
    };
    match state.ip_slots().acquire(ip) {
        Some(slot) => Ok(Admitted {
            slot: Some(slot),
            claim,
            ip: Some(ip),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_that_name_another_host_are_folded_onto_this_one() {
        let fold = |l: &'static str| same_host_location(&HeaderValue::from_static(l));
        assert_eq!(fold("//pkg/"), Some(HeaderValue::from_static("/pkg/")));
        assert_eq!(
            fold("/\\evil.example/"),
            Some(HeaderValue::from_static("/evil.example/"))
        );
        assert_eq!(
            fold("\\\\evil.example/"),
            Some(HeaderValue::from_static("/evil.example/"))
        );
        assert_eq!(fold("/pkg/"), None);
        assert_eq!(fold("http://x/pkg/"), None);
    }

    #[test]
    fn paths_are_measured_percent_decoded() {
        assert_eq!(decoded_len("%61%62c"), 3);
        assert_eq!(decoded_len("%6"), 2, "a broken escape counts as it is");
        assert!(path_fits(&format!("/{}", "%61".repeat(255))));
        assert!(!path_fits(&format!("/{}", "a".repeat(256))));
    }
}
