//! Frames on the `swarm` data channel between two peers.
//!
//! - A data-channel **text** frame is an application text message, delivered as a string.
//! - A data-channel **binary** frame starts with a one-byte tag. Tag [`TAG_APP`] (`0x00`)
//!   carries application bytes in the rest of the frame; the other tags are the swarm's own
//!   peer protocol ([`PeerMsg`]: file announcements, piece requests and pieces). A receiver
//!   drops frames with tags it does not know, so new messages can be added.
//!
//! No frame is longer than [`MAX_FRAME_LEN`] bytes, which every WebRTC stack accepts. All
//! integers are big-endian. The layout of each message is in `PROTOCOL.md`.

use crate::PeerId;
use crate::codec::{Reader, Writer};
use crate::content::{ContentId, HASH_LEN};
use crate::route::{Route, TAG_ROUTE};

/// Longest data-channel frame either peer sends, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Longest application text message, in UTF-8 bytes.
pub const MAX_APP_TEXT_LEN: usize = MAX_FRAME_LEN;

/// Longest application binary message (one byte of the frame is the tag).
pub const MAX_APP_BINARY_LEN: usize = MAX_FRAME_LEN - 1;

/// Version of the peer protocol, sent in [`PeerMsg::Hello`]. Version 2 added
/// [`PeerMsg::Chunks`]; a peer sends it only to peers that said hello with 2 or more.
pub const PEER_PROTOCOL_VERSION: u8 = 2;

/// The first [`PEER_PROTOCOL_VERSION`] that reads [`PeerMsg::Chunks`].
pub const CHUNKS_SINCE_VERSION: u8 = 2;

/// Bytes of a [`PeerMsg::Chunks`] frame before its first segment: the tag and the content id.
pub const CHUNKS_HEADER_LEN: usize = 1 + HASH_LEN;

/// Bytes in front of each segment's data in a [`PeerMsg::Chunks`] frame: `piece:u32`,
/// `offset:u32`, `len:u32`.
pub const SEGMENT_HEADER_LEN: usize = 12;

/// Bytes of piece data in one [`PeerMsg::Piece`] frame (the last chunk of a piece may be
/// shorter). Pieces are larger than a frame, so each travels as several chunks.
pub const CHUNK_LEN: u32 = 64 * 1024 - 64;

/// Bytes of manifest in one [`PeerMsg::ManifestPart`] frame.
pub const MANIFEST_CHUNK_LEN: u32 = 32 * 1024;

/// Tag of a binary frame holding application bytes.
pub const TAG_APP: u8 = 0x00;

const TAG_HELLO: u8 = 0x01;
const TAG_ANNOUNCE: u8 = 0x02;
const TAG_BITFIELD: u8 = 0x03;
const TAG_HAVE: u8 = 0x04;
const TAG_REQUEST: u8 = 0x05;
const TAG_CANCEL: u8 = 0x06;
const TAG_PIECE: u8 = 0x07;
const TAG_REJECT: u8 = 0x08;
const TAG_MANIFEST_REQUEST: u8 = 0x09;
const TAG_MANIFEST_PART: u8 = 0x0a;
const TAG_NOT_FOUND: u8 = 0x0b;
const TAG_RELAY: u8 = 0x0c;
const TAG_CHUNKS: u8 = 0x0e;

/// Bytes of a [`Relay`] frame before its `data`.
pub const RELAY_HEADER_LEN: usize = 1 + 16 + 16 + 8 + 1 + 32 + 64;

/// Longest `data` a [`Relay`] frame carries.
pub const MAX_RELAY_DATA_LEN: usize = MAX_FRAME_LEN - RELAY_HEADER_LEN;

