//! Stowage's domain core: what a binary is (its digests), where it lives (the key layout),
//! which artifact paths are acceptable, and the [`BinaryProvider`] trait every storage backend
//! implements, with the local filesystem provider. Test support (an in-memory provider and the
//! conformance suite every provider passes) is behind the `testing` feature.
//!
//! This crate knows nothing of HTTP or SQL: those live in `stowage-api` and `stowage-metadata`.

pub mod cache;
#[cfg(test)]
mod chain_tests;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod digest;
mod error;
pub mod eventual;
pub mod fanout;
pub mod fs;
mod hashing;
mod key;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod object;
mod path;
mod provider;
pub mod quorum;
pub mod sharding;
pub mod signing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod uploads;

pub use digest::{ChecksumAlgorithm, Checksums, ExpectedChecksums, Md5, Sha1, Sha256};
pub use error::{BoxError, Error, Result, is_storage_full};
pub use hashing::{ChecksumHasher, HashingTask, hash_stream, sha256_of_file, verify_stream};
pub use key::{BinaryKey, KeyLayout, STAGING};
pub use path::{ArtifactPath, RepoKey};
pub use provider::{
    BinaryProvider, BinaryProviderExt, ByteStream, GetOptions, GetResult, Health, ObjectMeta,
    PutOptions, PutResult, READ_CHUNK, StagedBinary, Stager, StagingAge, already_stored,
    check_range, drain, put_file_as_stream, read_exactly,
};
pub use uploads::{PresignedPart, PresignedRequest, PresignedUploads, StaleUploads, UploadPlan};
