//! `/v3/deployments` and `/v3/revisions` (with the app's revision list).

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::CreateDeployment;
use crate::permissions::Permissions;
use crate::presenters::{deployment_json, revision_env_json, revision_json};
use crate::web::{CfJson, ListParams};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateDeployment>,
) -> ApiResult<Response> {
    let d = actions::deployments::create(&ctx, msg).await?;
    let (d, rev) = fetchers::deployment(&ctx, &d.guid).await?;
    let body = deployment_json(&ctx.base, &d, rev.as_ref());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let ds = fetchers::deployments(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/deployments",
        &params,
        ds,
        |(d, r)| deployment_json(&ctx.base, d, r.as_ref()),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (d, rev) = fetchers::deployment(&ctx, &guid).await?;
    Ok(Json(deployment_json(&ctx.base, &d, rev.as_ref())))
}

pub async fn cancel(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<StatusCode> {
    actions::deployments::cancel(&ctx, &guid).await?;
    Ok(StatusCode::OK)
}

pub async fn continue_(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<StatusCode> {
    actions::deployments::continue_(&ctx, &guid).await?;
    Ok(StatusCode::OK)
}

pub async fn app_revisions(
    State(ctx): State<Shared>,
    Path(app_guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let revs = fetchers::app_revisions(&ctx, &app_guid, &params).await?;
    let path = format!("/v3/apps/{app_guid}/revisions");
    Ok(list_of(&ctx.base, &path, &params, revs, |(r, d)| {
        revision_json(&ctx.base, r, d.as_ref())
    }))
}

pub async fn revision(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (r, d) = fetchers::revision(&ctx, &guid).await?;
    Ok(Json(revision_json(&ctx.base, &r, d.as_ref())))
}

pub async fn revision_env(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (r, _) = fetchers::revision(&ctx, &guid).await?;
    Ok(Json(revision_env_json(&ctx.base, &r)))
}
