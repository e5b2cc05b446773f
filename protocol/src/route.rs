//! Frames of the structured layer: messages routed hop by hop over the overlay towards the
//! peers whose ids are closest (by XOR distance) to a content's key, and the answers that
//! travel back along the same path.
//!
//! A [`Route`] frame is a binary data-channel frame tagged `0x0d`:
//!
//! | field   | bytes        | meaning                                                      |
//! |---------|--------------|--------------------------------------------------------------|
//! | tag     | 1            | `0x0d`                                                       |
//! | kind    | 1            | [`RouteKind`]                                                |
//! | id      | 32           | the content id whose key the message is routed towards      |
//! | ttl     | 1            | hops it may still make                                       |
//! | count   | 1            | peers in `path` (at most [`MAX_PATH`])                       |
//! | path    | 16 × count   | the peers it passed, the origin first                        |
//! | records | the rest     | each a u16 length and that many bytes: a signed `provide`   |
//! |         |              | record (a `relay` frame, see [`crate::gossip`])              |
//!
//! Nothing in the frame is signed: what matters, the provider records, carries its own
//! signature, and a forwarder that lies about the path can do no more than one that drops
//! the frame.

use crate::PeerId;
use crate::codec::{Reader, Writer};
use crate::content::ContentId;
use crate::peer_id::PEER_ID_LEN;
use crate::wire::{MAX_FRAME_LEN, WireError};

/// Tag of a [`Route`] frame.
pub(crate) const TAG_ROUTE: u8 = 0x0d;

/// Longest path a routed message may record; also its largest hop limit.
pub const MAX_PATH: usize = 32;

/// Bytes of a [`Route`] frame before its path.
const HEADER_LEN: usize = 1 + 1 + 32 + 1 + 1;

/// What a routed message asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// "Who provides `id`?": answered by the first peer on the way that stores providers of
    /// it, or by the peer where the route ends.
    FindProviders,
    /// "Store this provider record of `id`": kept where the route ends (and by that peer's
    /// closest neighbours).
    AddProvider,
    /// The answer to [`RouteKind::FindProviders`], on its way back along `path`.
    Providers,
}

impl RouteKind {
    fn code(self) -> u8 {
        match self {
            Self::FindProviders => 1,
            Self::AddProvider => 2,
            Self::Providers => 3,
        }
    }

    fn from_code(code: u8) -> Result<Self, WireError> {
        match code {
            1 => Ok(Self::FindProviders),
            2 => Ok(Self::AddProvider),
            3 => Ok(Self::Providers),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// A message of the structured layer, borrowed from the frame it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// What it asks or answers.
    pub kind: RouteKind,
    /// The content.
    pub id: ContentId,
    /// Hops it may still make.
    pub ttl: u8,
    /// The peers it passed, origin first: 16 bytes each (see [`Route::path`]).
    path: &'a [u8],
    /// Length-prefixed records (see [`Route::records`]).
    records: &'a [u8],
}

impl<'a> Route<'a> {
    /// The peers the message passed, the origin first.
    pub fn path(&self) -> impl ExactSizeIterator<Item = PeerId> + 'a {
        self.path.chunks_exact(PEER_ID_LEN).map(|chunk| {
            let mut id = [0u8; PEER_ID_LEN];
            id.copy_from_slice(chunk);
            PeerId::from_bytes(id)
        })
    }

    /// The records it carries (checked to be well framed when the frame was read).
    pub fn records(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.records);
        std::iter::from_fn(move || {
            let len = usize::from(r.u16().ok()?);
            r.bytes(len).ok()
        })
    }

    pub(crate) fn decode_body(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let kind = RouteKind::from_code(r.u8()?)?;
        let id = ContentId::from_bytes(r.array()?);
        let ttl = r.u8()?;
        let count = usize::from(r.u8()?);
        if count > MAX_PATH {
            return Err(WireError::PathTooLong(count));
        }
        let path = r.bytes(count * PEER_ID_LEN)?;
        let records = r.rest();
        // Each record must be whole.
        let mut check = Reader::new(records);
        while !check.is_empty() {
            let len = usize::from(check.u16()?);
            check.bytes(len)?;
        }
        Ok(Self {
            kind,
            id,
            ttl,
            path,
            records,
        })
    }
}

/// A routed message to encode: the owned counterpart of [`Route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOut {
    /// What it asks or answers.
    pub kind: RouteKind,
    /// The content.
    pub id: ContentId,
    /// Hops it may still make.
    pub ttl: u8,
    /// The peers it passed, origin first (at most [`MAX_PATH`]).
    pub path: Vec<PeerId>,
    /// Signed provider records.
    pub records: Vec<Vec<u8>>,
}