/// An application message as it travels between peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMessage<'a> {
    /// Sent as a text frame.
    Text(&'a str),
    /// Sent as a binary frame tagged [`TAG_APP`].
    Binary(&'a [u8]),
}

/// A message of the swarm's peer protocol. Payloads borrow from the frame they were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMsg<'a> {
    /// First frame each side sends when the channel opens.
    Hello {
        /// [`PEER_PROTOCOL_VERSION`] of the sender.
        version: u8,
    },
    /// "I can serve (part of) this content": sent when sharing, and to each new peer.
    Announce {
        /// The content.
        id: ContentId,
        /// Its length in bytes.
        size: u64,
        /// File name, for display.
        name: &'a str,
        /// MIME type, for display and playback.
        mime: &'a str,
    },
    /// Which pieces of a content the sender has: bit `i` (most significant bit first) is
    /// piece `i`.
    Bitfield {
        /// The content.
        id: ContentId,
        /// Packed bits, `ceil(pieces / 8)` bytes.
        bits: &'a [u8],
    },
    /// The sender has verified one more piece.
    Have {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
    },
    /// Please send this piece (as [`PeerMsg::Piece`] chunks).
    Request {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
    },
    /// Never mind that request (it arrived elsewhere).
    Cancel {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
    },
    /// One chunk of a requested piece.
    Piece {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
        /// Offset of `data` inside the piece.
        offset: u32,
        /// At most [`CHUNK_LEN`] bytes.
        data: &'a [u8],
    },
    /// The sender will not serve this piece (it does not have it).
    Reject {
        /// The content.
        id: ContentId,
        /// Piece index.
        piece: u32,
    },
    /// Please send the manifest of this content.
    ManifestRequest {
        /// The content.
        id: ContentId,
    },
    /// Part of an encoded manifest.
    ManifestPart {
        /// The content.
        id: ContentId,
        /// Offset of `data` in the encoded manifest.
        offset: u32,
        /// Length of the whole encoded manifest.
        total: u32,
        /// At most [`MANIFEST_CHUNK_LEN`] bytes.
        data: &'a [u8],
    },
    /// The sender does not have this content (any more).
    NotFound {
        /// The content.
        id: ContentId,
    },
    /// Chunks of one or more requested pieces of one content in one frame (peer protocol 2),
    /// so the end of one piece and the start of the next share a frame: a stream of pieces
    /// takes 16 frames per MiB instead of 20. Built with [`ChunksWriter`].
    Chunks {
        /// The content.
        id: ContentId,
        /// The chunks, checked when the frame was read.
        segments: Segments<'a>,
    },
}

/// The chunks of a [`PeerMsg::Chunks`] frame: one or more `piece:u32`, `offset:u32`,
/// `len:u32`, then `len` bytes (at least one). Only [`decode_binary`] and [`ChunksWriter`]
/// make one, so every value is well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments<'a>(&'a [u8]);

/// One chunk of a [`PeerMsg::Chunks`] frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Piece index.
    pub piece: u32,
    /// Offset of `data` inside the piece.
    pub offset: u32,
    /// The bytes.
    pub data: &'a [u8],
}

impl<'a> Segments<'a> {
    /// Checks the segments of a frame body (everything after the content id).
    fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        if r.is_empty() {
            return Err(WireError::Truncated);
        }
        while !r.is_empty() {
            let (_piece, _offset, len) = (r.u32()?, r.u32()?, r.u32()?);
            if len == 0 {
                return Err(WireError::EmptyChunk);
            }
            r.bytes(len as usize)?;
        }
        Ok(Self(body))
    }

    /// The chunks, in the order they were written.
    pub fn iter(&self) -> impl Iterator<Item = Segment<'a>> + use<'a> {
        let mut r = Reader::new(self.0);
        std::iter::from_fn(move || {
            // Checked by `parse` (or written by `ChunksWriter`), so no read fails.
            let piece = r.u32().ok()?;
            let offset = r.u32().ok()?;
            let len = r.u32().ok()?;
            let data = r.bytes(len as usize).ok()?;
            Some(Segment {
                piece,
                offset,
                data,
            })
        })
    }

    /// Whether every chunk belongs to `piece`.
    pub fn all_of(&self, piece: u32) -> bool {
        self.iter().all(|s| s.piece == piece)
    }
}

/// Builds a [`PeerMsg::Chunks`] frame of at most [`MAX_FRAME_LEN`] bytes, chunk by chunk.
#[derive(Debug, Clone)]
pub struct ChunksWriter {
    id: ContentId,
    buf: Vec<u8>,
}

