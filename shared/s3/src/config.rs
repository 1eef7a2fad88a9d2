//! `[filestore.s3]`: the S3 provider's settings. Names follow Artifactory's S3 v3 binary
//! provider (`bucketName`, `path`, `endpoint`, `identity`, `credential`, …) so its users
//! recognise them; what Artifactory does not have is marked as Stowage's own. Loading never
//! panics; `validate` names the setting that is wrong.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use stowage_core::Error;

/// Smallest part S3 accepts in a multipart upload (all but the last part).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// Server-side encryption of stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ServerSideEncryption {
    /// SSE-S3: keys managed by S3.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS: with `kmsServerSideEncryptionKeyId`, or the account's default KMS key.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// `[filestore.s3]`. (Serialize only lets a shard's settings be laid over these.)
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Config {
    /// The bucket. Required.
    pub bucket_name: String,
    /// Key prefix inside the bucket; binaries live at `<path>/ab/abcdef…`. Default `filestore`
    /// (Artifactory's default); empty puts them at the bucket's root.
    pub path: String,
    /// Region. Default: from the environment (`AWS_REGION`, profile), else `us-east-1`.
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores and emulators (`http://127.0.0.1:4566`).
    /// Default: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), needed by most emulators. Default `false`.
    pub use_path_style_access: bool,
    /// Static access key id. Default: none, the default credential chain is used (environment,
    /// profile, web identity, ECS/EC2 instance role).
    pub identity: Option<String>,
    /// Static secret access key, with `identity`.
    pub credential: Option<String>,
    /// `AES256` (SSE-S3) or `aws:kms` (SSE-KMS). Default: none (the bucket's default
    /// encryption applies; S3 encrypts new objects with SSE-S3 by default).
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// KMS key for `aws:kms`. Default: the account's S3 KMS key.
    pub kms_server_side_encryption_key_id: Option<String>,
    /// Storage class of stored objects (`STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, …).
    /// Default: none (S3's `STANDARD`).
    pub storage_class: Option<String>,
    /// Most S3 requests in flight from one process. Default 50 (Artifactory's default).
    pub max_connections: usize,
    /// Attempts per S3 request, the first included, with exponential backoff for throttling,
    /// 5xx and network errors. Default 5. (Stowage's own.)
    pub max_retry_attempts: u32,
    /// Checks at start-up that the bucket exists and is reachable with these credentials.
    /// Default `true`.
    pub test_connection: bool,
    /// Part size of multipart uploads (raised if a file would need more than 10 000 parts).
    /// Default 16 MiB; at least 5 MiB. (Stowage's own.)
    pub multipart_part_size: ByteSize,
    /// Parts of one multipart upload sent at once. Default 4. (Stowage's own: Artifactory sends
    /// parts on one thread.)
    pub multipart_concurrency: usize,
    /// Uploads up to this size are held in memory while they arrive and hashed, then sent as
    /// one PUT straight to their content-addressed key (one request, which the SDK can retry).
    /// Larger ones of unknown digest stream to a staging key and are copied into place.
    /// Default 8 MiB; 0 turns it off. (Stowage's own.)
    pub max_in_memory_upload_size: ByteSize,
    /// Memory all in-memory uploads of a process may hold at once; an upload that finds it
    /// spent streams instead. Default 256 MiB. (Stowage's own.)
    pub in_memory_upload_budget: ByteSize,
    /// Least validity of download redirect URLs. Default 600 (Artifactory's 30 s breaks clients
    /// that wait in a queue before they start).
    pub signed_url_expiry_seconds: u64,
    /// A slow client's rate: URLs for large binaries stay valid as long as such a client needs
    /// for the whole binary, so that a transfer resumed with `Range` still works. Default 1 MB
    /// (per second). (Stowage's own.)
    pub signed_url_slow_client_rate: ByteSize,
    /// Sign download redirects for this CloudFront domain (`d111111abcdef8.cloudfront.net`)
    /// instead of presigning S3 URLs. Default: none.
    pub cloud_front_domain_name: Option<String>,
    /// The CloudFront public key's id (of the trusted key group).
    pub cloud_front_key_pair_id: Option<String>,
    /// The RSA private key as PEM (PKCS#1 or PKCS#8), e.g. from a secret in the environment.
    pub cloud_front_private_key: Option<String>,
    /// Or the file holding it (a mounted secret). (Stowage's own.)
    pub cloud_front_private_key_file: Option<std::path::PathBuf>,
    /// Restrict CloudFront URLs to this source address or CIDR range (a custom policy).
    pub cloud_front_ip_range: Option<String>,
    /// Sign CloudFront URLs with a custom policy (`Policy=`) even without an IP range.
    /// Default `false`: the canned policy (`Expires=`).
    pub cloud_front_custom_policy: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket_name: String::new(),
            path: "filestore".into(),
            region: None,
            endpoint: None,
            use_path_style_access: false,
            identity: None,
            credential: None,
            server_side_encryption: None,
            kms_server_side_encryption_key_id: None,
            storage_class: None,
            max_connections: 50,
            max_retry_attempts: 5,
            test_connection: true,
            multipart_part_size: ByteSize::mib(16),
            multipart_concurrency: 4,
            max_in_memory_upload_size: ByteSize::mib(8),
            in_memory_upload_budget: ByteSize::mib(256),
            signed_url_expiry_seconds: 600,
            signed_url_slow_client_rate: ByteSize::mb(1),
            cloud_front_domain_name: None,
            cloud_front_key_pair_id: None,
            cloud_front_private_key: None,
            cloud_front_private_key_file: None,
            cloud_front_ip_range: None,
            cloud_front_custom_policy: false,
        }
    }
}

