//! `/v3/space_quotas`: who may see or change one depends on its org and
//! the spaces it is on, so the fetchers and actions ask `permissions`.

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::error::{ApiError, ApiResult};
use crate::fetchers;
use crate::messages::quotas::{ApplySpaceQuota, SpaceQuotaBody};
use crate::permissions::Permissions;
use crate::presenters::space_quota_json;
use crate::util::link;
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    CfJson(body): CfJson<SpaceQuotaBody>,
) -> ApiResult<Response> {
    let q = actions::space_quotas::create(&ctx, body).await?;
    let spaces = fetchers::space_quota_spaces(&ctx, &perms, &q.guid).await?;
    Ok((
        StatusCode::CREATED,
        Json(space_quota_json(&ctx.base, &q, &spaces)),
    )
        .into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let items = fetchers::space_quotas(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/space_quotas",
        &params,
        items,
        |(q, spaces)| space_quota_json(&ctx.base, q, spaces),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (q, spaces) = fetchers::space_quota(&ctx, &perms, &guid).await?;
    Ok(Json(space_quota_json(&ctx.base, &q, &spaces)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    body: Result<CfJson<SpaceQuotaBody>, ApiError>,
) -> ApiResult<Json<Value>> {
    // Who may is answered before what the body says.
    actions::space_quotas::writable(&ctx, &perms, &guid).await?;
    let CfJson(body) = body?;
    let q = actions::space_quotas::update(&ctx, &perms, &guid, body).await?;
    let spaces = fetchers::space_quota_spaces(&ctx, &perms, &guid).await?;
    Ok(Json(space_quota_json(&ctx.base, &q, &spaces)))
}

pub async fn delete(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    actions::space_quotas::delete(&ctx, &perms, &guid).await?;
    let job = actions::jobs::completed(&ctx, "space_quota.delete", "space_quota", &guid).await?;
    Ok(super::accepted(&ctx.base, &job))
}

/// Applies the quota to spaces; answers every space that has it.
pub async fn apply(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    body: Result<CfJson<ApplySpaceQuota>, ApiError>,
) -> ApiResult<Json<Value>> {
    actions::space_quotas::writable(&ctx, &perms, &guid).await?;
    let CfJson(body) = body?;
    let spaces = actions::space_quotas::apply(&ctx, &perms, &guid, body).await?;
    let data: Vec<Value> = spaces.iter().map(|g| json!({"guid": g})).collect();
    let path = format!("/v3/space_quotas/{guid}/relationships/spaces");
    Ok(Json(
        json!({"data": data, "links": {"self": link(&ctx.base, &path)}}),
    ))
}

pub async fn remove(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path((guid, space_guid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    actions::space_quotas::remove(&ctx, &perms, &guid, &space_guid).await?;
    Ok(StatusCode::NO_CONTENT)
}