impl ChunksWriter {
    /// An empty frame for chunks of content `id`.
    pub fn new(id: ContentId) -> Self {
        let mut buf = Vec::with_capacity(MAX_FRAME_LEN);
        buf.push(TAG_CHUNKS);
        buf.extend_from_slice(id.as_bytes());
        Self { id, buf }
    }

    /// The content its chunks belong to.
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// Whether no chunk has been added yet.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == CHUNKS_HEADER_LEN
    }

    /// Most data bytes one more chunk may carry (0 when the frame is full).
    pub fn room(&self) -> usize {
        MAX_FRAME_LEN.saturating_sub(self.buf.len() + SEGMENT_HEADER_LEN)
    }

    /// Adds a chunk of `piece` at `offset`; `data` is cut to [`ChunksWriter::room`] and the
    /// number of bytes taken is returned (0 for an empty `data` or a full frame).
    pub fn push(&mut self, piece: u32, offset: u32, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        if n == 0 {
            return 0;
        }
        self.buf.extend_from_slice(&piece.to_be_bytes());
        self.buf.extend_from_slice(&offset.to_be_bytes());
        // n < MAX_FRAME_LEN, which fits in u32.
        self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// The binary frame.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A binary frame, as read by [`decode_binary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryFrame<'a> {
    /// Application bytes (tag [`TAG_APP`]).
    App(&'a [u8]),
    /// A peer-protocol message.
    Peer(PeerMsg<'a>),
    /// A signal forwarded through the mesh.
    Relay(Relay<'a>),
    /// A message of the structured layer ([`crate::route`]).
    Route(Route<'a>),
}

/// A `signal` on its way through the mesh to a peer the sender has no connection to: the
/// same `data` as in a server `signal` frame, signed by its origin (see
/// `swarm_core::identity`), with a hop limit that each forwarder lowers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay<'a> {
    /// The peer that wrote the signal (its key hashes to this id).
    pub origin: PeerId,
    /// The peer it is for.
    pub target: PeerId,
    /// The origin's sequence number for relayed signals (duplicates are dropped).
    pub seq: u64,
    /// Hops it may still make after this one.
    pub ttl: u8,
    /// The origin's Ed25519 public key.
    pub public_key: &'a [u8; 32],
    /// The origin's signature (over room, origin, target, seq and data; not `ttl`).
    pub signature: &'a [u8; 64],
    /// The signal's JSON, at most [`MAX_RELAY_DATA_LEN`] bytes.
    pub data: &'a [u8],
}

impl Relay<'_> {
    /// The binary frame; [`WireError::TooLarge`] if `data` does not fit.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        if self.data.len() > MAX_RELAY_DATA_LEN {
            return Err(WireError::TooLarge {
                len: self.data.len(),
                max: MAX_RELAY_DATA_LEN,
            });
        }
        let mut w = Writer::with_capacity(RELAY_HEADER_LEN + self.data.len());
        w.u8(TAG_RELAY)
            .bytes(self.origin.as_bytes())
            .bytes(self.target.as_bytes())
            .u64(self.seq)
            .u8(self.ttl)
            .bytes(self.public_key)
            .bytes(self.signature)
            .bytes(self.data);
        Ok(w.finish())
    }
}

/// Why a message cannot be framed, or a frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is longer than a frame may be.
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Length of the message.
        len: usize,
        /// The limit for its kind.
        max: usize,
    },
    /// A binary frame with no tag byte.
    #[error("empty binary frame")]
    Empty,
    /// A binary frame whose tag this version does not know.
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// The frame ended before a field did.
    #[error("truncated frame")]
    Truncated,
    /// The frame goes on after its last field.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// A string field is not UTF-8.
    #[error("a text field is not UTF-8")]
    BadUtf8,
    /// A chunk is longer than allowed.
    #[error("chunk of {0} bytes is too long")]
    ChunkTooLong(usize),
    /// An encoding version this implementation does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A manifest breaks a rule.
    #[error("invalid manifest: {0}")]
    BadManifest(&'static str),
    /// A routed message of a kind this version does not know.
    #[error("unknown routed message kind {0}")]
    UnknownKind(u8),
    /// A routed message that lists more peers on its path than allowed.
    #[error("a routed message path of {0} peers is too long")]
    PathTooLong(usize),
    /// A chunk of a `chunks` frame with no bytes.
    #[error("a chunk of a chunks frame is empty")]
    EmptyChunk,
}

