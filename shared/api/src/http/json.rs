//! Artifactory's JSON shapes for artifacts and folders, built from metadata records. Sizes are
//! strings there, and stay strings here, so existing clients parse them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use stowage_core::{ArtifactPath, Checksums, ExpectedChecksums, RepoKey};
use stowage_metadata::{ArtifactRecord, FolderListing};

/// ISO 8601 with milliseconds, as Artifactory prints times.
pub(crate) fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An HTTP date for `Last-Modified`.
pub(crate) fn http_date(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The content type a file name suggests.
pub(crate) fn mime_type(path: &ArtifactPath) -> String {
    mime_guess::from_path(path.name())
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

/// `/repo/a/b` with each segment URL-encoded.
pub(crate) fn repo_url(repo: &RepoKey, path: &ArtifactPath) -> String {
    format!("/{repo}{}", path.to_url())
}

/// The JSON path, with a leading slash (`/` for the root).
fn json_path(path: &ArtifactPath) -> String {
    format!("/{path}")
}

fn checksums(c: &Checksums) -> Value {
    json!({ "sha1": c.sha1.to_hex(), "md5": c.md5.to_hex(), "sha256": c.sha256.to_hex() })
}

fn declared(e: &ExpectedChecksums) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(d) = e.sha1 {
        map.insert("sha1".into(), d.to_hex().into());
    }
    if let Some(d) = e.md5 {
        map.insert("md5".into(), d.to_hex().into());
    }
    if let Some(d) = e.sha256 {
        map.insert("sha256".into(), d.to_hex().into());
    }
    Value::Object(map)
}

/// The 201 body of a deploy.
pub(crate) fn deployed(base: &str, record: &ArtifactRecord, expected: &ExpectedChecksums) -> Value {
    json!({
        "repo": record.repo.as_str(),
        "path": json_path(&record.path),
        "created": iso(record.created_ms),
        "createdBy": record.created_by,
        "downloadUri": format!("{base}{}", repo_url(&record.repo, &record.path)),
        "mimeType": mime_type(&record.path),
        "size": record.size.to_string(),
        "checksums": checksums(&record.checksums),
        "originalChecksums": declared(expected),
        "uri": format!("{base}/api/storage{}", repo_url(&record.repo, &record.path)),
    })
}

/// File info (`GET /api/storage/{repo}/{path}`).
pub(crate) fn file_info(base: &str, record: &ArtifactRecord) -> Value {
    json!({
        "repo": record.repo.as_str(),
        "path": json_path(&record.path),
        "created": iso(record.created_ms),
        "createdBy": record.created_by,
        "lastModified": iso(record.modified_ms),
        "modifiedBy": record.modified_by,
        "lastUpdated": iso(record.modified_ms),
        "downloadUri": format!("{base}{}", repo_url(&record.repo, &record.path)),
        "mimeType": mime_type(&record.path),
        "size": record.size.to_string(),
        "checksums": checksums(&record.checksums),
        "originalChecksums": checksums(&record.checksums),
        "uri": format!("{base}/api/storage{}", repo_url(&record.repo, &record.path)),
    })
}

/// Folder info (`GET /api/storage/{repo}/{folder}`).
pub(crate) fn folder_info(
    base: &str,
    repo: &RepoKey,
    path: &ArtifactPath,
    folder: &FolderListing,
) -> Value {
    let children: Vec<Value> = folder
        .children
        .iter()
        .map(|c| {
            let child = ArtifactPath::root_child_url(&c.name);
            json!({ "uri": child, "folder": c.folder })
        })
        .collect();
    json!({
        "repo": repo.as_str(),
        "path": json_path(path),
        "created": iso(folder.created_ms),
        "lastModified": iso(folder.modified_ms),
        "lastUpdated": iso(folder.modified_ms),
        "children": children,
        "uri": format!("{base}/api/storage{}", repo_url(repo, path)),
    })
}
