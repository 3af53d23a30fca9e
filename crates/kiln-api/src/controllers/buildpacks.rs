//! `/v3/buildpacks`.

use super::{accepted, accepted_with, bits_to_scratch, list_of};
use crate::actions;
use crate::actions::buildpacks::too_large;
use crate::context::Shared;
use crate::error::{ApiError, ApiResult, Limit};
use crate::fetchers;
use crate::messages::{CreateBuildpack, UpdateBuildpack};
use crate::presenters::buildpack_json;
use crate::web::{CfJson, CfMultipart, ListParams};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateBuildpack>,
) -> ApiResult<Response> {
    let bp = actions::buildpacks::create(&ctx, msg).await?;
    Ok((StatusCode::CREATED, Json(buildpack_json(&ctx.base, &bp))).into_response())
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let buildpacks = fetchers::buildpacks(&ctx, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/buildpacks",
        &params,
        buildpacks,
        |b| buildpack_json(&ctx.base, b),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let bp = fetchers::one(&ctx, &guid).await?;
    Ok(Json(buildpack_json(&ctx.base, &bp)))
}

/// `POST /v3/buildpacks/:guid/upload`: the `bits` field streamed to
/// scratch under the size limit, then checked and stored by the action.
pub async fn upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfMultipart(mut multipart): CfMultipart,
) -> ApiResult<Response> {
    let bp = actions::buildpacks::uploadable(&ctx, &guid).await?;
    let limit: Limit = (ctx.config.max_package_bytes, too_large);
    let Some((path, filename)) = bits_to_scratch(&ctx, &mut multipart, limit).await? else {
        return Err(ApiError::unprocessable("Upload must include a 'bits' file"));
    };
    // Only the file's own name, whatever path the client sent.
    let filename = filename.map(|f| {
        std::path::Path::new(&f)
            .file_name()
            .map_or_else(|| f.clone(), |n| n.to_string_lossy().into_owned())
    });
    let bp = actions::buildpacks::upload(&ctx, bp, path, filename).await?;
    let job = actions::jobs::completed(&ctx, "buildpack.upload", "buildpack", &guid).await?;
    Ok(accepted_with(
        &ctx.base,
        &job,
        buildpack_json(&ctx.base, &bp),
    ))
}

/// `PATCH /v3/buildpacks/:guid`.
pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<UpdateBuildpack>,
) -> ApiResult<Json<Value>> {
    let bp = actions::buildpacks::update(&ctx, &guid, msg).await?;
    Ok(Json(buildpack_json(&ctx.base, &bp)))
}

/// `DELETE /v3/buildpacks/:guid`: done inline, answered as CC's job.
pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    actions::buildpacks::delete(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "buildpack.delete", "buildpack", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}
