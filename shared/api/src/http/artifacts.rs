//! Handlers for artifacts: deploy, download (with Range and conditional requests), delete,
//! file/folder info and checksum search. Paths are taken raw from the URI and validated by
//! `stowage_core::ArtifactPath`, segment by segment, before anything else happens.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use percent_encoding::percent_decode_str;
use serde_json::json;
use stowage_core::{ArtifactPath, Error, ExpectedChecksums, Md5, RepoKey, Sha1, Sha256};
use stowage_metadata::ChecksumLookup;
use stowage_service::RelocateRequest;
use stowage_service::security::Caller;
use stowage_service::{
    Conditions, DeployRequest, Download, DownloadRequest, Item, RedirectPolicy, etag,
};

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
fn declared_checksums(headers: &HeaderMap) -> Result<ExpectedChecksums, Error> {
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
            return Err(ApiError::Deployment(
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
    let request = DeployRequest {
        expected,
        size,
        by: caller.name.clone(),
        properties,
        conditions: conditions(&headers)?,
    };
    let by_checksum = header_str(&headers, X_CHECKSUM_DEPLOY)?
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let record = if by_checksum {
        state
            .stowage
            .deploy_by_checksum(&caller, &repo, &path, request)
            .await?
    } else {
        let body = body
            .into_data_stream()
            .map_err(|e| Error::Body {
                source: Box::new(e),
            })
            .boxed();
        state
            .stowage
            .deploy(&caller, &repo, &path, body, request)
            .await?
    };
    let base = state.base_url(&headers);
    let json = shapes::deployed(&base, &record, &expected);
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
    let (record, download) = state
        .stowage
        .download(&caller, &repo, &path, &request)
        .await?;
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

/// `DELETE /{repo}/{path}`: to the trash.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Target { repo, path, .. }: Target,
) -> Result<StatusCode, ApiError> {
    state.stowage.delete(&caller, &repo, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/storage/{repo}/{path}`: file or folder info; `?properties` for properties.
pub(crate) async fn storage_info(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Target { repo, path, .. }: Target,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let wants_properties = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "properties" || p.starts_with("properties="))
    });
    if wants_properties {
        let mut properties = state.stowage.properties(&caller, &repo, &path).await?;
        // `?properties=os,arch` asks for those only, as in Artifactory.
        let named: Vec<String> = properties_param(&uri)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        if !named.is_empty() {
            properties.retain(|k, _| named.contains(k));
            if properties.is_empty() {
                return Err(ApiError::not_found(format!(
                    "properties {} of {repo}/{path}",
                    named.join(",")
                )));
            }
        }
        let uri = format!("{base}/api/storage{}", shapes::repo_url(&repo, &path));
        return Ok(Json(json!({ "properties": properties, "uri": uri })).into_response());
    }
    Ok(match state.stowage.item(&caller, &repo, &path).await? {
        Item::File(record) => Json(shapes::file_info(&base, &record)),
        Item::Folder(folder) => Json(shapes::folder_info(&base, &repo, &path, &folder)),
    }
    .into_response())
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
            return percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Error::InvalidInput("properties is not valid UTF-8".into()));
        }
    }
    Err(Error::InvalidInput(
        "the properties query parameter is required, e.g. ?properties=os=linux;qa=done".into(),
    ))
}

/// `PUT /api/storage/{repo}/{path}?properties=k=v1,v2;k2=v3`: sets properties on a file or on
/// every file below a folder.
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
    state
        .stowage
        .set_properties(&caller, &repo, &path, &properties)
        .await?;
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
    state
        .stowage
        .delete_properties(&caller, &repo, &path, &names)
        .await?;
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
