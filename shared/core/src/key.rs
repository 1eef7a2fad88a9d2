//! The object-key layout: where a binary with a given SHA-256 lives inside a filestore, bucket
//! or container. Every backend asks this type; none builds a key by hand.

use std::fmt;

use crate::{Error, Sha256};

/// The folder, beside the prefix folders, where every store keeps bytes not yet named by their
/// digest (Artifactory's `_pre`): a directory's temporary files, an object store's staging
/// objects. Never a binary's key, never a repository key.
pub const STAGING: &str = "_pre";

/// How digests map to keys: `ab/abcdef…` with `rootFoldersNameLength` hex characters of prefix
/// folder (Artifactory's parameter of the same name; default 2, so 256 top-level folders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLayout {
    root_folders_name_length: usize,
}

impl Default for KeyLayout {
    fn default() -> Self {
        Self {
            root_folders_name_length: Self::DEFAULT_ROOT_FOLDERS_NAME_LENGTH,
        }
    }
}

impl KeyLayout {
    /// Artifactory's default `rootFoldersNameLength`.
    pub const DEFAULT_ROOT_FOLDERS_NAME_LENGTH: usize = 2;

    /// A layout with `root_folders_name_length` prefix characters (0 to 8; 0 means a flat
    /// layout).
    pub fn new(root_folders_name_length: usize) -> Result<Self, Error> {
        if root_folders_name_length > 8 {
            return Err(Error::InvalidInput(format!(
                "rootFoldersNameLength is {root_folders_name_length}; it must be between 0 and 8"
            )));
        }
        Ok(Self {
            root_folders_name_length,
        })
    }

    /// The key of a binary.
    pub fn key(&self, digest: &Sha256) -> BinaryKey {
        let hex = digest.to_hex();
        let key = match self.root_folders_name_length {
            0 => hex,
            n => format!("{}/{}", &hex[..n], hex),
        };
        BinaryKey {
            digest: *digest,
            key,
        }
    }

    /// The digest a key names, if it is a key of this layout (used when listing a store).
    pub fn parse(&self, key: &str) -> Option<Sha256> {
        let name = match self.root_folders_name_length {
            0 => key,
            n => {
                let (prefix, name) = key.split_once('/')?;
                if prefix.len() != n || !name.starts_with(prefix) {
                    return None;
                }
                name
            }
        };
        if name.len() != Sha256::HEX_LEN || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        name.parse().ok()
    }
}

/// The key of one binary in a store: `ab/abcdef…`, relative to the store's root or prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinaryKey {
    digest: Sha256,
    key: String,
}

impl BinaryKey {
    /// The digest this key stores.
    pub fn digest(&self) -> &Sha256 {
        &self.digest
    }

    /// The key as a relative path with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Content type objects are stored with; the artifact's own type is served from metadata.
    pub fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }

    /// Cache headers for the stored object: content-addressed bytes never change.
    pub fn cache_control(&self) -> &'static str {
        "public, max-age=31536000, immutable"
    }
}

impl fmt::Display for BinaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Sha256 {
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .expect("valid")
    }

    #[test]
    fn default_layout_has_two_char_folders_and_round_trips() {
        let layout = KeyLayout::default();
        let key = layout.key(&digest());
        assert_eq!(
            key.as_str(),
            "e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(layout.parse(key.as_str()), Some(digest()));
    }

    #[test]
    fn other_lengths_and_foreign_keys() {
        let flat = KeyLayout::new(0).expect("valid");
        assert_eq!(flat.key(&digest()).as_str(), digest().to_hex());
        let four = KeyLayout::new(4).expect("valid");
        let key = four.key(&digest());
        assert!(key.as_str().starts_with("e3b0/"));
        assert_eq!(four.parse(key.as_str()), Some(digest()));
        assert_eq!(four.parse("e3/whatever"), None);
        assert_eq!(KeyLayout::default().parse("_pre/abc.tmp"), None);
        assert!(KeyLayout::new(9).is_err());
    }
}