impl AppMessage<'_> {
    /// Checks the length limit for this kind of message.
    pub fn check_len(&self) -> Result<(), WireError> {
        let (len, max) = match self {
            Self::Text(text) => (text.len(), MAX_APP_TEXT_LEN),
            Self::Binary(bytes) => (bytes.len(), MAX_APP_BINARY_LEN),
        };
        if len > max {
            Err(WireError::TooLarge { len, max })
        } else {
            Ok(())
        }
    }
}

/// Frames application bytes as one binary data-channel message.
pub fn encode_app_binary(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    AppMessage::Binary(payload).check_len()?;
    let mut frame = Vec::with_capacity(payload.len() + 1);
    frame.push(TAG_APP);
    frame.extend_from_slice(payload);
    Ok(frame)
}

impl PeerMsg<'_> {
    /// The binary frame for this message. Callers keep chunks within [`CHUNK_LEN`] /
    /// [`MANIFEST_CHUNK_LEN`] and bitfields within a frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut w;
        match *self {
            Self::Hello { version } => {
                w = Writer::with_capacity(2);
                w.u8(TAG_HELLO).u8(version);
            }
            Self::Announce {
                id,
                size,
                name,
                mime,
            } => {
                w = Writer::with_capacity(1 + HASH_LEN + 12 + name.len() + mime.len());
                w.u8(TAG_ANNOUNCE)
                    .bytes(id.as_bytes())
                    .u64(size)
                    .short_str(name)
                    .short_str(mime);
            }
            Self::Bitfield { id, bits } => {
                w = Writer::with_capacity(1 + HASH_LEN + bits.len());
                w.u8(TAG_BITFIELD).bytes(id.as_bytes()).bytes(bits);
            }
            Self::Have { id, piece } => w = with_piece(TAG_HAVE, id, piece),
            Self::Request { id, piece } => w = with_piece(TAG_REQUEST, id, piece),
            Self::Cancel { id, piece } => w = with_piece(TAG_CANCEL, id, piece),
            Self::Reject { id, piece } => w = with_piece(TAG_REJECT, id, piece),
            Self::Piece {
                id,
                piece,
                offset,
                data,
            } => {
                w = Writer::with_capacity(1 + HASH_LEN + 8 + data.len());
                w.u8(TAG_PIECE)
                    .bytes(id.as_bytes())
                    .u32(piece)
                    .u32(offset)
                    .bytes(data);
            }
            Self::ManifestRequest { id } => {
                w = Writer::with_capacity(1 + HASH_LEN);
                w.u8(TAG_MANIFEST_REQUEST).bytes(id.as_bytes());
            }
            Self::ManifestPart {
                id,
                offset,
                total,
                data,
            } => {
                w = Writer::with_capacity(1 + HASH_LEN + 8 + data.len());
                w.u8(TAG_MANIFEST_PART)
                    .bytes(id.as_bytes())
                    .u32(offset)
                    .u32(total)
                    .bytes(data);
            }
            Self::NotFound { id } => {
                w = Writer::with_capacity(1 + HASH_LEN);
                w.u8(TAG_NOT_FOUND).bytes(id.as_bytes());
            }
            Self::Chunks { id, segments } => {
                w = Writer::with_capacity(CHUNKS_HEADER_LEN + segments.0.len());
                w.u8(TAG_CHUNKS).bytes(id.as_bytes()).bytes(segments.0);
            }
        }
        w.finish()
    }
}

fn with_piece(tag: u8, id: ContentId, piece: u32) -> Writer {
    let mut w = Writer::with_capacity(1 + HASH_LEN + 4);
    w.u8(tag).bytes(id.as_bytes()).u32(piece);
    w
}

