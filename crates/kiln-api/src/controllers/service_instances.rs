//! `/v3/service_instances` (user-provided; managed ones are refused).

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::services::{CreateServiceInstance, UpdateServiceInstance};
use crate::permissions::Permissions;
use crate::presenters::service_instance_json;
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateServiceInstance>,
) -> ApiResult<Response> {
    let si = actions::service_instances::create(&ctx, msg).await?;
    Ok((
        StatusCode::CREATED,
        Json(service_instance_json(&ctx.base, &si)),
    )
        .into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let items = fetchers::service_instances(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/service_instances",
        &params,
        items,
        |si| service_instance_json(&ctx.base, si),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let si = fetchers::one::<crate::db::ServiceInstance>(&ctx, &guid).await?;
    Ok(Json(service_instance_json(&ctx.base, &si)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<UpdateServiceInstance>,
) -> ApiResult<Json<Value>> {
    let si = actions::service_instances::update(&ctx, &guid, msg).await?;
    Ok(Json(service_instance_json(&ctx.base, &si)))
}

/// A user-provided instance goes at once: 204.
pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<StatusCode> {
    actions::service_instances::delete(&ctx, &guid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The instance's credentials object, as CC answers it.
pub async fn credentials(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let si = fetchers::one::<crate::db::ServiceInstance>(&ctx, &guid).await?;
    Ok(Json(si.credentials))
}
