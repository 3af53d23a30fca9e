//! `/v3/packages` and `/v3/resource_matches`.

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::error::{ApiError, ApiResult, Limit};
use crate::fetchers;
use crate::messages::{CreatePackage, MatchBody};
use crate::permissions::Permissions;
use crate::presenters::{droplet_json, package_json};
use crate::uploads::stream_to_scratch;
use crate::web::{CfJson, CfMultipart, ListParams, multipart_error};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::path::PathBuf;

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreatePackage>,
) -> ApiResult<Response> {
    let p = actions::packages::create(&ctx, msg).await?;
    Ok((StatusCode::CREATED, Json(package_json(&ctx.base, &p))).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let packages = fetchers::packages(&ctx, &perms, None, &params).await?;
    Ok(list_of(&ctx.base, "/v3/packages", &params, packages, |p| {
        package_json(&ctx.base, p)
    }))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = fetchers::one(&ctx, &guid).await?;
    Ok(Json(package_json(&ctx.base, &p)))
}

pub async fn resource_matches(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<MatchBody>,
) -> ApiResult<Response> {
    let matched = actions::packages::resource_matches(&ctx, msg).await?;
    Ok((StatusCode::CREATED, Json(json!({"resources": matched}))).into_response())
}

fn too_large_413(limit: u64) -> ApiError {
    ApiError::package_too_large(StatusCode::PAYLOAD_TOO_LARGE, limit)
}

/// Reads the multipart upload: the `resources` list (parsed) and the
/// `bits` zip (streamed to a scratch file under the size limit).
async fn read_upload(
    ctx: &Shared,
    multipart: &mut axum::extract::Multipart,
    bits: &mut Option<PathBuf>,
) -> ApiResult<Option<Value>> {
    let limit: Limit = (ctx.config.max_package_bytes, too_large_413);
    let mut resources = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(multipart_error(limit))?
    {
        match field.name() {
            Some("resources") => {
                let text = field.text().await.map_err(multipart_error(limit))?;
                resources = Some(serde_json::from_str(&text).map_err(|_| ApiError::parse_error())?);
            }
            Some("bits") if bits.is_none() => {
                let (path, _, _) = stream_to_scratch(ctx, field, Some(limit)).await?;
                *bits = Some(path);
            }
            _ => {}
        }
    }
    Ok(resources)
}

/// `POST /v3/packages/:guid/upload`: the package is checked before the
/// body is read; the action assembles and stores it.
pub async fn upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfMultipart(mut multipart): CfMultipart,
) -> ApiResult<Json<Value>> {
    let package = actions::packages::uploadable(&ctx, &guid).await?;
    let mut bits: Option<PathBuf> = None;
    let read = read_upload(&ctx, &mut multipart, &mut bits).await;
    let p = actions::packages::upload(&ctx, package, read, bits).await?;
    Ok(Json(package_json(&ctx.base, &p)))
}

/// `GET /v3/packages/:guid/droplets`: what `cf start`, `restart` and
/// `restage` look up after staging a package.
pub async fn droplets(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let droplets = fetchers::package_droplets(&ctx, &guid, &params).await?;
    let path = format!("/v3/packages/{guid}/droplets");
    Ok(list_of(&ctx.base, &path, &params, droplets, |d| {
        droplet_json(&ctx.base, d)
    }))
}