/// Whether `frame` carries chunks of `piece` of content `id` and nothing else (a
/// [`PeerMsg::Piece`], or a [`PeerMsg::Chunks`] of that piece alone), so a sender can
/// withdraw the queued chunks of a cancelled piece. A frame shared with another piece stays.
pub fn is_piece_chunk(frame: &[u8], id: ContentId, piece: u32) -> bool {
    let header = with_piece(TAG_PIECE, id, piece).finish();
    if frame.starts_with(&header) {
        return true;
    }
    match frame.split_first() {
        Some((&TAG_CHUNKS, _)) => matches!(
            decode_binary(frame),
            Ok(BinaryFrame::Peer(PeerMsg::Chunks { id: of, segments }))
                if of == id && segments.all_of(piece)
        ),
        _ => false,
    }
}

/// Reads a binary data-channel frame.
pub fn decode_binary(frame: &[u8]) -> Result<BinaryFrame<'_>, WireError> {
    let (&tag, body) = frame.split_first().ok_or(WireError::Empty)?;
    if tag == TAG_APP {
        return Ok(BinaryFrame::App(body));
    }
    let mut r = Reader::new(body);
    if tag == TAG_RELAY {
        let origin = PeerId::from_bytes(r.array()?);
        let target = PeerId::from_bytes(r.array()?);
        let (seq, ttl) = (r.u64()?, r.u8()?);
        let public_key = r.fixed::<32>()?;
        let signature = r.fixed::<64>()?;
        return Ok(BinaryFrame::Relay(Relay {
            origin,
            target,
            seq,
            ttl,
            public_key,
            signature,
            data: r.rest(),
        }));
    }
    if tag == TAG_ROUTE {
        return Ok(BinaryFrame::Route(Route::decode_body(&mut r)?));
    }
    let msg = match tag {
        TAG_HELLO => PeerMsg::Hello { version: r.u8()? },
        TAG_ANNOUNCE => PeerMsg::Announce {
            id: content_id(&mut r)?,
            size: r.u64()?,
            name: r.short_str()?,
            mime: r.short_str()?,
        },
        TAG_BITFIELD => PeerMsg::Bitfield {
            id: content_id(&mut r)?,
            bits: r.rest(),
        },
        TAG_HAVE => PeerMsg::Have {
            id: content_id(&mut r)?,
            piece: r.u32()?,
        },
        TAG_REQUEST => PeerMsg::Request {
            id: content_id(&mut r)?,
            piece: r.u32()?,
        },
        TAG_CANCEL => PeerMsg::Cancel {
            id: content_id(&mut r)?,
            piece: r.u32()?,
        },
        TAG_REJECT => PeerMsg::Reject {
            id: content_id(&mut r)?,
            piece: r.u32()?,
        },
        TAG_PIECE => {
            let (id, piece, offset) = (content_id(&mut r)?, r.u32()?, r.u32()?);
            let data = chunk(r.rest(), CHUNK_LEN)?;
            PeerMsg::Piece {
                id,
                piece,
                offset,
                data,
            }
        }
        TAG_MANIFEST_REQUEST => PeerMsg::ManifestRequest {
            id: content_id(&mut r)?,
        },
        TAG_MANIFEST_PART => {
            let (id, offset, total) = (content_id(&mut r)?, r.u32()?, r.u32()?);
            let data = chunk(r.rest(), MANIFEST_CHUNK_LEN)?;
            PeerMsg::ManifestPart {
                id,
                offset,
                total,
                data,
            }
        }
        TAG_NOT_FOUND => PeerMsg::NotFound {
            id: content_id(&mut r)?,
        },
        TAG_CHUNKS => {
            if frame.len() > MAX_FRAME_LEN {
                return Err(WireError::TooLarge {
                    len: frame.len(),
                    max: MAX_FRAME_LEN,
                });
            }
            PeerMsg::Chunks {
                id: content_id(&mut r)?,
                segments: Segments::parse(r.rest())?,
            }
        }
        other => return Err(WireError::UnknownTag(other)),
    };
    r.end()?;
    Ok(BinaryFrame::Peer(msg))
}

