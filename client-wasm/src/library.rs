//! What the page keeps in storage across reloads: downloads, complete or not, and the
//! manifests of files it shared from the user's disk.
//!
//! At `join`, the storage lists what it kept ([`Storage::list`]); every piece it says it
//! holds is checked against the manifest again ([`check_kept`]), because storage can be
//! changed or truncated behind the page's back: a piece that no longer verifies is fetched
//! again, never served. Then a complete download is offered to the room again, a partial
//! one waits for `download(id)`, which resumes it from its pieces, and a shared file is
//! listed as not available until it is shared again.

use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect};
use swarm_core::bitfield::Bitfield;
use swarm_core::merkle;
use swarm_protocol::ContentId;
use swarm_protocol::content::Manifest;
use tracing::{info, warn};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::Blob;

use crate::download_state::DownloadState;
use crate::error::ClientError;
use crate::inbox::{Event, Inbox};
use crate::notice::Notice;
use crate::state::State;
use crate::storage::{Kept, Storage};
use crate::timer::now_ms;

/// Where a kept content stands.
#[derive(Debug)]
enum Standing {
    /// A download kept from before whose pieces are being checked.
    Checking,
    /// A download not finished: these pieces are stored and checked (until it resumes, when
    /// the node keeps count).
    Partial(Bitfield),
    /// Every piece is stored (downloaded now or before).
    Complete,
    /// A file shared from the user's disk: only its manifest is kept.
    Shared,
}

/// One kept content.
#[derive(Debug)]
struct Entry {
    manifest: Manifest,
    standing: Standing,
}

/// Everything the page keeps, by content id.
#[derive(Debug, Default)]
pub(crate) struct Library {
    entries: BTreeMap<ContentId, Entry>,
}

/// Checks the pieces of kept downloads in the background and posts each result
/// ([`Event::Restored`]). Kept entries that are not ours to read (a name that is no content
/// id, a manifest that does not match its id) are deleted.
pub(crate) fn check_kept(
    storage: Rc<Storage>,
    hashing: bool,
    kept: Vec<(ContentId, Manifest, Option<Vec<u8>>)>,
    inbox: Inbox,
) {
    spawn_local(async move {
        for (id, manifest, bits) in kept {
            let Some(bits) = bits else {
                inbox.post(Event::Restored {
                    id,
                    have: None,
                    blob: None,
                });
                continue;
            };
            let have = checked_pieces(&storage, hashing, id, &manifest, &bits).await;
            let blob = if have.is_complete() {
                match storage.file(&id.to_string()).await {
                    Ok(blob) => Some(blob),
                    Err(err) => {
                        warn!(%id, error = %err, "a kept download cannot be opened; fetching it again");
                        let _ = storage.remove(&id.to_string()).await;
                        continue;
                    }
                }
            } else {
                None
            };
            inbox.post(Event::Restored {
                id,
                have: Some(have),
                blob,
            });
        }
    });
}

/// The pieces of `bits` whose stored bytes still match the manifest.
async fn checked_pieces(
    storage: &Storage,
    hashing: bool,
    id: ContentId,
    manifest: &Manifest,
    bits: &[u8],
) -> Bitfield {
    let n = manifest.piece_count();
    let claimed = Bitfield::from_bytes(bits, n).unwrap_or_else(|| Bitfield::new(n));
    let name = id.to_string();
    let mut have = Bitfield::new(n);
    let mut bad = 0;
    if hashing {
        // Every check posted at once: the worker reads and hashes them one after another.
        let checks: Vec<_> = claimed
            .iter_ones()
            .filter_map(|i| {
                let hash = manifest.piece_hashes.get(i as usize)?;
                let check =
                    storage.check(&name, manifest.piece_offset(i), manifest.piece_len(i), hash);
                Some((i, check))
            })
            .collect();
        for (i, check) in checks {
            match check.await {
                Ok(true) => drop(have.set(i)),
                _ => bad += 1,
            }
        }
    } else {
        for i in claimed.iter_ones() {
            let read = storage.read(&name, manifest.piece_offset(i), manifest.piece_len(i));
            match read.await {
                Ok(bytes) if merkle::verify_piece(manifest, i, &bytes) => drop(have.set(i)),
                _ => bad += 1,
            }
        }
    }
    if bad > 0 {
        warn!(%id, bad, "kept pieces no longer verify; they will be fetched again");
    }
    have
}

/// The kept entries `list` returned that are ours to read: content ids with a manifest that
/// matches. The others are deleted.
pub(crate) fn readable(
    storage: &Storage,
    kept: Vec<Kept>,
) -> Vec<(ContentId, Manifest, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for entry in kept {
        let manifest = entry
            .name
            .parse::<ContentId>()
            .ok()
            .and_then(|id| Some((id, merkle::verify_manifest(id, &entry.manifest).ok()?)));
        match manifest {
            Some((id, manifest)) => out.push((id, manifest, entry.have)),
            None => {
                warn!(
                    name = entry.name,
                    "deleting a kept file that is not a content we know"
                );
                spawn_local(drop_result(storage.remove(&entry.name)));
            }
        }
    }
    out
}

