//! Fetching content: starting, steering ([`Share::set_priority`]) and cancelling a download,
//! requesting pieces, putting chunks together, verifying and storing pieces, dropping peers
//! that send bad data, and reporting progress.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use swarm_protocol::content::Manifest;
use swarm_protocol::{ContentId, PeerMsg};

use super::ranges::Ranges;
use super::{
    FailReason, Local, Offer, Output, Outputs, PieceCheck, Progress, READ_AHEAD_PIECES, RateMeter,
    Share, ShareError, ShareEvent, WritePiece, announce, bitfield_from_raw, holds_all, send,
};
use crate::bitfield::Bitfield;
use crate::merkle;
use crate::selector::PieceSelector;

/// A manifest being fetched: from whom and until when, whom we asked already, the bytes so
/// far.
#[derive(Debug)]
pub(super) struct ManifestFetch<P> {
    pub(super) from: Option<(P, u64)>,
    pub(super) tried: BTreeSet<P>,
    pub(super) buf: Vec<u8>,
    /// The byte ranges of the manifest received so far.
    pub(super) received: Ranges,
}

/// A piece coming in from one peer: its bytes, and which of them have arrived.
#[derive(Debug)]
pub(super) struct Partial {
    buf: Vec<u8>,
    received: Ranges,
}

/// Where a download is: fetching the manifest, then the pieces.
#[derive(Debug)]
pub(super) enum Phase<P> {
    Manifest(ManifestFetch<P>),
    Pieces {
        selector: PieceSelector<P>,
        partial: BTreeMap<(u32, P), Partial>,
        verified: Bitfield,
    },
}

/// A download under way.
#[derive(Debug)]
pub(super) struct Download<P> {
    pub(super) phase: Phase<P>,
    pub(super) bad: BTreeSet<P>,
    rate: RateMeter,
    last_progress: u64,
    received_from: BTreeMap<P, u64>,
    /// Bytes a player needs first (kept here so it applies once the manifest is in).
    priority: Option<Range<u64>>,
}

impl<P: Ord + Copy> Share<P> {
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

    /// Resumes the download of `id` from pieces stored by an earlier run of the owner (a
    /// page before a reload): the manifest is known, so it is not fetched again; `have`
    /// lists the pieces the owner holds and has checked against it, and only the others are
    /// requested. Those pieces are offered to peers at once, and the first progress event
    /// counts them. With every piece, `id` is held whole, as after [`Share::share`].
    /// Nothing happens if `id` is being downloaded or held whole already. A `have` of another
    /// length than the manifest's piece count counts as no piece.
    pub fn resume(
        &mut self,
        id: ContentId,
        manifest: Manifest,
        have: Bitfield,
        now: u64,
    ) -> Outputs<P> {
        let n = manifest.piece_count();
        let have = if have.len() == n {
            have
        } else {
            Bitfield::new(n)
        };
        if have.is_complete() {
            return self.share(id, manifest);
        }
        let mut out = Vec::new();
        if self.downloads.contains_key(&id) || self.is_complete(id) {
            return out;
        }
        self.offers.entry(id).or_insert_with(|| Offer {
            name: manifest.name.clone(),
            size: manifest.size,
            mime: manifest.mime.clone(),
            sources: BTreeMap::new(),
        });
        self.insert_download(id, now);
        let encoded = manifest.encode();
        self.start_pieces(&mut out, id, manifest, encoded, have, now);
        out
    }

    /// Stops offering and fetching `id`: a download is cancelled (its
    /// [`ShareEvent::Failed`] follows), peers hear that we no longer have it, and its
    /// manifest is forgotten. The owner deletes what it stored. Returns nothing if `id` is
    /// neither held nor downloading.
    pub fn forget(&mut self, id: ContentId) -> Outputs<P> {
        if self.downloads.contains_key(&id) {
            return self.cancel(id).unwrap_or_default();
        }
        let mut out = Vec::new();
        if self.local.remove(&id).is_some() {
            for peer in self.peers.keys() {
                send(&mut out, *peer, PeerMsg::NotFound { id });
            }
        }
        if self.offers.get(&id).is_some_and(|o| o.sources.is_empty()) {
            self.offers.remove(&id);
        }
        out
    }

    fn insert_download(&mut self, id: ContentId, now: u64) {
        self.downloads.insert(
            id,
            Download {
                phase: Phase::Manifest(ManifestFetch {
                    from: None,
                    tried: BTreeSet::new(),
                    buf: Vec::new(),
                    received: Ranges::default(),
                }),
                bad: BTreeSet::new(),
                rate: RateMeter::new(now),
                last_progress: now,
                received_from: BTreeMap::new(),
                priority: None,
            },
        );
    }

