//! File sharing between peers, sans I/O: announcements, manifest exchange, piece requests,
//! verification, and serving what we hold.
//!
//! [`Share`] is driven by its owner (the browser client or the native peer):
//! - tell it about peers ([`Share::add_peer`], [`Share::remove_peer`]) and hand it every
//!   peer-protocol frame ([`Share::on_message`]);
//! - tell it what the user does ([`Share::share`], [`Share::download`], [`Share::cancel`]);
//! - carry out the [`Output`]s it returns: send frames, read pieces from storage
//!   ([`Output::ReadPiece`], answered with [`Share::piece_read`]), write verified pieces
//!   ([`Output::WritePiece`], answered with [`Share::piece_stored`], or, with
//!   [`ShareConfig::owner_checks_pieces`], hashed by the owner first and answered with
//!   [`Share::piece_checked`]), and pass events on;
//! - call [`Share::tick`] now and then (every few hundred milliseconds) for timeouts.
//!
//! Every piece is verified against the manifest before it is stored, and a piece is offered
//! to others only once it is stored, so whatever a peer serves, it has checked. A peer whose
//! piece or manifest fails verification is dropped for that content and the data is fetched
//! elsewhere. A download announces itself as soon as it has the manifest, so every downloader
//! serves the pieces it has to everyone else.

mod ranges;
mod rate;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

pub use rate::RateMeter;
use swarm_protocol::content::{MAX_PIECES, Manifest};
use swarm_protocol::wire::{
    CHUNK_LEN, CHUNKS_SINCE_VERSION, ChunksWriter, MANIFEST_CHUNK_LEN, PEER_PROTOCOL_VERSION,
};
use swarm_protocol::{ContentId, PeerMsg};

use crate::bitfield::Bitfield;
use crate::merkle;
use crate::selector::{PieceSelector, SelectorConfig};

/// Largest encoded manifest accepted from a peer (the most pieces a manifest may list).
const MAX_MANIFEST_LEN: u32 = 64 + 2 * 1024 + MAX_PIECES * 32;

/// Tuning of a [`Share`].
#[derive(Debug, Clone, Copy)]
pub struct ShareConfig {
    /// Piece selection.
    pub selector: SelectorConfig,
    /// Piece requests one peer may have waiting with us; more are rejected.
    pub max_serving: usize,
    /// How long a manifest may take before another peer is asked.
    pub manifest_timeout_ms: u64,
    /// Least time between two progress events of one download while pieces arrive.
    pub progress_interval_ms: u64,
    /// The owner hashes each complete piece and stores it only if it matches (a
    /// [`Output::WritePiece`] with a [`PieceCheck`], answered with [`Share::piece_checked`]),
    /// instead of the engine hashing it. For a platform whose own SHA-256 is much faster
    /// than this crate's, or runs off the thread that drives the engine (a browser's
    /// `crypto.subtle` in the storage worker).
    pub owner_checks_pieces: bool,
}

impl Default for ShareConfig {
    fn default() -> Self {
        Self {
            selector: SelectorConfig::default(),
            max_serving: 32,
            manifest_timeout_ms: 10_000,
            progress_interval_ms: 200,
            owner_checks_pieces: false,
        }
    }
}

/// A file known in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Content id.
    pub id: ContentId,
    /// File name.
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// MIME type (may be empty).
    pub mime: String,
    /// Connected peers that offer it.
    pub sources: usize,
    /// Whether we hold all of it (we shared it, or downloaded it).
    pub complete: bool,
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress<P> {
    /// Verified bytes.
    pub received: u64,
    /// File length.
    pub total: u64,
    /// Peers we are fetching from (those with pieces we lack).
    pub peers: usize,
    /// Speed over the last two seconds.
    pub bytes_per_second: f64,
    /// Piece bytes received so far from each peer (verified or not).
    pub from: Vec<(P, u64)>,
}

/// Why a download ended without the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// [`Share::cancel`] was called.
    Cancelled,
}

/// Something the owner should know.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareEvent<P> {
    /// A peer offered content we had not heard of.
    Offered(FileInfo),
    /// The number of peers offering a content changed.
    SourcesChanged {
        /// The content.
        id: ContentId,
        /// Connected peers that offer it now.
        sources: usize,
    },
    /// A download's manifest arrived and verified: storage for it can be prepared before the
    /// first [`Output::WritePiece`].
    ManifestReady {
        /// The content.
        id: ContentId,
        /// Its manifest.
        manifest: Manifest,
    },
    /// A download made progress.
    Progress {
        /// The content.
        id: ContentId,
        /// Where it stands.
        progress: Progress<P>,
    },
    /// Every piece of a download is verified and stored.
    Completed {
        /// The content.
        id: ContentId,
    },
    /// A download ended without the file.
    Failed {
        /// The content.
        id: ContentId,
        /// Why.
        reason: FailReason,
    },
    /// `peer` sent data for `id` that failed verification; it is no longer used for `id`.
    BadPeer {
        /// The content.
        id: ContentId,
        /// The offender.
        peer: P,
        /// What was wrong.
        reason: &'static str,
    },
}

/// What the owner checks before it stores a piece ([`ShareConfig::owner_checks_pieces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceCheck<P> {
    /// The piece's SHA-256 in the manifest.
    pub expected: [u8; 32],
    /// The peer that sent it (blamed if it does not match).
    pub from: P,
}

