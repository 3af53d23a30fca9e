//! `/v3/apps/:guid/sidecars`, `/v3/sidecars/:guid` and
//! `/v3/processes/:guid/sidecars`.

use super::{list_all_of, list_of};
use crate::actions;
use crate::context::Shared;
use crate::db::Sidecar;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::sidecars::SidecarBody;
use crate::presenters::sidecar::sidecar_json;
use crate::web::{CfJson, ListParams};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    Path(app_guid): Path<String>,
    CfJson(msg): CfJson<SidecarBody>,
) -> ApiResult<Response> {
    let s = actions::sidecars::create(&ctx, &app_guid, msg).await?;
    Ok((StatusCode::CREATED, Json(sidecar_json(&s))).into_response())
}

pub async fn app_sidecars(
    State(ctx): State<Shared>,
    Path(app_guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let sidecars = fetchers::app_sidecars(&ctx, &app_guid, &params).await?;
    let path = format!("/v3/apps/{app_guid}/sidecars");
    Ok(list_of(&ctx.base, &path, &params, sidecars, sidecar_json))
}

pub async fn process_sidecars(
    State(ctx): State<Shared>,
    Path(process_guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let (app, p) = fetchers::process(&ctx, &process_guid).await?;
    let sidecars = crate::diego::sidecars_of(&ctx, &app.guid, &p.r#type).await?;
    let path = format!("/v3/processes/{process_guid}/sidecars");
    Ok(list_all_of(
        &ctx.base,
        &path,
        &params,
        sidecars,
        sidecar_json,
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = fetchers::one::<Sidecar>(&ctx, &guid).await?;
    Ok(Json(sidecar_json(&s)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<SidecarBody>,
) -> ApiResult<Json<Value>> {
    let s = actions::sidecars::update(&ctx, &guid, msg).await?;
    Ok(Json(sidecar_json(&s)))
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<StatusCode> {
    actions::sidecars::delete(&ctx, &guid).await?;
    Ok(StatusCode::NO_CONTENT)
}
