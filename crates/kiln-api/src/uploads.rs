//! Request bodies streamed to scratch files under a size limit, and the
//! blobstore keys of everything the API stores.

use crate::context::Ctx;
use crate::error::{ApiError, ApiResult, Limit};
use axum::body::Body;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// An app's build artifacts cache, CF's `buildpack_cache` blob.
pub fn build_cache_key(app_guid: &str) -> String {
    format!("buildpack_cache/{app_guid}")
}

pub fn droplet_key(droplet_guid: &str) -> String {
    format!("droplets/{droplet_guid}")
}

pub fn package_key(package_guid: &str) -> String {
    format!("packages/{package_guid}")
}

pub fn buildpack_key(buildpack_guid: &str) -> String {
    format!("buildpacks/{buildpack_guid}")
}

/// A custom buildpack cloned from git for one build: its id is the build
/// and the buildpack's place in it (`<build>-<index>`); kept until the
/// build ends.
pub fn custom_buildpack_id(build_guid: &str, index: usize) -> String {
    format!("{build_guid}-{index}")
}

pub fn custom_buildpack_key(id: &str) -> String {
    format!("custom_buildpacks/{id}")
}

/// A file of the resource cache, by its sha1.
pub fn resource_key(sha1: &str) -> String {
    format!("resources/{sha1}")
}

/// Cloud Controller's resource pool bounds (`cc.resource_pool.minimum_size`
/// and `maximum_size`, at their defaults): only files strictly between them
/// are cached and matched. A small file costs less to upload in the zip
/// than to look up (a HEAD per file on S3), and most of an app's files are
/// small.
pub const RESOURCE_POOL_MINIMUM_SIZE: u64 = 64 * 1024;
pub const RESOURCE_POOL_MAXIMUM_SIZE: u64 = 512 * 1024 * 1024;

/// Whether a file of `size` bytes belongs in the resource cache.
pub fn resource_size_allowed(size: u64) -> bool {
    size > RESOURCE_POOL_MINIMUM_SIZE && size < RESOURCE_POOL_MAXIMUM_SIZE
}

/// Whether a resource may be matched: its size is within the pool's bounds
/// and its mode lets its owner read and write it (as Cloud Controller
/// checks; a read-only file travels in the zip, keeping its mode exact).
pub fn resource_matchable(size: Option<u64>, mode: u32) -> bool {
    size.is_some_and(resource_size_allowed) && mode >= 0o600
}

/// Streams a request body into a scratch file, returning its path and sha256.
pub async fn body_to_scratch(
    ctx: &Ctx,
    body: Body,
) -> ApiResult<(std::path::PathBuf, String, u64)> {
    stream_to_scratch(ctx, body.into_data_stream(), None).await
}

/// Streams chunks into a scratch file, refusing more than `limit` bytes
/// while streaming (nothing is kept on refusal); returns the file, its
/// sha256 and size.
pub async fn stream_to_scratch<S, E>(
    ctx: &Ctx,
    mut stream: S,
    limit: Option<Limit>,
) -> ApiResult<(std::path::PathBuf, String, u64)>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let path = ctx
        .blobstore
        .scratch_dir()
        .join(format!("upload-{}", crate::util::new_guid()));
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| ApiError::io("creating a scratch file", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
            size += chunk.len() as u64;
            if let Some((max, too_large)) = limit
                && size > max
            {
                return Err(too_large(max));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::io("writing a scratch file", e))?;
        }
        file.flush()
            .await
            .map_err(|e| ApiError::io("writing a scratch file", e))?;
        Ok((hex::encode(hasher.finalize()), size))
    }
    .await;
    match result {
        Ok((sha, size)) => Ok((path, sha, size)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

/// Why the object under a droplet's key is not the one uploaded (`None`:
/// it is, as far as the store tells): absent, another size, or another
/// MD5 where the ETag is one (a single PUT's; a multipart ETag is not).
pub fn blob_mismatch(
    stat: Option<&kiln_store::BlobStat>,
    size: u64,
    md5: Option<&str>,
) -> Option<String> {
    let Some(stat) = stat else {
        return Some("no object is stored under the droplet's key".into());
    };
    if stat.size != size {
        return Some(format!(
            "the stored object has {} bytes, the upload {size}",
            stat.size
        ));
    }
    let is_md5 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let (Some(etag), Some(md5)) = (&stat.etag, md5)
        && is_md5(etag)
        && !etag.eq_ignore_ascii_case(md5)
    {
        return Some(format!(
            "the stored object's MD5 is {etag}, the upload's {md5}"
        ));
    }
    None
}