impl S3Config {
    /// Settings for an S3 emulator on this machine (LocalStack in development and tests):
    /// path-style URLs, LocalStack's static keys `test`/`test`, region `us-east-1`, and no
    /// connection test (the caller usually creates the bucket next). Never for AWS itself.
    pub fn local_emulator(endpoint: &str, bucket: &str) -> Self {
        Self {
            bucket_name: bucket.into(),
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            use_path_style_access: true,
            identity: Some("test".into()),
            credential: Some("test".into()),
            test_connection: false,
            ..Self::default()
        }
    }

    /// Checks what serde cannot: required and related settings.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidInput(format!("[filestore.s3] {m}")));
        if self.bucket_name.trim().is_empty() {
            return bad("bucketName is required".into());
        }
        if self.identity.is_some() != self.credential.is_some() {
            return bad(
                "identity and credential go together: set both (static keys) or neither \
                 (the default credential chain)"
                    .into(),
            );
        }
        if self.kms_server_side_encryption_key_id.is_some()
            && self.server_side_encryption != Some(ServerSideEncryption::AwsKms)
        {
            return bad(
                "kmsServerSideEncryptionKeyId needs serverSideEncryption = \"aws:kms\"".into(),
            );
        }
        if self.multipart_part_size.as_u64() < MIN_PART_SIZE {
            return bad(format!(
                "multipartPartSize is {}; S3 needs parts of at least 5 MiB",
                self.multipart_part_size
            ));
        }
        if self.max_connections == 0 || self.multipart_concurrency == 0 {
            return bad("maxConnections and multipartConcurrency must be at least 1".into());
        }
        if self.max_retry_attempts == 0 {
            return bad("maxRetryAttempts must be at least 1".into());
        }
        if self.path.starts_with('/') || self.path.ends_with('/') {
            return bad(format!(
                "path {:?} must not start or end with '/'",
                self.path
            ));
        }
        Ok(())
    }

    /// The part size for a file of `size` bytes: the configured one, raised so that no
    /// upload needs more than S3's 10 000 parts.
    pub fn part_size_for(&self, size: u64) -> u64 {
        self.multipart_part_size
            .as_u64()
            .max(size.div_ceil(MAX_PARTS))
            .max(MIN_PART_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let mut c = S3Config::default();
        assert!(c.validate().is_err(), "bucketName is required");
        c.bucket_name = "b".into();
        c.validate().expect("valid");
        c.identity = Some("key".into());
        assert!(c.validate().is_err(), "identity without credential");
        c.credential = Some("secret".into());
        c.validate().expect("valid");
        c.kms_server_side_encryption_key_id = Some("k".into());
        assert!(c.validate().is_err(), "KMS key without aws:kms");
        c.server_side_encryption = Some(ServerSideEncryption::AwsKms);
        c.validate().expect("valid");
        c.multipart_part_size = ByteSize::mib(1);
        assert!(c.validate().is_err(), "parts below 5 MiB");
    }

    #[test]
    fn part_size_grows_to_stay_within_ten_thousand_parts() {
        let c = S3Config::default();
        assert_eq!(c.part_size_for(1 << 30), 16 << 20);
        let huge = 5u64 << 40; // 5 TiB, S3's largest object
        assert!(huge.div_ceil(c.part_size_for(huge)) <= MAX_PARTS);
    }
}
