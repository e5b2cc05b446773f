//! The `Download` class: one content being fetched, with progress events and the finished
//! file as a Blob.

use std::rc::{Rc, Weak};

use js_sys::Promise;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::download_state::DownloadState;
use crate::shell::Shell;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Where a download stands. */
export interface DownloadProgress {
  /** Verified bytes. */
  received: number;
  /** File length in bytes. */
  total: number;
  /** Peers it is fetching from. */
  peers: number;
  /** Speed over the last two seconds. */
  bytesPerSecond: number;
  /** Piece bytes received from each peer so far, by peer id. */
  from: Record<string, number>;
}

/** Events a Download emits, and the arguments its listeners receive. */
export interface DownloadEvents {
  "progress": (progress: DownloadProgress) => void;
  /** Every piece is verified and stored; the file is ready. */
  "done": (file: Blob) => void;
  /** The download ended without the file (`err.code`: "cancelled", "storage", "storage-quota", …). */
  "error": (err: Error) => void;
  /** A peer sent data that failed verification and is no longer used for this file. */
  "bad-peer": (peerId: string, reason: string) => void;
}
"#;

/// One content being fetched from the room.
#[wasm_bindgen]
pub struct Download {
    state: Rc<DownloadState>,
    shell: Weak<Shell>,
}

impl Download {
    pub(crate) fn new(state: Rc<DownloadState>, shell: Weak<Shell>) -> Self {
        Self { state, shell }
    }
}

#[wasm_bindgen]
impl Download {
    /// The content id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.state.id().to_string()
    }

    /// The latest progress.
    #[wasm_bindgen(getter, unchecked_return_type = "DownloadProgress")]
    pub fn progress(&self) -> JsValue {
        self.state.progress()
    }

    /// Registers `listener` for `event`: `'progress'`, `'done'`, `'error'` or `'bad-peer'`.
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "keyof DownloadEvents")] event: &str,
        #[wasm_bindgen(unchecked_param_type = "DownloadEvents[keyof DownloadEvents]")]
        listener: JsValue,
    ) -> Result<(), JsValue> {
        Ok(self.state.listen(event, listener)?)
    }

    /// Resolves with the file (a Blob backed by the browser's storage, not by memory) once
    /// every piece is verified; rejects with a `SwarmError` if the download fails or is
    /// cancelled.
    #[wasm_bindgen(unchecked_return_type = "Promise<Blob>")]
    pub fn blob(&self) -> Promise {
        self.state.blob()
    }

    /// Stops the download and deletes what it stored; `blob()` rejects with `cancelled`.
    /// Does nothing once the download has finished.
    pub fn cancel(&self) {
        if !self.state.is_pending() {
            return;
        }
        match self.shell.upgrade() {
            Some(shell) => shell.cancel_download(&self.state),
            None => self.state.fail(crate::error::ClientError::Cancelled(
                self.state.id().to_string(),
            )),
        }
    }
}
