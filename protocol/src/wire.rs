//! Framing of application messages on the `swarm` data channel between two peers.
//!
//! - A data-channel **text** frame is an application text message, delivered as a string.
//! - A data-channel **binary** frame starts with a one-byte tag. Tag [`TAG_APP`] (`0x00`)
//!   carries application bytes in the rest of the frame. Every other tag is reserved for the
//!   swarm's own peer protocol (file sharing, versioned), which lives alongside on the same
//!   channel; a receiver that does not know a tag drops the frame.
//!
//! No frame is longer than [`MAX_FRAME_LEN`] bytes, which every WebRTC stack accepts.

/// Longest data-channel frame either peer sends, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Longest application text message, in UTF-8 bytes.
pub const MAX_APP_TEXT_LEN: usize = MAX_FRAME_LEN;

/// Longest application binary message (one byte of the frame is the tag).
pub const MAX_APP_BINARY_LEN: usize = MAX_FRAME_LEN - 1;

/// Tag of a binary frame holding application bytes.
pub const TAG_APP: u8 = 0x00;

/// An application message as it travels between peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMessage<'a> {
    /// Sent as a text frame.
    Text(&'a str),
    /// Sent as a binary frame tagged [`TAG_APP`].
    Binary(&'a [u8]),
}

/// A binary frame, as read by [`decode_binary`]. The swarm's own peer protocol adds variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryFrame<'a> {
    /// Application bytes (tag [`TAG_APP`]).
    App(&'a [u8]),
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

/// Reads a binary data-channel frame.
pub fn decode_binary(frame: &[u8]) -> Result<BinaryFrame<'_>, WireError> {
    match frame.split_first() {
        None => Err(WireError::Empty),
        Some((&TAG_APP, payload)) => Ok(BinaryFrame::App(payload)),
        Some((&tag, _)) => Err(WireError::UnknownTag(tag)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn binary_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let frame = encode_app_binary(&payload).expect("fits");
            prop_assert_eq!(frame.len(), payload.len() + 1);
            prop_assert_eq!(decode_binary(&frame), Ok(BinaryFrame::App(&payload)));
        }

        #[test]
        fn decoding_arbitrary_frames_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_binary(&frame);
        }
    }
}
