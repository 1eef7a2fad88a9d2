//! Builds the one S3 client of a process from `[filestore.s3]`: region, endpoint, path-style,
//! static keys or the default credential chain, and the SDK's standard retry with
//! `maxRetryAttempts`. Clients are built once at start-up and shared, never per request.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};

use crate::config::S3Config;

/// Region used when neither the configuration nor the environment names one.
const FALLBACK_REGION: &str = "us-east-1";

/// The client, and the credentials provider it signs with (whose credentials' expiry bounds
/// how long a presigned URL works).
pub(crate) async fn build(
    config: &S3Config,
) -> (
    aws_sdk_s3::Client,
    Option<aws_sdk_s3::config::SharedCredentialsProvider>,
) {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_retry_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (&config.identity, &config.credential) {
        loader =
            loader.credentials_provider(Credentials::new(id, secret, None, None, "stowage-config"));
    }
    let shared = loader.load().await;
    let mut builder =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.use_path_style_access);
    if shared.region().is_none() {
        builder = builder.region(Region::new(FALLBACK_REGION));
    }
    let credentials = shared.credentials_provider();
    (aws_sdk_s3::Client::from_conf(builder.build()), credentials)
}
