//! Handlers for artifacts: deploy, download (with Range and conditional requests), delete,
//! file/folder info and checksum search. Paths are taken raw from the URI and validated by
//! `stowage_core::ArtifactPath`, segment by segment, before anything else happens.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::json;
use stowage_core::{ArtifactPath, Error, ExpectedChecksums, Md5, RepoKey, Sha1, Sha256};
use stowage_metadata::{ChecksumLookup, ListKind, ListedEntry};
use stowage_service::security::Caller;
use stowage_service::{ChecksumDeploy, ChecksumKind, ListPage, MAX_CHECKSUM_FILE, RelocateRequest};
use stowage_service::{
    Conditions, DeployRequest, Download, DownloadRequest, Item, RedirectPolicy, etag,
};

use super::error::{NO_FILE, NO_ITEM, NO_PROPERTIES, missing};
use super::target::Target;
use super::{ApiError, AppState, json as shapes, range};

const X_CHECKSUM_SHA256: &str = "x-checksum-sha256";
const X_CHECKSUM_SHA1: &str = "x-checksum-sha1";
const X_CHECKSUM_MD5: &str = "x-checksum-md5";
const X_CHECKSUM: &str = "x-checksum";
const X_CHECKSUM_DEPLOY: &str = "x-checksum-deploy";

/// How much of a refused body is read (and dropped) before the refusal is sent, and for how
/// long at most: a client still sending it then reads the answer instead of a broken pipe (as
/// nginx's lingering close). A larger or slower body gets the answer and a closed connection.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops up to [`DRAIN_MAX`] bytes of `body` within [`DRAIN_TIME`].
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read: u64 = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Error> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::InvalidInput(format!("header {name} is not ASCII")))
        })
        .transpose()
}

/// The checksums a deploy declares in `X-Checksum-*` headers.
pub(crate) fn declared_checksums(headers: &HeaderMap) -> Result<ExpectedChecksums, Error> {
    let mut expected = ExpectedChecksums::none();
    let named = |e: Error, name: &str| match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("header {name}: {m}")),
        other => other,
    };
    if let Some(v) = header_str(headers, X_CHECKSUM_SHA256)? {
        expected.sha256 = Some(
            v.parse::<Sha256>()
                .map_err(|e| named(e, "X-Checksum-Sha256"))?,
        );
    }
    if let Some(v) = header_str(headers, X_CHECKSUM_SHA1)? {
        expected.sha1 = Some(v.parse::<Sha1>().map_err(|e| named(e, "X-Checksum-Sha1"))?);
    }
    if let Some(v) = header_str(headers, X_CHECKSUM_MD5)? {
        expected.md5 = Some(v.parse::<Md5>().map_err(|e| named(e, "X-Checksum-Md5"))?);
    }
    if let Some(v) = header_str(headers, X_CHECKSUM)? {
        expected
            .add_untyped(v)
            .map_err(|e| named(e, "X-Checksum"))?;
    }
    Ok(expected)
}

/// The conditional headers of a request. A date that is not a valid HTTP-date is ignored, as
/// RFC 9110 requires.
fn conditions(headers: &HeaderMap) -> Result<Conditions, ApiError> {
    let text = |name: HeaderName| header_str(headers, name.as_str()).map(|v| v.map(str::to_owned));
    let date = |name: HeaderName| {
        header_str(headers, name.as_str()).map(|v| {
            v.and_then(|v| chrono::DateTime::parse_from_rfc2822(v.trim()).ok())
                .map(|t| t.timestamp_millis())
        })
    };
    Ok(Conditions {
        if_match: text(header::IF_MATCH)?,
        if_none_match: text(header::IF_NONE_MATCH)?,
        if_modified_since_ms: date(header::IF_MODIFIED_SINCE)?,
        if_unmodified_since_ms: date(header::IF_UNMODIFIED_SINCE)?,
    })
}

