//! HTTP routes.

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use swarm_protocol::RoomName;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

use crate::AppState;
use crate::connection;

/// Size of each WebSocket's read and write buffers. tungstenite's default of 128 KiB per
/// buffer would make every idle connection cost a quarter of a megabyte.
const SOCKET_BUFFER: usize = 4 * 1024;

/// The whole HTTP surface:
/// - `GET /ws/{room}`: WebSocket upgrade into `room` (HTTP 400 for an invalid room name);
/// - `GET /healthz`: `ok` while the server runs;
/// - everything else: files from [`crate::Config::www`], revalidated on every load so a
///   rebuilt client is picked up at once.
pub fn app(state: AppState) -> Router {
    let static_files = ServeDir::new(&state.config().www).append_index_html_on_directories(true);
    Router::new()
        .route("/ws/{room}", get(websocket))
        .route("/healthz", get(healthz))
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

async fn websocket(
    State(state): State<AppState>,
    Path(room): Path<String>,
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
    let hard_limit = state.config().hard_frame_limit();
    upgrade
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            let tracker = state.connections().clone();
            tracker.track_future(connection::serve(socket, state, room))
        })
}
