//! Presigned upload sessions on S3. The client's bytes go to a staging key
//! `<path>/_pre/sessions/<id>`: with one presigned PUT that carries `x-amz-checksum-sha256`
//! (S3 refuses other bytes), or with presigned UploadPart URLs for large files. `complete`
//! reads the staged object back, hashes it, and only if size and SHA-256 match copies it to its
//! content-addressed key. Staging (not the content key) is what the client writes to, so a
//! client can never put wrong bytes under a digest, whatever it sends.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::CompletedPart;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;

use stowage_core::{
    ChecksumAlgorithm, Error, PresignedPart, PresignedRequest, PresignedUploads, PutResult, Result,
    Sha256, StaleUploads, UploadPlan, hash_stream,
};

use crate::backend::{S3Backend, to_system_time};

/// Longest validity of a SigV4 presigned URL.
const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

impl S3Backend {
    fn session_key(&self, id: &str) -> Result<String> {
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::InvalidInput(format!(
                "upload session id {id:?} must be 1 to 64 letters, digits or '-'"
            )));
        }
        Ok(self.staging_key(&format!("sessions/{id}")))
    }

    fn presigning(&self, expires_in: Duration) -> Result<PresigningConfig> {
        PresigningConfig::expires_in(expires_in.min(MAX_EXPIRY))
            .map_err(|e| Error::InvalidInput(format!("bad presigned URL expiry: {e}")))
    }

    /// Completes the client's multipart upload from the parts S3 holds.
    async fn assemble(&self, key: &str, upload_id: &str) -> Result<()> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .inner
                .client
                .list_parts()
                .bucket(&self.inner.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| self.map(key, "ListParts", e))?;
            parts.extend(page.parts().iter().map(|p| {
                CompletedPart::builder()
                    .set_part_number(p.part_number())
                    .set_e_tag(p.e_tag().map(str::to_owned))
                    .build()
            }));
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        if parts.is_empty() {
            return Err(Error::Conflict(
                "no part of this upload session has reached the object store yet".into(),
            ));
        }
        self.complete_multipart(key, upload_id, parts).await
    }

    /// Reads a staged object back and checks it is `size` bytes with this SHA-256.
    async fn verify_staged(
        &self,
        key: &str,
        size: u64,
        sha256: &Sha256,
    ) -> Result<stowage_core::Checksums> {
        let (stream, _) = self.read_key(key, None).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::Conflict(
                "nothing was uploaded in this session: the client has not sent the bytes yet, or \
                 the object store refused bytes that did not match the announced SHA-256"
                    .into(),
            ),
            e => e,
        })?;
        let (mut stream, hashing) = hash_stream(stream);
        while let Some(chunk) = stream.next().await {
            chunk?;
        }
        let (checksums, received) = hashing.finish().await?;
        if received < size {
            return Err(Error::Truncated {
                expected: size,
                received,
            });
        }
        if received > size {
            return Err(Error::TooLong { expected: size });
        }
        if checksums.sha256 != *sha256 {
            return Err(Error::ChecksumMismatch {
                algorithm: ChecksumAlgorithm::Sha256,
                expected: sha256.to_string(),
                actual: checksums.sha256.to_string(),
            });
        }
        Ok(checksums)
    }

    /// Staging objects and multipart uploads under this provider's prefix older than
    /// `older_than`, removed (see [`PresignedUploads::clean_stale_uploads`]).
    async fn sweep(&self, older_than: Duration) -> Result<StaleUploads> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = StaleUploads::default();
        let staging = self.staging_key("");
        let mut pages = self
            .inner
            .client
            .list_objects_v2()
            .bucket(&self.inner.bucket)
            .prefix(&staging)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map(&staging, "ListObjectsV2", e))?;
            for object in page.contents() {
                let old = object
                    .last_modified()
                    .is_some_and(|t| to_system_time(t) < cutoff);
                if let (true, Some(key)) = (old, object.key()) {
                    self.delete_key(key).await?;
                    report.staging_objects += 1;
                }
            }
        }
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .inner
                .client
                .list_multipart_uploads()
                .bucket(&self.inner.bucket)
                .prefix(self.inner.keys.root())
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.map(self.inner.keys.root(), "ListMultipartUploads", e))?;
            for upload in page.uploads() {
                let old = upload
                    .initiated()
                    .is_some_and(|t| to_system_time(t) < cutoff);
                if let (true, Some(key), Some(id)) = (old, upload.key(), upload.upload_id()) {
                    self.abort_multipart(key, id).await;
                    report.multipart_uploads += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        if report != StaleUploads::default() {
            tracing::info!(?report, prefix = %self.staging_key(""),
                "removed abandoned uploads");
        }
        Ok(report)
    }
}

