//! File sharing in the browser: pieces are read from the shared `File`s or from storage,
//! verified pieces are written to storage by its worker, downloads end as Blobs. What to
//! read, write and send is the node's decision; this module carries it out and reports the
//! results back through the inbox.

use std::rc::Rc;

use js_sys::{Array, Object, Reflect, Uint8Array};
use swarm_core::merkle::ManifestBuilder;
use swarm_core::node::{ReadPiece, WritePiece};
use swarm_core::share::FileInfo;
use swarm_protocol::content::{DEFAULT_PIECE_SIZE, Manifest};
use swarm_protocol::{ContentId, PeerId};
use tracing::{info, warn};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::Blob;

use crate::download_state::DownloadState;
use crate::error::ClientError;
use crate::inbox::Event;
use crate::notice::Notice;
use crate::state::State;
use crate::storage::{self, Storage};
use crate::timer::now_ms;

/// Bytes read from a shared file at a time while hashing it.
const HASH_READ_LEN: u64 = 16 * DEFAULT_PIECE_SIZE as u64;

/// A `FileInfo` as the JavaScript object the API documents.
pub(crate) fn file_object(info: &FileInfo) -> JsValue {
    let object = Object::new();
    let set = |key: &str, value: JsValue| {
        let _ = Reflect::set(&object, &key.into(), &value);
    };
    set("id", info.id.to_string().into());
    set("name", info.name.as_str().into());
    set("size", (info.size as f64).into());
    set("mime", info.mime.as_str().into());
    set("sources", (info.sources as u32).into());
    set("complete", info.complete.into());
    object.into()
}

/// Hashes `blob` piece by piece: its content id and manifest.
pub(crate) async fn manifest_of(
    blob: &Blob,
    name: String,
) -> Result<(ContentId, Manifest), ClientError> {
    let size = blob.size() as u64;
    let mut builder = ManifestBuilder::new(name, blob.type_(), DEFAULT_PIECE_SIZE);
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(HASH_READ_LEN);
        // At most HASH_READ_LEN, which fits in u32.
        let bytes = storage::read_blob(blob, offset, len as u32).await?;
        for piece in bytes.chunks(DEFAULT_PIECE_SIZE as usize) {
            builder.piece(piece);
        }
        offset += len;
    }
    builder
        .finish()
        .map_err(|_| ClientError::FileTooLarge(size))
}

impl State {
    /// The storage worker (started at `join`).
    pub(crate) fn storage(&self) -> Result<Rc<Storage>, ClientError> {
        self.storage.clone().ok_or_else(|| {
            ClientError::Storage("no storage worker could start in this page".into())
        })
    }

    /// The room's files: ours, our neighbours', and those heard of by gossip.
    pub(crate) fn files_list(&self) -> Vec<FileInfo> {
        self.node.files()
    }

    /// The Blob holding `id`, if we shared it or finished downloading it.
    pub(crate) fn blob(&self, id: ContentId) -> Option<Blob> {
        self.blobs.get(&id).cloned()
    }

    /// Offers content we hold as `blob` to the room.
    pub(crate) fn share(&mut self, id: ContentId, manifest: Manifest, blob: Blob) {
        info!(%id, size = manifest.size, "sharing");
        self.blobs.insert(id, blob);
        self.keep_shared(id, &manifest);
        self.node.share(id, manifest, now_ms());
        self.flush();
    }

