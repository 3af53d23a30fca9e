//! `/v3/roles`.

use super::{accepted, list_of};
use crate::actions;
use crate::context::Shared;
use crate::db;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::CreateRole;
use crate::permissions::Permissions;
use crate::presenters::{org_json, role_json, space_json, user_json};
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    CfJson(msg): CfJson<CreateRole>,
) -> ApiResult<Response> {
    let role = actions::roles::create(&ctx, &perms, msg).await?;
    Ok((StatusCode::CREATED, Json(role_json(&ctx.base, &role))).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let roles = fetchers::roles(&ctx, &perms, &params).await?;
    let include = params.list("include").unwrap_or_default();
    let (users, spaces, orgs) = fetchers::role_includes(&ctx, &roles.items, &include).await?;
    let space_guids: Vec<String> = spaces.iter().map(|s| s.guid.clone()).collect();
    let quotas = fetchers::quota_guids::<db::SpaceQuotaAssignment>(&ctx, &space_guids).await?;
    let org_guids: Vec<String> = orgs.iter().map(|o| o.guid.clone()).collect();
    let org_quotas = fetchers::quota_guids::<db::QuotaAssignment>(&ctx, &org_guids).await?;
    let Json(mut page) = list_of(&ctx.base, "/v3/roles", &params, roles, |r| {
        role_json(&ctx.base, r)
    });
    if !include.is_empty() {
        let b = &ctx.base;
        let mut included = serde_json::Map::new();
        let mut put = |key: &str, wanted: &str, items: Vec<Value>| {
            if include.iter().any(|i| i == wanted) {
                included.insert(key.into(), Value::Array(items));
            }
        };
        put(
            "users",
            "user",
            users
                .iter()
                .map(|(u, uaa)| user_json(b, &u.guid, &u.created_at, &u.updated_at, uaa.as_ref()))
                .collect(),
        );
        put(
            "spaces",
            "space",
            spaces
                .iter()
                .map(|s| space_json(b, s, quotas.get(&s.guid)))
                .collect(),
        );
        put(
            "organizations",
            "organization",
            orgs.iter()
                .map(|o| org_json(b, o, org_quotas.get(&o.guid)))
                .collect(),
        );
        page["included"] = Value::Object(included);
    }
    Ok(Json(page))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let role = fetchers::one::<crate::db::Role>(&ctx, &guid).await?;
    Ok(Json(role_json(&ctx.base, &role)))
}

pub async fn delete(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    actions::roles::delete(&ctx, &perms, &guid).await?;
    let job = actions::jobs::completed(&ctx, "role.delete", "role", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}
