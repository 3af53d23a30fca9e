//! `/internal/v4`: the blob endpoints cells reach through signed URLs
//! (package, buildpack and droplet downloads; droplet and build cache
//! uploads, and the report of a droplet a cell PUT into the blobstore
//! itself). Nothing here is served or stored without a valid signature.

use crate::actions;
use crate::context::{Ctx, Shared};
use crate::error::{ApiError, ApiResult};
use crate::signing;
use crate::uploads::{
    body_to_scratch, build_cache_key, buildpack_key, custom_buildpack_key, droplet_key, package_key,
};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kiln_store::{Access, StoreError};

fn forbidden() -> Response {
    ApiError::not_authorized().into_response()
}

/// Streams a blob; an absent one is a 404 (which cells read as "absent",
/// fine only for optional downloads such as the build cache).
pub(super) async fn serve_blob(ctx: &Ctx, key: &str, resource: &str) -> ApiResult<Response> {
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

/// How long a blobstore's own signed URL lives: the cell follows the
/// redirect at once, and asks the API again for any later download.
const BLOBSTORE_URL_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A signed download: a redirect to the blobstore's own short-lived URL
/// when it can sign one (S3), so the bytes go from the store to the cell
/// directly; otherwise the API streams them.
async fn download(ctx: &Ctx, uri: &Uri, key: String, resource: &str) -> Response {
    if !signing::verify(ctx, "GET", uri.path(), uri.query()) {
        return forbidden();
    }
    let signed = ctx
        .blobstore
        .signed_url(Access::Download, &key, BLOBSTORE_URL_TTL)
        .await;
    match signed {
        Ok(Some(url)) => match http::HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut response = StatusCode::FOUND.into_response();
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, location);
                response
            }
            Err(_) => ApiError::from(StoreError::InvalidKey { key }).into_response(),
        },
        Ok(None) => serve_blob(ctx, &key, resource).await.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn package_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, package_key(&guid), "Package bits").await
}

pub async fn buildpack_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, buildpack_key(&guid), "Buildpack bits").await
}

/// A git buildpack the API cloned for a build.
pub async fn custom_buildpack_download(
    State(ctx): State<Shared>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, custom_buildpack_key(&id), "Buildpack bits").await
}

pub async fn droplet_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, droplet_key(&guid), "Droplet bits").await
}

pub async fn build_cache_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
) -> Response {
    download(&ctx, &uri, build_cache_key(&guid), "Build cache").await
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
        let droplet = actions::droplets::uploadable(&ctx, &guid).await?;
        let (path, _, _) = body_to_scratch(&ctx, req.into_body()).await?;
        actions::droplets::store_upload(&ctx, &droplet, &path).await?;
        tracing::info!(droplet_guid = %guid, "droplet received from a cell through the api");
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

/// A cell's report of the droplet it PUT into the blobstore through a
/// signed URL: the API checks the stored object against it before it
/// records the droplet's checksum (see `actions::droplets::check_direct_upload`).
pub async fn droplet_uploaded(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    if !signing::verify(&ctx, "POST", uri.path(), uri.query()) {
        return forbidden();
    }
    let result: ApiResult<Response> = async {
        let report: kiln_model::bbs::UploadReport = serde_json::from_slice(&body)
            .map_err(|e| ApiError::unprocessable(format!("Malformed upload report: {e}")))?;
        let droplet = actions::droplets::uploadable(&ctx, &guid).await?;
        actions::droplets::check_direct_upload(&ctx, &droplet, &report).await?;
        Ok(StatusCode::CREATED.into_response())
    }
    .await;
    result.into_response()
}
