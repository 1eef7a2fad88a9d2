//! Artifactory's JSON shapes for artifacts and folders, built from metadata records. Sizes are
//! strings there, and stay strings here, so existing clients parse them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use stowage_core::{ArtifactPath, Checksums, ExpectedChecksums, RepoKey};
use stowage_metadata::{ArtifactRecord, FolderListing, FolderRecord, ListedEntry};

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
pub(crate) fn deployed(base: &str, record: &ArtifactRecord) -> Value {
    json!({
        "repo": record.repo.as_str(),
        "path": json_path(&record.path),
        "created": iso(record.created_ms),
        "createdBy": record.created_by,
        "downloadUri": format!("{base}{}", repo_url(&record.repo, &record.path)),
        "mimeType": mime_type(&record.path),
        "size": record.size.to_string(),
        "checksums": checksums(&record.checksums),
        "originalChecksums": declared(&record.original),
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
        "originalChecksums": declared(&record.original),
        "uri": format!("{base}/api/storage{}", repo_url(&record.repo, &record.path)),
    })
}

/// Folder info (`GET /api/storage/{repo}/{folder}`).
pub(crate) fn folder_info(base: &str, listing: &FolderListing) -> Value {
    let folder = &listing.folder;
    let children: Vec<Value> = listing
        .children
        .iter()
        .map(|c| {
            let child = ArtifactPath::root_child_url(&c.name);
            json!({ "uri": child, "folder": c.folder })
        })
        .collect();
    json!({
        "repo": folder.repo.as_str(),
        "path": json_path(&folder.path),
        "created": iso(folder.created_ms),
        "createdBy": folder.created_by,
        "lastModified": iso(folder.modified_ms),
        "modifiedBy": folder.modified_by,
        "lastUpdated": iso(folder.modified_ms),
        "children": children,
        "uri": format!("{base}/api/storage{}", repo_url(&folder.repo, &folder.path)),
    })
}

/// The 201 body of a folder's creation (`PUT /{repo}/{folder}/`).
pub(crate) fn folder_created(base: &str, folder: &FolderRecord) -> Value {
    json!({
        "repo": folder.repo.as_str(),
        "path": format!("{}/", json_path(&folder.path)),
        "created": iso(folder.created_ms),
        "createdBy": folder.created_by,
        "children": [],
        "uri": format!("{base}/api/storage{}", repo_url(&folder.repo, &folder.path)),
    })
}

/// One entry of a file list (`?list`), its `uri` relative to the folder listed.
pub(crate) fn listed(folder: &ArtifactPath, entry: &ListedEntry) -> Value {
    let skip = if folder.is_root() {
        0
    } else {
        folder.as_str().len() + 1
    };
    let relative = entry.path.as_str().get(skip..).unwrap_or_default();
    let uri: String = relative
        .split('/')
        .map(ArtifactPath::root_child_url)
        .collect();
    match &entry.file {
        Some(file) => json!({
            "uri": uri,
            "size": file.size,
            "lastModified": iso(entry.modified_ms),
            "folder": false,
            "sha1": file.sha1.to_hex(),
            "sha2": file.sha256.to_hex(),
        }),
        None => json!({
            "uri": uri,
            "size": -1,
            "lastModified": iso(entry.modified_ms),
            "folder": true,
        }),
    }
}
