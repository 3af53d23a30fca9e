//! The platform's fixed furniture: the root and info documents,
//! organizations, spaces, stacks and jobs (domains: `domains.rs`).

use super::{accepted, list_of};
use crate::actions;
use crate::context::Shared;
use crate::db;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::{CreateOrganization, CreateSpace, UpdateNamed};
use crate::permissions::Permissions;
use crate::presenters as p;
use crate::web::{CfJson, ListParams};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn root(State(ctx): State<Shared>) -> Json<Value> {
    Json(p::root(&ctx.base))
}

pub async fn v3_root(State(ctx): State<Shared>) -> Json<Value> {
    Json(p::v3_root(&ctx.base))
}

pub async fn info(State(ctx): State<Shared>) -> Json<Value> {
    Json(p::info(&ctx.base))
}

pub async fn list_orgs(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let orgs = fetchers::orgs(&ctx, &perms, &params).await?;
    let guids: Vec<String> = orgs.items.iter().map(|o| o.guid.clone()).collect();
    let quotas = fetchers::quota_guids::<db::QuotaAssignment>(&ctx, &guids).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/organizations",
        &params,
        orgs,
        |o| p::org_json(&ctx.base, o, quotas.get(&o.guid)),
    ))
}

/// An org as CC presents it, with its quota.
async fn present_org(ctx: &crate::context::Ctx, o: &crate::db::Organization) -> ApiResult<Value> {
    let quotas =
        fetchers::quota_guids::<db::QuotaAssignment>(ctx, std::slice::from_ref(&o.guid)).await?;
    Ok(p::org_json(&ctx.base, o, quotas.get(&o.guid)))
}

pub async fn get_org(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let o = fetchers::one(&ctx, &guid).await?;
    Ok(Json(present_org(&ctx, &o).await?))
}

/// `POST /v3/organizations`: admins, or anyone while `user_org_creation`
/// is on (the creator then manages the org).
pub async fn create_org(
    State(ctx): State<Shared>,
    axum::Extension(perms): axum::Extension<crate::permissions::Permissions>,
    body: Result<CfJson<CreateOrganization>, crate::error::ApiError>,
) -> ApiResult<Response> {
    // Who may create is answered before what the body says.
    let by_user = !perms.is_admin();
    if by_user && !actions::settings::enabled(&ctx, "user_org_creation").await? {
        return Err(crate::error::ApiError::not_authorized());
    }
    let CfJson(msg) = body?;
    let o = actions::spaces::create_org(&ctx, msg).await?;
    if by_user {
        actions::roles::grant_org_creator(&ctx, &o.guid, &perms.user_guid).await?;
    }
    Ok((StatusCode::CREATED, Json(present_org(&ctx, &o).await?)).into_response())
}

pub async fn update_org(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<UpdateNamed>,
) -> ApiResult<Json<Value>> {
    let o = actions::spaces::update_org(&ctx, &guid, msg).await?;
    Ok(Json(present_org(&ctx, &o).await?))
}

/// `DELETE /v3/organizations/:guid`: the org with its spaces, done before
/// answering; the job is recorded finished.
pub async fn delete_org(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    actions::spaces::delete_org(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "organization.delete", "organization", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}

pub async fn list_spaces(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let spaces = fetchers::spaces(&ctx, &perms, &params).await?;
    let guids: Vec<String> = spaces.items.iter().map(|s| s.guid.clone()).collect();
    let quotas = fetchers::quota_guids::<db::SpaceQuotaAssignment>(&ctx, &guids).await?;
    Ok(list_of(&ctx.base, "/v3/spaces", &params, spaces, |s| {
        p::space_json(&ctx.base, s, quotas.get(&s.guid))
    }))
}

/// A space as CC presents it, with its space quota.
async fn present_space(ctx: &crate::context::Ctx, s: &crate::db::Space) -> ApiResult<Value> {
    let quotas =
        fetchers::quota_guids::<db::SpaceQuotaAssignment>(ctx, std::slice::from_ref(&s.guid))
            .await?;
    Ok(p::space_json(&ctx.base, s, quotas.get(&s.guid)))
}

pub async fn get_space(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = fetchers::one(&ctx, &guid).await?;
    Ok(Json(present_space(&ctx, &s).await?))
}

pub async fn create_space(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateSpace>,
) -> ApiResult<Response> {
    let s = actions::spaces::create_space(&ctx, msg).await?;
    Ok((StatusCode::CREATED, Json(present_space(&ctx, &s).await?)).into_response())
}

pub async fn update_space(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<UpdateNamed>,
) -> ApiResult<Json<Value>> {
    let s = actions::spaces::update_space(&ctx, &guid, msg).await?;
    Ok(Json(present_space(&ctx, &s).await?))
}

/// `DELETE /v3/spaces/:guid`: the space with its apps and routes.
pub async fn delete_space(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    actions::spaces::delete_space(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "space.delete", "space", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}

pub async fn list_stacks(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let stacks = fetchers::stacks(&ctx, &params).await?;
    Ok(list_of(&ctx.base, "/v3/stacks", &params, stacks, |s| {
        p::stack_json(&ctx.base, s)
    }))
}

pub async fn get_stack(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = fetchers::one(&ctx, &guid).await?;
    Ok(Json(p::stack_json(&ctx.base, &s)))
}

pub async fn get_job(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let j = fetchers::one(&ctx, &guid).await?;
    Ok(Json(p::job_json(&ctx.base, &j)))
}
