//! `/v3/domains`: shared and private domains, their shared organizations,
//! and an org's domains.

use super::{accepted, list_of};
use crate::actions;
use crate::context::Shared;
use crate::error::{ApiError, ApiResult};
use crate::fetchers;
use crate::messages::domains::{CreateDomain, ToMany};
use crate::permissions::Permissions;
use crate::presenters as p;
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let domains = fetchers::domains(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/domains",
        &params,
        domains,
        |(d, s)| p::domain_json(&ctx.base, d, s),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (d, shared) = fetchers::domain(&ctx, &perms, &guid).await?;
    Ok(Json(p::domain_json(&ctx.base, &d, &shared)))
}

/// `POST /v3/domains`: a shared domain (admins) or, with
/// `relationships.organization`, a private one.
pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    CfJson(msg): CfJson<CreateDomain>,
) -> ApiResult<Response> {
    let msg = msg.validate()?;
    let d = actions::domains::create(&ctx, &perms, msg).await?;
    let (d, shared) = fetchers::domain(&ctx, &perms, &d.guid).await?;
    let body = p::domain_json(&ctx.base, &d, &shared);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /v3/domains/:guid`: done before answering; the job is recorded
/// finished.
pub async fn delete(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    actions::domains::delete(&ctx, &perms, &guid).await?;
    let job = actions::jobs::completed(&ctx, "domain.delete", "domain", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}

fn shared_json(orgs: &[String]) -> Json<Value> {
    Json(json!({ "data": p::guid_refs(orgs) }))
}

pub async fn shared_orgs(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let orgs = fetchers::domain_shared_orgs(&ctx, &perms, &guid).await?;
    Ok(shared_json(&orgs))
}

/// `POST …/relationships/shared_organizations`. Who may is answered
/// before what the body says, so a caller who may not learns nothing
/// from it.
pub async fn share(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    body: Result<CfJson<ToMany>, ApiError>,
) -> ApiResult<Json<Value>> {
    actions::domains::may_share(&ctx, &perms, &guid).await?;
    let CfJson(msg) = body?;
    actions::domains::share(&ctx, &perms, &guid, msg.guids()).await?;
    let orgs = fetchers::domain_shared_orgs(&ctx, &perms, &guid).await?;
    Ok(shared_json(&orgs))
}

pub async fn unshare(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path((guid, org_guid)): Path<(String, String)>,
) -> ApiResult<Response> {
    actions::domains::unshare(&ctx, &perms, &guid, &org_guid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v3/organizations/:guid/domains`.
pub async fn of_org(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let domains = fetchers::org_domains(&ctx, &perms, &guid, &params).await?;
    let path = format!("/v3/organizations/{guid}/domains");
    Ok(list_of(&ctx.base, &path, &params, domains, |(d, s)| {
        p::domain_json(&ctx.base, d, s)
    }))
}

/// `GET /v3/organizations/:guid/domains/default`.
pub async fn default_of_org(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (d, shared) = fetchers::org_default_domain(&ctx, &perms, &guid).await?;
    Ok(Json(p::domain_json(&ctx.base, &d, &shared)))
}