    /// Starts (or rejoins) the download of `id`.
    pub(crate) fn start_download(&mut self, id: &str) -> Result<Rc<DownloadState>, ClientError> {
        self.check_joined()?;
        let id: ContentId = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        if let Some(download) = self.downloads.get(&id) {
            return Ok(Rc::clone(download));
        }
        if let Some(download) = self.download_kept(id) {
            self.flush();
            return Ok(download);
        }
        let info = self.node.file(id);
        let Some(info) = info.filter(|f| f.sources > 0 || f.complete) else {
            return Err(ClientError::UnknownContent(id.to_string()));
        };
        // Refuse before any transfer if there is no storage, or the file cannot fit.
        let estimate = if info.complete {
            None
        } else {
            Some(self.storage()?.estimate())
        };
        let download = Rc::new(DownloadState::new(id, info.size));
        self.downloads.insert(id, Rc::clone(&download));
        let Some(estimate) = estimate else {
            // Completes at once (`Event::Completed`).
            if let Err(err) = self.node.download(id, now_ms()) {
                warn!(%id, error = %err, "cannot complete a held file");
            }
            self.flush();
            return Ok(download);
        };
        let inbox = self.inbox().clone();
        spawn_local(async move {
            let free = match estimate.await {
                Ok(Some((quota, usage))) => Some(quota - usage),
                _ => None,
            };
            inbox.post(Event::SpaceChecked { id, free });
        });
        Ok(download)
    }

    /// The storage quota of download `id` is known: start it in the node if it fits.
    pub(crate) fn on_space_checked(&mut self, id: ContentId, free: Option<f64>) {
        let Some(size) = self.downloads.get(&id).map(|d| d.total()) else {
            return; // cancelled meanwhile
        };
        if let Some(free) = free
            && free < size as f64
        {
            let error = ClientError::StorageQuota {
                needed: size,
                available: free as u64,
            };
            return self.fail_download(id, error);
        }
        if let Err(err) = self.storage() {
            return self.fail_download(id, err);
        }
        if self.node.download(id, now_ms()).is_err() {
            self.fail_download(id, ClientError::UnknownContent(id.to_string()));
        }
    }

    /// Cancels the download of `id`.
    pub(crate) fn cancel_download(&mut self, id: ContentId) {
        match self.node.cancel(id, now_ms()) {
            // `Event::Cancelled` follows.
            Ok(()) => self.flush(),
            // Not started in the node yet (still checking the quota).
            Err(_) => self.fail_download(id, ClientError::Cancelled(id.to_string())),
        }
    }

    /// Ends the download of `id` with `err`: the node gives it up, its range requests and
    /// its `blob()` fail, and what it stored is deleted, unless the page only left the room
    /// (a reload, or `leave()`): then it is kept, to resume from.
    pub(crate) fn fail_download(&mut self, id: ContentId, err: ClientError) {
        warn!(%id, error = %err, "download failed");
        self.node.abandon(id, now_ms());
        self.fail_ranges(id, &err);
        let keep = matches!(err, ClientError::Left);
        if let Some(download) = self.downloads.remove(&id) {
            self.notify(Notice::Failed(download, err));
        }
        if keep {
            return;
        }
        self.unkeep(id);
        if let Some(storage) = &self.storage {
            let removed = storage.remove(&id.to_string());
            spawn_local(async move {
                let _ = removed.await; // failures are logged by the worker
            });
        }
    }

    /// Which pieces we and each source have, for a content whose manifest is known:
    /// `{count, have: Uint8Array, peers: [{id, have: Uint8Array}]}`, bits packed most
    /// significant first.
    pub(crate) fn piece_map(&self, id: ContentId) -> JsValue {
        let (Some(manifest), Some(stored)) = (self.node.manifest(id), self.node.stored(id)) else {
            return JsValue::NULL;
        };
        let object = Object::new();
        let _ = Reflect::set(&object, &"count".into(), &manifest.piece_count().into());
        let _ = Reflect::set(
            &object,
            &"have".into(),
            &Uint8Array::from(stored.as_bytes()),
        );
        let peers = Array::new();
        for (peer, field) in self.node.source_pieces(id) {
            let entry = Object::new();
            let _ = Reflect::set(&entry, &"id".into(), &peer.to_string().into());
            let _ = Reflect::set(&entry, &"have".into(), &Uint8Array::from(field.as_bytes()));
            peers.push(&entry);
        }
        let _ = Reflect::set(&object, &"peers".into(), &peers);
        object.into()
    }

