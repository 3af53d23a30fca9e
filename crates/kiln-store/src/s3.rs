//! Blobs in an S3-compatible object store, through `object_store`.
//!
//! Uploads stream from the finished local file: one `PUT` below
//! [`MULTIPART_THRESHOLD`], a multipart upload above it, aborted on any
//! failure, so a key holds a whole blob or nothing. Reads stream the object
//! into a scratch file that is unlinked once open, so callers keep reading
//! a plain file and no blob is ever held in memory.

use crate::blobstore::{Access, BlobInfo, BlobStat, Blobstore, io};
use crate::{StoreError, valid_key};
use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files above this go up as a multipart upload (S3's smallest part is
/// 5 MiB; the part size is this too).
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// Where an S3 blobstore is: `s3://BUCKET?endpoint=URL&region=REGION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// `None`: AWS itself, virtual-hosted addressing.
    pub endpoint: Option<String>,
    pub region: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<S3Location, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(invalid("the scheme must be s3"));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| invalid("it names no bucket (s3://BUCKET?...)"))?
            .to_string();
        if !matches!(parsed.path(), "" | "/") {
            return Err(invalid("a bucket takes no path"));
        }
        let mut endpoint = None;
        let mut region = None;
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "endpoint" => {
                    let e = url::Url::parse(&v).map_err(|e| invalid(&format!("endpoint: {e}")))?;
                    if !matches!(e.scheme(), "http" | "https") {
                        return Err(invalid("the endpoint must be an http(s) URL"));
                    }
                    endpoint = Some(v.trim_end_matches('/').to_string());
                }
                "region" => region = Some(v.to_string()),
                other => return Err(invalid(&format!("unknown parameter {other:?}"))),
            }
        }
        Ok(S3Location {
            bucket,
            endpoint,
            region: region.unwrap_or_else(|| "us-east-1".to_string()),
        })
    }
}

/// An S3 bucket as a [`Blobstore`]. Credentials come from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and the other `AWS_*`
/// variables `object_store` reads).
pub struct S3Blobstore {
    store: AmazonS3,
    bucket: String,
    scratch: PathBuf,
}

