//! Reads of pieces from Blobs (shared files and finished downloads) in large blocks.
//!
//! Every `Blob.slice().arrayBuffer()` is a round trip to the browser process, which costs
//! about as much as copying a quarter of a MiB: read piece by piece (256 KiB), serving a file
//! takes twice the CPU it takes in 4 MiB blocks (measured in BENCHMARKS.md). The piece
//! selector asks each peer for runs of neighbouring pieces, so one block read serves the
//! next fifteen requests of the run, and the next block is read while the second half of one
//! is served. Blocks are kept for a few seconds, a handful at most (one or two per run being
//! served), and a read in flight is shared by every piece that needs it.

use std::cell::RefCell;
use std::collections::VecDeque;

use js_sys::{ArrayBuffer, Promise, Uint8Array};
use swarm_protocol::ContentId;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

use crate::error::{ClientError, describe};
use crate::storage::read_blob;

/// Bytes read at a time, from an offset that is a multiple of this.
pub(crate) const BLOCK: u64 = 4 * 1024 * 1024;

/// Blocks kept at most (the least recently used goes first).
const KEPT: usize = 8;

/// A block is dropped once it has not been used for this long (milliseconds).
const KEEP_MS: u64 = 5_000;

struct Block {
    id: ContentId,
    start: u64,
    /// Resolves to the block's `ArrayBuffer`.
    data: Promise,
    used: u64,
}

/// The blocks read lately.
#[derive(Default)]
pub(crate) struct BlobReads {
    blocks: RefCell<VecDeque<Block>>,
}

impl BlobReads {
    /// Reads `len` bytes at `offset` of `blob`, which holds content `id`, through the block
    /// that contains them (a piece that crosses a block boundary is read on its own).
    pub(crate) async fn read(
        &self,
        id: ContentId,
        blob: &Blob,
        offset: u64,
        len: u32,
        now: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let start = offset - offset % BLOCK;
        let end = offset + u64::from(len);
        if end > start + BLOCK {
            return read_blob(blob, offset, len).await;
        }
        let data = self.block(id, blob, start, now)?;
        // Past the middle of a block, read the next one too: a run goes on into it, and a
        // send buffer kept small (see `channel`) would otherwise run dry during that read.
        let next = start + BLOCK;
        if offset - start >= BLOCK / 2 && (next as f64) < blob.size() {
            let _ = self.block(id, blob, next, now);
        }
        match JsFuture::from(data).await {
            Ok(buffer) => {
                let buffer: ArrayBuffer = buffer.unchecked_into();
                let at = (offset - start) as u32;
                if u64::from(at) + u64::from(len) > u64::from(buffer.byte_length()) {
                    return Err(ClientError::Storage(
                        "the file is shorter than its manifest".into(),
                    ));
                }
                Ok(Uint8Array::new_with_byte_offset_and_length(&buffer, at, len).to_vec())
            }
            Err(err) => {
                // Not kept: the next request tries again.
                self.blocks
                    .borrow_mut()
                    .retain(|b| !(b.id == id && b.start == start));
                Err(ClientError::Storage(describe(&err)))
            }
        }
    }

    /// Drops the blocks not used for a while.
    pub(crate) fn expire(&self, now: u64) {
        self.blocks
            .borrow_mut()
            .retain(|block| now.saturating_sub(block.used) < KEEP_MS);
    }

    /// The read of the block at `start`, begun now unless it is kept.
    fn block(
        &self,
        id: ContentId,
        blob: &Blob,
        start: u64,
        now: u64,
    ) -> Result<Promise, ClientError> {
        let mut blocks = self.blocks.borrow_mut();
        let kept = blocks.iter().position(|b| b.id == id && b.start == start);
        if let Some(mut block) = kept.and_then(|i| blocks.remove(i)) {
            block.used = now;
            let data = block.data.clone();
            blocks.push_front(block);
            return Ok(data);
        }
        let end = (start + BLOCK).min(blob.size() as u64);
        let data = blob
            .slice_with_f64_and_f64(start as f64, end as f64)
            .map_err(|err| ClientError::Storage(describe(&err)))?
            .array_buffer();
        blocks.push_front(Block {
            id,
            start,
            data: data.clone(),
            used: now,
        });
        blocks.truncate(KEPT);
        Ok(data)
    }
}
