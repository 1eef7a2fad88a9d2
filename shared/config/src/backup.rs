//! Backup targets from their names (`stowage backup --to`, `stowage restore --from`):
//!
//! - a directory: binaries under `DIR/binaries` (the filesystem provider's layout), the
//!   backups' files under `DIR/backups/`;
//! - `s3://bucket/prefix`: binaries under `prefix/binaries/` of the bucket, files under
//!   `prefix/backups/`; the endpoint, region and credentials are `[filestore.s3]`'s when the
//!   configuration has that section (LocalStack, MinIO, static keys), else the AWS defaults.
//!
//! And the configuration a backup keeps: the file as given, every secret left out.

use std::path::Path;
use std::sync::Arc;

use stowage_core::fs::FileSystemProvider;
use stowage_core::{BinaryProvider, Error, KeyLayout, Result};
use stowage_service::backup::{BackupTarget, LocalFiles, ObjectFiles};

use crate::config::Config;

/// The target `spec` names.
pub async fn target(spec: &str, config: &Config) -> Result<BackupTarget> {
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidInput(format!(
                "backup target {spec:?}: name a bucket, as in s3://bucket/prefix"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let base = config.filestore.s3.clone().unwrap_or_default();
        let binaries_path = if prefix.is_empty() {
            "binaries".to_string()
        } else {
            format!("{prefix}/binaries")
        };
        let s3 = stowage_s3::S3Config {
            bucket_name: bucket.to_string(),
            path: binaries_path,
            test_connection: true,
            ..base
        };
        let spool = config.data_dir.join("backup-spool");
        let provider = stowage_s3::connect(
            s3,
            KeyLayout::default(),
            config.filestore.max_file_size_for_direct_upload.as_u64(),
            spool,
        )
        .await
        .map_err(|e| Error::InvalidInput(format!("backup target {spec}: {e}")))?;
        let files = ObjectFiles::new(provider.backend().clone(), prefix);
        return Ok(BackupTarget {
            binaries: Arc::new(provider),
            files: Arc::new(files),
        });
    }
    if spec.contains("://") {
        return Err(Error::InvalidInput(format!(
            "backup target {spec:?}: use a directory or s3://bucket/prefix"
        )));
    }
    let dir = Path::new(spec);
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::InvalidInput(format!("cannot create the backup directory {spec}: {e}"))
    })?;
    let binaries = FileSystemProvider::new(dir.join("binaries"), KeyLayout::default())?;
    Ok(BackupTarget {
        binaries: Arc::new(binaries),
        files: Arc::new(LocalFiles::new(dir)),
    })
}

/// The active's filestore a passive standby copies binaries from (`[standby] source`): a
/// filestore directory as it is, or `s3://bucket/path` (the active's key prefix).
pub async fn standby_source(spec: &str, config: &Config) -> Result<Arc<dyn BinaryProvider>> {
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        let base = config.filestore.s3.clone().unwrap_or_default();
        let s3 = stowage_s3::S3Config {
            bucket_name: bucket.to_string(),
            path: path.trim_matches('/').to_string(),
            test_connection: false,
            ..base
        };
        let provider = stowage_s3::connect(
            s3,
            KeyLayout::default(),
            config.filestore.max_file_size_for_direct_upload.as_u64(),
            config.data_dir.join("standby-spool"),
        )
        .await
        .map_err(|e| Error::InvalidInput(format!("[standby] source {spec}: {e}")))?;
        return Ok(Arc::new(provider));
    }
    Ok(Arc::new(
        FileSystemProvider::new(spec, KeyLayout::default())
            .map_err(|e| Error::InvalidInput(format!("[standby] source {spec}: {e}")))?,
    ))
}

/// Keys whose values are secrets, wherever they appear in a configuration.
const SECRET_KEYS: &[&str] = &[
    "password",
    "credential",
    "cloudFrontPrivateKey",
    "accountKey",
    "sasToken",
    "clientSecret",
    "privateKey",
    "secret",
    "token",
];

/// The configuration file's text with every secret's value replaced by a note, and the
/// database URL's password cut: what a backup keeps beside the data.
pub fn without_secrets(text: &str) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text)
        .map_err(|e| Error::InvalidInput(format!("the configuration does not parse: {e}")))?;
    scrub(&mut doc);
    toml::to_string(&doc)
        .map_err(|e| Error::InvalidInput(format!("cannot write the configuration: {e}")))
}

fn scrub(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        let secret = SECRET_KEYS
            .iter()
            .any(|s| key.eq_ignore_ascii_case(s) || key.to_lowercase().ends_with("password"));
        match value {
            toml::Value::String(s) if secret => {
                *s = "(left out of the backup: set it again)".into();
            }
            toml::Value::String(s) if key == "url" || key == "reader_url" => {
                *s = without_url_password(s);
            }
            toml::Value::Table(inner) => scrub(inner),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        scrub(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `scheme://user:password@host/…` → `scheme://user@host/…`.
fn without_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_left_out_of_the_kept_configuration() {
        let text = r#"
[database]
url = "postgres://stowage:hunter2@db:5432/stowage"
password = "secretsmanager:arn:aws:secretsmanager:x#password"

[filestore]
template = "s3-storage-v3"

[filestore.s3]
bucketName = "b"
identity = "AKIA"
credential = "wJalrXUtnFEMI"

[[filestore.sharding.mounts]]
id = "m"
s3 = { bucketName = "c", credential = "other-secret" }
"#;
        let kept = without_secrets(text).expect("scrubbed");
        for secret in [
            "hunter2",
            "secretsmanager:",
            "wJalrXUtnFEMI",
            "other-secret",
        ] {
            assert!(!kept.contains(secret), "{secret} in {kept}");
        }
        assert!(
            kept.contains("postgres://stowage@db:5432/stowage"),
            "{kept}"
        );
        assert!(kept.contains("bucketName = \"b\""), "{kept}");
        assert!(
            kept.contains("identity = \"AKIA\""),
            "the key id is no secret: {kept}"
        );
    }
}
