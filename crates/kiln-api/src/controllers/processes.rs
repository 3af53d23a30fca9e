//! `/v3/processes`: list, read, update, scale, stats.

use super::list_of;
use crate::actions;
use crate::context::{Ctx, Shared};
use crate::db::Process;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::{ScaleProcess, UpdateProcess};
use crate::permissions::Permissions;
use crate::presenters::{process_json, process_stats};
use crate::util;
use crate::web::{CfJson, ListParams, prefer_wait, preference_applied};
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
    let processes = fetchers::processes(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/processes",
        &params,
        processes,
        |(a, p)| process_json(&ctx.base, a, p),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let (app, p) = fetchers::process(&ctx, &guid).await?;
    Ok(Json(process_json(&ctx.base, &app, &p)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<UpdateProcess>,
) -> ApiResult<Json<Value>> {
    actions::processes::update(&ctx, &guid, msg).await?;
    let (app, p) = fetchers::process(&ctx, &guid).await?;
    Ok(Json(process_json(&ctx.base, &app, &p)))
}

async fn scaled(ctx: &Ctx, p: Process, msg: ScaleProcess) -> ApiResult<Response> {
    let p = actions::processes::scale(ctx, &p, msg).await?;
    let (app, p) = fetchers::process(ctx, &p.guid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(process_json(&ctx.base, &app, &p)),
    )
        .into_response())
}

pub async fn scale(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<ScaleProcess>,
) -> ApiResult<Response> {
    actions::settings::require(&ctx, Some(&perms), "app_scaling").await?;
    let (_, p) = fetchers::process(&ctx, &guid).await?;
    scaled(&ctx, p, msg).await
}

pub async fn scale_by_type(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path((app_guid, ptype)): Path<(String, String)>,
    CfJson(msg): CfJson<ScaleProcess>,
) -> ApiResult<Response> {
    actions::settings::require(&ctx, Some(&perms), "app_scaling").await?;
    let (_, p) = fetchers::process_by_type(&ctx, &app_guid, &ptype).await?;
    scaled(&ctx, p, msg).await
}

/// `GET /v3/processes/:guid/stats`; with `Prefer: wait=N`, held while no
/// instance runs until one changes (see [`crate::web::prefer_wait`]).
pub async fn stats(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    headers: http::HeaderMap,
) -> ApiResult<Response> {
    let (app, p) = fetchers::process(&ctx, &guid).await?;
    let wait = prefer_wait(&headers);
    let actuals = match wait {
        Some(secs) => {
            let wait = std::time::Duration::from_secs(secs);
            fetchers::instances_when_changed(&ctx, &app, &p, wait).await?
        }
        None => fetchers::instances(&ctx, &app, &p).await?,
    };
    let metrics = fetchers::container_metrics(&ctx, &app, &p);
    let body = Json(process_stats(
        &p,
        &actuals,
        &metrics,
        util::now_nanos(),
        &util::now(),
    ));
    Ok(match wait {
        Some(secs) => ([preference_applied(secs)], body).into_response(),
        None => body.into_response(),
    })
}