/// Pieces of a copy being written at once (each is a request to the worker, with its bytes).
const COPY_AHEAD: usize = 8;

/// Copies `blob` (a file the user shares) into storage as content `id`, as if it had been
/// downloaded, so it is kept across reloads; resolves with the stored copy.
/// `storage-quota` if it does not fit.
pub(crate) async fn keep_copy(
    storage: &Storage,
    id: ContentId,
    manifest: &Manifest,
    blob: &Blob,
) -> Result<Blob, ClientError> {
    if let Some((quota, usage)) = storage.estimate().await?
        && quota - usage < manifest.size as f64
    {
        return Err(ClientError::StorageQuota {
            needed: manifest.size,
            available: (quota - usage).max(0.0) as u64,
        });
    }
    let name = id.to_string();
    storage
        .open(
            &name,
            manifest.size,
            manifest.piece_size,
            &manifest.encode(),
        )
        .await?;
    let mut writes = std::collections::VecDeque::new();
    for piece in 0..manifest.piece_count() {
        let (offset, len) = (manifest.piece_offset(piece), manifest.piece_len(piece));
        let bytes = crate::storage::read_blob(blob, offset, len).await?;
        writes.push_back(storage.write(&name, offset, piece, &bytes, None));
        if writes.len() >= COPY_AHEAD
            && let Some(write) = writes.pop_front()
        {
            write.await?;
        }
    }
    for write in writes {
        write.await?;
    }
    storage.close(&name).await
}

async fn drop_result(future: impl Future<Output = Result<(), ClientError>>) {
    if let Err(err) = future.await {
        warn!(error = %err, "storage");
    }
}

impl Library {
    /// Adds kept contents listed at `join`: being checked, or shared files.
    pub(crate) fn expect(&mut self, kept: &[(ContentId, Manifest, Option<Vec<u8>>)]) {
        for (id, manifest, bits) in kept {
            let standing = if bits.is_some() {
                Standing::Checking
            } else {
                Standing::Shared
            };
            // A download's data wins over a shared file's manifest of the same content.
            if bits.is_none() && self.entries.contains_key(id) {
                continue;
            }
            self.entries.insert(
                *id,
                Entry {
                    manifest: manifest.clone(),
                    standing,
                },
            );
        }
    }
}

impl State {
    /// A kept content was checked: a complete download is offered to the room again, a
    /// partial one resumes if `download(id)` is waiting for it.
    pub(crate) fn on_restored(
        &mut self,
        id: ContentId,
        have: Option<Bitfield>,
        blob: Option<Blob>,
    ) {
        let Some(entry) = self.library.entries.get_mut(&id) else {
            return; // forgotten meanwhile
        };
        match (have, blob) {
            (None, _) => {}
            (Some(_), Some(blob)) => {
                entry.standing = Standing::Complete;
                let manifest = entry.manifest.clone();
                info!(%id, "offering a kept download again");
                self.blobs.insert(id, blob);
                self.node.share(id, manifest, now_ms());
                if self.downloads.contains_key(&id) {
                    // `download(id)` was waiting: it completes at once.
                    let _ = self.node.download(id, now_ms());
                }
            }
            (Some(have), None) => {
                info!(%id, pieces = have.count(), "a kept download can resume");
                entry.standing = Standing::Partial(have);
                if self.downloads.contains_key(&id) {
                    self.resume_kept(id);
                }
            }
        }
        self.emit("stored", Vec::new());
    }

    /// Starts `download(id)` from what the page kept, if it kept part of `id`: returns the
    /// download, or `None` to start it as a new one.
    pub(crate) fn download_kept(&mut self, id: ContentId) -> Option<Rc<DownloadState>> {
        let entry = self.library.entries.get(&id)?;
        let waits = match &entry.standing {
            Standing::Checking => true,
            Standing::Partial(_) => false,
            Standing::Complete | Standing::Shared => return None,
        };
        let download = Rc::new(DownloadState::new(id, entry.manifest.size));
        self.downloads.insert(id, Rc::clone(&download));
        if !waits {
            self.resume_kept(id);
        }
        Some(download)
    }

    fn resume_kept(&mut self, id: ContentId) {
        let Some(entry) = self.library.entries.get_mut(&id) else {
            return;
        };
        let Standing::Partial(have) = std::mem::replace(&mut entry.standing, Standing::Checking)
        else {
            return;
        };
        let manifest = entry.manifest.clone();
        // The node keeps count from now on.
        entry.standing = Standing::Partial(Bitfield::new(0));
        self.node.resume(id, manifest, have, now_ms());
    }

