//! `/v3/builds` and `/v3/droplets`.

use super::list_of;
use crate::actions;
use crate::context::{CurrentUser, Shared};
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::CreateBuild;
use crate::permissions::Permissions;
use crate::presenters::{build_json, droplet_json};
use crate::web::{CfJson, ListParams, prefer_wait, preference_applied};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    Extension(user): Extension<CurrentUser>,
    CfJson(msg): CfJson<CreateBuild>,
) -> ApiResult<Response> {
    let build = actions::builds::create(&ctx, &user, msg).await?;
    Ok((StatusCode::CREATED, Json(build_json(&ctx.base, &build))).into_response())
}

/// `GET /v3/builds/:guid`; with `Prefer: wait=N`, a STAGING build is held
/// until it is staged or failed (see [`crate::web::prefer_wait`]).
pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    headers: http::HeaderMap,
) -> ApiResult<Response> {
    let Some(secs) = prefer_wait(&headers) else {
        let b = fetchers::one(&ctx, &guid).await?;
        return Ok(Json(build_json(&ctx.base, &b)).into_response());
    };
    let wait = std::time::Duration::from_secs(secs);
    let b = fetchers::build_when_staged(&ctx, &guid, wait).await?;
    Ok(([preference_applied(secs)], Json(build_json(&ctx.base, &b))).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let builds = fetchers::builds(&ctx, &perms, None, &params).await?;
    Ok(list_of(&ctx.base, "/v3/builds", &params, builds, |b| {
        build_json(&ctx.base, b)
    }))
}

pub async fn list_droplets(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let droplets = fetchers::droplets(&ctx, &perms, None, &params).await?;
    Ok(list_of(&ctx.base, "/v3/droplets", &params, droplets, |d| {
        droplet_json(&ctx.base, d)
    }))
}

pub async fn get_droplet(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = fetchers::one(&ctx, &guid).await?;
    Ok(Json(droplet_json(&ctx.base, &d)))
}