/// `PUT /{repo}/{path}`: deploy.
pub(crate) async fn deploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Target {
        repo,
        path,
        properties,
    }: Target,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = declared_checksums(&headers)?;
    let size = header_str(&headers, header::CONTENT_LENGTH.as_str())?
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::InvalidInput(format!("Content-Length {v:?} is not a number")))
        })
        .transpose()?;
    if let Some(max) = state.limits.max_request_body {
        let announced = size.or_else(|| http_body::Body::size_hint(&body).exact());
        if let Some(announced) = announced.filter(|&n| n > max) {
            drain(body).await;
            return Err(ApiError::Status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "this deployment accepts request bodies up to {max} bytes (the AWS Lambda \
                 payload limit) and this one has {announced}: open a presigned upload session \
                 with POST /api/uploads {{\"repo\", \"path\", \"size\", \"sha256\"}}, send the \
                 bytes to the URLs it returns, then POST /api/uploads/{{id}}/complete"
                ),
            ));
        }
    }
    let base = state.base_url(&headers);
    // `PUT /repo/a/b/` creates a folder, as in Artifactory.
    if uri.path().ends_with('/') {
        drain(body).await;
        let folder = state.stowage.create_folder(&caller, &repo, &path).await?;
        let json = shapes::folder_created(&base, &folder);
        return Ok((StatusCode::CREATED, Json(json)).into_response());
    }
    let request = DeployRequest {
        expected,
        size,
        by: caller.name.clone(),
        properties,
        conditions: conditions(&headers)?,
    };
    let by_checksum = header_str(&headers, X_CHECKSUM_DEPLOY)?
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    // A checksum file deployed after its file is held against it; nothing new is stored.
    let mut body = body;
    if !by_checksum
        && ChecksumKind::of_path(&path).is_some()
        && size.is_some_and(|n| n <= MAX_CHECKSUM_FILE)
    {
        let text = axum::body::to_bytes(body, MAX_CHECKSUM_FILE as usize)
            .await
            .map_err(|e| Error::Body {
                source: Box::new(e),
            })?;
        match state
            .stowage
            .deploy_checksum_file(&caller, &repo, &path, &text)
            .await?
        {
            ChecksumDeploy::Checked(record) => {
                let json = json!({
                    "repo": repo.as_str(),
                    "path": format!("/{path}"),
                    "checksumOf": shapes::file_info(&base, &record),
                });
                return Ok((StatusCode::CREATED, Json(json)).into_response());
            }
            ChecksumDeploy::NoFile => body = Body::from(text),
        }
    }
    let stowage = std::sync::Arc::clone(&state.stowage);
    let record = super::to_the_end(async move {
        if by_checksum {
            stowage
                .deploy_by_checksum(&caller, &repo, &path, request)
                .await
        } else {
            let body = super::byte_stream(body);
            stowage.deploy(&caller, &repo, &path, body, request).await
        }
    })
    .await?;
    let json = shapes::deployed(&base, &record);
    let location = format!("{base}{}", shapes::repo_url(&record.repo, &record.path));
    let mut response = (StatusCode::CREATED, Json(json)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `GET|HEAD /{repo}/{path}`: the bytes, a range of them, a redirect, or 304, as the service
/// decides.
pub(crate) async fn download(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    method: Method,
    Target { repo, path, .. }: Target,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header =
        |name: HeaderName| header_str(&headers, name.as_str()).map(|v| v.map(str::to_owned));
    let request = DownloadRequest {
        head_only: method == Method::HEAD,
        range: range::parse(header_str(&headers, header::RANGE.as_str())?),
        conditions: conditions(&headers)?,
        if_range: header(header::IF_RANGE)?,
        redirect: if uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "redirect=false"))
        {
            RedirectPolicy::Never
        } else {
            RedirectPolicy::Repository
        },
        user_agent: header(header::USER_AGENT)?,
        max_response_body: state.limits.max_response_body,
        content_type: shapes::mime_type(&path),
    };
    let (record, download) = match state
        .stowage
        .download(&caller, &repo, &path, &request)
        .await
    {
        Ok(found) => found,
        Err(Error::NotFound { what }) => {
            // `x.jar.sha1` not stored: answered from x.jar's metadata.
            return match state.stowage.checksum_file(&caller, &repo, &path).await? {
                Some(hex) => Ok(checksum_response(hex, request.head_only)),
                None => Err(missing(NO_FILE)(Error::NotFound { what })),
            };
        }
        Err(e) => return Err(missing(NO_FILE)(e)),
    };
    let mut out = HeaderMap::new();
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put(header::ETAG, &etag(&record));
    put(
        HeaderName::from_static(X_CHECKSUM_SHA256),
        &record.checksums.sha256.to_hex(),
    );
    put(
        HeaderName::from_static(X_CHECKSUM_SHA1),
        &record.checksums.sha1.to_hex(),
    );
    put(
        HeaderName::from_static(X_CHECKSUM_MD5),
        &record.checksums.md5.to_hex(),
    );
    put(
        header::LAST_MODIFIED,
        &shapes::http_date(record.modified_ms),
    );
    put(header::ACCEPT_RANGES, "bytes");
    let (range, body) = match download {
        Download::NotModified => return Ok((StatusCode::NOT_MODIFIED, out).into_response()),
        Download::Redirect(signed) => {
            put(header::LOCATION, &signed.url);
            put(header::CACHE_CONTROL, "private, no-store");
            return Ok((StatusCode::FOUND, out).into_response());
        }
        Download::Bytes { range, body } => (range, body),
    };
    put(header::CONTENT_TYPE, &request.content_type);
    let status = match &range {
        Some(r) => {
            put(
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{}", r.start, r.end - 1, record.size),
            );
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    let length = range.as_ref().map_or(record.size, |r| r.end - r.start);
    put(header::CONTENT_LENGTH, &length.to_string());
    let body = body.map_or_else(Body::empty, Body::from_stream);
    Ok((status, out, body).into_response())
}

/// A checksum file answered from the metadata: the hex digest, as `sha1sum` would print it
/// without the name.
fn checksum_response(hex: String, head_only: bool) -> Response {
    let length = hex.len().to_string();
    let body = if head_only {
        Body::empty()
    } else {
        Body::from(hex)
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain".to_string()),
            (header::CONTENT_LENGTH, length),
        ],
        body,
    )
        .into_response()
}

