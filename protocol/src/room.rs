//! Room names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest room name accepted, in characters (all of them ASCII).
pub const MAX_ROOM_LEN: usize = 64;

/// A room name: 1 to 64 characters of `A–Z a–z 0–9 _ . -`.
///
/// The server refuses any other name with HTTP 400 before the WebSocket upgrade, and the
/// client checks it before connecting, so both share this one definition.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

/// Why a string is not a valid [`RoomName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The name is empty.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_LEN`].
    #[error("room name is longer than {MAX_ROOM_LEN} characters")]
    TooLong,
    /// The name holds a character outside `A–Z a–z 0–9 _ . -`.
    #[error("room name may only hold A-Z a-z 0-9 _ . - (found {0:?})")]
    BadChar(char),
}

impl RoomName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, RoomNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(RoomNameError::BadChar(bad));
        }
        if name.len() > MAX_ROOM_LEN {
            return Err(RoomNameError::TooLong);
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomName {
    type Error = RoomNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl From<RoomName> for String {
    fn from(room: RoomName) -> Self {
        room.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for name in ["demo", "a", "A-b_c.9", &"x".repeat(MAX_ROOM_LEN)] {
            assert_eq!(
                RoomName::new(name).map(|r| r.to_string()),
                Ok(name.to_string())
            );
        }
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(RoomName::new(""), Err(RoomNameError::Empty));
        assert_eq!(
            RoomName::new("x".repeat(MAX_ROOM_LEN + 1)),
            Err(RoomNameError::TooLong)
        );
        assert_eq!(RoomName::new("a b"), Err(RoomNameError::BadChar(' ')));
        assert_eq!(RoomName::new("a/b"), Err(RoomNameError::BadChar('/')));
        assert_eq!(RoomName::new("café"), Err(RoomNameError::BadChar('é')));
    }

    proptest! {
        #[test]
        fn valid_exactly_when_pattern_matches(name in "\\PC{0,70}") {
            let expected = (1..=MAX_ROOM_LEN).contains(&name.chars().count())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            prop_assert_eq!(RoomName::new(name).is_ok(), expected);
        }

        #[test]
        fn generated_valid_names_are_accepted(name in "[A-Za-z0-9_.-]{1,64}") {
            prop_assert!(RoomName::new(name).is_ok());
        }
    }
}
