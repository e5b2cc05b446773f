//! Browser client of the swarm, compiled to WebAssembly. It joins a room through the
//! signalling server, then talks to every other peer directly over WebRTC data channels.
//!
//! ```js
//! import init, { Swarm } from './pkg/client_wasm.js';
//! await init();
//! const swarm = await Swarm.join('ws://127.0.0.1:8080', 'demo');
//! swarm.on('message', (from, data) => console.log(from, data));
//! swarm.broadcast('hello');
//! ```
//!
//! # Layout
//! Dependencies point down this list; nothing below the facade calls up into it.
//! - `swarm`, `download`: the `#[wasm_bindgen]` facade, the [`Swarm`] and [`Download`]
//!   classes a web page uses; `streaming`: `streamUrl` and the range reader of the streaming
//!   bridge (media files that play while they download, through the service worker
//!   `www/swarm-sw.js` and the page bridge `js/stream.js`).
//! - `shell`: the one owner of a room's state. JavaScript callbacks only post events to its
//!   inbox; it handles them one at a time from a microtask of its own, then delivers what
//!   the page must hear, so no callback runs while the state is borrowed.
//! - `state`: what one joined room holds, and how inbox events and the outputs of
//!   `swarm-core`'s [`Node`](swarm_core::node::Node) (every rule of the room and of file
//!   sharing) become browser calls; `files`, `media`, `ranges`: its file, media and
//!   range-request parts.
//! - `notice`: what the state tells JavaScript, delivered by the shell; `download_state`:
//!   a download's progress, outcome and waiting promises.
//! - `signalling`: the WebSocket to the signalling server.
//! - `peer`: one `RTCPeerConnection` per remote peer, negotiated with the perfect-negotiation
//!   pattern from `swarm-core`.
//! - `channel`: the `swarm` data channel of one peer connection, with `swarm-core`'s send
//!   queue, which respects `bufferedAmount`.
//! - `storage`: downloads in the Origin Private File System, written by a worker
//!   (`js/storage-worker.js`) with synchronous access handles; `blob_reads`: shared files
//!   read 4 MiB at a time.
//! - `inbox`: the events callbacks post; `timer`: the monotonic clock and timeouts;
//!   `events`: the listeners registered with `on`; `options`: the options of `join`;
//!   `upload_cap`: a test-only upload rate cap (for the seeder-scaling benchmark);
//!   `error`: every error the API can throw, each with a stable `code`.
//!
//! Every JavaScript callback (`Closure`) is owned by the struct that registered it and is
//! unregistered when that struct is dropped, so nothing leaks as peers come and go. Callbacks
//! hold only weak references to the shell's inbox.

mod blob_reads;
mod channel;
mod download;
mod download_state;
mod error;
mod events;
mod files;
mod inbox;
mod library;
mod media;
mod notice;
mod options;
mod peer;
mod ranges;
mod shell;
mod signalling;
mod state;
mod storage;
mod streaming;
mod swarm;
mod timer;
mod upload_cap;

pub use download::Download;
pub use swarm::Swarm;

use wasm_bindgen::prelude::wasm_bindgen;

/// Runs when the module is instantiated: routes `tracing` logs (info and above) to the
/// browser console. Calling it again changes nothing.
#[wasm_bindgen(start)]
fn start() {
    use tracing_subscriber::layer::SubscriberExt;
    let config = tracing_wasm::WASMLayerConfigBuilder::new()
        .set_max_level(tracing::Level::INFO)
        .set_report_logs_in_timings(false)
        .build();
    let subscriber = tracing_subscriber::registry().with(tracing_wasm::WASMLayer::new(config));
    // Fails only when a subscriber is already installed, which is fine.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
