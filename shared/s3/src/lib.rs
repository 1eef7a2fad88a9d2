//! Stowage's S3 backend: [`S3Backend`] implements the core's `ObjectBackend` (one-request,
//! streamed and parallel-part uploads from memory or a file, ranged reads, listing), so that
//! [`S3Provider`] is the core's object-store provider over it, like GCS and Azure; and
//! `PresignedUploads` (sessions whose bytes go straight from the client to S3) and
//! `DownloadSigner` (presigned GETs, or CloudFront). Everything S3-specific lives here: the
//! client, the key prefix, the error mapping. It must not know about repositories, paths or
//! the database.

mod backend;
mod client;
mod config;
mod downloads;
mod error;
mod sessions;

pub use backend::{S3Backend, S3Provider, connect};
pub use config::{MAX_PARTS, MIN_PART_SIZE, S3Config, ServerSideEncryption};
pub use downloads::{CloudFrontSigner, cloudfront_base64};
