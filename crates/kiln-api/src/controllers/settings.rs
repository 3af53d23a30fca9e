//! `/v3/feature_flags`, `/v3/environment_variable_groups`, and the usage
//! summaries (`/v3/info/usage_summary`, an org's `usage_summary`).

use super::list_all_of;
use crate::actions::settings::{self, Flag};
use crate::context::Shared;
use crate::error::ApiResult;
use crate::messages::{UpdateEnvGroup, UpdateFeatureFlag};
use crate::presenters::settings as p;
use crate::web::{CfJson, ListParams};
use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

fn flag_json(b: &str, f: &Flag) -> Value {
    p::feature_flag_json(
        b,
        &f.name,
        f.enabled,
        f.updated_at.as_deref(),
        f.custom_error_message.as_deref(),
    )
}

pub async fn list_feature_flags(
    State(ctx): State<Shared>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let flags = settings::feature_flags(&ctx).await?;
    Ok(list_all_of(
        &ctx.base,
        "/v3/feature_flags",
        &params,
        flags,
        |f| flag_json(&ctx.base, f),
    ))
}

pub async fn get_feature_flag(
    State(ctx): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let f = settings::feature_flag(&ctx, &name).await?;
    Ok(Json(flag_json(&ctx.base, &f)))
}

pub async fn update_feature_flag(
    State(ctx): State<Shared>,
    Path(name): Path<String>,
    CfJson(msg): CfJson<UpdateFeatureFlag>,
) -> ApiResult<Json<Value>> {
    let f = settings::update_feature_flag(&ctx, &name, msg).await?;
    Ok(Json(flag_json(&ctx.base, &f)))
}

pub async fn get_env_group(
    State(ctx): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let g = settings::env_group(&ctx, &name).await?;
    Ok(Json(p::env_group_json(&ctx.base, &g)))
}

pub async fn update_env_group(
    State(ctx): State<Shared>,
    Path(name): Path<String>,
    CfJson(msg): CfJson<UpdateEnvGroup>,
) -> ApiResult<Json<Value>> {
    let g = settings::update_env_group(&ctx, &name, msg).await?;
    Ok(Json(p::env_group_json(&ctx.base, &g)))
}

pub async fn usage_summary(State(ctx): State<Shared>) -> ApiResult<Json<Value>> {
    let u = crate::fetchers::usage(&ctx, None).await?;
    Ok(Json(p::usage_summary_json(&ctx.base, &u)))
}

pub async fn org_usage_summary(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let u = crate::fetchers::usage(&ctx, Some(&guid)).await?;
    Ok(Json(p::org_usage_summary_json(&ctx.base, &guid, &u)))
}
