//! The repository and path a call is about, parsed once, by an extractor: from the raw (still
//! percent-encoded) request path after the matched route's static prefix (`/` for
//! `/{repo}/{*path}`, `/api/storage/` for `/api/storage/{*rest}`, …), validated segment by
//! segment by `stowage_core::ArtifactPath`, with any matrix parameters (`;key=value`) after it.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use percent_encoding::percent_decode_str;
use stowage_core::{ArtifactPath, Error, RepoKey};

use super::ApiError;

/// A repository, a path inside it, and the matrix parameters after the path.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) repo: RepoKey,
    pub(crate) path: ArtifactPath,
    /// `;key=value` pairs, decoded (the service checks them).
    pub(crate) properties: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("/", MatchedPath::as_str);
        Ok(parse(parts.uri.path(), static_prefix(route))?)
    }
}

/// The part of a route pattern before its first parameter.
fn static_prefix(route: &str) -> &str {
    &route[..route.find('{').unwrap_or(route.len())]
}

/// Parses `{repo}/{path}[;k=v…]` from `raw` after `prefix`.
fn parse(raw: &str, prefix: &str) -> Result<Target, Error> {
    let raw = raw.strip_prefix(prefix).unwrap_or("");
    let (raw, matrix) = raw.split_once(';').unwrap_or((raw, ""));
    let (repo, path) = raw.split_once('/').unwrap_or((raw, ""));
    let repo = RepoKey::from_url_segment(repo)?;
    let path = ArtifactPath::from_url_path(path)?;
    let mut properties = Vec::new();
    for pair in matrix.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    Error::InvalidInput(format!("matrix parameter {pair:?} is not valid UTF-8"))
                })
        };
        properties.push((decode(k)?, decode(v)?));
    }
    Ok(Target {
        repo,
        path,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_prefix_is_cut_and_matrix_parameters_decoded() {
        assert_eq!(static_prefix("/{repo}/{*path}"), "/");
        assert_eq!(static_prefix("/api/storage/{*rest}"), "/api/storage/");
        let t = parse("/libs/org/a%20b/x.jar;build=7;os=linux%2Fx86", "/").expect("parses");
        assert_eq!(t.repo.as_str(), "libs");
        assert_eq!(t.path.as_str(), "org/a b/x.jar");
        assert_eq!(
            t.properties,
            [
                ("build".into(), "7".into()),
                ("os".into(), "linux/x86".into())
            ]
        );
        let t = parse("/api/storage/libs", "/api/storage/").expect("parses");
        assert!(t.path.is_root());
        assert!(parse("/libs/a/../b", "/").is_err());
    }
}
