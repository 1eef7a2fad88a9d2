//! Stowage's S3 backend: [`S3Provider`] implements the core's `BinaryProvider` (direct,
//! spooled-multipart and file uploads, ranged reads, listing) and `PresignedUploads` (sessions
//! whose bytes go straight from the client to S3). Everything S3-specific lives here: the
//! client, the key prefix, the error mapping. It must not know about repositories, paths or
//! the database.

mod client;
mod config;
mod downloads;
mod error;
mod provider;
mod sessions;

pub use config::{MAX_PARTS, MIN_PART_SIZE, S3Config, ServerSideEncryption};
pub use downloads::{CloudFrontSigner, cloudfront_base64};
pub use provider::S3Provider;
