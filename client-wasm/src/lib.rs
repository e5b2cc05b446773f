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
//! - `swarm`: the `#[wasm_bindgen]` facade, the [`Swarm`] class a web page uses.
//! - `session`: everything one joined room holds, and the dispatch between the signalling
//!   socket, the peer connections and the application. Decisions come from `swarm-core`'s
//!   [`Mesh`](swarm_core::mesh::Mesh); this module only carries them out.
//! - `signalling`: the WebSocket to the signalling server.
//! - `peer`: one `RTCPeerConnection` per remote peer, negotiated with the perfect-negotiation
//!   pattern from `swarm-core`.
//! - `channel`: the `swarm` data channel of one peer connection, with a send queue that
//!   respects `bufferedAmount`.
//! - `files`: file sharing: carries out the decisions of `swarm-core`'s `Share` engine.
//! - `media`: live media: publishing local streams to every peer, remote stream events.
//! - `download`: the [`Download`] class (progress events, the finished file as a Blob).
//! - `streaming`: media files that play while they download, through a service worker
//!   (`www/swarm-sw.js`) and the page bridge `js/stream.js`.
//! - `storage`: downloads in the Origin Private File System, written by a worker
//!   (`js/storage-worker.js`) with synchronous access handles.
//! - `ticker`: the periodic timer that drives timeouts.
//! - `upload_cap`: a test-only upload rate cap (for the seeder-scaling benchmark).
//! - `events`: the listeners registered with `on`.
//! - `error`: every error the API can throw, each with a stable `code`.
//!
//! Every JavaScript callback (`Closure`) is owned by the struct that registered it and is
//! unregistered when that struct is dropped, so nothing leaks as peers come and go. Callbacks
//! hold only weak references to the session.

mod blob_reads;
mod channel;
mod download;
mod error;
mod events;
mod files;
mod media;
mod options;
mod peer;
mod session;
mod signalling;
mod storage;
mod streaming;
mod swarm;
mod ticker;
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