fn content_id(r: &mut Reader<'_>) -> Result<ContentId, WireError> {
    Ok(ContentId::from_bytes(r.array()?))
}

fn chunk(data: &[u8], max: u32) -> Result<&[u8], WireError> {
    if data.len() > max as usize {
        Err(WireError::ChunkTooLong(data.len()))
    } else {
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> ContentId {
        ContentId::from_bytes([n; HASH_LEN])
    }

    #[test]
    fn piece_chunks_are_recognised_by_content_and_piece() {
        let frame = PeerMsg::Piece {
            id: id(3),
            piece: 7,
            offset: CHUNK_LEN,
            data: &[1, 2, 3],
        }
        .encode();
        assert!(is_piece_chunk(&frame, id(3), 7));
        assert!(!is_piece_chunk(&frame, id(3), 8));
        assert!(!is_piece_chunk(&frame, id(4), 7));
        let request = PeerMsg::Request {
            id: id(3),
            piece: 7,
        }
        .encode();
        assert!(!is_piece_chunk(&request, id(3), 7));
    }

    #[test]
    fn empty_and_unknown_frames_are_refused() {
        assert_eq!(decode_binary(&[]), Err(WireError::Empty));
        assert_eq!(decode_binary(&[0x42, 1]), Err(WireError::UnknownTag(0x42)));
    }

    #[test]
    fn size_limits() {
        assert!(encode_app_binary(&vec![0; MAX_APP_BINARY_LEN]).is_ok());
        assert_eq!(
            encode_app_binary(&vec![0; MAX_APP_BINARY_LEN + 1]),
            Err(WireError::TooLarge {
                len: MAX_FRAME_LEN,
                max: MAX_APP_BINARY_LEN
            })
        );
        let text = "x".repeat(MAX_APP_TEXT_LEN + 1);
        assert!(AppMessage::Text(&text).check_len().is_err());
    }

    #[test]
    fn a_full_piece_chunk_fits_in_a_frame() {
        let data = vec![7; CHUNK_LEN as usize];
        let frame = PeerMsg::Piece {
            id: id(1),
            piece: 3,
            offset: 0,
            data: &data,
        }
        .encode();
        assert!(frame.len() <= MAX_FRAME_LEN);
        let mut long = frame.clone();
        long.push(0);
        assert_eq!(
            decode_binary(&long),
            Err(WireError::ChunkTooLong(CHUNK_LEN as usize + 1))
        );
    }

    #[test]
    fn layout_of_a_request() {
        let frame = PeerMsg::Request {
            id: id(0xaa),
            piece: 0x0102_0304,
        }
        .encode();
        let mut expected = vec![0x05];
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(frame, expected);
    }

    #[test]
    fn truncated_and_padded_frames_are_refused() {
        let frame = PeerMsg::Have {
            id: id(1),
            piece: 9,
        }
        .encode();
        assert_eq!(
            decode_binary(&frame[..frame.len() - 1]),
            Err(WireError::Truncated)
        );
        let mut padded = frame;
        padded.push(0);
        assert_eq!(decode_binary(&padded), Err(WireError::TrailingBytes(1)));
        let mut bad_name = PeerMsg::Announce {
            id: id(1),
            size: 1,
            name: "ab",
            mime: "",
        }
        .encode();
        bad_name[1 + 32 + 8 + 2] = 0xff;
        assert_eq!(decode_binary(&bad_name), Err(WireError::BadUtf8));
    }

    #[test]
    fn a_relay_frame_round_trips_and_its_size_is_bounded() {
        let (key, signature) = ([3u8; 32], [4u8; 64]);
        let relay = Relay {
            origin: PeerId::from_bytes([1; 16]),
            target: PeerId::from_bytes([2; 16]),
            seq: 0x0102_0304_0506_0708,
            ttl: 3,
            public_key: &key,
            signature: &signature,
            data: br#"{"candidate":null}"#,
        };
        let frame = relay.encode().expect("fits");
        assert_eq!(frame.len(), RELAY_HEADER_LEN + relay.data.len());
        assert_eq!(frame[0], 0x0c);
        assert_eq!(decode_binary(&frame), Ok(BinaryFrame::Relay(relay)));
        for cut in 1..RELAY_HEADER_LEN {
            assert_eq!(
                decode_binary(&frame[..cut]),
                Err(WireError::Truncated),
                "{cut}"
            );
        }
        let big = vec![b' '; MAX_RELAY_DATA_LEN + 1];
        assert!(matches!(
            Relay {
                data: &big,
                ..relay
            }
            .encode(),
            Err(WireError::TooLarge { .. })
        ));
        let most = vec![b' '; MAX_RELAY_DATA_LEN];
        let frame = Relay {
            data: &most,
            ..relay
        }
        .encode()
        .expect("fits");
        assert_eq!(frame.len(), MAX_FRAME_LEN);
    }

    fn message(
        data: Vec<u8>,
        name: String,
        n: u8,
        a: u32,
        b: u32,
        size: u64,
    ) -> Vec<PeerMsg<'static>> {
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        let name: &'static str = Box::leak(name.into_boxed_str());
        vec![
            PeerMsg::Hello { version: n },
            PeerMsg::Announce {
                id: id(n),
                size,
                name,
                mime: "video/webm",
            },
            PeerMsg::Bitfield {
                id: id(n),
                bits: data,
            },
            PeerMsg::Have {
                id: id(n),
                piece: a,
            },
            PeerMsg::Request {
                id: id(n),
                piece: a,
            },
            PeerMsg::Cancel {
                id: id(n),
                piece: a,
            },
            PeerMsg::Reject {
                id: id(n),
                piece: a,
            },
            PeerMsg::Piece {
                id: id(n),
                piece: a,
                offset: b,
                data,
            },
            PeerMsg::ManifestRequest { id: id(n) },
            PeerMsg::ManifestPart {
                id: id(n),
                offset: a,
                total: b,
                data,
            },
            PeerMsg::NotFound { id: id(n) },
        ]
    }

    /// A chunks frame of `id` with the given chunks, through the writer.
    fn chunks_frame(id: ContentId, chunks: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut w = ChunksWriter::new(id);
        for (piece, offset, data) in chunks {
            assert_eq!(w.push(*piece, *offset, data), data.len());
        }
        w.finish()
    }

    #[test]
    fn layout_of_a_chunks_frame() {
        let frame = chunks_frame(id(0xaa), &[(1, 2, &[9, 8]), (3, 0, &[7])]);
        let mut expected = vec![0x0e];
        expected.extend_from_slice(&[0xaa; 32]);
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 9, 8]);
        expected.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 7]);
        assert_eq!(frame, expected);
        let Ok(BinaryFrame::Peer(msg @ PeerMsg::Chunks { id: of, segments })) =
            decode_binary(&frame)
        else {
            panic!("not a chunks frame");
        };
        assert_eq!(of, id(0xaa));
        let got: Vec<_> = segments
            .iter()
            .map(|s| (s.piece, s.offset, s.data))
            .collect();
        assert_eq!(got, vec![(1, 2, &[9u8, 8][..]), (3, 0, &[7u8][..])]);
        assert_eq!(msg.encode(), frame);
    }

    #[test]
    fn a_chunks_writer_fills_a_frame_exactly_and_no_more() {
        let big = vec![5u8; 2 * MAX_FRAME_LEN];
        let mut w = ChunksWriter::new(id(1));
        assert!(w.is_empty());
        let first = w.push(0, 0, &big[..1000]);
        let second = w.push(1, 0, &big);
        assert_eq!(first, 1000);
        assert_eq!(
            second,
            MAX_FRAME_LEN - CHUNKS_HEADER_LEN - 2 * SEGMENT_HEADER_LEN - 1000
        );
        assert_eq!(w.room(), 0);
        assert_eq!(w.push(2, 0, &big), 0);
        assert_eq!(w.push(2, 0, &[]), 0);
        let frame = w.finish();
        assert_eq!(frame.len(), MAX_FRAME_LEN);
        assert!(matches!(
            decode_binary(&frame),
            Ok(BinaryFrame::Peer(PeerMsg::Chunks { .. }))
        ));
        let mut long = frame;
        long.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(
            decode_binary(&long),
            Err(WireError::TooLarge {
                len: MAX_FRAME_LEN + 13,
                max: MAX_FRAME_LEN
            })
        );
    }

    #[test]
    fn malformed_chunks_frames_are_refused() {
        let bare = ChunksWriter::new(id(1)).finish();
        assert_eq!(decode_binary(&bare), Err(WireError::Truncated));
        let frame = chunks_frame(id(1), &[(4, 0, &[1, 2, 3])]);
        for cut in 1..=15 {
            assert_eq!(
                decode_binary(&frame[..frame.len() - cut]),
                Err(WireError::Truncated),
                "cut {cut}"
            );
        }
        let mut empty = bare.clone();
        empty.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_binary(&empty), Err(WireError::EmptyChunk));
        let mut padded = frame;
        padded.push(0);
        assert_eq!(decode_binary(&padded), Err(WireError::Truncated));
    }

    #[test]
    fn chunks_frames_of_one_piece_alone_can_be_withdrawn() {
        let only = chunks_frame(id(3), &[(7, 0, &[1]), (7, 1, &[2])]);
        assert!(is_piece_chunk(&only, id(3), 7));
        assert!(!is_piece_chunk(&only, id(3), 8));
        assert!(!is_piece_chunk(&only, id(4), 7));
        let shared = chunks_frame(id(3), &[(7, 0, &[1]), (8, 0, &[2])]);
        assert!(!is_piece_chunk(&shared, id(3), 7));
        assert!(!is_piece_chunk(&shared, id(3), 8));
    }

    proptest! {
        #[test]
        fn chunks_round_trip(
            chunks in proptest::collection::vec(
                (any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 1..3000)),
                1..40,
            ),
            n in any::<u8>(),
        ) {
            // As many as fit, each whole or cut to the room left.
            let mut w = ChunksWriter::new(id(n));
            let mut written = Vec::new();
            for (piece, offset, data) in &chunks {
                let taken = w.push(*piece, *offset, data);
                if taken == 0 {
                    break;
                }
                written.push((*piece, *offset, data[..taken].to_vec()));
            }
            let frame = w.finish();
            prop_assert!(frame.len() <= MAX_FRAME_LEN);
            let Ok(BinaryFrame::Peer(PeerMsg::Chunks { id: of, segments })) = decode_binary(&frame)
            else {
                return Err(TestCaseError::fail("not a chunks frame"));
            };
            prop_assert_eq!(of, id(n));
            let read: Vec<_> = segments
                .iter()
                .map(|s| (s.piece, s.offset, s.data.to_vec()))
                .collect();
            prop_assert_eq!(read, written);
        }

        #[test]
        fn app_binary_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let frame = encode_app_binary(&payload).expect("fits");
            prop_assert_eq!(frame.len(), payload.len() + 1);
            prop_assert_eq!(decode_binary(&frame), Ok(BinaryFrame::App(&payload)));
        }

        #[test]
        fn peer_messages_round_trip(
            data in proptest::collection::vec(any::<u8>(), 0..1024),
            name in "\\PC{0,30}",
            n in any::<u8>(), a in any::<u32>(), b in any::<u32>(), size in any::<u64>(),
        ) {
            for msg in message(data.clone(), name.clone(), n, a, b, size) {
                let frame = msg.encode();
                prop_assert!(frame.len() <= MAX_FRAME_LEN);
                prop_assert_eq!(decode_binary(&frame), Ok(BinaryFrame::Peer(msg)));
            }
        }

        #[test]
        fn decoding_arbitrary_frames_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_binary(&frame);
        }

        #[test]
        fn truncating_a_fixed_size_message_is_always_detected(n in any::<u8>(), a in any::<u32>(), cut in 1usize..37) {
            let frame = PeerMsg::Request { id: id(n), piece: a }.encode();
            prop_assert!(decode_binary(&frame[..frame.len() - cut]).is_err());
        }
    }
}
