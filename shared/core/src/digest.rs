//! The three digests Stowage keeps for every binary. SHA-256 is the identity (SHA-1 is broken
//! for collision resistance); SHA-1 and MD5 are metadata for clients that still ask for them.
//! This module parses and prints them; it does not hash (see `hashing`).

use std::fmt;
use std::str::FromStr;

use crate::Error;

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident, $len:literal, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the hex form.
            pub const HEX_LEN: usize = $len * 2;

            /// The digest from its raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, as stored and as sent in headers.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            /// Parses hex in either case; anything else is a clear [`Error::InvalidInput`].
            fn from_str(s: &str) -> Result<Self, Error> {
                let s = s.trim();
                let mut out = [0u8; $len];
                if s.len() != Self::HEX_LEN || hex::decode_to_slice(s, &mut out).is_err() {
                    return Err(Error::InvalidInput(format!(
                        "{:?} is not a {} checksum: expected {} hexadecimal characters",
                        s,
                        $label,
                        Self::HEX_LEN
                    )));
                }
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_type!(
    /// SHA-256 of a binary: its identity and its storage key.
    Sha256, 32, "SHA-256"
);
digest_type!(
    /// SHA-1 of a binary, kept for clients (Maven, older tools) that ask for it.
    Sha1, 20, "SHA-1"
);
digest_type!(
    /// MD5 of a binary, kept for clients that ask for it.
    Md5, 16, "MD5"
);

/// A checksum algorithm, for messages and for `X-Checksum` (whose type is told by its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha256,
    Sha1,
    Md5,
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumAlgorithm::Sha256 => "SHA-256",
            ChecksumAlgorithm::Sha1 => "SHA-1",
            ChecksumAlgorithm::Md5 => "MD5",
        })
    }
}

/// All three digests of one binary, computed in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksums {
    pub sha256: Sha256,
    pub sha1: Sha1,
    pub md5: Md5,
}

/// The digests a client declared for an upload; each one given must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpectedChecksums {
    pub sha256: Option<Sha256>,
    pub sha1: Option<Sha1>,
    pub md5: Option<Md5>,
}

impl ExpectedChecksums {
    /// Nothing declared.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether no checksum was declared.
    pub fn is_empty(&self) -> bool {
        self.sha256.is_none() && self.sha1.is_none() && self.md5.is_none()
    }

    /// Records a checksum whose type is told by its length (Artifactory's `X-Checksum`).
    /// A value that disagrees with one already declared for the same algorithm is refused.
    pub fn add_untyped(&mut self, value: &str) -> Result<(), Error> {
        let value = value.trim();
        match value.len() {
            Sha256::HEX_LEN => {
                Self::merge(&mut self.sha256, value.parse()?, ChecksumAlgorithm::Sha256)
            }
            Sha1::HEX_LEN => Self::merge(&mut self.sha1, value.parse()?, ChecksumAlgorithm::Sha1),
            Md5::HEX_LEN => Self::merge(&mut self.md5, value.parse()?, ChecksumAlgorithm::Md5),
            n => Err(Error::InvalidInput(format!(
                "X-Checksum has {n} characters; expected 32 (MD5), 40 (SHA-1) or 64 (SHA-256)"
            ))),
        }
    }

    fn merge<T: PartialEq + fmt::Display>(
        slot: &mut Option<T>,
        value: T,
        algorithm: ChecksumAlgorithm,
    ) -> Result<(), Error> {
        match slot {
            Some(existing) if *existing != value => Err(Error::InvalidInput(format!(
                "two different {algorithm} checksums were declared: {existing} and {value}"
            ))),
            _ => {
                *slot = Some(value);
                Ok(())
            }
        }
    }

    /// Checks actual digests against the declared ones, SHA-256 first.
    pub fn verify(&self, actual: &Checksums) -> Result<(), Error> {
        self.verify_sha256(&actual.sha256)?;
        check(ChecksumAlgorithm::Sha1, &self.sha1, &actual.sha1)?;
        check(ChecksumAlgorithm::Md5, &self.md5, &actual.md5)
    }

    /// Checks the SHA-256 alone (known before the other digests, see `HashingTask::sha256`).
    pub fn verify_sha256(&self, actual: &Sha256) -> Result<(), Error> {
        check(ChecksumAlgorithm::Sha256, &self.sha256, actual)
    }
}

fn check<T: PartialEq + fmt::Display>(
    algorithm: ChecksumAlgorithm,
    expected: &Option<T>,
    actual: &T,
) -> Result<(), Error> {
    match expected {
        Some(e) if e != actual => Err(Error::ChecksumMismatch {
            algorithm,
            expected: e.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hex_round_trip_and_case() {
        let d: Sha256 = EMPTY_SHA256.to_uppercase().parse().expect("valid hex");
        assert_eq!(d.to_hex(), EMPTY_SHA256);
    }

    #[test]
    fn rejects_bad_hex_with_a_message() {
        let err = "xyz".parse::<Sha1>().expect_err("not hex");
        assert!(err.to_string().contains("40 hexadecimal"), "{err}");
    }

    #[test]
    fn untyped_checksum_by_length() {
        let mut e = ExpectedChecksums::none();
        e.add_untyped(EMPTY_SHA256).expect("sha256");
        e.add_untyped("da39a3ee5e6b4b0d3255bfef95601890afd80709")
            .expect("sha1");
        e.add_untyped("d41d8cd98f00b204e9800998ecf8427e")
            .expect("md5");
        assert!(e.sha256.is_some() && e.sha1.is_some() && e.md5.is_some());
        assert!(e.add_untyped("abc").is_err());
        let other = "0".repeat(64);
        assert!(
            e.add_untyped(&other).is_err(),
            "conflicting SHA-256 must be refused"
        );
    }
}
