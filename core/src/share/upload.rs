//! Serving what we hold: the requests a peer has waiting with us, reading them from storage
//! a few pieces ahead, and sending them, packed into `chunks` frames for a peer that reads
//! them.

use std::collections::{BTreeSet, VecDeque};

use swarm_protocol::wire::{CHUNK_LEN, CHUNKS_SINCE_VERSION, ChunksWriter};
use swarm_protocol::{ContentId, PeerMsg};

use super::bounds::PeerBudget;
use super::{Output, Outputs, ReadPiece, Share, UPLOAD_PIECES_AHEAD, send};

/// A connected peer: the protocol version it speaks, and what we are serving it.
#[derive(Debug, Default)]
pub(super) struct PeerState {
    pub(super) version: Option<u8>,
    /// Requests from this peer not yet read, in arrival order.
    serving: VecDeque<(ContentId, u32)>,
    /// Pieces being read for this peer.
    reading: Vec<(ContentId, u32)>,
    /// Pieces read and handed to the owner to send, not yet reported drained.
    queued: Vec<(ContentId, u32)>,
    /// Manifests this peer asked for and waits for, each once, in arrival order: at most
    /// one per content we hold.
    pub(super) manifests: VecDeque<ContentId>,
    /// A manifest was handed to the owner to send and not yet reported drained: the next
    /// waits, so a peer that does not read has at most one manifest queued for it.
    pub(super) manifest_queued: bool,
    /// A `chunks` frame not yet full, held back while more pieces for this peer are on
    /// their way, so the end of one piece and the start of the next share a frame.
    packing: Option<ChunksWriter>,
    /// Contents with pieces stored since this peer, which holds all of them, was last told:
    /// it needs none of them, so instead of a `have` per piece it gets one `bitfield` per
    /// [`Share::tick`] (for its view of who holds what).
    pub(super) untold: BTreeSet<ContentId>,
    /// What it may still make us hold or send.
    pub(super) budget: PeerBudget,
}

impl PeerState {
    /// Whether it reads [`PeerMsg::Chunks`] frames.
    fn reads_chunks(&self) -> bool {
        self.version.is_some_and(|v| v >= CHUNKS_SINCE_VERSION)
    }

    /// Whether another piece for this peer will be handed over (one is being read, or
    /// waits to be read).
    fn more_coming(&self) -> bool {
        !self.reading.is_empty() || !self.serving.is_empty()
    }

    /// Sends the held `chunks` frame, if any.
    fn flush<P: Copy>(&mut self, out: &mut Outputs<P>, to: P) {
        if let Some(writer) = self.packing.take().filter(|w| !w.is_empty()) {
            out.push(Output::Send {
                to,
                frame: writer.finish(),
            });
        }
    }
}

/// Adds `data`, piece `piece` of `id`, to the `chunks` frames for `to`: continues the held
/// frame, sends every frame that fills, and holds the last one if it has room left. Returns
/// how many frames it sent.
fn pack_chunks<P: Copy>(
    out: &mut Outputs<P>,
    to: P,
    state: &mut PeerState,
    id: ContentId,
    piece: u32,
    data: &[u8],
) -> usize {
    let mut sent = 0;
    let mut at = 0;
    while at < data.len() {
        // A held frame of another content goes first: one frame holds chunks of one content.
        if state.packing.as_ref().is_some_and(|w| w.id() != id) {
            state.flush(out, to);
            sent += 1;
        }
        let writer = state.packing.get_or_insert_with(|| ChunksWriter::new(id));
        // `at` < piece length, which fits in u32.
        at += writer.push(piece, at as u32, &data[at..]);
        if writer.room() == 0 {
            state.flush(out, to);
            sent += 1;
        }
    }
    sent
}

impl<P: Ord + Copy> Share<P> {
    pub(super) fn on_request(&mut self, out: &mut Outputs<P>, peer: P, id: ContentId, piece: u32) {
        let max = self.config.max_serving;
        let available = self.local.get(&id).is_some_and(|l| l.stored.get(piece));
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let known = state.serving.contains(&(id, piece)) || state.reading.contains(&(id, piece));
        if available && state.serving.len() < max && !known {
            state.serving.push_back((id, piece));
            self.start_reads(out, peer);
        } else {
            send(out, peer, PeerMsg::Reject { id, piece });
        }
    }

