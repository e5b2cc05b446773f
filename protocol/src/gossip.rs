//! Room-wide announcements spread by gossip through the mesh.
//!
//! In a partial mesh a peer is connected to a few neighbours only, so the `announce` frame a
//! sharer sends on its own channels reaches those neighbours alone. A [`Gossip`] message is
//! what the rest of the room hears: it travels in a `relay` frame ([`crate::wire::Relay`])
//! whose `target` is [`BROADCAST`], signed by its origin like a relayed signal, and every peer
//! that receives it for the first time passes it on to its other neighbours. Its `data` is
//! the message's JSON, so new kinds can be added: a receiver ignores kinds it does not know.

use serde::{Deserialize, Serialize};

use crate::{ContentId, PeerId};

/// The `target` of a relay frame meant for every peer in the room (no peer has this id: ids
/// are hashes of public keys).
pub const BROADCAST: PeerId = PeerId::from_bytes([0; crate::peer_id::PEER_ID_LEN]);

/// Longest file name or MIME type a [`Gossip::Provide`] carries, in UTF-8 bytes (longer ones
/// are cut at a character boundary by [`Gossip::provide`]).
pub const MAX_LABEL_LEN: usize = 1024;

/// A message for the whole room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Gossip {
    /// "I hold all of this content and serve it": the origin is a provider of `id`.
    Provide {
        /// The content.
        id: ContentId,
        /// Its length in bytes.
        size: u64,
        /// File name, for display.
        name: String,
        /// MIME type (may be empty).
        mime: String,
    },
}

impl Gossip {
    /// A [`Gossip::Provide`], with `name` and `mime` cut to [`MAX_LABEL_LEN`] bytes.
    pub fn provide(id: ContentId, size: u64, name: &str, mime: &str) -> Self {
        Self::Provide {
            id,
            size,
            name: truncate(name, MAX_LABEL_LEN).to_owned(),
            mime: truncate(mime, MAX_LABEL_LEN).to_owned(),
        }
    }

    /// The content the message is about.
    pub fn content(&self) -> ContentId {
        match self {
            Self::Provide { id, .. } => *id,
        }
    }

    /// The JSON carried as a relay frame's `data`.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a relay frame's `data`; an error for malformed JSON, an unknown `type`, or a
    /// `name` or `mime` longer than [`MAX_LABEL_LEN`] (what [`Gossip::provide`] makes never
    /// is; a longer one is someone making us keep it).
    pub fn parse(data: &[u8]) -> Result<Self, serde_json::Error> {
        let gossip: Self = serde_json::from_slice(data)?;
        match &gossip {
            Self::Provide { name, mime, .. }
                if name.len() > MAX_LABEL_LEN || mime.len() > MAX_LABEL_LEN =>
            {
                Err(serde::de::Error::custom(
                    "a label longer than MAX_LABEL_LEN",
                ))
            }
            _ => Ok(gossip),
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn provide_round_trips_as_tagged_json() {
        let id = ContentId::from_bytes([7; 32]);
        let msg = Gossip::provide(id, 42, "clip.webm", "video/webm");
        let json = String::from_utf8(msg.to_json()).expect("utf-8");
        assert!(
            json.starts_with(r#"{"type":"provide","id":"0707"#),
            "{json}"
        );
        assert_eq!(Gossip::parse(json.as_bytes()).expect("parses"), msg);
    }

    #[test]
    fn labels_longer_than_the_bound_are_refused_on_receipt() {
        let id = ContentId::from_bytes([7; 32]);
        let long = "x".repeat(MAX_LABEL_LEN + 1);
        for (name, mime) in [(long.as_str(), ""), ("a", long.as_str())] {
            let forged = Gossip::Provide {
                id,
                size: 1,
                name: name.to_owned(),
                mime: mime.to_owned(),
            };
            assert!(Gossip::parse(&forged.to_json()).is_err());
        }
        let longest = "x".repeat(MAX_LABEL_LEN);
        assert!(Gossip::parse(&Gossip::provide(id, 1, &longest, &longest).to_json()).is_ok());
    }

    #[test]
    fn unknown_kinds_and_junk_are_errors() {
        assert!(Gossip::parse(br#"{"type":"withdraw","id":"00"}"#).is_err());
        assert!(Gossip::parse(b"not json").is_err());
        assert!(
            Gossip::parse(br#"{"type":"provide","id":"zz","size":1,"name":"","mime":""}"#).is_err()
        );
    }

    #[test]
    fn long_labels_are_cut_at_a_character_boundary() {
        let name = "é".repeat(MAX_LABEL_LEN);
        let Gossip::Provide { name: cut, .. } =
            Gossip::provide(ContentId::from_bytes([0; 32]), 0, &name, "");
        assert!(cut.len() <= MAX_LABEL_LEN && cut.len() >= MAX_LABEL_LEN - 1);
        assert!(name.starts_with(&cut));
    }

    proptest! {
        #[test]
        fn any_provide_round_trips(bytes in any::<[u8; 32]>(), size in any::<u64>(), name in ".{0,40}", mime in "[a-z/]{0,20}") {
            let msg = Gossip::provide(ContentId::from_bytes(bytes), size, &name, &mime);
            prop_assert_eq!(Gossip::parse(&msg.to_json()).expect("parses"), msg);
        }
    }
}
