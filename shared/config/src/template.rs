//! The filestore templates, by the names Artifactory's `binarystore.xml` gives them, parsed once
//! into a typed value: the rest of the code matches on [`Template`], never on a string.

use std::fmt;
use std::str::FromStr;

use stowage_core::Error;

/// Which provider chain `[filestore] template` asks for (see [`crate::filestore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Template {
    /// A local directory (the default).
    #[default]
    FileSystem,
    /// The read cache in front of a local directory.
    CacheFs,
    /// Two directories, redundancy 1.
    DoubleShards,
    /// Two directories, redundancy 2.
    RedundantShards,
    /// The eventual queue in front of S3.
    S3StorageV3,
    /// S3, uploads streamed through.
    S3StorageV3Direct,
    /// The eventual queue in front of S3, for a cluster.
    ClusterS3StorageV3,
    /// Shards over S3 buckets (or any mounts).
    S3Sharding,
    /// The eventual queue in front of Google Cloud Storage.
    GoogleStorage,
    /// The eventual queue in front of Google Cloud Storage, for a cluster.
    ClusterGoogleStorage,
    /// Google Cloud Storage, uploads streamed through.
    GoogleStorageDirect,
    /// The eventual queue in front of Azure Blob.
    AzureBlobStorage,
    /// The eventual queue in front of Azure Blob, for a cluster.
    ClusterAzureBlobStorage,
    /// Azure Blob, uploads streamed through.
    AzureBlobStorageDirect,
    /// Each node's local directory as one shard of a store whose copies span the nodes.
    ClusterFileSystem,
}

/// Where a template keeps the binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    FileSystem,
    S3,
    GoogleStorage,
    AzureBlobStorage,
    /// Several mounts, each its own backend.
    Sharding,
}

impl Template {
    /// Every template, in the order messages list them.
    pub const ALL: [Template; 15] = [
        Template::FileSystem,
        Template::CacheFs,
        Template::DoubleShards,
        Template::RedundantShards,
        Template::S3StorageV3,
        Template::S3StorageV3Direct,
        Template::ClusterS3StorageV3,
        Template::S3Sharding,
        Template::GoogleStorage,
        Template::ClusterGoogleStorage,
        Template::GoogleStorageDirect,
        Template::AzureBlobStorage,
        Template::ClusterAzureBlobStorage,
        Template::AzureBlobStorageDirect,
        Template::ClusterFileSystem,
    ];

    /// The name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Template::FileSystem => "file-system",
            Template::CacheFs => "cache-fs",
            Template::DoubleShards => "double-shards",
            Template::RedundantShards => "redundant-shards",
            Template::S3StorageV3 => "s3-storage-v3",
            Template::S3StorageV3Direct => "s3-storage-v3-direct",
            Template::ClusterS3StorageV3 => "cluster-s3-storage-v3",
            Template::S3Sharding => "s3-sharding",
            Template::GoogleStorage => "google-storage",
            Template::ClusterGoogleStorage => "cluster-google-storage",
            Template::GoogleStorageDirect => "google-storage-direct",
            Template::AzureBlobStorage => "azure-blob-storage",
            Template::ClusterAzureBlobStorage => "cluster-azure-blob-storage",
            Template::AzureBlobStorageDirect => "azure-blob-storage-direct",
            Template::ClusterFileSystem => "cluster-file-system",
        }
    }

    /// Where the binaries live.
    pub fn backend(self) -> Backend {
        match self {
            Template::FileSystem | Template::CacheFs | Template::ClusterFileSystem => {
                Backend::FileSystem
            }
            Template::DoubleShards | Template::RedundantShards | Template::S3Sharding => {
                Backend::Sharding
            }
            Template::S3StorageV3 | Template::S3StorageV3Direct | Template::ClusterS3StorageV3 => {
                Backend::S3
            }
            Template::GoogleStorage
            | Template::ClusterGoogleStorage
            | Template::GoogleStorageDirect => Backend::GoogleStorage,
            Template::AzureBlobStorage
            | Template::ClusterAzureBlobStorage
            | Template::AzureBlobStorageDirect => Backend::AzureBlobStorage,
        }
    }

    /// Whether uploads go into a local queue (the eventual templates) before the object store
    /// has them.
    pub fn has_eventual_queue(self) -> bool {
        matches!(
            self,
            Template::S3StorageV3
                | Template::ClusterS3StorageV3
                | Template::GoogleStorage
                | Template::ClusterGoogleStorage
                | Template::AzureBlobStorage
                | Template::ClusterAzureBlobStorage
        )
    }

    /// Whether copies spread over the cluster's nodes (the `cluster-` templates: the queue's, or
    /// for `cluster-file-system` the store's).
    pub fn is_cluster(self) -> bool {
        matches!(
            self,
            Template::ClusterS3StorageV3
                | Template::ClusterGoogleStorage
                | Template::ClusterAzureBlobStorage
                | Template::ClusterFileSystem
        )
    }

    /// Whether the read cache is in front by default.
    pub fn caches_by_default(self) -> bool {
        self == Template::CacheFs
    }

    /// Every template name, comma-separated, for messages.
    pub fn names() -> String {
        Self::ALL.map(Template::name).join(", ")
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Template {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown filestore template {s:?}; expected one of {}",
                    Self::names()
                ))
            })
    }
}

impl TryFrom<String> for Template {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_unknown_names_list_the_known_ones() {
        for t in Template::ALL {
            assert_eq!(t.name().parse::<Template>().expect("parses"), t);
        }
        let e = "s3".parse::<Template>().expect_err("unknown");
        assert!(e.to_string().contains("s3-storage-v3-direct"), "{e}");
    }
}
