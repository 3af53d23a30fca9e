//! `/v3/organization_quotas`.

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::quotas::{ApplyQuota, OrgQuotaBody};
use crate::permissions::Permissions;
use crate::presenters::org_quota_json;
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    CfJson(body): CfJson<OrgQuotaBody>,
) -> ApiResult<Response> {
    let q = actions::quotas::create(&ctx, body).await?;
    let orgs = fetchers::org_quota_orgs(&ctx, &perms, &q.guid).await?;
    Ok((
        StatusCode::CREATED,
        Json(org_quota_json(&ctx.base, &q, &orgs)),
    )
        .into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let items = fetchers::org_quotas(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/organization_quotas",
        &params,
        items,
        |(q, orgs)| org_quota_json(&ctx.base, q, orgs),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let q = fetchers::one::<crate::db::OrganizationQuota>(&ctx, &guid).await?;
    let orgs = fetchers::org_quota_orgs(&ctx, &perms, &guid).await?;
    Ok(Json(org_quota_json(&ctx.base, &q, &orgs)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<OrgQuotaBody>,
) -> ApiResult<Json<Value>> {
    let q = actions::quotas::update(&ctx, &guid, body).await?;
    let orgs = fetchers::org_quota_orgs(&ctx, &perms, &guid).await?;
    Ok(Json(org_quota_json(&ctx.base, &q, &orgs)))
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    actions::quotas::delete(&ctx, &guid).await?;
    let job = actions::jobs::completed(
        &ctx,
        "organization_quota.delete",
        "organization_quota",
        &guid,
    )
    .await?;
    Ok(super::accepted(&ctx.base, &job))
}

/// Applies the quota to orgs; answers every org that has it.
pub async fn apply(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<ApplyQuota>,
) -> ApiResult<Json<Value>> {
    let orgs = actions::quotas::apply(&ctx, &guid, body).await?;
    let data: Vec<Value> = orgs.iter().map(|g| json!({"guid": g})).collect();
    Ok(Json(json!({"data": data})))
}