    /// Reads a piece asked for by a peer, from the Blob or from storage.
    pub(crate) fn read_piece(&mut self, read: ReadPiece) {
        let ReadPiece {
            id,
            piece,
            offset,
            len,
            ..
        } = read;
        let blob = self.blob(id);
        let storage = self.storage.clone();
        let reads = Rc::clone(&self.blob_reads);
        let inbox = self.inbox().clone();
        let now = now_ms();
        spawn_local(async move {
            let bytes = match (blob, storage) {
                (Some(blob), _) => reads.read(id, &blob, offset, len, now).await,
                (None, Some(storage)) => storage.read(&id.to_string(), offset, len).await,
                (None, None) => Err(ClientError::Storage("nothing holds this content".into())),
            };
            let data = bytes
                .map_err(|err| warn!(%id, piece, error = %err, "cannot read a piece to serve"))
                .ok();
            inbox.post(Event::PieceRead { read, data });
        });
    }

    /// Writes a piece through the storage worker; with a `check`, the worker hashes it first
    /// and writes it only if it matches.
    pub(crate) fn write_piece(&mut self, write: WritePiece) {
        let storage = match self.storage() {
            Ok(storage) => storage,
            Err(err) => return self.fail_download(write.id, err),
        };
        // Posted now, so writes reach the worker in order.
        let expected = write.check.as_ref().map(|c| &c.expected);
        let written = storage.write(
            &write.id.to_string(),
            write.offset,
            write.piece,
            &write.data,
            expected,
        );
        let inbox = self.inbox().clone();
        let (id, piece, from) = (write.id, write.piece, write.check.map(|c| c.from));
        spawn_local(async move {
            let result = written.await;
            inbox.post(Event::PieceWritten {
                id,
                piece,
                from,
                result,
            });
        });
    }

    pub(crate) fn on_piece_written(
        &mut self,
        id: ContentId,
        piece: u32,
        from: Option<PeerId>,
        result: Result<bool, ClientError>,
    ) {
        match result {
            Ok(stored) => {
                let input = swarm_core::node::Input::PieceStored {
                    id,
                    piece,
                    from,
                    stored,
                };
                self.node.handle(input, now_ms());
                if stored {
                    self.refresh_ranges(id);
                }
            }
            // A download already given up may still have writes in flight.
            Err(err) if self.downloads.contains_key(&id) => self.fail_download(id, err),
            Err(err) => warn!(%id, piece, error = %err, "a write of a finished download failed"),
        }
    }

    /// A download's manifest is known: open its file in storage.
    pub(crate) fn on_manifest_ready(&mut self, id: ContentId, manifest: &Manifest) {
        match self.storage() {
            Ok(storage) => {
                self.keep_download(id, manifest);
                let opened = storage.open(
                    &id.to_string(),
                    manifest.size,
                    manifest.piece_size,
                    &manifest.encode(),
                );
                let inbox = self.inbox().clone();
                spawn_local(async move {
                    if let Err(error) = opened.await {
                        inbox.post(Event::StorageFailed { id, error });
                    }
                });
                self.refresh_ranges(id);
            }
            Err(err) => self.fail_download(id, err),
        }
    }

    /// Every piece is stored: close the file and hand it out as a Blob.
    pub(crate) fn finish_download(&mut self, id: ContentId) {
        let Some(download) = self.downloads.remove(&id) else {
            return;
        };
        if let Some(blob) = self.blob(id) {
            self.notify(Notice::Done(download, blob));
            return;
        }
        self.finishing.insert(id, download);
        let storage = self.storage.clone();
        let inbox = self.inbox().clone();
        spawn_local(async move {
            let name = id.to_string();
            let result = match storage {
                Some(storage) => storage.close(&name).await,
                None => Err(ClientError::Storage("no storage".into())),
            };
            inbox.post(Event::Finished { id, result });
        });
    }

    pub(crate) fn on_finished(&mut self, id: ContentId, result: Result<Blob, ClientError>) {
        let Some(download) = self.finishing.remove(&id) else {
            return;
        };
        match result {
            Ok(blob) => {
                info!(%id, "download complete");
                self.keep_complete(id);
                self.blobs.insert(id, blob.clone());
                self.notify(Notice::Done(download, blob));
                self.emit("files", Vec::new());
                self.refresh_ranges(id);
            }
            Err(err) => self.notify(Notice::Failed(download, err)),
        }
    }
}