    /// A download's manifest is known: it is kept from now on.
    pub(crate) fn keep_download(&mut self, id: ContentId, manifest: &Manifest) {
        self.library.entries.entry(id).or_insert_with(|| Entry {
            manifest: manifest.clone(),
            standing: Standing::Partial(Bitfield::new(0)),
        });
        self.emit("stored", Vec::new());
    }

    /// A file the user shares was copied into storage ([`keep_copy`]): it is kept like a
    /// finished download.
    pub(crate) fn keep_copied(&mut self, id: ContentId, manifest: &Manifest) {
        self.library.entries.insert(
            id,
            Entry {
                manifest: manifest.clone(),
                standing: Standing::Complete,
            },
        );
        self.emit("stored", Vec::new());
    }

    /// A download finished.
    pub(crate) fn keep_complete(&mut self, id: ContentId) {
        if let Some(entry) = self.library.entries.get_mut(&id) {
            entry.standing = Standing::Complete;
        }
        self.emit("stored", Vec::new());
    }

    /// A file from the user's disk is shared: its manifest is kept, so that after a reload
    /// it is listed as not available until shared again.
    pub(crate) fn keep_shared(&mut self, id: ContentId, manifest: &Manifest) {
        if self.library.entries.contains_key(&id) {
            return;
        }
        self.library.entries.insert(
            id,
            Entry {
                manifest: manifest.clone(),
                standing: Standing::Shared,
            },
        );
        if let Some(storage) = &self.storage {
            spawn_local(drop_result(
                storage.remember(&id.to_string(), &manifest.encode()),
            ));
        }
        self.emit("stored", Vec::new());
    }

    /// A download ended without the file and what it stored was deleted.
    pub(crate) fn unkeep(&mut self, id: ContentId) {
        if self.library.entries.remove(&id).is_some() {
            self.emit("stored", Vec::new());
        }
    }

    /// What the page keeps: `[{id, name, size, received, complete, kind, available}]`.
    pub(crate) fn stored_list(&self) -> Array {
        self.library
            .entries
            .iter()
            .map(|(id, entry)| {
                let m = &entry.manifest;
                let bytes = |have: &Bitfield| -> u64 {
                    have.iter_ones().map(|i| u64::from(m.piece_len(i))).sum()
                };
                let (received, complete, kind) = match &entry.standing {
                    Standing::Complete => (m.size, true, "download"),
                    Standing::Shared => (m.size, true, "shared"),
                    Standing::Checking | Standing::Partial(_) => {
                        let received = match (self.node.stored(*id), &entry.standing) {
                            (Some(stored), _) => bytes(stored),
                            (None, Standing::Partial(have)) => bytes(have),
                            _ => 0,
                        };
                        (received, false, "download")
                    }
                };
                let available = match entry.standing {
                    Standing::Shared => self.blobs.contains_key(id),
                    Standing::Checking => false,
                    _ => true,
                };
                let object = Object::new();
                let set = |key: &str, value: JsValue| {
                    let _ = Reflect::set(&object, &key.into(), &value);
                };
                set("id", id.to_string().into());
                set("name", m.name.as_str().into());
                set("size", (m.size as f64).into());
                set("mime", m.mime.as_str().into());
                set("received", (received as f64).into());
                set("complete", complete.into());
                set("kind", kind.into());
                set("available", available.into());
                JsValue::from(object)
            })
            .collect()
    }

    /// Deletes kept content `id`: a download stops, the room is no longer offered it, and
    /// its data and manifest go from storage. `unknown-content` if the page keeps nothing
    /// of `id`.
    pub(crate) fn forget(
        &mut self,
        id: &str,
    ) -> Result<impl Future<Output = Result<(), ClientError>> + use<>, ClientError> {
        let id: ContentId = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        let held = self.library.entries.remove(&id).is_some()
            | self.downloads.contains_key(&id)
            | self.blobs.contains_key(&id);
        if !held {
            return Err(ClientError::UnknownContent(id.to_string()));
        }
        info!(%id, "forgetting");
        self.node.forget(id, now_ms());
        self.flush();
        // A download not started in the node yet (its quota being checked).
        if let Some(download) = self.downloads.remove(&id) {
            self.notify(Notice::Failed(
                download,
                ClientError::Cancelled(id.to_string()),
            ));
        }
        self.blobs.remove(&id);
        self.fail_ranges(id, &ClientError::UnknownContent(id.to_string()));
        self.emit("stored", Vec::new());
        self.emit("files", Vec::new());
        let removed = self.storage.as_ref().map(|s| s.remove(&id.to_string()));
        Ok(async move {
            match removed {
                Some(removed) => removed.await,
                None => Ok(()),
            }
        })
    }
}