/// `DELETE /{repo}/{path}`: to the trash.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Target { repo, path, .. }: Target,
) -> Result<StatusCode, ApiError> {
    state
        .stowage
        .delete(&caller, &repo, &path)
        .await
        .map_err(missing(NO_ITEM))?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a `GET /api/storage/{repo}/{path}` asks for: info, or one of Artifactory's modes.
#[derive(Debug, Default)]
struct StorageQuery {
    /// `?properties` (all) or `?properties=a,b` (those).
    properties: Option<String>,
    /// `?list`, with `deep`, `depth` and `listFolders`.
    list: bool,
    deep: bool,
    depth: Option<usize>,
    list_folders: bool,
    stats: bool,
    last_modified: bool,
}

/// The modes and options a storage GET takes here; anything else is a 400 naming them.
const STORAGE_MODES: &str = "?properties[=a,b], ?list[&deep=0|1][&depth=N][&listFolders=0|1], \
    ?stats and ?lastModified";

impl StorageQuery {
    fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let mut q = StorageQuery::default();
        let flag = |k: &str, v: &str| match v {
            "" | "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(ApiError::bad_request(format!("{k}={v:?}: give 0 or 1"))),
        };
        for pair in uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "properties" => q.properties = Some(decode_param(v)?),
                "list" => q.list = true,
                "deep" => q.deep = flag(k, v)?,
                "depth" => {
                    q.depth = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("depth={v:?} is not a number"))
                    })?);
                }
                "listFolders" => q.list_folders = flag(k, v)?,
                // Accepted when off; what they ask for is not kept here.
                "mdTimestamps" | "includeRootPath" if !flag(k, v)? => {}
                "stats" => q.stats = true,
                "lastModified" => q.last_modified = true,
                _ => {
                    let k: String = k.chars().take(64).collect();
                    return Err(ApiError::bad_request(format!(
                        "the storage API does not support {k:?} here; it answers {STORAGE_MODES}"
                    )));
                }
            }
        }
        let modes = [q.properties.is_some(), q.list, q.stats, q.last_modified];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(ApiError::bad_request(format!(
                "ask for one mode at a time: {STORAGE_MODES}"
            )));
        }
        Ok(q)
    }
}