/// Something the owner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<P> {
    /// Send this binary frame to `to` on its `swarm` channel.
    Send {
        /// The peer.
        to: P,
        /// An encoded [`PeerMsg`].
        frame: Vec<u8>,
    },
    /// Read `len` bytes at `offset` of content `id` and pass them to [`Share::piece_read`].
    ReadPiece {
        /// The peer that asked.
        to: P,
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
        /// Byte offset in the file.
        offset: u64,
        /// Piece length.
        len: u32,
    },
    /// Store a piece, then call [`Share::piece_stored`]. With a `check`
    /// ([`ShareConfig::owner_checks_pieces`]), hash it first and store it only if it matches,
    /// then call [`Share::piece_checked`] with whether it did.
    WritePiece {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
        /// Byte offset in the file.
        offset: u64,
        /// The piece.
        data: Vec<u8>,
        /// The hash the owner checks first, if it does ([`ShareConfig::owner_checks_pieces`]).
        check: Option<PieceCheck<P>>,
    },
    /// Drop the frames of this piece that still wait in the send queue to `to`: the peer
    /// cancelled it. Frames already sent are ignored by the peer. Call
    /// [`Share::upload_drained`] if that empties the queue.
    Withdraw {
        /// The peer.
        to: P,
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
    },
    /// The link to this peer stopped delivering: we asked it for pieces and nothing came for
    /// [`STALLED_LINK_MS`], across the timeouts that asked again. Its transport may be wedged
    /// while the connection looks alive, so close the connection as if it had failed (the
    /// mesh dials it again, or another provider); the pieces go to other peers meanwhile.
    Stalled(P),
    /// Tell the application.
    Event(ShareEvent<P>),
}

/// How long a peer we asked for pieces may send nothing before its link is given up
/// ([`Output::Stalled`]): two and a half request timeouts.
pub const STALLED_LINK_MS: u64 = 25_000;

/// Why a request of the owner cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// No connected peer offers this content, and we do not hold it.
    #[error("no peer in the room offers content {0}")]
    UnknownContent(ContentId),
    /// There is no download of this content to cancel.
    #[error("content {0} is not being downloaded")]
    NotDownloading(ContentId),
}

/// A content someone offered: what they said about it, and which pieces each source has.
#[derive(Debug)]
struct Offer<P> {
    name: String,
    size: u64,
    mime: String,
    /// Per source: the packed bits from its `Bitfield` and `Have`s, read once the piece count
    /// is known.
    sources: BTreeMap<P, Vec<u8>>,
}

/// Content we hold (all of it, or the pieces of a download so far).
#[derive(Debug)]
struct Local {
    manifest: Manifest,
    encoded: Vec<u8>,
    stored: Bitfield,
}

#[derive(Debug)]
struct ManifestFetch<P> {
    from: Option<(P, u64)>,
    tried: BTreeSet<P>,
    buf: Vec<u8>,
    received: u32,
}

#[derive(Debug)]
struct Partial {
    buf: Vec<u8>,
    received: ranges::Ranges,
}

#[derive(Debug)]
enum Phase<P> {
    Manifest(ManifestFetch<P>),
    Pieces {
        selector: PieceSelector<P>,
        partial: BTreeMap<(u32, P), Partial>,
        verified: Bitfield,
    },
}

#[derive(Debug)]
struct Download<P> {
    phase: Phase<P>,
    bad: BTreeSet<P>,
    rate: RateMeter,
    last_progress: u64,
    received_from: BTreeMap<P, u64>,
    /// Bytes a player needs first (kept here so it applies once the manifest is in).
    priority: Option<Range<u64>>,
}

