//! Identifiers (members, signing keys) and member kinds, validated when parsed so that an id
//! is always safe to use in a store key, a metric label or a file name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid [`MemberId`] or [`KeyId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberIdError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most 63 characters, this one has {0}")]
    TooLong(usize),
    #[error("an id may contain only letters, digits, '-', '_' and '.'; found {0:?}")]
    BadChar(char),
    #[error("an id may not be {0:?}: it means this or the parent directory in a store key or a path")]
    DotSegment(&'static str),
}

fn check_id(s: &str) -> Result<(), MemberIdError> {
    if s.is_empty() {
        return Err(MemberIdError::Empty);
    }
    // "." and ".." vanish from a URL path or a file name: a Consul key built from one would be
    // written in one place and read from another.
    for dots in [".", ".."] {
        if s == dots {
            return Err(MemberIdError::DotSegment(dots));
        }
    }
    let len = s.chars().count();
    if len > 63 {
        return Err(MemberIdError::TooLong(len));
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(c) => Err(MemberIdError::BadChar(c)),
        None => Ok(()),
    }
}

/// A string newtype that is checked by `check_id` whenever it is built or deserialised.
macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, MemberIdError> {
                let s = s.into();
                check_id(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = MemberIdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_id!(
    /// A member's stable identifier, as written in the config's `[[members]]` table.
    ///
    /// Ids appear in metrics labels, store keys and log lines, so they are restricted to
    /// `[A-Za-z0-9_.-]`, 1 to 63 characters: safe in a Consul key, a DNS label and a file name.
    MemberId
);

checked_id!(
    /// The name of a signing key whose watermark the store keeps (one chain identity).
    /// Same character rules as [`MemberId`]: it becomes part of store keys.
    KeyId
);

checked_id!(
    /// A validator the cluster serves (one `[[validators]]` entry): the scope of a lease, its
    /// epoch, its watermarks and its intents in the store. Same character rules as
    /// [`MemberId`]: it becomes part of store keys and metric labels.
    ValidatorId
);

impl ValidatorId {
    /// The validator of a config with a single top-level `[chain]`/`[producer]`: the store's
    /// unscoped state, as every version before `[[validators]]` kept it.
    pub fn default_validator() -> ValidatorId {
        ValidatorId(DEFAULT_VALIDATOR.to_string())
    }

    /// Whether this is the validator whose state the store keeps unscoped.
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_VALIDATOR
    }
}

/// The id of the one validator of a config without `[[validators]]`.
pub const DEFAULT_VALIDATOR: &str = "default";

/// What a member can do: `producer` members have a node they can activate; `witness` members
/// only vote in the raft quorum and never hold the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    Producer,
    Witness,
}

impl fmt::Display for MemberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberKind::Producer => "producer",
            MemberKind::Witness => "witness",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_accepts_dns_safe_names() {
        for ok in ["a", "eu-west-1", "node_2", "v1.2", &"x".repeat(63)] {
            assert!(MemberId::new(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn member_id_rejects_empty_long_and_odd_characters() {
        assert_eq!(MemberId::new(""), Err(MemberIdError::Empty));
        assert_eq!(MemberId::new("x".repeat(64)), Err(MemberIdError::TooLong(64)));
        assert_eq!(MemberId::new("a/b"), Err(MemberIdError::BadChar('/')));
        assert_eq!(MemberId::new("a b"), Err(MemberIdError::BadChar(' ')));
        assert_eq!(MemberId::new("."), Err(MemberIdError::DotSegment(".")));
        assert_eq!(MemberId::new(".."), Err(MemberIdError::DotSegment("..")));
        assert!(MemberId::new("...").is_ok(), "only the path segments . and .. mean something else");
    }

    #[test]
    fn member_id_deserialises_through_validation() {
        let bad: Result<MemberId, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
        let good: MemberId = serde_json::from_str("\"b\"").expect("valid id");
        assert_eq!(good.as_str(), "b");
    }
}