/// A query parameter's value, percent-decoded (`+` as a space).
fn decode_param(v: &str) -> Result<String, Error> {
    percent_decode_str(&v.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::InvalidInput("a query parameter is not valid UTF-8".into()))
}

/// `GET /api/storage/{repo}/{path}`: file or folder info, or `?properties`, `?list`,
/// `?stats`, `?lastModified`. Every 404 says "Unable to find item" (or, for properties,
/// "No properties could be found."), as Artifactory's clients expect.
pub(crate) async fn storage_info(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let q = StorageQuery::parse(&uri)?;
    let self_uri = format!("{base}/api/storage{}", shapes::repo_url(&repo, &path));
    let stowage = &state.stowage;
    if let Some(named) = &q.properties {
        let mut properties = stowage
            .properties(&caller, &repo, &path)
            .await
            .map_err(missing(NO_ITEM))?;
        // `?properties=os,arch` asks for those only, as in Artifactory.
        let named: Vec<&str> = named
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if !named.is_empty() {
            properties.retain(|k, _| named.contains(&k.as_str()));
        }
        if properties.is_empty() {
            return Err(ApiError::Status(
                StatusCode::NOT_FOUND,
                format!("{NO_PROPERTIES} ({repo}/{path})"),
            ));
        }
        return Ok(Json(json!({ "properties": properties, "uri": self_uri })).into_response());
    }
    if q.stats {
        let (_, stats) = stowage
            .download_stats(&caller, &repo, &path)
            .await
            .map_err(missing(NO_ITEM))?;
        return Ok(Json(json!({
            "uri": self_uri,
            "downloadCount": stats.downloads,
            "lastDownloaded": stats.last_ms,
            "lastDownloadedBy": stats.last_by,
            "remoteDownloadCount": 0,
            "remoteLastDownloaded": 0,
        }))
        .into_response());
    }
    if q.last_modified {
        let (at, ms) = stowage
            .last_modified(&caller, &repo, &path)
            .await
            .map_err(missing(NO_ITEM))?;
        let uri = format!("{base}/api/storage{}", shapes::repo_url(&repo, &at));
        return Ok(Json(json!({ "uri": uri, "lastModified": shapes::iso(ms) })).into_response());
    }
    if q.list {
        let folder = stowage
            .list_root(&caller, &repo, &path)
            .await
            .map_err(missing(NO_ITEM))?;
        let list = FileList {
            stowage: state.stowage.clone(),
            caller,
            repo,
            path,
            deep: q.deep,
            depth: q.depth,
            folders: q.list_folders,
        };
        let head = json!({ "uri": self_uri, "created": shapes::iso(folder.created_ms) });
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(list.stream(head)),
        )
            .into_response());
    }
    Ok(match stowage
        .item(&caller, &repo, &path)
        .await
        .map_err(missing(NO_ITEM))?
    {
        Item::File(record) => Json(shapes::file_info(&base, &record)),
        Item::Folder(folder) => Json(shapes::folder_info(&base, &folder)),
    }
    .into_response())
}

/// Entries of a file list read per page.
const LIST_PAGE: u32 = 1000;

