//! File sharing in the browser: carries out what `swarm-core`'s [`Share`] engine decides.
//! Frames go out through each peer's data channel, pieces are read from the shared `File`s
//! or from storage, verified pieces are written to storage, and events reach the page.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect, Uint8Array};
use swarm_core::merkle::ManifestBuilder;
use swarm_core::share::{FailReason, FileInfo, Output, PieceCheck, Share, ShareConfig, ShareEvent};
use swarm_protocol::content::DEFAULT_PIECE_SIZE;
use swarm_protocol::{ContentId, PeerId, PeerMsg};
use tracing::{info, warn};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::Blob;

use crate::blob_reads::BlobReads;
use crate::download::DownloadState;
use crate::error::ClientError;
use crate::session::Session;
use crate::storage::{self, Storage};
use crate::upload_cap::UploadCap;

/// Bytes read from a shared file at a time while hashing it.
const HASH_READ_LEN: u64 = 16 * DEFAULT_PIECE_SIZE as u64;

/// The file-sharing state of one session.
pub(crate) struct Files {
    pub(crate) share: RefCell<Share<PeerId>>,
    storage: RefCell<Option<Rc<Storage>>>,
    /// Content held as a Blob: files we shared, and finished downloads.
    blobs: RefCell<HashMap<ContentId, Blob>>,
    /// Blocks of those Blobs read lately, to serve pieces from.
    blob_reads: Rc<BlobReads>,
    downloads: RefCell<HashMap<ContentId, Rc<DownloadState>>>,
    upload_cap: Rc<UploadCap>,
}

impl Files {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            share: RefCell::new(Share::new(
                ShareConfig {
                    // Hashed by the storage worker with the browser's SHA-256.
                    owner_checks_pieces: Storage::can_hash(),
                    ..ShareConfig::default()
                },
                seed,
            )),
            storage: RefCell::new(None),
            blobs: RefCell::new(HashMap::new()),
            blob_reads: Rc::default(),
            downloads: RefCell::new(HashMap::new()),
            upload_cap: Rc::default(),
        }
    }

    /// The storage worker, started on first use.
    fn storage(&self) -> Result<Rc<Storage>, ClientError> {
        if let Some(storage) = self.storage.borrow().as_ref() {
            return Ok(Rc::clone(storage));
        }
        let storage = Rc::new(Storage::start()?);
        *self.storage.borrow_mut() = Some(Rc::clone(&storage));
        Ok(storage)
    }

    pub(crate) fn list(&self) -> Vec<FileInfo> {
        self.share.borrow().files()
    }

    /// The Blob holding `id`, if we shared it or finished downloading it.
    pub(crate) fn blob(&self, id: ContentId) -> Option<Blob> {
        self.blobs.borrow().get(&id).cloned()
    }

    pub(crate) fn has_bytes(&self, id: ContentId, start: u64, len: u64) -> bool {
        self.share.borrow().has_bytes(id, start, len)
    }

    /// Bytes from `start` of `id`, up to `max`, stored without a gap.
    pub(crate) fn stored_run(&self, id: ContentId, start: u64, max: u64) -> u64 {
        self.share.borrow().stored_run(id, start, max)
    }

    /// Reads stored bytes of a download in progress.
    pub(crate) async fn read_stored(
        &self,
        id: ContentId,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let storage = self.storage()?;
        storage.read(&id.to_string(), offset, len).await
    }
}

/// Milliseconds on the wall clock, the time base of the sharing engine.
pub(crate) fn now() -> u64 {
    js_sys::Date::now() as u64
}

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

impl Session {
    /// A channel to `peer` opened: start speaking the peer protocol.
    pub(crate) fn files_peer_open(self: &Rc<Self>, peer: PeerId) {
        let out = self.files.share.borrow_mut().add_peer(peer);
        self.apply_share(out);
    }

    /// The channel to `peer` closed.
    pub(crate) fn files_peer_closed(self: &Rc<Self>, peer: PeerId) {
        let out = self.files.share.borrow_mut().remove_peer(peer, now());
        self.apply_share(out);
    }

    pub(crate) fn files_message(self: &Rc<Self>, peer: PeerId, msg: PeerMsg<'_>) {
        let out = self.files.share.borrow_mut().on_message(peer, msg, now());
        self.apply_share(out);
    }