    /// `peer` no longer wants a piece it asked for: forget it, or withdraw it from the send
    /// queue.
    pub(super) fn on_cancel(&mut self, out: &mut Outputs<P>, peer: P, id: ContentId, piece: u32) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.serving.retain(|r| *r != (id, piece));
            state.reading.retain(|r| *r != (id, piece));
            if let Some(i) = state.queued.iter().position(|r| *r == (id, piece)) {
                // Seeks cancel what is no longer wanted: do not spend the upload on it.
                state.queued.remove(i);
                out.push(Output::Withdraw {
                    to: peer,
                    id,
                    piece,
                });
            }
        }
        self.start_reads(out, peer);
    }

    /// The owner read a piece that `to` asked for. Call [`Share::upload_drained`] once the
    /// frames returned have left the send queue.
    pub fn piece_read(&mut self, to: P, id: ContentId, piece: u32, data: &[u8]) -> Outputs<P> {
        let mut out = Vec::new();
        let Some(state) = self.peers.get_mut(&to) else {
            return out;
        };
        let Some(i) = state.reading.iter().position(|r| *r == (id, piece)) else {
            // Cancelled while it was read.
            self.start_reads(&mut out, to);
            return out;
        };
        state.reading.remove(i);
        state.queued.push((id, piece));
        let mut corrupted;
        let data = if self.corrupt_uploads && !data.is_empty() {
            corrupted = data.to_vec();
            corrupted[0] ^= 0xff;
            &corrupted[..]
        } else {
            data
        };
        if state.reads_chunks() {
            let sent = pack_chunks(&mut out, to, state, id, piece, data);
            // Held only while another piece will follow and this one gave the send queue
            // something, whose draining starts the next read: nothing waits forever.
            if sent == 0 || !state.more_coming() {
                state.flush(&mut out, to);
            }
            return out;
        }
        for (n, chunk) in data.chunks(CHUNK_LEN as usize).enumerate() {
            // n * CHUNK_LEN < piece length, which fits in u32.
            let offset = n as u32 * CHUNK_LEN;
            send(
                &mut out,
                to,
                PeerMsg::Piece {
                    id,
                    piece,
                    offset,
                    data: chunk,
                },
            );
        }
        out
    }

    /// The owner could not read a piece (storage failed): tell the peer.
    pub fn piece_unreadable(&mut self, to: P, id: ContentId, piece: u32) -> Outputs<P> {
        let mut out = Vec::new();
        if let Some(state) = self.peers.get_mut(&to) {
            state.reading.retain(|r| *r != (id, piece));
        }
        send(&mut out, to, PeerMsg::Reject { id, piece });
        self.start_reads(&mut out, to);
        out
    }

    /// Everything handed over for `to` has left the owner's send queue: read the next
    /// requested pieces.
    pub fn upload_drained(&mut self, to: P) -> Outputs<P> {
        let mut out = Vec::new();
        if let Some(state) = self.peers.get_mut(&to) {
            state.queued.clear();
            state.manifest_queued = false;
        }
        self.send_manifests(&mut out, to);
        self.start_reads(&mut out, to);
        out
    }

    /// Starts reading requested pieces for `peer` while fewer than [`UPLOAD_PIECES_AHEAD`]
    /// are being read or waiting to be sent; sends the held `chunks` frame when no other
    /// piece will follow it.
    fn start_reads(&mut self, out: &mut Outputs<P>, peer: P) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        while state.reading.len() + state.queued.len() < UPLOAD_PIECES_AHEAD {
            let Some((id, piece)) = state.serving.pop_front() else {
                break;
            };
            // It may have been dropped since it was requested.
            let Some(local) = self.local.get(&id).filter(|l| l.stored.get(piece)) else {
                send(out, peer, PeerMsg::Reject { id, piece });
                continue;
            };
            state.reading.push((id, piece));
            out.push(Output::ReadPiece(ReadPiece {
                to: peer,
                id,
                piece,
                offset: local.manifest.piece_offset(piece),
                len: local.manifest.piece_len(piece),
            }));
        }
        if !state.more_coming() {
            state.flush(out, peer);
        }
    }
}