#[derive(Debug, Default)]
struct PeerState {
    version: Option<u8>,
    /// Requests from this peer not yet read, in arrival order.
    serving: std::collections::VecDeque<(ContentId, u32)>,
    /// Pieces being read for this peer.
    reading: Vec<(ContentId, u32)>,
    /// Pieces read and handed to the owner to send, not yet reported drained.
    queued: Vec<(ContentId, u32)>,
    /// A `chunks` frame not yet full, held back while more pieces for this peer are on
    /// their way, so the end of one piece and the start of the next share a frame.
    packing: Option<ChunksWriter>,
    /// Contents with pieces stored since this peer, which holds all of them, was last told:
    /// it needs none of them, so instead of a `have` per piece it gets one `bitfield` per
    /// [`Share::tick`] (for its view of who holds what).
    untold: BTreeSet<ContentId>,
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

/// Pieces read ahead for one peer: at most this many are being read or waiting in the send
/// queue, so a `cancel` still reaches the requests behind them and memory stays small.
const UPLOAD_PIECES_AHEAD: usize = 2;

/// The file-sharing engine of one peer.
#[derive(Debug)]
pub struct Share<P> {
    config: ShareConfig,
    peers: BTreeMap<P, PeerState>,
    offers: BTreeMap<ContentId, Offer<P>>,
    local: BTreeMap<ContentId, Local>,
    downloads: BTreeMap<ContentId, Download<P>>,
    seed: u64,
    corrupt_uploads: bool,
}

type Outputs<P> = Vec<Output<P>>;

fn send<P>(out: &mut Outputs<P>, to: P, msg: PeerMsg<'_>) {
    out.push(Output::Send {
        to,
        frame: msg.encode(),
    });
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
    /// An engine holding nothing; `seed` drives the piece selectors' tie-breaking.
    pub fn new(config: ShareConfig, seed: u64) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            offers: BTreeMap::new(),
            local: BTreeMap::new(),
            downloads: BTreeMap::new(),
            seed,
            corrupt_uploads: false,
        }
    }

    /// **Testing only**: flip a byte in every piece this peer serves, to exercise the other
    /// side's verification.
    pub fn set_corrupt_uploads(&mut self, corrupt: bool) {
        self.corrupt_uploads = corrupt;
    }

    /// Every content known in the room: what we hold and what peers offer.
    pub fn files(&self) -> Vec<FileInfo> {
        let ids: BTreeSet<ContentId> = self
            .local
            .keys()
            .chain(self.offers.keys())
            .copied()
            .collect();
        ids.into_iter().filter_map(|id| self.file(id)).collect()
    }

    /// What is known of one content.
    pub fn file(&self, id: ContentId) -> Option<FileInfo> {
        let sources = self.offers.get(&id).map_or(0, |o| o.sources.len());
        let complete = self.is_complete(id);
        if let Some(local) = self.local.get(&id) {
            let m = &local.manifest;
            return Some(FileInfo {
                id,
                name: m.name.clone(),
                size: m.size,
                mime: m.mime.clone(),
                sources,
                complete,
            });
        }
        let offer = self.offers.get(&id)?;
        Some(FileInfo {
            id,
            name: offer.name.clone(),
            size: offer.size,
            mime: offer.mime.clone(),
            sources,
            complete,
        })
    }

    /// The manifest of a content we hold (fully or partly).
    pub fn manifest(&self, id: ContentId) -> Option<&Manifest> {
        self.local.get(&id).map(|l| &l.manifest)
    }

    /// Which pieces we have stored.
    pub fn stored(&self, id: ContentId) -> Option<&Bitfield> {
        self.local.get(&id).map(|l| &l.stored)
    }

    /// Which pieces each source has, for a download whose manifest is known.
    pub fn source_pieces(&self, id: ContentId) -> Vec<(P, Bitfield)> {
        let (Some(offer), Some(local)) = (self.offers.get(&id), self.local.get(&id)) else {
            return Vec::new();
        };
        let n = local.manifest.piece_count();
        offer
            .sources
            .iter()
            .map(|(peer, raw)| {
                (
                    *peer,
                    bitfield_from_raw(raw, n).unwrap_or_else(|| Bitfield::new(n)),
                )
            })
            .collect()
    }

    /// Whether every piece of `id` is stored here.
    pub fn is_complete(&self, id: ContentId) -> bool {
        self.local.get(&id).is_some_and(|l| l.stored.is_complete())
            && !self.downloads.contains_key(&id)
    }

    /// A player needs `bytes` of download `id` now (`None`: nothing in particular): the
    /// pieces covering them, in order, and [`READ_AHEAD_PIECES`] after them are fetched before
    /// any other. Requests elsewhere that have seen no data yet are cancelled when window
    /// pieces are still waiting, so a seek does not queue behind them. Works before the
    /// manifest is known too.
    pub fn set_priority(
        &mut self,
        id: ContentId,
        bytes: Option<Range<u64>>,
        now: u64,
    ) -> Outputs<P> {
        let mut out = Vec::new();
        let window = bytes
            .clone()
            .and_then(|bytes| Some(priority_window(self.manifest(id)?, bytes)));
        let Some(download) = self.downloads.get_mut(&id) else {
            return out;
        };
        download.priority = bytes;
        if let Phase::Pieces {
            selector, partial, ..
        } = &mut download.phase
        {
            selector.set_priority(window.clone());
            if let Some(window) = window {
                let waiting = window.clone().any(|i| {
                    !selector.have().get(i) && selector.outstanding().all(|(_, p)| p != i)
                });
                let stale: Vec<(P, u32)> = selector
                    .outstanding()
                    .filter(|(peer, piece)| {
                        !window.contains(piece) && !partial.contains_key(&(*piece, *peer))
                    })
                    .collect();
                if waiting {
                    for (peer, piece) in stale {
                        selector.cancel(peer, piece);
                        send(&mut out, peer, PeerMsg::Cancel { id, piece });
                    }
                }
            }
        }
        self.fill_requests(&mut out, id, now);
        out
    }

    /// How many bytes from `start` of `id`, up to `max`, are stored here without a gap.
    pub fn stored_run(&self, id: ContentId, start: u64, max: u64) -> u64 {
        let Some(local) = self.local.get(&id) else {
            return 0;
        };
        let manifest = &local.manifest;
        let end = start.saturating_add(max).min(manifest.size);
        let mut at = start;
        while at < end {
            let piece = (at / u64::from(manifest.piece_size)) as u32;
            if !local.stored.get(piece) {
                break;
            }
            at = manifest.piece_offset(piece) + u64::from(manifest.piece_len(piece));
        }
        at.min(end).saturating_sub(start)
    }

    /// Whether `len` bytes at `start` of `id` are stored here (false while the manifest is
    /// unknown).
    pub fn has_bytes(&self, id: ContentId, start: u64, len: u64) -> bool {
        let Some(local) = self.local.get(&id) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        let Some(pieces) = byte_pieces(&local.manifest, start..start + len) else {
            return false;
        };
        pieces.into_iter().all(|i| local.stored.get(i))
    }

    /// A connection to `peer` opened: greet it and tell it what we hold.
    pub fn add_peer(&mut self, peer: P) -> Outputs<P> {
        let mut out = Vec::new();
        self.peers.entry(peer).or_default();
        send(
            &mut out,
            peer,
            PeerMsg::Hello {
                version: PEER_PROTOCOL_VERSION,
            },
        );
        for (id, local) in &self.local {
            announce(&mut out, peer, *id, local);
        }
        out
    }

    /// The connection to `peer` ended.
    pub fn remove_peer(&mut self, peer: P, now: u64) -> Outputs<P> {
        let mut out = Vec::new();
        self.peers.remove(&peer);
        let ids: Vec<ContentId> = self
            .offers
            .iter()
            .filter(|(_, offer)| offer.sources.contains_key(&peer))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.drop_source(&mut out, id, peer, now);
        }
        out
    }

    /// We hold all of `manifest`'s content (the owner has the bytes): offer it to everyone.
    pub fn share(&mut self, id: ContentId, manifest: Manifest) -> Outputs<P> {
        let mut out = Vec::new();
        self.downloads.remove(&id);
        let stored = Bitfield::full(manifest.piece_count());
        let local = Local {
            encoded: manifest.encode(),
            manifest,
            stored,
        };
        for peer in self.peers.keys() {
            announce(&mut out, *peer, id, &local);
        }
        self.local.insert(id, local);
        out
    }

    /// Starts fetching `id` from the peers that offer it.
    pub fn download(&mut self, id: ContentId, now: u64) -> Result<Outputs<P>, ShareError> {
        let mut out = Vec::new();
        if self.is_complete(id) {
            out.push(Output::Event(ShareEvent::Completed { id }));
            return Ok(out);
        }
        if self.downloads.contains_key(&id) {
            return Ok(out);
        }
        if self.offers.get(&id).is_none_or(|o| o.sources.is_empty()) {
            return Err(ShareError::UnknownContent(id));
        }
        self.begin_download(&mut out, id, now);
        Ok(out)
    }

    /// Starts fetching `id`, which no connected peer offers yet but a peer elsewhere in the
    /// room provides (the owner is connecting to it): the download waits for a source to
    /// announce it, then proceeds as [`Share::download`].
    pub fn download_provided(
        &mut self,
        id: ContentId,
        size: u64,
        name: &str,
        mime: &str,
        now: u64,
    ) -> Outputs<P> {
        let mut out = Vec::new();
        if self.is_complete(id) {
            out.push(Output::Event(ShareEvent::Completed { id }));
            return out;
        }
        if self.downloads.contains_key(&id) {
            return out;
        }
        self.offers.entry(id).or_insert_with(|| Offer {
            name: name.to_owned(),
            size,
            mime: mime.to_owned(),
            sources: BTreeMap::new(),
        });
        self.begin_download(&mut out, id, now);
        out
    }

    fn begin_download(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64) {
        self.downloads.insert(
            id,
            Download {
                phase: Phase::Manifest(ManifestFetch {
                    from: None,
                    tried: BTreeSet::new(),
                    buf: Vec::new(),
                    received: 0,
                }),
                bad: BTreeSet::new(),
                rate: RateMeter::new(now),
                last_progress: now,
                received_from: BTreeMap::new(),
                priority: None,
            },
        );
        self.request_manifest(out, id, now);
    }

    /// Stops downloading `id`, cancels its requests and stops offering its pieces.
    pub fn cancel(&mut self, id: ContentId) -> Result<Outputs<P>, ShareError> {
        let download = self
            .downloads
            .remove(&id)
            .ok_or(ShareError::NotDownloading(id))?;
        let mut out = Vec::new();
        if let Phase::Pieces { selector, .. } = &download.phase {
            for (peer, piece) in selector.outstanding() {
                send(&mut out, peer, PeerMsg::Cancel { id, piece });
            }
        }
        if self.local.remove(&id).is_some() {
            for peer in self.peers.keys() {
                send(&mut out, *peer, PeerMsg::NotFound { id });
            }
        }
        out.push(Output::Event(ShareEvent::Failed {
            id,
            reason: FailReason::Cancelled,
        }));
        Ok(out)
    }

    /// A peer-protocol message arrived from `peer`.
    pub fn on_message(&mut self, peer: P, msg: PeerMsg<'_>, now: u64) -> Outputs<P> {
        let mut out = Vec::new();
        match msg {
            PeerMsg::Hello { version } => {
                self.peers.entry(peer).or_default().version = Some(version);
            }
            PeerMsg::Announce {
                id,
                size,
                name,
                mime,
            } => {
                self.on_announce(&mut out, peer, id, size, name, mime, now);
            }
            PeerMsg::Bitfield { id, bits } => self.on_bitfield(&mut out, peer, id, bits, now),
            PeerMsg::Have { id, piece } => self.on_have(&mut out, peer, id, piece, now),
            PeerMsg::Request { id, piece } => self.on_request(&mut out, peer, id, piece),
            PeerMsg::Cancel { id, piece } => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.serving.retain(|r| *r != (id, piece));
                    state.reading.retain(|r| *r != (id, piece));
                    if let Some(i) = state.queued.iter().position(|r| *r == (id, piece)) {
                        // Seeks cancel what is no longer wanted: do not spend the upload
                        // on it.
                        state.queued.remove(i);
                        out.push(Output::Withdraw {
                            to: peer,
                            id,
                            piece,
                        });
                    }
                }
                self.start_reads(&mut out, peer);
            }
            PeerMsg::Piece {
                id,
                piece,
                offset,
                data,
            } => {
                self.on_chunk(&mut out, peer, id, piece, offset, data, now);
            }
            PeerMsg::Reject { id, piece } => {
                if let Some(Download {
                    phase:
                        Phase::Pieces {
                            selector, partial, ..
                        },
                    ..
                }) = self.downloads.get_mut(&id)
                {
                    selector.on_rejected(peer, piece);
                    partial.remove(&(piece, peer));
                    self.fill_requests(&mut out, id, now);
                }
            }
            PeerMsg::ManifestRequest { id } => self.on_manifest_request(&mut out, peer, id),
            PeerMsg::ManifestPart {
                id,
                offset,
                total,
                data,
            } => {
                self.on_manifest_part(&mut out, peer, id, offset, total, data, now);
            }
            PeerMsg::NotFound { id } => self.drop_source(&mut out, id, peer, now),
            PeerMsg::Chunks { id, segments } => {
                for chunk in segments.iter() {
                    self.on_chunk(
                        &mut out,
                        peer,
                        id,
                        chunk.piece,
                        chunk.offset,
                        chunk.data,
                        now,
                    );
                }
            }
        }
        out
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
        }
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
            out.push(Output::ReadPiece {
                to: peer,
                id,
                piece,
                offset: local.manifest.piece_offset(piece),
                len: local.manifest.piece_len(piece),
            });
        }
        if !state.more_coming() {
            state.flush(out, peer);
        }
    }

    /// The owner hashed a piece of a checked [`Output::WritePiece`] from peer `from`: if it `matched`, it
    /// was stored, as after [`Share::piece_stored`]; if not, nothing was stored, `from` is
    /// dropped for this content and the piece is fetched again elsewhere.
    pub fn piece_checked(
        &mut self,
        id: ContentId,
        piece: u32,
        from: P,
        matched: bool,
        now: u64,
    ) -> Outputs<P> {
        let Some(download) = self.downloads.get_mut(&id) else {
            return Vec::new();
        };
        let Phase::Pieces {
            selector, verified, ..
        } = &mut download.phase
        else {
            return Vec::new();
        };
        if matched {
            verified.set(piece);
            return self.piece_stored(id, piece, now);
        }
        selector.on_piece_failed(piece);
        let mut out = Vec::new();
        self.mark_bad(&mut out, id, from, "piece failed verification", now);
        self.fill_requests(&mut out, id, now);
        out
    }

    /// The owner stored a verified piece: offer it, and finish the download when it was the
    /// last.
    pub fn piece_stored(&mut self, id: ContentId, piece: u32, now: u64) -> Outputs<P> {
        let mut out = Vec::new();
        let Some(local) = self.local.get_mut(&id) else {
            return out;
        };
        if !local.stored.set(piece) {
            return out;
        }
        let sources = self.offers.get(&id).map(|o| &o.sources);
        let pieces = local.manifest.piece_count();
        for (peer, state) in &mut self.peers {
            let holds_all = sources
                .and_then(|s| s.get(peer))
                .is_some_and(|raw| holds_all(raw, pieces));
            if holds_all {
                state.untold.insert(id);
            } else {
                send(&mut out, *peer, PeerMsg::Have { id, piece });
            }
        }
        if local.stored.is_complete() && self.downloads.contains_key(&id) {
            if let Some(mut progress) = self.progress(id, now) {
                progress.received = progress.total;
                out.push(Output::Event(ShareEvent::Progress { id, progress }));
            }
            self.downloads.remove(&id);
            out.push(Output::Event(ShareEvent::Completed { id }));
        }
        out
    }

    /// Time passed: move stalled requests and manifest fetches elsewhere, give up links that
    /// stopped delivering, report speeds.
    pub fn tick(&mut self, now: u64) -> Outputs<P> {
        let mut out = Vec::new();
        let mut stalled = BTreeSet::new();
        let ids: Vec<ContentId> = self.downloads.keys().copied().collect();
        for id in ids {
            let Some(download) = self.downloads.get_mut(&id) else {
                continue;
            };
            match &mut download.phase {
                Phase::Manifest(fetch) => {
                    if fetch.from.is_some_and(|(_, deadline)| deadline <= now) {
                        fetch.from = None;
                        self.request_manifest(&mut out, id, now);
                    } else if fetch.from.is_none() {
                        self.request_manifest(&mut out, id, now);
                    }
                }
                Phase::Pieces {
                    selector, partial, ..
                } => {
                    for (peer, piece) in selector.expire(now) {
                        partial.remove(&(piece, peer));
                        send(&mut out, peer, PeerMsg::Cancel { id, piece });
                    }
                    stalled.extend(selector.stalled(now, STALLED_LINK_MS));
                    self.fill_requests(&mut out, id, now);
                    self.push_progress(&mut out, id, now, true);
                }
            }
        }
        out.extend(stalled.into_iter().map(Output::Stalled));
        for (peer, state) in &mut self.peers {
            for id in std::mem::take(&mut state.untold) {
                if let Some(local) = self.local.get(&id) {
                    let bits = local.stored.as_bytes();
                    send(&mut out, *peer, PeerMsg::Bitfield { id, bits });
                }
            }
        }
        out
    }

    /// Where a download stands.
    pub fn progress(&mut self, id: ContentId, now: u64) -> Option<Progress<P>> {
        let total = self.offers.get(&id).map(|o| o.size);
        let download = self.downloads.get_mut(&id)?;
        let (received, peers, total) = match &download.phase {
            Phase::Manifest(_) => (0, 0, total.unwrap_or(0)),
            Phase::Pieces {
                selector, verified, ..
            } => {
                let manifest = &self.local.get(&id)?.manifest;
                let received = verified
                    .iter_ones()
                    .map(|i| u64::from(manifest.piece_len(i)))
                    .sum();
                (received, selector.useful_peers(), manifest.size)
            }
        };
        Some(Progress {
            received,
            total,
            peers,
            bytes_per_second: download.rate.per_second(now),
            from: download
                .received_from
                .iter()
                .map(|(p, n)| (*p, *n))
                .collect(),
        })
    }

    // ---- message handlers ----

    #[allow(clippy::too_many_arguments)]
    fn on_announce(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        size: u64,
        name: &str,
        mime: &str,
        now: u64,
    ) {
        let is_new = !self.offers.contains_key(&id) && !self.local.contains_key(&id);
        let offer = self.offers.entry(id).or_insert_with(|| Offer {
            name: name.to_owned(),
            size,
            mime: mime.to_owned(),
            sources: BTreeMap::new(),
        });
        let added = offer.sources.insert(peer, Vec::new()).is_none();
        let sources = offer.sources.len();
        if is_new && let Some(info) = self.file(id) {
            out.push(Output::Event(ShareEvent::Offered(info)));
        } else if added {
            out.push(Output::Event(ShareEvent::SourcesChanged { id, sources }));
        }
        if let Some(Download {
            phase: Phase::Manifest(fetch),
            ..
        }) = self.downloads.get(&id)
            && fetch.from.is_none()
        {
            self.request_manifest(out, id, now);
        }
    }

    /// The packed bits gathered for `peer` as a source of `id`, if it announced `id`.
    fn source_bits(&mut self, id: ContentId, peer: P) -> Option<&mut Vec<u8>> {
        self.offers.get_mut(&id)?.sources.get_mut(&peer)
    }

    fn on_bitfield(&mut self, out: &mut Outputs<P>, peer: P, id: ContentId, bits: &[u8], now: u64) {
        let Some(raw) = self.source_bits(id, peer) else {
            return;
        };
        *raw = bits.to_vec();
        self.refresh_source(out, id, peer, now);
    }

    fn on_have(&mut self, out: &mut Outputs<P>, peer: P, id: ContentId, piece: u32, now: u64) {
        let Some(raw) = self.source_bits(id, peer) else {
            return;
        };
        if piece >= MAX_PIECES {
            return;
        }
        let byte = (piece / 8) as usize;
        if raw.len() <= byte {
            raw.resize(byte + 1, 0);
        }
        raw[byte] |= 0x80 >> (piece % 8);
        if let Some(Download {
            phase: Phase::Pieces { selector, .. },
            bad,
            ..
        }) = self.downloads.get_mut(&id)
            && !bad.contains(&peer)
        {
            if selector.peer_pieces(peer).is_some() {
                selector.peer_has(peer, piece);
            } else {
                self.refresh_source(out, id, peer, now);
            }
            self.fill_requests(out, id, now);
        }
    }

    /// Re-reads what `peer` has of `id` into the download's selector.
    fn refresh_source(&mut self, out: &mut Outputs<P>, id: ContentId, peer: P, now: u64) {
        let n = match self.local.get(&id) {
            Some(local) => local.manifest.piece_count(),
            None => return,
        };
        let Some(raw) = self.offers.get(&id).and_then(|o| o.sources.get(&peer)) else {
            return;
        };
        let field = bitfield_from_raw(raw, n);
        let Some(Download {
            phase: Phase::Pieces { selector, .. },
            bad,
            ..
        }) = self.downloads.get_mut(&id)
        else {
            return;
        };
        if bad.contains(&peer) {
            return;
        }
        match field {
            Some(field) => {
                selector.add_peer(peer, field);
                self.fill_requests(out, id, now);
            }
            None => self.mark_bad(out, id, peer, "bitfield does not match the manifest", now),
        }
    }

    fn on_request(&mut self, out: &mut Outputs<P>, peer: P, id: ContentId, piece: u32) {
        let max = self.config.max_serving;
        let available = self.local.get(&id).is_some_and(|l| l.stored.get(piece));
        let state = self.peers.entry(peer).or_default();
        let known = state.serving.contains(&(id, piece)) || state.reading.contains(&(id, piece));
        if available && state.serving.len() < max && !known {
            state.serving.push_back((id, piece));
            self.start_reads(out, peer);
        } else {
            send(out, peer, PeerMsg::Reject { id, piece });
        }
    }

    fn on_manifest_request(&mut self, out: &mut Outputs<P>, peer: P, id: ContentId) {
        let Some(local) = self.local.get(&id) else {
            send(out, peer, PeerMsg::NotFound { id });
            return;
        };
        // An encoded manifest is at most MAX_MANIFEST_LEN bytes, which fits in u32.
        let total = local.encoded.len() as u32;
        if total == 0 {
            return;
        }
        for (n, data) in local
            .encoded
            .chunks(MANIFEST_CHUNK_LEN as usize)
            .enumerate()
        {
            let offset = n as u32 * MANIFEST_CHUNK_LEN;
            send(
                out,
                peer,
                PeerMsg::ManifestPart {
                    id,
                    offset,
                    total,
                    data,
                },
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_manifest_part(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        offset: u32,
        total: u32,
        data: &[u8],
        now: u64,
    ) {
        let Some(Download {
            phase: Phase::Manifest(fetch),
            ..
        }) = self.downloads.get_mut(&id)
        else {
            return;
        };
        if fetch.from.map(|(p, _)| p) != Some(peer) {
            return;
        }
        if total == 0 || total > MAX_MANIFEST_LEN {
            self.mark_bad(out, id, peer, "manifest too large", now);
            return;
        }
        if fetch.buf.is_empty() {
            fetch.buf = vec![0; total as usize];
        }
        let end = offset as usize + data.len();
        if fetch.buf.len() != total as usize || end > fetch.buf.len() {
            self.mark_bad(out, id, peer, "manifest part out of range", now);
            return;
        }
        fetch.buf[offset as usize..end].copy_from_slice(data);
        fetch.received += data.len() as u32;
        fetch.from = Some((peer, now + self.config.manifest_timeout_ms));
        if fetch.received < total {
            return;
        }
        let bytes = std::mem::take(&mut fetch.buf);
        match merkle::verify_manifest(id, &bytes) {
            Ok(manifest) => self.start_pieces(out, id, manifest, bytes, now),
            Err(_) => self.mark_bad(out, id, peer, "manifest does not match the content id", now),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_chunk(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        piece: u32,
        offset: u32,
        data: &[u8],
        now: u64,
    ) {
        let Some(local) = self.local.get(&id) else {
            return;
        };
        let Some(download) = self.downloads.get_mut(&id) else {
            return;
        };
        let Phase::Pieces {
            selector,
            partial,
            verified,
        } = &mut download.phase
        else {
            return;
        };
        if !selector.is_requested(peer, piece) {
            return; // cancelled, timed out, or never asked: ignore
        }
        let len = local.manifest.piece_len(piece);
        let end = offset as usize + data.len();
        if end > len as usize {
            self.mark_bad(out, id, peer, "piece data out of range", now);
            return;
        }
        download.rate.add(now, data.len() as u64);
        *download.received_from.entry(peer).or_default() += data.len() as u64;
        selector.on_progress(peer, piece, now);
        let part = partial.entry((piece, peer)).or_insert_with(|| Partial {
            buf: vec![0; len as usize],
            received: ranges::Ranges::default(),
        });
        part.buf[offset as usize..end].copy_from_slice(data);
        // `end` <= piece length, which fits in u32.
        part.received.add(offset, end as u32);
        if !part.received.covers(len) {
            return;
        }
        let Some(part) = partial.remove(&(piece, peer)) else {
            return;
        };
        let check = if self.config.owner_checks_pieces {
            // Counted as ours until the owner says it does not match (`piece_checked`).
            let Some(expected) = local.manifest.piece_hashes.get(piece as usize) else {
                return;
            };
            Some(PieceCheck {
                expected: *expected,
                from: peer,
            })
        } else {
            if !merkle::verify_piece(&local.manifest, piece, &part.buf) {
                self.mark_bad(out, id, peer, "piece failed verification", now);
                return;
            }
            verified.set(piece);
            None
        };
        out.push(Output::WritePiece {
            id,
            piece,
            offset: local.manifest.piece_offset(piece),
            data: part.buf,
            check,
        });
        for (other, dup) in selector.on_piece_done(peer, piece, now) {
            partial.remove(&(dup, other));
            send(out, other, PeerMsg::Cancel { id, piece: dup });
        }
        self.fill_requests(out, id, now);
        self.push_progress(out, id, now, false);
    }

    // ---- helpers ----

    fn request_manifest(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64) {
        let timeout = self.config.manifest_timeout_ms;
        let Some(download) = self.downloads.get_mut(&id) else {
            return;
        };
        let Phase::Manifest(fetch) = &mut download.phase else {
            return;
        };
        let Some(offer) = self.offers.get(&id) else {
            return;
        };
        let candidates = || offer.sources.keys().filter(|p| !download.bad.contains(p));
        // Prefer a source not tried yet; start over once all have been.
        let next = candidates()
            .find(|p| !fetch.tried.contains(p))
            .or_else(|| {
                fetch.tried.clear();
                candidates().next()
            })
            .copied();
        if let Some(peer) = next {
            fetch.tried.insert(peer);
            fetch.from = Some((peer, now + timeout));
            fetch.buf.clear();
            fetch.received = 0;
            send(out, peer, PeerMsg::ManifestRequest { id });
        }
    }

    fn start_pieces(
        &mut self,
        out: &mut Outputs<P>,
        id: ContentId,
        manifest: Manifest,
        encoded: Vec<u8>,
        now: u64,
    ) {
        let n = manifest.piece_count();
        let seed =
            self.seed ^ u64::from_be_bytes(id.as_bytes()[..8].try_into().unwrap_or_default());
        let mut selector = PieceSelector::new(n, self.config.selector, seed);
        if let Some(offer) = self.offers.get(&id) {
            for (peer, raw) in &offer.sources {
                if let Some(field) = bitfield_from_raw(raw, n)
                    && let Some(d) = self.downloads.get(&id)
                    && !d.bad.contains(peer)
                {
                    selector.add_peer(*peer, field);
                }
            }
        }
        out.push(Output::Event(ShareEvent::ManifestReady {
            id,
            manifest: manifest.clone(),
        }));
        let local = Local {
            manifest,
            encoded,
            stored: Bitfield::new(n),
        };
        // From now on we are a source too: announce, with the (empty) bitfield.
        for peer in self.peers.keys() {
            announce(out, *peer, id, &local);
        }
        self.local.insert(id, local);
        if let Some(download) = self.downloads.get_mut(&id) {
            let window = download.priority.clone().and_then(|bytes| {
                self.local
                    .get(&id)
                    .map(|l| priority_window(&l.manifest, bytes))
            });
            selector.set_priority(window);
            download.phase = Phase::Pieces {
                selector,
                partial: BTreeMap::new(),
                verified: Bitfield::new(n),
            };
        }
        if n == 0 {
            self.downloads.remove(&id);
            out.push(Output::Event(ShareEvent::Completed { id }));
            return;
        }
        self.fill_requests(out, id, now);
        self.push_progress(out, id, now, true);
    }

    fn fill_requests(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64) {
        if let Some(Download {
            phase: Phase::Pieces { selector, .. },
            ..
        }) = self.downloads.get_mut(&id)
        {
            for (peer, piece) in selector.next_requests(now) {
                send(out, peer, PeerMsg::Request { id, piece });
            }
        }
    }

    /// `peer` sent bad data for `id`: stop using it for `id` and fetch elsewhere.
    fn mark_bad(
        &mut self,
        out: &mut Outputs<P>,
        id: ContentId,
        peer: P,
        reason: &'static str,
        now: u64,
    ) {
        let Some(download) = self.downloads.get_mut(&id) else {
            return;
        };
        if !download.bad.insert(peer) {
            return;
        }
        match &mut download.phase {
            Phase::Manifest(fetch) => {
                if fetch.from.map(|(p, _)| p) == Some(peer) {
                    fetch.from = None;
                }
            }
            Phase::Pieces {
                selector, partial, ..
            } => {
                for piece in selector.remove_peer(peer) {
                    send(out, peer, PeerMsg::Cancel { id, piece });
                }
                partial.retain(|(_, p), _| *p != peer);
            }
        }
        out.push(Output::Event(ShareEvent::BadPeer { id, peer, reason }));
        self.request_manifest(out, id, now);
        self.fill_requests(out, id, now);
    }

    fn drop_source(&mut self, out: &mut Outputs<P>, id: ContentId, peer: P, now: u64) {
        let Some(offer) = self.offers.get_mut(&id) else {
            return;
        };
        if offer.sources.remove(&peer).is_none() {
            return;
        }
        let sources = offer.sources.len();
        out.push(Output::Event(ShareEvent::SourcesChanged { id, sources }));
        if let Some(download) = self.downloads.get_mut(&id) {
            match &mut download.phase {
                Phase::Manifest(fetch) => {
                    if fetch.from.map(|(p, _)| p) == Some(peer) {
                        fetch.from = None;
                        self.request_manifest(out, id, now);
                    }
                }
                Phase::Pieces {
                    selector, partial, ..
                } => {
                    selector.remove_peer(peer);
                    partial.retain(|(_, p), _| *p != peer);
                    self.fill_requests(out, id, now);
                }
            }
        }
    }

    fn push_progress(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64, force: bool) {
        let interval = self.config.progress_interval_ms;
        let Some(download) = self.downloads.get_mut(&id) else {
            return;
        };
        if !force && now < download.last_progress + interval {
            return;
        }
        download.last_progress = now;
        if let Some(progress) = self.progress(id, now) {
            out.push(Output::Event(ShareEvent::Progress { id, progress }));
        }
    }
}

/// Pieces after those a player asked for that join the priority window (2 MiB of read-ahead
/// with the default piece size).
pub const READ_AHEAD_PIECES: u32 = 8;

/// The pieces holding `bytes` (empty or past the end: `None`).
fn byte_pieces(manifest: &Manifest, bytes: Range<u64>) -> Option<std::ops::RangeInclusive<u32>> {
    let end = bytes.end.min(manifest.size);
    if bytes.start >= end {
        return None;
    }
    let piece_size = u64::from(manifest.piece_size);
    // Below the piece count, which fits in u32.
    Some((bytes.start / piece_size) as u32..=((end - 1) / piece_size) as u32)
}

/// The priority window for a player that needs `bytes`: their pieces, then read-ahead.
fn priority_window(manifest: &Manifest, bytes: Range<u64>) -> Range<u32> {
    match byte_pieces(manifest, bytes) {
        Some(pieces) => {
            let end = pieces
                .end()
                .saturating_add(1 + READ_AHEAD_PIECES)
                .min(manifest.piece_count());
            *pieces.start()..end
        }
        None => 0..0,
    }
}

/// Offers `local` to `peer`: an announcement followed by the pieces we have.
fn announce<P: Copy>(out: &mut Outputs<P>, peer: P, id: ContentId, local: &Local) {
    let m = &local.manifest;
    send(
        out,
        peer,
        PeerMsg::Announce {
            id,
            size: m.size,
            name: &m.name,
            mime: &m.mime,
        },
    );
    send(
        out,
        peer,
        PeerMsg::Bitfield {
            id,
            bits: local.stored.as_bytes(),
        },
    );
}

/// Whether packed bits gathered from `Bitfield` and `Have` messages have all of `n` pieces.
fn holds_all(raw: &[u8], n: u32) -> bool {
    let (whole, rest) = ((n / 8) as usize, n % 8);
    raw.len() >= whole + usize::from(rest > 0)
        && raw[..whole].iter().all(|b| *b == 0xff)
        && (rest == 0 || raw[whole] & (0xff << (8 - rest)) == 0xff << (8 - rest))
}

/// Reads packed bits gathered from `Bitfield` and `Have` messages as a bitfield of `n` pieces.
/// `None` if they name pieces past the end.
fn bitfield_from_raw(raw: &[u8], n: u32) -> Option<Bitfield> {
    let len = n.div_ceil(8) as usize;
    if raw.len() > len && raw[len..].iter().any(|b| *b != 0) {
        return None;
    }
    let mut bytes = raw[..raw.len().min(len)].to_vec();
    bytes.resize(len, 0);
    Bitfield::from_bytes(&bytes, n)
}

#[cfg(test)]
mod tests;