#[async_trait]
impl PresignedUploads for S3Backend {
    async fn start_upload(
        &self,
        id: &str,
        size: u64,
        sha256: &Sha256,
        expires_in: Duration,
    ) -> Result<UploadPlan> {
        let key = self.session_key(id)?;
        if size < self.inner.direct_limit {
            let presigned = self
                .inner
                .client
                .put_object()
                .bucket(&self.inner.bucket)
                .key(&key)
                .checksum_sha256(BASE64.encode(sha256.as_bytes()))
                .presigned(self.presigning(expires_in)?)
                .await
                .map_err(|e| self.map(&key, "PutObject (presign)", e))?;
            return Ok(UploadPlan::Single {
                request: request_of(&presigned),
            });
        }
        let upload_id = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.map(&key, "CreateMultipartUpload", e))?
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Storage {
                backend: self.to_string(),
                key: key.clone(),
                source: "CreateMultipartUpload returned no upload id".into(),
                retryable: true,
            })?;
        let part_size = self.inner.config.part_size_for(size);
        let mut parts = Vec::new();
        for index in 0..size.div_ceil(part_size) {
            let offset = index * part_size;
            let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let presigned = self
                .inner
                .client
                .upload_part()
                .bucket(&self.inner.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                .presigned(self.presigning(expires_in)?)
                .await
                .map_err(|e| self.map(&key, "UploadPart (presign)", e))?;
            parts.push(PresignedPart {
                part_number: number,
                offset,
                size: part_size.min(size - offset),
                request: request_of(&presigned),
            });
        }
        Ok(UploadPlan::Multipart {
            upload_id,
            part_size,
            parts,
        })
    }

    async fn complete_upload(
        &self,
        id: &str,
        multipart_upload_id: Option<&str>,
        size: u64,
        sha256: &Sha256,
    ) -> Result<PutResult> {
        let staging = self.session_key(id)?;
        if let Some(upload_id) = multipart_upload_id {
            match self.assemble(&staging, upload_id).await {
                Ok(()) => {}
                // Completed by an earlier call whose answer was lost: verify what it made.
                Err(Error::NotFound { .. }) if self.key_exists(&staging).await? => {}
                Err(e) => return Err(e),
            }
        }
        let checksums = match self.verify_staged(&staging, size, sha256).await {
            Ok(checksums) => checksums,
            Err(e) => {
                if !matches!(e, Error::Conflict(_)) && !e.is_retryable() {
                    self.discard(&staging).await;
                }
                return Err(e);
            }
        };
        let key = self.key_of(sha256);
        let created = !self.key_exists(&key).await?;
        if created {
            self.copy_into_place(&staging, &key, size, sha256).await?;
        }
        self.discard(&staging).await;
        Ok(PutResult {
            checksums,
            size,
            created,
        })
    }

    async fn abort_upload(&self, id: &str, multipart_upload_id: Option<&str>) -> Result<()> {
        let staging = self.session_key(id)?;
        if let Some(upload_id) = multipart_upload_id {
            self.abort_multipart(&staging, upload_id).await;
        }
        self.delete_key(&staging).await
    }

    async fn clean_stale_uploads(&self, older_than: Duration) -> Result<StaleUploads> {
        self.sweep(older_than).await
    }
}

/// What a client must send: the method, the URL and the headers the signature covers. Other
/// headers the SDK added (under Lambda, `x-amzn-trace-id` from the invocation's
/// `_X_AMZN_TRACE_ID`) are dropped: they would tie the client to this invocation's trace.
fn request_of(presigned: &aws_sdk_s3::presigning::PresignedRequest) -> PresignedRequest {
    let uri = presigned.uri();
    let signed: Vec<String> = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("X-Amz-SignedHeaders="))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .split(';')
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    PresignedRequest {
        method: presigned.method().to_owned(),
        url: uri.to_owned(),
        headers: presigned
            .headers()
            .filter(|(k, _)| signed.iter().any(|s| s.eq_ignore_ascii_case(k)))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}
