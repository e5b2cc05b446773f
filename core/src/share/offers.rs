//! What peers offer and what we offer them: announcements, their `bitfield`s and `have`s
//! (the sources of each content), and the manifest exchange (asking for one, serving ours,
//! receiving and verifying one).

use std::collections::BTreeMap;

use swarm_protocol::content::{MAX_PIECES, Manifest};
use swarm_protocol::wire::MANIFEST_CHUNK_LEN;
use swarm_protocol::{ContentId, PeerMsg};

use super::bounds;
use super::ranges::Ranges;
use super::upload::PeerState;
use super::{Download, Local, Output, Outputs, Phase, Share, ShareEvent, send};
use crate::bitfield::Bitfield;
use crate::merkle;

/// Largest encoded manifest accepted from a peer (the most pieces a manifest may list).
const MAX_MANIFEST_LEN: u32 = 64 + 2 * 1024 + MAX_PIECES * 32;

/// A content someone offered: what they said about it, and which pieces each source has.
#[derive(Debug)]
pub(super) struct Offer<P> {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) mime: String,
    /// Per source: the packed bits from its `Bitfield` and `Have`s, read once the piece count
    /// is known.
    pub(super) sources: BTreeMap<P, Vec<u8>>,
}

impl<P: Ord + Copy> Share<P> {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_announce(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        size: u64,
        name: &str,
        mime: &str,
        now: u64,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let offered = self
            .offers
            .get(&id)
            .and_then(|offer| offer.sources.get(&peer));
        let checked = bounds::check_labels(name, mime).and_then(|()| match offered {
            // Announced again: its bits start over.
            Some(bits) => state.budget.resize_bits(bits.len(), 0),
            None => state.budget.offer(),
        });
        if let Err(reason) = checked {
            abusive(out, state, peer, reason);
            return;
        }
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

    /// Sets the packed bits gathered for `peer` as a source of `id` (`bits`) within its
    /// budget, and returns them. `None` if it did not announce `id`, or went past its budget
    /// (then it is reported).
    fn set_source_bits(
        &mut self,
        out: &mut Outputs<P>,
        id: ContentId,
        peer: P,
        bits: SourceBits<'_>,
    ) -> Option<&mut Vec<u8>> {
        let raw = self.offers.get_mut(&id)?.sources.get_mut(&peer)?;
        let state = self.peers.get_mut(&peer)?;
        let new = match bits {
            SourceBits::Replace(bits) => bits.len(),
            SourceBits::GrowTo(len) => len.max(raw.len()),
        };
        if let Err(reason) = state.budget.resize_bits(raw.len(), new) {
            abusive(out, state, peer, reason);
            return None;
        }
        match bits {
            SourceBits::Replace(bits) => *raw = bits.to_vec(),
            SourceBits::GrowTo(_) => raw.resize(new, 0),
        }
        Some(raw)
    }

    pub(super) fn on_bitfield(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        bits: &[u8],
        now: u64,
    ) {
        if self
            .set_source_bits(out, id, peer, SourceBits::Replace(bits))
            .is_some()
        {
            self.refresh_source(out, id, peer, now);
        }
    }

    pub(super) fn on_have(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        piece: u32,
        now: u64,
    ) {
        // Once the manifest is known, no more bits than it has pieces.
        let pieces = self
            .local
            .get(&id)
            .map_or(MAX_PIECES, |l| l.manifest.piece_count());
        if piece >= pieces {
            return;
        }
        let byte = (piece / 8) as usize;
        let Some(raw) = self.set_source_bits(out, id, peer, SourceBits::GrowTo(byte + 1)) else {
            return;
        };
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

    pub(super) fn request_manifest(&mut self, out: &mut Outputs<P>, id: ContentId, now: u64) {
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
            fetch.received = Ranges::default();
            send(out, peer, PeerMsg::ManifestRequest { id });
        }
    }

    pub(super) fn on_manifest_request(
        &mut self,
        out: &mut Outputs<P>,
        peer: P,
        id: ContentId,
        now: u64,
    ) {
        let Some(local) = self.local.get(&id) else {
            send(out, peer, PeerMsg::NotFound { id });
            return;
        };
        // An encoded manifest is at most MAX_MANIFEST_LEN bytes, which fits in u32.
        let total = local.encoded.len() as u32;
        if total == 0 {
            return;
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        // Replies are far larger than requests: each peer has a budget of them.
        if let Err(reason) = state.budget.manifest(u64::from(total), now) {
            abusive(out, state, peer, reason);
            return;
        }
        if !state.manifests.contains(&id) {
            state.manifests.push_back(id);
        }
        self.send_manifests(out, peer);
    }

    /// Sends `peer` the next manifest it waits for, unless one it was sent is still queued
    /// (not yet reported drained): a peer that does not read gets no more than one.
    pub(super) fn send_manifests(&mut self, out: &mut Outputs<P>, peer: P) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        while !state.manifest_queued {
            let Some(id) = state.manifests.pop_front() else {
                return;
            };
            // It may have been dropped since it was asked for.
            let Some(local) = self.local.get(&id) else {
                send(out, peer, PeerMsg::NotFound { id });
                continue;
            };
            // An encoded manifest is at most MAX_MANIFEST_LEN bytes, which fits in u32.
            let total = local.encoded.len() as u32;
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
            state.manifest_queued = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_manifest_part(
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
        // In u64: `offset` and the length come from the peer, and near u32::MAX their sum
        // would wrap a 32-bit usize (wasm32) and pass the bound check.
        let end = u64::from(offset) + data.len() as u64;
        if fetch.buf.len() != total as usize || end > u64::from(total) {
            self.mark_bad(out, id, peer, "manifest part out of range", now);
            return;
        }
        // `end` <= `total` <= MAX_MANIFEST_LEN: both fit in u32 and usize.
        fetch.buf[offset as usize..end as usize].copy_from_slice(data);
        fetch.received.add(offset, end as u32);
        fetch.from = Some((peer, now + self.config.manifest_timeout_ms));
        // A part that comes twice is counted once.
        if !fetch.received.covers(total) {
            return;
        }
        let bytes = std::mem::take(&mut fetch.buf);
        match merkle::verify_manifest(id, &bytes) {
            Ok(manifest) => {
                let have = Bitfield::new(manifest.piece_count());
                self.start_pieces(out, id, manifest, bytes, have, now)
            }
            Err(_) => self.mark_bad(out, id, peer, "manifest does not match the content id", now),
        }
    }
}

/// How a source's packed bits change.
enum SourceBits<'a> {
    /// To a whole `bitfield`.
    Replace(&'a [u8]),
    /// To at least this many bytes (a `have` past the end), new bits clear.
    GrowTo(usize),
}

/// `peer` went past a bound of its budget: report it once, and ignore it from now on.
fn abusive<P: Copy>(out: &mut Outputs<P>, state: &mut PeerState, peer: P, reason: &'static str) {
    if !std::mem::replace(&mut state.budget.dropped, true) {
        out.push(Output::Abusive { peer, reason });
    }
}

/// Offers `local` to `peer`: an announcement followed by the pieces we have.
pub(super) fn announce<P: Copy>(out: &mut Outputs<P>, peer: P, id: ContentId, local: &Local) {
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
pub(super) fn holds_all(raw: &[u8], n: u32) -> bool {
    let (whole, rest) = ((n / 8) as usize, n % 8);
    raw.len() >= whole + usize::from(rest > 0)
        && raw[..whole].iter().all(|b| *b == 0xff)
        && (rest == 0 || raw[whole] & (0xff << (8 - rest)) == 0xff << (8 - rest))
}

/// Reads packed bits gathered from `Bitfield` and `Have` messages as a bitfield of `n` pieces.
/// `None` if they name pieces past the end.
pub(super) fn bitfield_from_raw(raw: &[u8], n: u32) -> Option<Bitfield> {
    let len = n.div_ceil(8) as usize;
    if raw.len() > len && raw[len..].iter().any(|b| *b != 0) {
        return None;
    }
    let mut bytes = raw[..raw.len().min(len)].to_vec();
    bytes.resize(len, 0);
    Bitfield::from_bytes(&bytes, n)
}