/// A file list (`?list`) being streamed: read a page at a time from the path index, files
/// and (with `listFolders`) folders merged in path order, so memory stays flat however many
/// entries there are. A failure half-way ends the body early (the client sees broken JSON,
/// never a partial list taken for whole).
struct FileList {
    stowage: std::sync::Arc<stowage_service::Stowage>,
    caller: Caller,
    repo: RepoKey,
    path: ArtifactPath,
    deep: bool,
    depth: Option<usize>,
    folders: bool,
}

/// One kind of entry of a file list, read ahead by a page.
struct Cursor {
    kind: ListKind,
    buffered: std::collections::VecDeque<ListedEntry>,
    /// Where the next page starts; `None` once the last page was read.
    after: Option<Option<ArtifactPath>>,
}

impl Cursor {
    fn new(kind: ListKind) -> Self {
        Self {
            kind,
            buffered: Default::default(),
            after: Some(None),
        }
    }
}

impl FileList {
    /// Reads pages until `cursor` has an entry buffered or has none left.
    async fn fill(&self, cursor: &mut Cursor) -> Result<(), Error> {
        while cursor.buffered.is_empty() {
            let Some(after) = cursor.after.take() else {
                return Ok(());
            };
            let page = ListPage {
                kind: cursor.kind,
                deep: self.deep,
                after: after.as_ref().map(ArtifactPath::as_str),
                limit: LIST_PAGE,
            };
            let read = self
                .stowage
                .list_page(&self.caller, &self.repo, &self.path, &page)
                .await?;
            cursor.after = read.next.map(Some);
            cursor.buffered.extend(read.entries);
        }
        Ok(())
    }

    /// Whether `entry` lies within the depth asked for.
    fn within_depth(&self, entry: &ListedEntry) -> bool {
        let Some(depth) = self.depth else {
            return true;
        };
        let skip = if self.path.is_root() {
            0
        } else {
            self.path.as_str().len() + 1
        };
        let relative = entry.path.as_str().get(skip..).unwrap_or_default();
        relative.split('/').count() <= depth.max(1)
    }

    /// The JSON body: `head`'s fields, then `"files":[…]`, a page per chunk.
    fn stream(
        self,
        head: serde_json::Value,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, Error>> + Send + 'static {
        let mut kinds = vec![Cursor::new(ListKind::Files)];
        if self.folders {
            kinds.push(Cursor::new(ListKind::Folders));
        }
        let opening = {
            let mut text = head.to_string();
            text.pop(); // the closing brace
            text.push_str(",\"files\":[");
            text
        };
        futures::stream::unfold(
            (self, kinds, Some(opening), 0usize),
            |(list, mut kinds, opening, written)| async move {
                let mut chunk = opening.unwrap_or_default();
                let mut written = written;
                let mut in_chunk = 0;
                loop {
                    for cursor in kinds.iter_mut() {
                        if let Err(e) = list.fill(cursor).await {
                            return Some((Err(e), (list, Vec::new(), None, written)));
                        }
                    }
                    let next =
                        kinds
                            .iter_mut()
                            .filter(|c| !c.buffered.is_empty())
                            .min_by(|a, b| {
                                a.buffered[0].path.as_str().cmp(b.buffered[0].path.as_str())
                            });
                    let Some(cursor) = next else {
                        if kinds.is_empty() {
                            return None;
                        }
                        chunk.push_str("]}");
                        return Some((
                            Ok(bytes::Bytes::from(chunk)),
                            (list, Vec::new(), None, written),
                        ));
                    };
                    let Some(entry) = cursor.buffered.pop_front() else {
                        continue;
                    };
                    if !list.within_depth(&entry) {
                        continue;
                    }
                    if written > 0 {
                        chunk.push(',');
                    }
                    chunk.push_str(&shapes::listed(&list.path, &entry).to_string());
                    written += 1;
                    in_chunk += 1;
                    if in_chunk == LIST_PAGE as usize {
                        return Some((Ok(bytes::Bytes::from(chunk)), (list, kinds, None, written)));
                    }
                }
            },
        )
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ChecksumQuery {
    sha256: Option<String>,
    sha1: Option<String>,
    md5: Option<String>,
    /// Only these repositories (comma-separated), as the property search's `repos`.
    repos: Option<String>,
}

/// `GET /api/search/checksum?sha256=…` (or sha1, md5).
pub(crate) async fn search_checksum(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ChecksumQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lookup = match (q.sha256, q.sha1, q.md5) {
        (Some(v), None, None) => ChecksumLookup::Sha256(v.parse()?),
        (None, Some(v), None) => ChecksumLookup::Sha1(v.parse()?),
        (None, None, Some(v)) => ChecksumLookup::Md5(v.parse()?),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of sha256, sha1 or md5",
            ));
        }
    };
    let repos: Vec<RepoKey> = q
        .repos
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|r| RepoKey::parse(r.trim()))
        .collect::<Result<_, _>>()?;
    let base = state.base_url(&headers);
    let results: Vec<_> = state
        .stowage
        .search_checksum(&caller, lookup)
        .await?
        .iter()
        .filter(|r| repos.is_empty() || repos.contains(&r.repo))
        .map(|r| json!({ "uri": format!("{base}/api/storage{}", shapes::repo_url(&r.repo, &r.path)) }))
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