    fn begin_download(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64) {
        self.insert_download(id, now);
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

    /// A player needs `bytes` of download `id` now (`None`: nothing in particular): the
    /// pieces covering them, in order, and [`READ_AHEAD_PIECES`] after them are fetched before
    /// any other. Requests that have seen no data yet, elsewhere or after a window piece
    /// still waiting, are cancelled and asked again behind it, so a seek (or the start of
    /// playback) does not queue behind them. Works before the
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
            // The first piece of the window neither here nor asked for: requests that have
            // seen no data yet, outside the window or later in it, are withdrawn, so that
            // it is asked for before them (a peer serves requests in order; a player
            // waits for the first piece, not for those after it).
            let first_waiting = window.clone().and_then(|mut window| {
                window.find(|i| {
                    !selector.have().get(*i) && selector.outstanding().all(|(_, p)| p != *i)
                })
            });
            if let (Some(window), Some(first)) = (window, first_waiting) {
                let stale: Vec<(P, u32)> = selector
                    .outstanding()
                    .filter(|(peer, piece)| {
                        (!window.contains(piece) || *piece > first)
                            && !partial.contains_key(&(*piece, *peer))
                    })
                    .collect();
                for (peer, piece) in stale {
                    selector.cancel(peer, piece);
                    send(&mut out, peer, PeerMsg::Cancel { id, piece });
                }
            }
        }
        self.fill_requests(&mut out, id, now);
        out
    }

    /// The manifest of download `id` is known (fetched, or kept from before): from now on
    /// its pieces are fetched, those in `have` (of the manifest's piece count) are stored
    /// already.
    pub(super) fn start_pieces(
        &mut self,
        out: &mut Outputs<P>,
        id: ContentId,
        manifest: Manifest,
        encoded: Vec<u8>,
        have: Bitfield,
        now: u64,
    ) {
        let n = manifest.piece_count();
        let seed =
            self.seed ^ u64::from_be_bytes(id.as_bytes()[..8].try_into().unwrap_or_default());
        let mut selector = PieceSelector::resume(have.clone(), self.config.selector, seed);
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
            stored: have.clone(),
        };
        // From now on we are a source too: announce, with the bitfield (empty unless resumed).
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
                verified: have,
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

    pub(super) fn fill_requests(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64) {
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

    /// `peer` will not send a piece we asked for: ask someone else.
    pub(super) fn on_reject(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        piece: u32,
        now: u64,
    ) {
        if let Some(Download {
            phase: Phase::Pieces {
                selector, partial, ..
            },
            ..
        }) = self.downloads.get_mut(&id)
        {
            selector.on_rejected(peer, piece);
            partial.remove(&(piece, peer));
            self.fill_requests(out, id, now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_chunk(
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
        // In u64: `offset` and the length come from the peer, and near u32::MAX their sum
        // would wrap a 32-bit usize (wasm32) and pass the bound check.
        let end = u64::from(offset) + data.len() as u64;
        if end > u64::from(len) {
            self.mark_bad(out, id, peer, "piece data out of range", now);
            return;
        }
        // `end` <= the piece length, a u32.
        let end = end as usize;
        download.rate.add(now, data.len() as u64);
        *download.received_from.entry(peer).or_default() += data.len() as u64;
        selector.on_progress(peer, piece, now);
        let part = partial.entry((piece, peer)).or_insert_with(|| Partial {
            buf: vec![0; len as usize],
            received: Ranges::default(),
        });
        part.buf[offset as usize..end].copy_from_slice(data);
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
        out.push(Output::WritePiece(WritePiece {
            id,
            piece,
            offset: local.manifest.piece_offset(piece),
            data: part.buf,
            check,
        }));
        for (other, dup) in selector.on_piece_done(peer, piece, now) {
            partial.remove(&(dup, other));
            send(out, other, PeerMsg::Cancel { id, piece: dup });
        }
        self.fill_requests(out, id, now);
        self.push_progress(out, id, now, false);
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

    /// `peer` sent bad data for `id`: stop using it for `id` and fetch elsewhere.
    pub(super) fn mark_bad(
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

    pub(super) fn drop_source(&mut self, out: &mut Outputs<P>, id: ContentId, peer: P, now: u64) {
        let Some(offer) = self.offers.get_mut(&id) else {
            return;
        };
        let Some(bits) = offer.sources.remove(&peer) else {
            return;
        };
        if let Some(state) = self.peers.get_mut(&peer) {
            state.budget.withdraw(bits.len());
        }
        let sources = offer.sources.len();
        // An offer nobody makes any more is forgotten, unless we are downloading it (a new
        // source may come).
        if sources == 0 && !self.downloads.contains_key(&id) {
            self.offers.remove(&id);
        }
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

    pub(super) fn push_progress(
        &mut self,
        out: &mut Outputs<P>,
        id: ContentId,
        now: u64,
        force: bool,
    ) {
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

/// The pieces holding `bytes` (empty or past the end: `None`).
pub(super) fn byte_pieces(
    manifest: &Manifest,
    bytes: Range<u64>,
) -> Option<std::ops::RangeInclusive<u32>> {
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
