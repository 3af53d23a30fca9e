//! `/v3/service_credential_bindings` (app bindings of user-provided
//! instances).

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::db::ServiceBinding;
use crate::error::{ApiError, ApiResult};
use crate::fetchers;
use crate::messages::services::CreateBinding;
use crate::permissions::Permissions;
use crate::presenters::{binding_details_json, service_binding_json};
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    CfJson(msg): CfJson<CreateBinding>,
) -> ApiResult<Response> {
    let b = actions::service_bindings::create(&ctx, &perms, msg).await?;
    Ok((
        StatusCode::CREATED,
        Json(service_binding_json(&ctx.base, &b)),
    )
        .into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let items = fetchers::service_bindings(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/service_credential_bindings",
        &params,
        items,
        |b| service_binding_json(&ctx.base, b),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let b = fetchers::one::<ServiceBinding>(&ctx, &guid).await?;
    Ok(Json(service_binding_json(&ctx.base, &b)))
}

/// The binding's credentials: a 404 to who may see the binding but not
/// read its space's secrets (CC's answer).
pub async fn details(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let b = fetchers::one::<ServiceBinding>(&ctx, &guid).await?;
    let app = fetchers::one::<crate::db::App>(&ctx, &b.app_guid).await?;
    if !perms.can_read_secrets(&app.space_guid) {
        return Err(ApiError::not_found("Service credential binding"));
    }
    Ok(Json(binding_details_json(&b)))
}

/// A user-provided binding has no parameters (CC's 90007).
pub async fn parameters(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    fetchers::one::<ServiceBinding>(&ctx, &guid).await?;
    Err(ApiError::cf(
        StatusCode::BAD_REQUEST,
        90007,
        "CF-ServiceFetchBindingParametersNotSupported",
        "This service does not support fetching service binding parameters.",
    ))
}

/// A user-provided binding goes at once: 204.
pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<StatusCode> {
    actions::service_bindings::delete(&ctx, &guid).await?;
    Ok(StatusCode::NO_CONTENT)
}