/// The `properties` query parameter, percent-decoded: `k=v1,v2;k2=v3` (or `k1,k2` to delete).
fn properties_param(uri: &Uri) -> Result<String, Error> {
    let query = uri.query().unwrap_or("");
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "properties" {
            return decode_param(v);
        }
    }
    Err(Error::InvalidInput(
        "the properties query parameter is required, e.g. ?properties=os=linux;qa=done".into(),
    ))
}

/// `recursive=0|1` (default 1, as in Artifactory): whether a folder's properties reach
/// everything below it.
fn recursive_param(uri: &Uri, name: &str, default: bool) -> Result<bool, ApiError> {
    for pair in uri.query().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return match v {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(ApiError::bad_request(format!("{name}={v:?}: give 0 or 1"))),
            };
        }
    }
    Ok(default)
}

/// `PUT /api/storage/{repo}/{path}?properties=k=v1,v2;k2=v3[&recursive=0]`: sets properties
/// on a file, or on a folder and everything below it.
pub(crate) async fn set_properties(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let mut properties = Vec::new();
    for item in properties_param(&uri)?.split(';').filter(|i| !i.is_empty()) {
        let (name, values) = item
            .split_once('=')
            .ok_or_else(|| Error::InvalidInput(format!("property {item:?} has no '='")))?;
        let values: Vec<String> = values.split(',').map(str::to_string).collect();
        properties.push((name.to_string(), values));
    }
    let recursive = recursive_param(&uri, "recursive", true)?;
    state
        .stowage
        .set_properties(&caller, &repo, &path, recursive, &properties)
        .await
        .map_err(missing(NO_ITEM))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/storage/{repo}/{path}?properties=k1,k2`.
pub(crate) async fn delete_properties(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let names: Vec<String> = properties_param(&uri)?
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let recursive = recursive_param(&uri, "recursive", true)?;
    state
        .stowage
        .delete_properties(&caller, &repo, &path, recursive, &names)
        .await
        .map_err(missing(NO_ITEM))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /api/metadata/{repo}/{path}[?recursiveProperties=1]` with
/// `{"props":{"k":"v","k2":["a","b"],"gone":null}}`: sets each property given, removes each
/// given as null, in one transaction (on the item only, unless `recursiveProperties=1`).
pub(crate) async fn patch_metadata(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); send {{\"props\":{{\"name\":\"value\"}}}}"
        ))
    })?;
    let props = doc
        .get("props")
        .and_then(|p| p.as_object())
        .ok_or_else(|| {
            ApiError::bad_request(
                "the body needs a \"props\" object, e.g. {\"props\":{\"name\":\"value\",\"gone\":null}}",
            )
        })?;
    let mut properties = Vec::new();
    for (name, value) in props {
        let values = match value {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(v) => vec![v.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(v) => Ok(v.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<_, ApiError>>()?,
            other => vec![other.to_string()],
        };
        properties.push((name.clone(), values));
    }
    let recursive = recursive_param(&uri, "recursiveProperties", false)?;
    state
        .stowage
        .set_properties(&caller, &repo, &path, recursive, &properties)
        .await
        .map_err(missing(NO_ITEM))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/search/prop?k=v1,v2&k2=v3[&repos=r1,r2]`: artifacts with every property given.
pub(crate) async fn search_properties(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut criteria = Vec::new();
    let mut repos = Vec::new();
    for (k, v) in params {
        if k == "repos" {
            for r in v.split(',').filter(|r| !r.is_empty()) {
                repos.push(RepoKey::parse(r)?);
            }
        } else {
            criteria.push((k, v.split(',').map(str::to_string).collect::<Vec<_>>()));
        }
    }
    if criteria.is_empty() {
        return Err(ApiError::bad_request(
            "give at least one property, e.g. ?os=linux",
        ));
    }
    let base = state.base_url(&headers);
    let found = state
        .stowage
        .search_properties(&caller, &criteria, &repos)
        .await?;
    let results: Vec<_> = found
        .iter()
        .map(|(r, p)| json!({ "uri": format!("{base}/api/storage{}", shapes::repo_url(r, p)) }))
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct RelocateQuery {
    to: Option<String>,
    dry: Option<String>,
}

async fn relocate(
    state: AppState,
    caller: Caller,
    Target { repo, path, .. }: Target,
    q: RelocateQuery,
    copy: bool,
) -> Result<Response, ApiError> {
    let verb = if copy { "copy" } else { "move" };
    let to =
        q.to.ok_or_else(|| ApiError::bad_request(format!("{verb} needs ?to=/repo/path")))?;
    let to_trimmed = to.strip_prefix('/').unwrap_or(&to);
    let (dst_repo, dst_rest) = to_trimmed.split_once('/').unwrap_or((to_trimmed, ""));
    let dst_repo = RepoKey::parse(dst_repo)?;
    let mut dst = ArtifactPath::parse(dst_rest)?;
    // A trailing slash means "into this folder".
    if to.ends_with('/') && !path.is_root() {
        let joined = if dst.is_root() {
            path.name().to_string()
        } else {
            format!("{dst}/{}", path.name())
        };
        dst = ArtifactPath::parse(&joined)?;
    }
    let dry = q.dry.as_deref().is_some_and(|d| d == "1" || d == "true");
    let n = state
        .stowage
        .relocate(
            &caller,
            &RelocateRequest {
                src_repo: &repo,
                src: &path,
                dst_repo: &dst_repo,
                dst: &dst,
                copy,
                dry,
            },
        )
        .await?;
    let done = if copy { "copied" } else { "moved" };
    let message = format!(
        "{verb} {repo}/{path} to {dst_repo}/{dst} completed successfully, {n} artifacts were {done}{}",
        if dry {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    );
    Ok(Json(json!({ "messages": [{ "level": "INFO", "message": message }] })).into_response())
}

/// `POST /api/move/{repo}/{path}?to=/{repo}/{path}[&dry=1]`: metadata only.
pub(crate) async fn move_items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    target: Target,
    Query(q): Query<RelocateQuery>,
) -> Result<Response, ApiError> {
    relocate(state, caller, target, q, false).await
}

/// `POST /api/copy/{repo}/{path}?to=/{repo}/{path}[&dry=1]`: metadata only.
pub(crate) async fn copy_items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    target: Target,
    Query(q): Query<RelocateQuery>,
) -> Result<Response, ApiError> {
    relocate(state, caller, target, q, true).await
}