impl S3Blobstore {
    /// Credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    /// Refused without them, rather than letting the client ask a cloud's
    /// instance-metadata address for some.
    pub async fn new(location: &S3Location, scratch: PathBuf) -> Result<Self, StoreError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(StoreError::InvalidUrl {
                url: format!("s3://{}", location.bucket),
                reason: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an S3 blobstore"
                    .to_string(),
            });
        };
        Self::with_credentials(location, &key, &secret, scratch).await
    }

    /// `scratch` is a local directory for files on their way in and out.
    pub async fn with_credentials(
        location: &S3Location,
        access_key_id: &str,
        secret_access_key: &str,
        scratch: PathBuf,
    ) -> Result<Self, StoreError> {
        crate::blobstore::create_dir(&scratch).await?;
        let mut builder = AmazonS3Builder::from_env()
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key)
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            // A few quick retries: a store that is down should fail the
            // request in seconds, not hold a push for minutes.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(endpoint) = &location.endpoint {
            // Endpoints of our own (MinIO, moto, Ceph) are addressed by path:
            // a bucket name cannot become a host name on an IP address.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| StoreError::ObjectStore {
            op: "configure",
            key: location.bucket.clone(),
            message: e.to_string(),
        })?;
        Ok(S3Blobstore {
            store,
            bucket: location.bucket.clone(),
            scratch,
        })
    }

    fn path_of(&self, key: &str) -> Result<ObjectPath, StoreError> {
        if valid_key(key) {
            Ok(ObjectPath::from(key))
        } else {
            Err(StoreError::InvalidKey {
                key: key.to_string(),
            })
        }
    }

    fn failed(&self, op: &'static str, key: &str) -> impl Fn(object_store::Error) -> StoreError {
        let key = format!("{}/{key}", self.bucket);
        move |e| match e {
            object_store::Error::NotFound { .. } => StoreError::BlobNotFound { key: key.clone() },
            other => StoreError::ObjectStore {
                op,
                key: key.clone(),
                message: other.to_string(),
            },
        }
    }

    /// Streams `src` up as parts, hashing as it goes; aborts the upload
    /// on any error so no part lingers.
    async fn put_multipart(
        &self,
        path: &ObjectPath,
        key: &str,
        src: &Path,
    ) -> Result<BlobInfo, StoreError> {
        let mut file = tokio::fs::File::open(src).await.map_err(io(src))?;
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(self.failed("start upload of", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_THRESHOLD);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let read: Result<(), StoreError> = async {
            loop {
                // At most two parts in flight: memory stays ~3 parts.
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(self.failed("upload", key))?;
                let n = file.read(&mut buf).await.map_err(io(src))?;
                if n == 0 {
                    return Ok(());
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = read {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(self.failed("finish upload of", key))?;
        Ok(BlobInfo {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

#[async_trait]
impl Blobstore for S3Blobstore {
    async fn put_file(&self, key: &str, src: &Path) -> Result<BlobInfo, StoreError> {
        let path = self.path_of(key)?;
        let len = tokio::fs::metadata(src).await.map_err(io(src))?.len();
        let info = if len as usize <= MULTIPART_THRESHOLD {
            let bytes = tokio::fs::read(src).await.map_err(io(src))?;
            let info = BlobInfo {
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            };
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(self.failed("upload", key))?;
            info
        } else {
            self.put_multipart(&path, key, src).await?
        };
        // The contract: the source is taken over.
        tokio::fs::remove_file(src).await.map_err(io(src))?;
        Ok(info)
    }

    async fn open(&self, key: &str) -> Result<tokio::fs::File, StoreError> {
        let path = self.path_of(key)?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(self.failed("download", key))?;
        let local = self
            .scratch
            .join(format!("get-{}", uuid::Uuid::new_v4().simple()));
        let mut out = tokio::fs::File::create(&local).await.map_err(io(&local))?;
        let copied: Result<(), StoreError> = async {
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(self.failed("download", key))?;
                out.write_all(&chunk).await.map_err(io(&local))?;
            }
            out.flush().await.map_err(io(&local))
        }
        .await;
        let opened = match copied {
            Ok(()) => tokio::fs::File::open(&local).await.map_err(io(&local)),
            Err(e) => Err(e),
        };
        // Unlinked at once: the open handle keeps the bytes readable and
        // nothing is left behind when the reader is done (or fails).
        let _ = tokio::fs::remove_file(&local).await;
        opened
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed("look up", key)(e)),
        }
    }

    async fn stat(&self, key: &str) -> Result<Option<BlobStat>, StoreError> {
        let path = self.path_of(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(BlobStat {
                size: meta.size,
                etag: meta.e_tag.map(|t| t.trim_matches('"').to_ascii_lowercase()),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("look up", key)(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key)(e)),
        }
    }

    async fn signed_url(
        &self,
        access: Access,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let (method, what) = match access {
            Access::Download => (object_store::signer::Method::GET, "sign a download of"),
            Access::Upload => (object_store::signer::Method::PUT, "sign an upload of"),
        };
        let path = self.path_of(key)?;
        let url = self
            .store
            .signed_url(method, &path, ttl)
            .await
            .map_err(self.failed(what, key))?;
        Ok(Some(url.to_string()))
    }

    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_with_their_defaults_and_refusals() {
        let l = S3Location::parse("s3://blobs?endpoint=http://127.0.0.1:9000&region=eu-west-1")
            .unwrap();
        assert_eq!(l.bucket, "blobs");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(l.region, "eu-west-1");
        assert_eq!(S3Location::parse("s3://b").unwrap().region, "us-east-1");
        for bad in [
            "s3://",
            "s3://b/some/path",
            "s3://b?endpoint=ftp://x",
            "s3://b?colour=red",
            "http://b",
        ] {
            assert!(
                matches!(S3Location::parse(bad), Err(StoreError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