impl RouteOut {
    /// The owned copy of a message that was read.
    pub fn from_route(route: &Route<'_>) -> Self {
        Self {
            kind: route.kind,
            id: route.id,
            ttl: route.ttl,
            path: route.path().collect(),
            records: route.records().map(<[u8]>::to_vec).collect(),
        }
    }

    /// The binary frame. Records that would make it longer than a frame may be are left
    /// out (each that fits after the ones before it is kept); a path longer than [`MAX_PATH`] is an error.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        if self.path.len() > MAX_PATH {
            return Err(WireError::PathTooLong(self.path.len()));
        }
        let mut len = HEADER_LEN + self.path.len() * PEER_ID_LEN;
        let mut w = Writer::with_capacity(len);
        // The count fits: MAX_PATH < 256.
        w.u8(TAG_ROUTE)
            .u8(self.kind.code())
            .bytes(self.id.as_bytes())
            .u8(self.ttl)
            .u8(self.path.len() as u8);
        for peer in &self.path {
            w.bytes(peer.as_bytes());
        }
        for record in &self.records {
            let Ok(record_len) = u16::try_from(record.len()) else {
                continue;
            };
            if len + 2 + record.len() > MAX_FRAME_LEN {
                continue;
            }
            len += 2 + record.len();
            w.u16(record_len).bytes(record);
        }
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{BinaryFrame, decode_binary};

    fn decode(frame: &[u8]) -> Result<RouteOut, WireError> {
        match decode_binary(frame)? {
            BinaryFrame::Route(route) => Ok(RouteOut::from_route(&route)),
            other => panic!("not a route frame: {other:?}"),
        }
    }

    #[test]
    fn layout_of_a_find() {
        let out = RouteOut {
            kind: RouteKind::FindProviders,
            id: ContentId::from_bytes([0xaa; 32]),
            ttl: 7,
            path: vec![PeerId::from_bytes([1; 16])],
            records: vec![b"xy".to_vec()],
        };
        let frame = out.encode().expect("fits");
        let mut expected = vec![0x0d, 1];
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[7, 1]);
        expected.extend_from_slice(&[1; 16]);
        expected.extend_from_slice(&[0, 2, b'x', b'y']);
        assert_eq!(frame, expected);
        assert_eq!(decode(&frame), Ok(out));
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let out = RouteOut {
            kind: RouteKind::Providers,
            id: ContentId::from_bytes([1; 32]),
            ttl: 0,
            path: vec![PeerId::from_bytes([2; 16]); 2],
            records: vec![vec![5; 10]],
        };
        let frame = out.encode().expect("fits");
        // A record cut short.
        assert_eq!(decode(&frame[..frame.len() - 1]), Err(WireError::Truncated));
        let mut unknown = frame.clone();
        unknown[1] = 9;
        assert_eq!(decode(&unknown), Err(WireError::UnknownKind(9)));
        let mut long = frame;
        long[1 + 1 + 32 + 1] = (MAX_PATH + 1) as u8;
        assert_eq!(decode(&long), Err(WireError::PathTooLong(MAX_PATH + 1)));
        let too_long = RouteOut {
            path: vec![PeerId::from_bytes([2; 16]); MAX_PATH + 1],
            ..out
        };
        assert_eq!(too_long.encode(), Err(WireError::PathTooLong(MAX_PATH + 1)));
    }

    #[test]
    fn records_that_do_not_fit_are_left_out() {
        let out = RouteOut {
            kind: RouteKind::Providers,
            id: ContentId::from_bytes([1; 32]),
            ttl: 0,
            path: vec![],
            records: vec![vec![1; 40_000], vec![2; 40_000], vec![3; 100]],
        };
        let frame = out.encode().expect("fits");
        assert!(frame.len() <= MAX_FRAME_LEN);
        let read = decode(&frame).expect("decodes");
        let firsts: Vec<(u8, usize)> = read.records.iter().map(|r| (r[0], r.len())).collect();
        assert_eq!(firsts, vec![(1, 40_000), (3, 100)]);
    }

    proptest! {
        #[test]
        fn round_trip(
            kind in 0u8..3,
            id in any::<[u8; 32]>(),
            ttl in any::<u8>(),
            path in proptest::collection::vec(any::<[u8; 16]>(), 0..=MAX_PATH),
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        ) {
            let out = RouteOut {
                kind: [RouteKind::FindProviders, RouteKind::AddProvider, RouteKind::Providers][usize::from(kind)],
                id: ContentId::from_bytes(id),
                ttl,
                path: path.into_iter().map(PeerId::from_bytes).collect(),
                records,
            };
            let frame = out.encode().expect("fits");
            prop_assert_eq!(decode(&frame), Ok(out));
        }
    }
}
