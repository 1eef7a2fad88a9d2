//! The one error type of the domain. Every backend converts its own failures into it, keeping
//! the key and the source; the HTTP layer maps it to a status in one place. It must not hold
//! anything that would be unsafe to log (no secrets, no request bodies).

use std::fmt;

/// A boxed error from a lower layer (I/O, a cloud SDK, the database driver).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository a call names does not exist.
    #[error("repository {key:?} was not found")]
    RepositoryNotFound { key: String },

    /// The thing asked for does not exist (a binary, an artifact, a repository).
    #[error("{what} was not found")]
    NotFound { what: String },

    /// The bytes received do not hash to what the client declared. Nothing was stored.
    #[error(
        "checksum mismatch: the client declared {algorithm} {expected} but the received bytes \
         have {algorithm} {actual}; nothing was stored"
    )]
    ChecksumMismatch {
        algorithm: crate::ChecksumAlgorithm,
        expected: String,
        actual: String,
    },

    /// The body ended before the announced number of bytes arrived. Nothing was stored.
    #[error(
        "the request body ended after {received} bytes but {expected} were announced; \
         nothing was stored"
    )]
    Truncated { expected: u64, received: u64 },

    /// The body carried more bytes than were announced. Nothing was stored.
    #[error(
        "the request body carried more than the {expected} bytes announced; nothing was stored"
    )]
    TooLong { expected: u64 },

    /// A repository key or artifact path that Stowage refuses (traversal, NUL, bad characters).
    #[error("invalid path {}: {reason}", abbreviated(.path))]
    InvalidPath { path: String, reason: &'static str },

    /// Any other input that is malformed; the message says what to change.
    #[error("{0}")]
    InvalidInput(String),

    /// The store has no room for the bytes (a full disk, an exhausted quota): nothing was
    /// kept. Not retryable on the same store; another copy (a shard) may take it.
    #[error("{backend} has no space left: {source}")]
    StorageFull {
        backend: String,
        #[source]
        source: BoxError,
    },

    /// No credentials, or credentials that prove nothing (a wrong password, an unknown,
    /// expired or revoked token): the message never says which.
    #[error("{0}")]
    Unauthorized(String),

    /// A known caller without the permission the operation needs.
    #[error("{0}")]
    Forbidden(String),

    /// The request conflicts with the current state (a file where a folder is needed, …).
    #[error("{0}")]
    Conflict(String),

    /// A condition the client set (`If-Match`, `If-None-Match`, `If-Unmodified-Since`) does
    /// not hold for the current state: nothing was done.
    #[error("{0}")]
    PreconditionFailed(String),

    /// A byte range that lies outside the binary.
    #[error("the requested range is not satisfiable for a binary of {size} bytes")]
    RangeNotSatisfiable { size: u64 },

    /// Reading the client's request body failed (the client went away, a broken connection).
    #[error("reading the request body failed: {source}")]
    Body {
        #[source]
        source: BoxError,
    },

    /// A storage backend failed. `retryable` says whether the same call may succeed later.
    #[error("storage backend {backend} failed on {key}: {source}")]
    Storage {
        backend: String,
        key: String,
        #[source]
        source: BoxError,
        retryable: bool,
    },

    /// A storage backend refused the request for a reason an operator must fix (a missing
    /// bucket, denied access, a quota). `hint` says what to fix and is safe to show a client.
    #[error("storage backend {backend} refused the request on {key}: {hint}")]
    BackendRefused {
        backend: String,
        key: String,
        hint: String,
        #[source]
        source: BoxError,
    },

    /// The metadata database failed.
    #[error("metadata database error: {source}")]
    Metadata {
        #[source]
        source: BoxError,
        retryable: bool,
    },

    /// What this deployment or filestore cannot do at all (a body too large for a Lambda
    /// response from a store that cannot sign a redirect); the message says what to change.
    #[error("{0}")]
    Unsupported(String),

    /// The service cannot take this request now (shutting down, a race lost to garbage
    /// collection, a lock not obtained); the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
}

/// Characters of a refused path a message quotes; a longer one is cut, with its length said.
const QUOTED_PATH_MAX: usize = 200;

/// Whether an I/O error says the disk or the quota is full (ENOSPC, EDQUOT).
pub fn is_storage_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// `path` quoted, cut to [`QUOTED_PATH_MAX`] characters: a 10,000-character path is not echoed.
fn abbreviated(path: &str) -> String {
    let chars = path.chars().count();
    if chars <= QUOTED_PATH_MAX {
        return format!("{path:?}");
    }
    let head: String = path.chars().take(QUOTED_PATH_MAX).collect();
    format!("{head:?}… ({chars} characters)")
}

impl Error {
    /// Whether repeating the same call may succeed. Only retry and queue code should act on it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage { retryable, .. } | Error::Metadata { retryable, .. } => *retryable,
            Error::Unavailable(_) => true,
            _ => false,
        }
    }

    /// Whether the request itself is at fault (a wrong checksum, a short or overlong body, a
    /// body that could not be read, a bad argument): every copy of it fails the same way, so
    /// writing it elsewhere cannot help. Anything else is a failure of where it was written.
    pub fn is_request_fault(&self) -> bool {
        matches!(
            self,
            Error::ChecksumMismatch { .. }
                | Error::Truncated { .. }
                | Error::TooLong { .. }
                | Error::Body { .. }
                | Error::InvalidInput(_)
                | Error::InvalidPath { .. }
                | Error::RangeNotSatisfiable { .. }
        )
    }

    /// A failed write of `backend`'s: [`Error::StorageFull`] when the disk or quota is full,
    /// else a storage failure that is not retried.
    pub fn storage_write(
        backend: impl fmt::Display,
        key: impl fmt::Display,
        e: std::io::Error,
    ) -> Self {
        if is_storage_full(&e) {
            return Error::StorageFull {
                backend: backend.to_string(),
                source: Box::new(e),
            };
        }
        Error::Storage {
            backend: backend.to_string(),
            key: key.to_string(),
            source: Box::new(e),
            retryable: false,
        }
    }

    /// A storage failure from an I/O error, classified by its kind.
    pub fn storage_io(
        backend: impl fmt::Display,
        key: impl fmt::Display,
        e: std::io::Error,
    ) -> Self {
        if is_storage_full(&e) {
            return Self::storage_write(backend, key, e);
        }
        if e.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound {
                what: format!("binary {key}"),
            };
        }
        let retryable = matches!(
            e.kind(),
            std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        );
        Error::Storage {
            backend: backend.to_string(),
            key: key.to_string(),
            source: Box::new(e),
            retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_refused_path_is_quoted_cut_with_its_length() {
        let short = Error::InvalidPath {
            path: "a/../b".into(),
            reason: "no .. segments",
        };
        assert_eq!(short.to_string(), "invalid path \"a/../b\": no .. segments");
        let long = Error::InvalidPath {
            path: "x".repeat(10_000),
            reason: "too long",
        };
        let message = long.to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("(10000 characters)"), "{message}");
    }
}
