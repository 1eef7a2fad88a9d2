//! S3 provider
