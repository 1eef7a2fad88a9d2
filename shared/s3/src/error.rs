//! The one mapping from S3 failures to domain errors: a missing key is `NotFound`; a missing
//! bucket, denied access or a bad KMS key is `BackendRefused` with a hint an operator can act
//! on; throttling, 5xx and network trouble are retryable `Storage` errors (the SDK has already
//! retried them `maxRetryAttempts` times); anything else is a non-retryable `Storage` error.

use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use stowage_core::Error;

/// What S3 said, kept as the source of the domain error.
#[derive(Debug)]
pub(crate) struct S3Failure {
    operation: &'static str,
    status: Option<u16>,
    code: Option<String>,
    message: String,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(status) = self.status {
            write!(f, " got HTTP {status}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for S3Failure {}

/// Codes after which the same request may succeed.
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

/// Maps an SDK failure of `operation` on `key` in `backend` (e.g. `s3://bucket/prefix`).
pub(crate) fn map_sdk_error<E, R>(
    backend: &str,
    key: &str,
    operation: &'static str,
    err: SdkError<E, R>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    let status = err.raw_response().map(HasStatus::status);
    let code = err.code().map(str::to_owned);
    let network = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let message = match (&err, err.message()) {
        (_, Some(m)) => m.to_owned(),
        (SdkError::DispatchFailure(f), None) => format!("could not reach S3: {f:?}"),
        (SdkError::TimeoutError(_), None) => "the request timed out".to_owned(),
        (other, None) => other.to_string(),
    };
    classify(
        backend,
        key,
        S3Failure {
            operation,
            status,
            code,
            message,
        },
        network,
    )
}

fn classify(backend: &str, key: &str, failure: S3Failure, network: bool) -> Error {
    let refused = |hint: String, failure: S3Failure| Error::BackendRefused {
        backend: backend.to_owned(),
        key: key.to_owned(),
        hint,
        source: Box::new(failure),
    };
    let code = failure.code.as_deref();
    match (code, failure.status) {
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => Error::NotFound {
            what: format!("binary {key} in {backend}"),
        },
        (Some("NoSuchBucket"), _) => refused(
            format!(
                "the bucket of {backend} does not exist; create it or fix filestore.s3.bucketName"
            ),
            failure,
        ),
        (
            Some(
                "AccessDenied"
                | "AllAccessDisabled"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch",
            ),
            _,
        )
        | (None, Some(403)) => refused(
            format!(
                "access to {backend} was denied; check Stowage's S3 credentials and the bucket \
                 policy"
            ),
            failure,
        ),
        (Some(c), _) if c.starts_with("KMS") => refused(
            format!(
                "S3 could not use the KMS key for {backend}; check kmsServerSideEncryptionKeyId and the key policy"
            ),
            failure,
        ),
        (Some("BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest"), _) => Error::Storage {
            backend: backend.to_owned(),
            key: key.to_owned(),
            source: Box::new(failure),
            retryable: false,
        },
        (code, status) => {
            let retryable = network
                || code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || status.is_some_and(|s| s == 429 || s >= 500);
            Error::Storage {
                backend: backend.to_owned(),
                key: key.to_owned(),
                source: Box::new(failure),
                retryable,
            }
        }
    }
}

/// Whether a failure says S3 refused the bytes because they did not match their checksum.
pub(crate) fn is_bad_digest(e: &Error) -> bool {
    let Error::Storage { source, .. } = e else {
        return false;
    };
    source.downcast_ref::<S3Failure>().is_some_and(|f| {
        matches!(
            f.code.as_deref(),
            Some("BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest")
        ) || f.message.contains("checksum")
    })
}

/// Whether a conditional write (`If-None-Match: *`) found the key already there (412), or
/// lost a race with another conditional write of it (409): either way identical bytes exist or
/// are being written.
pub(crate) fn is_already_there(e: &Error) -> bool {
    let Error::Storage { source, .. } = e else {
        return false;
    };
    source.downcast_ref::<S3Failure>().is_some_and(|f| {
        f.status == Some(412)
            || f.code.as_deref() == Some("PreconditionFailed")
            || f.code.as_deref() == Some("ConditionalRequestConflict")
    })
}

/// The HTTP status of a raw response, whatever its type.
pub(crate) trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, code: Option<&str>) -> S3Failure {
        S3Failure {
            operation: "PutObject",
            status: Some(status),
            code: code.map(str::to_owned),
            message: "m".into(),
        }
    }

    #[test]
    fn statuses_and_codes_map_to_domain_errors() {
        let c = |status, code| classify("s3://b/p", "ab/abc", failure(status, code), false);
        assert!(matches!(c(404, Some("NoSuchKey")), Error::NotFound { .. }));
        assert!(matches!(c(404, None), Error::NotFound { .. }));
        let missing_bucket = c(404, Some("NoSuchBucket"));
        assert!(matches!(missing_bucket, Error::BackendRefused { .. }));
        assert!(missing_bucket.to_string().contains("does not exist"));
        let denied = c(403, Some("AccessDenied"));
        assert!(denied.to_string().contains("access to s3://b/p was denied"));
        assert!(!denied.is_retryable());
        assert!(c(503, Some("SlowDown")).is_retryable());
        assert!(c(400, Some("RequestTimeout")).is_retryable());
        assert!(c(500, Some("InternalError")).is_retryable());
        assert!(c(429, None).is_retryable());
        assert!(!c(400, Some("InvalidArgument")).is_retryable());
        let bad = c(400, Some("BadDigest"));
        assert!(is_bad_digest(&bad) && !bad.is_retryable());
        assert!(classify("s3://b", "k", failure(400, None), true).is_retryable());
    }
}
