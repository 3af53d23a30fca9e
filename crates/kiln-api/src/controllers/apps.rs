//! `/v3/apps` and the per-app sub-collections.

use super::{accepted, list_of};
use crate::actions;
use crate::context::Shared;
use crate::environment;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::{CreateApp, PatchEnv, SetDroplet, UpdateApp};
use crate::permissions::Permissions;
use crate::presenters::{self as p, app_json};
use crate::web::{CfJson, ListParams};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateApp>,
) -> ApiResult<Response> {
    let app = actions::apps::create(&ctx, msg).await?;
    Ok((StatusCode::CREATED, Json(app_json(&ctx.base, &app))).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let apps = fetchers::apps_page(&ctx, &perms, &params).await?;
    Ok(list_of(&ctx.base, "/v3/apps", &params, apps, |a| {
        app_json(&ctx.base, a)
    }))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = fetchers::one(&ctx, &guid).await?;
    Ok(Json(app_json(&ctx.base, &app)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<UpdateApp>,
) -> ApiResult<Json<Value>> {
    let app = actions::apps::update(&ctx, &guid, msg).await?;
    Ok(Json(app_json(&ctx.base, &app)))
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    actions::apps::delete(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "app.delete", "app", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}

pub async fn start(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let app = actions::apps::start(&ctx, &guid, false).await?;
    Ok(Json(app_json(&ctx.base, &app)))
}

pub async fn restart(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = actions::apps::start(&ctx, &guid, true).await?;
    Ok(Json(app_json(&ctx.base, &app)))
}

pub async fn stop(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let app = actions::apps::stop(&ctx, &guid).await?;
    Ok(Json(app_json(&ctx.base, &app)))
}

pub async fn get_current_droplet_rel(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app: crate::db::App = fetchers::one(&ctx, &guid).await?;
    Ok(Json(p::droplet_rel_json(
        &ctx.base,
        &guid,
        app.droplet_guid.as_deref(),
    )))
}

pub async fn set_current_droplet(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<SetDroplet>,
) -> ApiResult<Json<Value>> {
    let droplet_guid = actions::apps::set_current_droplet(&ctx, &guid, msg).await?;
    Ok(Json(p::droplet_rel_json(
        &ctx.base,
        &guid,
        Some(&droplet_guid),
    )))
}

pub async fn current_droplet(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = fetchers::current_droplet(&ctx, &guid).await?;
    Ok(Json(p::droplet_json(&ctx.base, &d)))
}

pub async fn processes(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let (app, processes) = fetchers::app_processes(&ctx, &guid, &params).await?;
    let path = format!("/v3/apps/{guid}/processes");
    Ok(list_of(&ctx.base, &path, &params, processes, |pr| {
        p::process_json(&ctx.base, &app, pr)
    }))
}

pub async fn process_by_type(
    State(ctx): State<Shared>,
    Path((guid, ptype)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (app, pr) = fetchers::process_by_type(&ctx, &guid, &ptype).await?;
    Ok(Json(p::process_json(&ctx.base, &app, &pr)))
}

pub async fn routes(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let routes = fetchers::routes(&ctx, &perms, Some(&guid), &params).await?;
    let path = format!("/v3/apps/{guid}/routes");
    Ok(list_of(&ctx.base, &path, &params, routes, |(r, d, ds)| {
        p::route_json(&ctx.base, r, d, ds)
    }))
}

pub async fn packages(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let packages = fetchers::packages(&ctx, &perms, Some(&guid), &params).await?;
    let path = format!("/v3/apps/{guid}/packages");
    Ok(list_of(&ctx.base, &path, &params, packages, |pk| {
        p::package_json(&ctx.base, pk)
    }))
}

pub async fn droplets(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let droplets = fetchers::droplets(&ctx, &perms, Some(&guid), &params).await?;
    let path = format!("/v3/apps/{guid}/droplets");
    Ok(list_of(&ctx.base, &path, &params, droplets, |d| {
        p::droplet_json(&ctx.base, d)
    }))
}

pub async fn builds(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let builds = fetchers::builds(&ctx, &perms, Some(&guid), &params).await?;
    let path = format!("/v3/apps/{guid}/builds");
    Ok(list_of(&ctx.base, &path, &params, builds, |b| {
        p::build_json(&ctx.base, b)
    }))
}

pub async fn env(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let app = fetchers::one(&ctx, &guid).await?;
    Ok(Json(environment::env_document(&ctx, &app).await?))
}

pub async fn get_env_vars(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = fetchers::one(&ctx, &guid).await?;
    Ok(Json(p::env_vars_json(&ctx.base, &app)))
}

pub async fn patch_env_vars(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<PatchEnv>,
) -> ApiResult<Json<Value>> {
    let app = actions::apps::merge_env_vars(&ctx, &guid, msg).await?;
    Ok(Json(p::env_vars_json(&ctx.base, &app)))
}
