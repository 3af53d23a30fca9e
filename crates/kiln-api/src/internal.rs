//! `/internal/v4`: the blob endpoints cells reach through signed URLs
//! (package, buildpack and droplet downloads; droplet and build cache
//! uploads). Nothing here is served or stored without a valid signature.

use crate::db::{self, Droplet};
use crate::error::{ApiError, ApiResult};
use crate::{Ctx, Shared, signing};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use kiln_store::StoreError;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// An app's build artifacts cache, CF's `buildpack_cache` blob.
pub fn build_cache_key(app_guid: &str) -> String {
    format!("buildpack_cache/{app_guid}")
}

fn forbidden() -> Response {
    ApiError::not_authorized().into_response()
}

/// Streams a blob; an absent one is a 404 (which cells read as "absent",
/// fine only for optional downloads such as the build cache).
async fn serve_blob(ctx: &Ctx, key: &str, resource: &str) -> ApiResult<Response> {
    match ctx.blobstore.open(key).await {
        Ok(file) => {
            let len = file.metadata().await.map(|m| m.len()).ok();
            let stream = tokio_util::io::ReaderStream::new(file);
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            if let Some(len) = len {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            }
            Ok(response)
        }
        Err(StoreError::BlobNotFound { .. }) => Err(ApiError::not_found(resource)),
        Err(e) => Err(e.into()),
    }
}

async fn download(ctx: &Ctx, uri: &Uri, key: String, resource: &str) -> Response {
    if !signing::verify(ctx, "GET", uri.path(), uri.query()) {
        return forbidden();
    }
    serve_blob(ctx, &key, resource).await.into_response()
}

pub async fn package_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, format!("packages/{guid}"), "Package bits").await
}

pub async fn buildpack_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, format!("buildpacks/{guid}"), "Buildpack bits").await
}

pub async fn droplet_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, format!("droplets/{guid}"), "Droplet bits").await
}

pub async fn build_cache_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, build_cache_key(&guid), "Build cache").await
}

/// Streams a request body into a scratch file, returning its path and sha256.
pub async fn body_to_scratch(
    ctx: &Ctx,
    body: Body,
) -> ApiResult<(std::path::PathBuf, String, u64)> {
    stream_to_scratch(ctx, body.into_data_stream(), None).await
}

/// A byte limit and the error to answer when it is passed.
pub type Limit = (u64, fn(u64) -> ApiError);

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

pub async fn droplet_upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
    req: Request,
) -> Response {
    if !signing::verify(&ctx, "POST", uri.path(), uri.query()) {
        return forbidden();
    }
    let result: ApiResult<Response> = async {
        let droplet = db::get::<Droplet>(&ctx.pool, &guid).await?;
        if droplet.state != "AWAITING_UPLOAD" && droplet.state != "PROCESSING_UPLOAD" {
            return Err(ApiError::unprocessable("Droplet is not awaiting an upload"));
        }
        let (path, _, _) = body_to_scratch(&ctx, req.into_body()).await?;
        let info = ctx
            .blobstore
            .put_file(&format!("droplets/{guid}"), &path)
            .await?;
        sqlx::query("UPDATE droplets SET sha256 = ?, updated_at = ? WHERE guid = ?")
            .bind(&info.sha256)
            .bind(crate::util::now())
            .bind(&guid)
            .execute(&ctx.pool)
            .await?;
        tracing::info!(droplet_guid = %guid, size = info.size, "droplet uploaded");
        Ok(StatusCode::CREATED.into_response())
    }
    .await;
    result.into_response()
}

pub async fn build_cache_upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
    req: Request,
) -> Response {
    if !signing::verify(&ctx, "POST", uri.path(), uri.query()) {
        return forbidden();
    }
    let result: ApiResult<Response> = async {
        let (path, _, _) = body_to_scratch(&ctx, req.into_body()).await?;
        ctx.blobstore
            .put_file(&build_cache_key(&guid), &path)
            .await?;
        Ok(StatusCode::CREATED.into_response())
    }
    .await;
    result.into_response()
}