    pub(crate) fn files_tick(self: &Rc<Self>) {
        let out = self.files.share.borrow_mut().tick(now());
        self.apply_share(out);
        self.files.blob_reads.expire(now());
        // Frames held back by an upload cap go out as tokens come in.
        for link in self.all_links() {
            link.pump();
        }
    }

    /// Fetch these bytes of `id` (and what follows them) first.
    pub(crate) fn files_set_priority(
        &self,
        id: ContentId,
        bytes: Option<std::ops::Range<u64>>,
    ) -> Vec<Output<PeerId>> {
        self.files.share.borrow_mut().set_priority(id, bytes, now())
    }

    /// Everything queued for `peer` has gone to the browser: the engine reads the next pieces.
    pub(crate) fn files_upload_drained(self: &Rc<Self>, peer: PeerId) {
        let out = self.files.share.borrow_mut().upload_drained(peer);
        self.apply_share(out);
    }

    /// The upload cap every channel of this session obeys.
    pub(crate) fn upload_cap(&self) -> Rc<UploadCap> {
        Rc::clone(&self.files.upload_cap)
    }

    /// **Testing only**: corrupt every piece this peer serves.
    pub(crate) fn corrupt_uploads(&self, corrupt: bool) {
        self.files.share.borrow_mut().set_corrupt_uploads(corrupt);
    }

