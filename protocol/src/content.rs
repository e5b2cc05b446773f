//! Content addressing: content ids and manifests.
//!
//! A shared file is cut into pieces of `piece_size` bytes (the last one may be shorter). Each
//! piece has a SHA-256 hash; the hashes are the leaves of a Merkle tree. The **content id**
//! is that tree's root bound to the file's length and piece size, so a content id names exactly
//! one sequence of bytes (see `swarm_core::merkle` for the computation). The [`Manifest`]
//! carries the piece hashes, plus a name and a MIME type that describe the file but are not
//! part of its identity (the same bytes shared under two names have one id).

use crate::WireError;
use crate::codec::{Reader, Writer};

/// Length of a SHA-256 hash and of a content id, in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash.
pub type Hash = [u8; HASH_LEN];

/// Piece size used unless the sharer picks another: 256 KiB.
pub const DEFAULT_PIECE_SIZE: u32 = 256 * 1024;

/// Smallest piece size a manifest may declare.
pub const MIN_PIECE_SIZE: u32 = 16 * 1024;

/// Largest piece size a manifest may declare.
pub const MAX_PIECE_SIZE: u32 = 16 * 1024 * 1024;

/// Most pieces a manifest may list (256 GiB at the default piece size; a 32 MiB manifest).
pub const MAX_PIECES: u32 = 1 << 20;

/// Longest file name or MIME type in a manifest, in bytes.
pub const MAX_LABEL_LEN: usize = 1024;

/// Version byte that starts an encoded manifest.
const MANIFEST_VERSION: u8 = 1;

/// The id of a piece of content: 64 lowercase hex digits on the wire and in links.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentId(Hash);

/// Why a string is not a [`ContentId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a content id: expected {} lowercase hex digits", HASH_LEN * 2)]
pub struct ContentIdError;

impl ContentId {
    /// Wraps a root hash.
    pub const fn from_bytes(bytes: Hash) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &Hash {
        &self.0
    }
}

crate::hex::text_form!(ContentId, ContentIdError);

/// Everything needed to fetch and verify a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// File name, as the sharer called it.
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// MIME type (may be empty when unknown).
    pub mime: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_size: u32,
    /// SHA-256 of each piece, in order.
    pub piece_hashes: Vec<Hash>,
}

/// Number of pieces a file of `size` bytes has with pieces of `piece_size` bytes.
pub fn piece_count(size: u64, piece_size: u32) -> u64 {
    size.div_ceil(u64::from(piece_size.max(1)))
}

impl Manifest {
    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        // Checked against MAX_PIECES when built or decoded.
        self.piece_hashes.len() as u32
    }

    /// Byte offset of piece `index`.
    pub fn piece_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.piece_size)
    }

    /// Length of piece `index` (the last one may be short); 0 past the end.
    pub fn piece_len(&self, index: u32) -> u32 {
        let start = self.piece_offset(index);
        if start >= self.size {
            return 0;
        }
        // At most piece_size, so it fits.
        (self.size - start).min(u64::from(self.piece_size)) as u32
    }

    /// Checks the rules every manifest obeys.
    pub fn validate(&self) -> Result<(), WireError> {
        if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&self.piece_size)
            || !self.piece_size.is_power_of_two()
        {
            return Err(WireError::BadManifest("piece size"));
        }
        if self.name.len() > MAX_LABEL_LEN || self.mime.len() > MAX_LABEL_LEN {
            return Err(WireError::BadManifest("name or MIME type too long"));
        }
        let expected = piece_count(self.size, self.piece_size);
        if expected > u64::from(MAX_PIECES) {
            return Err(WireError::BadManifest("too many pieces"));
        }
        if self.piece_hashes.len() as u64 != expected {
            return Err(WireError::BadManifest(
                "piece count does not match the size",
            ));
        }
        Ok(())
    }

    /// The binary form exchanged between peers.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            32 + self.name.len() + self.mime.len() + self.piece_hashes.len() * HASH_LEN,
        );
        w.u8(MANIFEST_VERSION)
            .u64(self.size)
            .u32(self.piece_size)
            .short_str(&self.name)
            .short_str(&self.mime)
            .u32(self.piece_count());
        for hash in &self.piece_hashes {
            w.bytes(hash);
        }
        w.finish()
    }

    /// Reads and validates the binary form. Whether it belongs to a content id is checked by
    /// `swarm_core::merkle::verify_manifest`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != MANIFEST_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let size = r.u64()?;
        let piece_size = r.u32()?;
        let name = r.short_str()?.to_owned();
        let mime = r.short_str()?.to_owned();
        let count = r.u32()?;
        if count > MAX_PIECES {
            return Err(WireError::BadManifest("too many pieces"));
        }
        let mut piece_hashes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            piece_hashes.push(r.array()?);
        }
        r.end()?;
        let manifest = Self {
            name,
            size,
            mime,
            piece_size,
            piece_hashes,
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(size: u64, piece_size: u32) -> Manifest {
        let count = piece_count(size, piece_size);
        Manifest {
            name: "clip.webm".into(),
            size,
            mime: "video/webm".into(),
            piece_size,
            piece_hashes: (0..count).map(|i| [i as u8; HASH_LEN]).collect(),
        }
    }

    #[test]
    fn content_ids_are_64_hex_digits() {
        let id = ContentId::from_bytes([0xab; HASH_LEN]);
        assert_eq!(id.to_string(), "ab".repeat(32));
        assert_eq!(id.to_string().parse::<ContentId>(), Ok(id));
        assert_eq!("AB".repeat(32).parse::<ContentId>(), Err(ContentIdError));
        assert_eq!("ab".parse::<ContentId>(), Err(ContentIdError));
    }

    #[test]
    fn piece_lengths() {
        let m = manifest(DEFAULT_PIECE_SIZE as u64 * 2 + 10, DEFAULT_PIECE_SIZE);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.piece_len(0), DEFAULT_PIECE_SIZE);
        assert_eq!(m.piece_len(2), 10);
        assert_eq!(m.piece_len(3), 0);
        assert_eq!(manifest(0, DEFAULT_PIECE_SIZE).piece_count(), 0);
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let mut m = manifest(100_000, MIN_PIECE_SIZE);
        m.piece_hashes.pop();
        assert_eq!(
            m.validate(),
            Err(WireError::BadManifest(
                "piece count does not match the size"
            ))
        );
        assert!(Manifest::decode(&m.encode()).is_err());
        assert!(
            manifest(1000, 1000).validate().is_err(),
            "not a power of two"
        );
        assert!(
            manifest(1000, 1024).validate().is_err(),
            "below the minimum"
        );
        let mut long = manifest(10, MIN_PIECE_SIZE);
        long.name = "x".repeat(MAX_LABEL_LEN + 1);
        assert!(long.validate().is_err());
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let bytes = manifest(100_000, MIN_PIECE_SIZE).encode();
        assert_eq!(
            Manifest::decode(&bytes[..bytes.len() - 1]),
            Err(WireError::Truncated)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Manifest::decode(&longer), Err(WireError::TrailingBytes(1)));
        let mut version = bytes;
        version[0] = 9;
        assert_eq!(
            Manifest::decode(&version),
            Err(WireError::UnsupportedVersion(9))
        );
        assert!(Manifest::decode(&[]).is_err());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(size in 0u64..50_000_000, shift in 14u32..20, name in "\\PC{0,40}", mime in "[a-z/]{0,20}") {
            let mut m = manifest(size, 1 << shift);
            m.name = name;
            m.mime = mime;
            prop_assert_eq!(Manifest::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::decode(&bytes);
        }
    }
}
