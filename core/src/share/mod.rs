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

// The engine's methods are split by role: `offers` (announcements, sources, manifests),
// `upload` (serving pieces) and `download` (fetching them); the types they share are here.
pub mod bounds;
mod download;
mod offers;
mod ranges;
mod rate;
mod upload;

use std::collections::{BTreeMap, BTreeSet};

pub use rate::RateMeter;
use swarm_protocol::content::Manifest;
use swarm_protocol::wire::PEER_PROTOCOL_VERSION;
use swarm_protocol::{ContentId, PeerMsg};

use crate::bitfield::Bitfield;
use crate::selector::SelectorConfig;
use download::{Download, Phase, byte_pieces};
use offers::{Offer, announce, bitfield_from_raw, holds_all};
use upload::PeerState;

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

/// A piece to read, to serve peer `to` ([`Output::ReadPiece`]): `len` bytes at `offset` of
/// content `id`. The owner hands it back with the bytes it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPiece<P> {
    /// The peer that asked.
    pub to: P,
    /// The content.
    pub id: ContentId,
    /// Piece index.
    pub piece: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Piece length.
    pub len: u32,
}

/// A verified piece to store ([`Output::WritePiece`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WritePiece<P> {
    /// The content.
    pub id: ContentId,
    /// Piece index.
    pub piece: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// The piece.
    pub data: Vec<u8>,
    /// The hash the owner checks first, if it does ([`ShareConfig::owner_checks_pieces`]).
    pub check: Option<PieceCheck<P>>,
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
    /// Read a piece and pass it to [`Share::piece_read`].
    ReadPiece(ReadPiece<P>),
    /// Store a piece, then call [`Share::piece_stored`]. With a check
    /// ([`ShareConfig::owner_checks_pieces`]), hash it first and store it only if it matches,
    /// then call [`Share::piece_checked`] with whether it did.
    WritePiece(WritePiece<P>),
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
    /// This peer went past one of its bounds ([`bounds`]): drop its connection (and do not
    /// take it back for a while). Everything it sends from now on is ignored.
    Abusive {
        /// The peer.
        peer: P,
        /// Which bound ([`bounds::reason`]).
        reason: &'static str,
    },
    /// Tell the application.
    Event(ShareEvent<P>),
}

/// How long a peer we asked for pieces may send nothing before its link is given up
/// ([`Output::Stalled`]): two and a half request timeouts.
pub const STALLED_LINK_MS: u64 = 25_000;

/// Pieces after those a player asked for that join the priority window (2 MiB of read-ahead
/// with the default piece size).
pub const READ_AHEAD_PIECES: u32 = 8;

/// Pieces read ahead for one peer: at most this many are being read or waiting in the send
/// queue, so a `cancel` still reaches the requests behind them and memory stays small.
const UPLOAD_PIECES_AHEAD: usize = 2;

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

/// Content we hold (all of it, or the pieces of a download so far).
#[derive(Debug)]
struct Local {
    manifest: Manifest,
    encoded: Vec<u8>,
    stored: Bitfield,
}

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

    /// A peer-protocol message arrived from `peer`.
    pub fn on_message(&mut self, peer: P, msg: PeerMsg<'_>, now: u64) -> Outputs<P> {
        let mut out = Vec::new();
        // Only peers added with [`Share::add_peer`], until they are removed or dropped.
        let Some(state) = self.peers.get_mut(&peer).filter(|s| !s.budget.dropped) else {
            return out;
        };
        match msg {
            PeerMsg::Hello { version } => state.version = Some(version),
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
            PeerMsg::Cancel { id, piece } => self.on_cancel(&mut out, peer, id, piece),
            PeerMsg::Piece {
                id,
                piece,
                offset,
                data,
            } => {
                self.on_chunk(&mut out, peer, id, piece, offset, data, now);
            }
            PeerMsg::Reject { id, piece } => self.on_reject(&mut out, peer, id, piece, now),
            PeerMsg::ManifestRequest { id } => self.on_manifest_request(&mut out, peer, id, now),
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
}

#[cfg(test)]
mod tests;
