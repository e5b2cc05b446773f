//! Piece hashes, the Merkle tree over them, and content ids.
//!
//! - A piece's hash is the plain SHA-256 of its bytes.
//! - Inner nodes are `SHA-256(0x01 ‖ left ‖ right)`; a node without a sibling moves up a level
//!   unchanged. The prefix keeps an inner node from ever being mistaken for a piece.
//! - The content id is `SHA-256(0x02 ‖ size as u64 ‖ piece size as u32 ‖ root)` (big-endian),
//!   so an id pins the file's exact length and layout as well as its bytes. An empty file has
//!   no pieces; its root is 32 zero bytes.

use sha2::{Digest, Sha256};
use swarm_protocol::content::{Hash, Manifest};
use swarm_protocol::{ContentId, WireError};

const INNER: u8 = 0x01;
const ROOT: u8 = 0x02;

/// SHA-256 of one piece.
pub fn piece_hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Root of the Merkle tree over `leaves`.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return [0; 32];
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut hasher = Sha256::new();
                    hasher.update([INNER]);
                    hasher.update(left);
                    hasher.update(right);
                    hasher.finalize().into()
                }
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

/// The content id of a file of `size` bytes cut into `piece_size` pieces with these hashes.
pub fn content_id(size: u64, piece_size: u32, piece_hashes: &[Hash]) -> ContentId {
    let mut hasher = Sha256::new();
    hasher.update([ROOT]);
    hasher.update(size.to_be_bytes());
    hasher.update(piece_size.to_be_bytes());
    hasher.update(merkle_root(piece_hashes));
    ContentId::from_bytes(hasher.finalize().into())
}

/// The content id a manifest describes.
pub fn manifest_id(manifest: &Manifest) -> ContentId {
    content_id(manifest.size, manifest.piece_size, &manifest.piece_hashes)
}

/// Why a manifest was not accepted for a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// It could not be read, or breaks a rule.
    #[error(transparent)]
    Malformed(#[from] WireError),
    /// It is valid but describes other content.
    #[error("the manifest describes {actual}, not {expected}")]
    WrongContent {
        /// The id that was asked for.
        expected: ContentId,
        /// The id the manifest hashes to.
        actual: ContentId,
    },
}

/// Decodes `bytes` and accepts the manifest only if it hashes to `expected`.
pub fn verify_manifest(expected: ContentId, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let manifest = Manifest::decode(bytes)?;
    let actual = manifest_id(&manifest);
    if actual != expected {
        return Err(ManifestError::WrongContent { expected, actual });
    }
    Ok(manifest)
}

/// Whether `bytes` is piece `index` of `manifest`: the right length and the right hash.
pub fn verify_piece(manifest: &Manifest, index: u32, bytes: &[u8]) -> bool {
    let Some(expected) = manifest.piece_hashes.get(index as usize) else {
        return false;
    };
    bytes.len() == manifest.piece_len(index) as usize && piece_hash(bytes) == *expected
}

/// Builds a manifest piece by piece, for a file being shared.
#[derive(Debug)]
pub struct ManifestBuilder {
    name: String,
    mime: String,
    piece_size: u32,
    size: u64,
    hashes: Vec<Hash>,
}

impl ManifestBuilder {
    /// Starts a manifest; feed every piece in order with [`ManifestBuilder::piece`].
    pub fn new(name: impl Into<String>, mime: impl Into<String>, piece_size: u32) -> Self {
        Self {
            name: name.into(),
            mime: mime.into(),
            piece_size,
            size: 0,
            hashes: Vec::new(),
        }
    }

    /// Adds the next piece (every piece but the last must be `piece_size` long).
    pub fn piece(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.hashes.push(piece_hash(bytes));
    }

    /// The manifest and its content id.
    pub fn finish(self) -> Result<(ContentId, Manifest), WireError> {
        let manifest = Manifest {
            name: self.name,
            size: self.size,
            mime: self.mime,
            piece_size: self.piece_size,
            piece_hashes: self.hashes,
        };
        manifest.validate()?;
        Ok((manifest_id(&manifest), manifest))
    }
}