    /// Hashes `blob` piece by piece, then offers it to the room. Returns its content id.
    pub(crate) async fn share_blob(
        self: &Rc<Self>,
        blob: Blob,
        name: String,
    ) -> Result<ContentId, ClientError> {
        self.check_joined()?;
        let size = blob.size() as u64;
        let mut builder = ManifestBuilder::new(name, blob.type_(), DEFAULT_PIECE_SIZE);
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(HASH_READ_LEN);
            // At most HASH_READ_LEN, which fits in u32.
            let bytes = storage::read_blob(&blob, offset, len as u32).await?;
            for piece in bytes.chunks(DEFAULT_PIECE_SIZE as usize) {
                builder.piece(piece);
            }
            offset += len;
        }
        let (id, manifest) = builder
            .finish()
            .map_err(|_| ClientError::FileTooLarge(size))?;
        info!(%id, size, "sharing");
        self.check_joined()?;
        self.files.blobs.borrow_mut().insert(id, blob);
        let out = self.files.share.borrow_mut().share(id, manifest);
        self.apply_share(out);
        self.provide_held(id);
        self.emit("files", &[]);
        Ok(id)
    }

    /// Starts (or rejoins) the download of `id`.
    pub(crate) fn start_download(
        self: &Rc<Self>,
        id: &str,
    ) -> Result<Rc<DownloadState>, ClientError> {
        self.check_joined()?;
        let id: ContentId = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        if let Some(state) = self.files.downloads.borrow().get(&id) {
            return Ok(Rc::clone(state));
        }
        let info = self.files_list().into_iter().find(|f| f.id == id);
        let Some(info) = info.filter(|f| f.sources > 0 || f.complete) else {
            return Err(ClientError::UnknownContent(id.to_string()));
        };
        let state = DownloadState::new(id, Rc::downgrade(self), info.size);
        self.files
            .downloads
            .borrow_mut()
            .insert(id, Rc::clone(&state));
        if info.complete {
            let out = self.files.share.borrow_mut().download(id, now());
            self.apply_share(out.unwrap_or_default());
            return Ok(state);
        }
        let session = Rc::downgrade(self);
        let task_state = Rc::clone(&state);
        spawn_local(async move {
            // Refuse before any transfer if the file cannot fit.
            let free = storage::free_space().await;
            let Some(session) = session.upgrade() else {
                return;
            };
            if task_state.is_cancelled() {
                return;
            }
            if let Some(free) = free
                && free < info.size as f64
            {
                session.fail_download(
                    id,
                    ClientError::StorageQuota {
                        needed: info.size,
                        available: free as u64,
                    },
                );
                return;
            }
            if let Err(err) = session.files.storage() {
                session.fail_download(id, err);
                return;
            }
            match session.start_share_download(id) {
                Ok(out) => session.apply_share(out),
                Err(_) => session.fail_download(id, ClientError::UnknownContent(id.to_string())),
            }
        });
        Ok(state)
    }

    pub(crate) fn cancel_download(self: &Rc<Self>, id: ContentId) {
        let cancelled = self.files.share.borrow_mut().cancel(id);
        match cancelled {
            Ok(out) => self.apply_share(out),
            // Not started in the engine yet (still checking the quota).
            Err(_) => self.fail_download(id, ClientError::Cancelled(id.to_string())),
        }
    }

    /// Which pieces we and each source have, for a content whose manifest is known:
    /// `{count, have: Uint8Array, peers: [{id, have: Uint8Array}]}`, bits packed most
    /// significant first.
    pub(crate) fn piece_map(&self, id: ContentId) -> JsValue {
        let share = self.files.share.borrow();
        let (Some(manifest), Some(stored)) = (share.manifest(id), share.stored(id)) else {
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
        for (peer, field) in share.source_pieces(id) {
            let entry = Object::new();
            let _ = Reflect::set(&entry, &"id".into(), &peer.to_string().into());
            let _ = Reflect::set(&entry, &"have".into(), &Uint8Array::from(field.as_bytes()));
            peers.push(&entry);
        }
        let _ = Reflect::set(&object, &"peers".into(), &peers);
        object.into()
    }

    fn fail_download(self: &Rc<Self>, id: ContentId, err: ClientError) {
        warn!(%id, error = %err, "download failed");
        self.unwant(id);
        self.fail_ranges(id, &err);
        if let Some(state) = self.files.downloads.borrow_mut().remove(&id) {
            state.fail(err);
        }
        if let Ok(out) = self.files.share.borrow_mut().cancel(id) {
            // Only the frames: the download has already been reported as failed.
            let frames = out
                .into_iter()
                .filter(|o| matches!(o, Output::Send { .. }))
                .collect();
            self.apply_share(frames);
        }
        if let Some(storage) = self.files.storage.borrow().as_ref() {
            spawn_local(storage.remove(&id.to_string()).into_ignored());
        }
    }

    /// Carries out the engine's outputs.
    pub(crate) fn apply_share(self: &Rc<Self>, outputs: Vec<Output<PeerId>>) {
        for output in outputs {
            match output {
                Output::Send { to, frame } => {
                    if let Some(link) = self.link(to) {
                        link.send_frame(frame);
                    }
                }
                Output::ReadPiece {
                    to,
                    id,
                    piece,
                    offset,
                    len,
                } => {
                    self.read_piece(to, id, piece, offset, len);
                }
                Output::WritePiece {
                    id,
                    piece,
                    offset,
                    data,
                    check,
                } => {
                    self.write_piece(id, piece, offset, &data, check);
                }
                Output::Withdraw { to, id, piece } => {
                    if self.link(to).is_some_and(|link| link.withdraw(id, piece)) {
                        self.files_upload_drained(to);
                    }
                }
                Output::Stalled(peer) => {
                    warn!(%peer, "the link delivers nothing any more: closing it to connect again");
                    self.on_channel_closed(peer);
                }
                Output::Event(event) => self.on_share_event(event),
            }
        }
    }

    fn read_piece(self: &Rc<Self>, to: PeerId, id: ContentId, piece: u32, offset: u64, len: u32) {
        let blob = self.files.blobs.borrow().get(&id).cloned();
        let storage = self.files.storage.borrow().clone();
        let reads = Rc::clone(&self.files.blob_reads);
        let session = Rc::downgrade(self);
        spawn_local(async move {
            let bytes = match (blob, storage) {
                (Some(blob), _) => reads.read(id, &blob, offset, len, now()).await,
                (None, Some(storage)) => storage.read(&id.to_string(), offset, len).await,
                (None, None) => Err(ClientError::Storage("nothing holds this content".into())),
            };
            let Some(session) = session.upgrade() else {
                return;
            };
            let out = match bytes {
                Ok(bytes) => session
                    .files
                    .share
                    .borrow_mut()
                    .piece_read(to, id, piece, &bytes),
                Err(err) => {
                    warn!(%id, piece, error = %err, "cannot read a piece to serve");
                    session
                        .files
                        .share
                        .borrow_mut()
                        .piece_unreadable(to, id, piece)
                }
            };
            session.apply_share(out);
        });
    }

    /// Writes a piece through the storage worker; with a `check`, the worker hashes it first
    /// and writes it only if it matches.
    fn write_piece(
        self: &Rc<Self>,
        id: ContentId,
        piece: u32,
        offset: u64,
        data: &[u8],
        check: Option<PieceCheck<PeerId>>,
    ) {
        let storage = match self.files.storage() {
            Ok(storage) => storage,
            Err(err) => return self.fail_download(id, err),
        };
        // Posted now, so writes reach the worker in order.
        let written = storage.write(
            &id.to_string(),
            offset,
            data,
            check.as_ref().map(|c| &c.expected),
        );
        let session = Rc::downgrade(self);
        spawn_local(async move {
            let result = written.await;
            let Some(session) = session.upgrade() else {
                return;
            };
            match result {
                Ok(matched) => {
                    let out = {
                        let mut share = session.files.share.borrow_mut();
                        match check {
                            Some(c) => share.piece_checked(id, piece, c.from, matched, now()),
                            None => share.piece_stored(id, piece, now()),
                        }
                    };
                    session.apply_share(out);
                    if matched {
                        session.refresh_ranges(id);
                    }
                }
                Err(err) => session.fail_download(id, err),
            }
        });
    }

    fn on_share_event(self: &Rc<Self>, event: ShareEvent<PeerId>) {
        match event {
            ShareEvent::Offered(info) => {
                self.emit("file", &[file_object(&info)]);
                self.emit("files", &[]);
            }
            ShareEvent::SourcesChanged { .. } => self.emit("files", &[]),
            ShareEvent::ManifestReady { id, manifest } => match self.files.storage() {
                Ok(storage) => {
                    let opened = storage.open(&id.to_string(), manifest.size);
                    let session = Rc::downgrade(self);
                    spawn_local(async move {
                        if let Err(err) = opened.await
                            && let Some(session) = session.upgrade()
                        {
                            session.fail_download(id, err);
                        }
                    });
                    self.emit("files", &[]);
                    self.refresh_ranges(id);
                }
                Err(err) => self.fail_download(id, err),
            },
            ShareEvent::Progress { id, progress } => {
                if let Some(state) = self.files.downloads.borrow().get(&id).cloned() {
                    state.on_progress(&progress);
                }
            }
            ShareEvent::Completed { id } => {
                self.provide_held(id);
                self.finish_download(id);
            }
            ShareEvent::Failed {
                id,
                reason: FailReason::Cancelled,
            } => {
                self.fail_download(id, ClientError::Cancelled(id.to_string()));
            }
            ShareEvent::BadPeer { id, peer, reason } => {
                warn!(%id, %peer, reason, "dropped a peer that sent bad data");
                if let Some(state) = self.files.downloads.borrow().get(&id).cloned() {
                    state.on_bad_peer(peer, reason);
                }
            }
        }
    }

    /// Every piece is stored: close the file and hand it out as a Blob.
    fn finish_download(self: &Rc<Self>, id: ContentId) {
        let Some(state) = self.files.downloads.borrow_mut().remove(&id) else {
            return;
        };
        if let Some(blob) = self.files.blobs.borrow().get(&id).cloned() {
            state.complete(blob);
            return;
        }
        let storage = self.files.storage.borrow().clone();
        let session = Rc::downgrade(self);
        spawn_local(async move {
            let name = id.to_string();
            let file = match storage {
                Some(storage) => match storage.close(&name).await {
                    Ok(()) => storage::file(&name).await,
                    Err(err) => Err(err),
                },
                None => Err(ClientError::Storage("no storage".into())),
            };
            match file {
                Ok(file) => {
                    info!(%id, "download complete");
                    let blob: Blob = file.into();
                    if let Some(session) = session.upgrade() {
                        session.files.blobs.borrow_mut().insert(id, blob.clone());
                        session.emit("files", &[]);
                        session.refresh_ranges(id);
                    }
                    state.complete(blob);
                }
                Err(err) => state.fail(err),
            }
        });
    }
}

/// Runs a storage future for its effect only (failures are already logged by the worker).
trait IntoIgnored {
    fn into_ignored(self) -> impl Future<Output = ()>;
}

impl<F: Future<Output = Result<(), ClientError>>> IntoIgnored for F {
    async fn into_ignored(self) {
        let _ = self.await;
    }
}
