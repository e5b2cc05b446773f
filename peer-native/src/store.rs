//! Files on disk: the files we seed, and downloads in progress.
//!
//! Nothing is ever held whole in memory: shared files are hashed and served a piece at a time
//! with positioned reads, and a download is written piece by piece into a temporary file
//! beside its target (`PATH.swarm-part`), which is renamed to the target only once every
//! piece is verified. All file I/O runs on tokio's blocking pool.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use swarm_core::merkle::ManifestBuilder;
use swarm_protocol::ContentId;
use swarm_protocol::content::{DEFAULT_PIECE_SIZE, Manifest};

/// Bytes read at a time while hashing a file.
const HASH_READ_LEN: usize = 16 * DEFAULT_PIECE_SIZE as usize;

/// Why a file cannot be shared or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The file is larger than a manifest can describe.
    #[error("{path} is too large to share ({size} bytes)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        size: u64,
    },
    /// The download's file cannot be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
}

/// A file of ours.
struct Stored {
    file: Arc<File>,
    /// Set while this is a download: where its bytes go, and where they end up.
    partial: Option<(PathBuf, PathBuf)>,
}

/// The files the node can read pieces from or write pieces to.
#[derive(Default)]
pub(crate) struct Store {
    files: HashMap<ContentId, Stored>,
    /// Downloads whose manifest has not arrived yet: where each is to be saved.
    targets: HashMap<ContentId, PathBuf>,
}

impl Store {
    /// Serves `id` from `file`.
    pub(crate) fn add_shared(&mut self, id: ContentId, file: Arc<File>) {
        self.files.insert(
            id,
            Stored {
                file,
                partial: None,
            },
        );
    }

    /// Saves download `id` to `target` once its manifest is known.
    pub(crate) fn expect(&mut self, id: ContentId, target: PathBuf) {
        self.targets.insert(id, target);
    }

    /// The manifest of an expected download arrived: creates its temporary file at full
    /// length. Nothing happens for content nobody asked to save.
    pub(crate) fn prepare(&mut self, id: ContentId, manifest: &Manifest) -> Result<(), StoreError> {
        let Some(target) = self.targets.remove(&id) else {
            return Ok(());
        };
        let temp = temp_path(&target);
        let write_error = |source| StoreError::Write {
            path: temp.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(write_error)?;
        file.set_len(manifest.size).map_err(write_error)?;
        self.files.insert(
            id,
            Stored {
                file: Arc::new(file),
                partial: Some((temp, target)),
            },
        );
        Ok(())
    }

    /// The file holding (or receiving) `id`.
    pub(crate) fn file(&self, id: ContentId) -> Option<Arc<File>> {
        self.files.get(&id).map(|stored| Arc::clone(&stored.file))
    }

    /// A finished download: its temporary file and target, to [`finish`]. `None` for content
    /// that was not being saved.
    pub(crate) fn take_partial(&mut self, id: ContentId) -> Option<(Arc<File>, PathBuf, PathBuf)> {
        let stored = self.files.get_mut(&id)?;
        let (temp, target) = stored.partial.take()?;
        Some((Arc::clone(&stored.file), temp, target))
    }
}

/// Where a download to `target` is written until it completes.
pub(crate) fn temp_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".swarm-part");
    PathBuf::from(name)
}

/// Hashes the file at `path` piece by piece: its content id, manifest and open handle.
pub(crate) fn hash_file(path: &Path) -> Result<(ContentId, Manifest, File), StoreError> {
    let read_error = |source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mime = mime_guess::from_path(path)
        .first()
        .map(|mime| mime.essence_str().to_owned())
        .unwrap_or_default();
    let mut builder = ManifestBuilder::new(name, mime, DEFAULT_PIECE_SIZE);
    let mut buf = vec![0; HASH_READ_LEN];
    loop {
        let len = read_full(&mut file, &mut buf).map_err(read_error)?;
        for piece in buf[..len].chunks(DEFAULT_PIECE_SIZE as usize) {
            builder.piece(piece);
        }
        if len < buf.len() {
            break;
        }
    }
    let (id, manifest) = builder.finish().map_err(|_| StoreError::TooLarge {
        path: path.to_owned(),
        size,
    })?;
    Ok((id, manifest, file))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Reads `len` bytes at `offset`.
pub(crate) fn read_at(file: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Writes `data` at `offset`.
pub(crate) fn write_at(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// Makes a completed download durable and moves it to its target.
pub(crate) fn finish(file: &File, temp: &Path, target: &Path) -> Result<(), StoreError> {
    let write_error = |source| StoreError::Write {
        path: target.to_owned(),
        source,
    };
    file.sync_all().map_err(write_error)?;
    std::fs::rename(temp, target).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_a_file_matches_hashing_its_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("clip.mp4");
        let bytes: Vec<u8> = (0..(3 * DEFAULT_PIECE_SIZE as usize + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).expect("write");
        let (id, manifest, _) = hash_file(&path).expect("hash");
        let (expected, _) =
            swarm_core::merkle::manifest_of("clip.mp4", "video/mp4", DEFAULT_PIECE_SIZE, &bytes);
        assert_eq!(id, expected);
        assert_eq!(manifest.name, "clip.mp4");
        assert_eq!(manifest.mime, "video/mp4");
        assert_eq!(manifest.size, bytes.len() as u64);
    }

    #[test]
    fn a_missing_file_says_which() {
        let err = hash_file(Path::new("/nonexistent/file.bin")).expect_err("fails");
        assert!(err.to_string().contains("/nonexistent/file.bin"), "{err}");
    }

    #[test]
    fn a_download_is_written_beside_its_target_and_renamed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("out.bin");
        let piece = swarm_protocol::content::MIN_PIECE_SIZE as usize;
        let bytes: Vec<u8> = (0..2 * piece).map(|i| (i % 253) as u8).collect();
        let (id, manifest) = swarm_core::merkle::manifest_of("out.bin", "", piece as u32, &bytes);
        let mut store = Store::default();
        store.expect(id, target.clone());
        store.prepare(id, &manifest).expect("prepare");
        let file = store.file(id).expect("file");
        write_at(&file, piece as u64, &bytes[piece..]).expect("write");
        write_at(&file, 0, &bytes[..piece]).expect("write");
        let middle = read_at(&file, piece as u64 - 2, 4).expect("read");
        assert_eq!(middle, &bytes[piece - 2..piece + 2]);
        assert!(temp_path(&target).exists() && !target.exists());
        let (file, temp, target) = store.take_partial(id).expect("partial");
        finish(&file, &temp, &target).expect("finish");
        assert_eq!(std::fs::read(&target).expect("read"), bytes);
        assert!(!temp.exists());
        assert!(store.take_partial(id).is_none());
    }
}
