//! What the client must tell JavaScript: collected while the state is borrowed, delivered
//! by the shell once it is not (see [`crate::shell`]).

use std::rc::Rc;

use js_sys::Function;
use swarm_core::share::Progress;
use swarm_protocol::PeerId;
use wasm_bindgen::JsValue;
use web_sys::Blob;

use crate::download_state::DownloadState;
use crate::error::ClientError;

/// Something to tell JavaScript once the state is no longer borrowed.
pub(crate) enum Notice {
    /// Call the application's listeners of a `Swarm` event.
    Emit(&'static str, Vec<JsValue>),
    /// Settle a promise: call its `resolve` or `reject` with the value.
    Settle(Function, JsValue),
    /// A download made progress.
    Progress(Rc<DownloadState>, Progress<PeerId>),
    /// A download dropped a peer that sent bad data.
    BadPeer(Rc<DownloadState>, PeerId, &'static str),
    /// A download is complete.
    Done(Rc<DownloadState>, Blob),
    /// A download failed.
    Failed(Rc<DownloadState>, ClientError),
    /// The swarm left its room: its listeners go.
    Left,
}
