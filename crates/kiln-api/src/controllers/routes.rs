//! `/v3/routes` and their destinations.

use super::{accepted, list_of};
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::{AddDestinations, CreateRoute};
use crate::permissions::Permissions;
use crate::presenters::{destinations_json, route_json};
use crate::web::{CfJson, ListParams};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let routes = fetchers::routes(&ctx, &perms, None, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/routes",
        &params,
        routes,
        |(r, d, ds)| route_json(&ctx.base, r, d, ds),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (r, d, ds) = fetchers::route(&ctx, &guid).await?;
    Ok(Json(route_json(&ctx.base, &r, &d, &ds)))
}

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateRoute>,
) -> ApiResult<Response> {
    let route = actions::routes::create(&ctx, msg).await?;
    let (r, d, ds) = fetchers::route(&ctx, &route.guid).await?;
    Ok((
        StatusCode::CREATED,
        Json(route_json(&ctx.base, &r, &d, &ds)),
    )
        .into_response())
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    actions::routes::delete(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "route.delete", "route", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}

pub async fn destinations(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let dests = fetchers::destinations(&ctx, &guid).await?;
    Ok(Json(destinations_json(&ctx.base, &guid, &dests)))
}

pub async fn add_destinations(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<AddDestinations>,
) -> ApiResult<Json<Value>> {
    actions::routes::add_destinations(&ctx, &guid, msg).await?;
    let dests = fetchers::destinations(&ctx, &guid).await?;
    Ok(Json(destinations_json(&ctx.base, &guid, &dests)))
}

pub async fn remove_destination(
    State(ctx): State<Shared>,
    Path((guid, dguid)): Path<(String, String)>,
) -> ApiResult<Response> {
    actions::routes::remove_destination(&ctx, &guid, &dguid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