/// The manifest and content id of `bytes` held in memory (tests, small files).
pub fn manifest_of(name: &str, mime: &str, piece_size: u32, bytes: &[u8]) -> (ContentId, Manifest) {
    let mut builder = ManifestBuilder::new(name, mime, piece_size);
    for piece in bytes.chunks(piece_size as usize) {
        builder.piece(piece);
    }
    builder
        .finish()
        .expect("pieces cut at piece_size always make a valid manifest")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use swarm_protocol::content::MIN_PIECE_SIZE;

    const PS: u32 = MIN_PIECE_SIZE;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn sha256_of_a_piece_is_the_standard_one() {
        let hex: String = piece_hash(b"abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn root_of_one_leaf_is_the_leaf_and_odd_leaves_move_up() {
        let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
        assert_eq!(merkle_root(&[a]), a);
        let ab = merkle_root(&[a, b]);
        assert_ne!(ab, a);
        assert_eq!(merkle_root(&[a, b, c]), merkle_root(&[ab, c]));
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]), "order matters");
    }

    #[test]
    fn the_id_binds_size_and_piece_size() {
        let hashes = [[9; 32]];
        assert_ne!(content_id(10, PS, &hashes), content_id(11, PS, &hashes));
        assert_ne!(content_id(10, PS, &hashes), content_id(10, PS * 2, &hashes));
    }

    #[test]
    fn a_manifest_is_accepted_only_for_its_own_id() {
        let (id, manifest) = manifest_of("f.bin", "", PS, &data(100_000));
        assert_eq!(
            verify_manifest(id, &manifest.encode()),
            Ok(manifest.clone())
        );
        let other = content_id(1, PS, &[[0; 32]]);
        assert!(matches!(
            verify_manifest(other, &manifest.encode()),
            Err(ManifestError::WrongContent { .. })
        ));
        let mut forged = manifest.clone();
        forged.piece_hashes[2][0] ^= 1;
        assert!(verify_manifest(id, &forged.encode()).is_err());
        // Name and MIME type describe the file but are not part of its identity.
        let mut renamed = manifest;
        renamed.name = "other.bin".into();
        assert!(verify_manifest(id, &renamed.encode()).is_ok());
    }

    #[test]
    fn empty_files_have_an_id_and_no_pieces() {
        let (id, manifest) = manifest_of("empty", "", PS, &[]);
        assert_eq!(manifest.piece_count(), 0);
        assert_eq!(verify_manifest(id, &manifest.encode()), Ok(manifest));
    }

    #[test]
    fn pieces_are_checked_for_hash_and_length() {
        let bytes = data(40_000);
        let (_, manifest) = manifest_of("f", "", PS, &bytes);
        let last = &bytes[2 * PS as usize..];
        assert!(verify_piece(&manifest, 2, last));
        assert!(!verify_piece(&manifest, 1, last));
        assert!(!verify_piece(&manifest, 3, last));
        let mut corrupt = last.to_vec();
        corrupt[0] ^= 1;
        assert!(!verify_piece(&manifest, 2, &corrupt));
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_in_any_piece_is_detected(len in 1usize..100_000, at in any::<usize>(), bit in 0u8..8) {
            let mut bytes = data(len);
            let (_, manifest) = manifest_of("f", "", PS, &bytes);
            let at = at % len;
            bytes[at] ^= 1 << bit;
            let piece = (at / PS as usize) as u32;
            let start = piece as usize * PS as usize;
            let end = (start + PS as usize).min(len);
            prop_assert!(!verify_piece(&manifest, piece, &bytes[start..end]));
        }

        #[test]
        fn different_contents_have_different_ids(a in proptest::collection::vec(any::<u8>(), 0..3000), b in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assume!(a != b);
            prop_assert_ne!(manifest_of("x", "", PS, &a).0, manifest_of("x", "", PS, &b).0);
        }
    }
}
