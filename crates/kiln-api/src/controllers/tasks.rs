//! `/v3/tasks` and `/v3/apps/:guid/tasks`.

use super::list_of;
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::CreateTask;
use crate::permissions::Permissions;
use crate::presenters::task_json;
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(app_guid): Path<String>,
    CfJson(msg): CfJson<CreateTask>,
) -> ApiResult<Response> {
    actions::settings::require(&ctx, Some(&perms), "task_creation").await?;
    let t = actions::tasks::create(&ctx, &app_guid, msg).await?;
    Ok((StatusCode::ACCEPTED, Json(task_json(&ctx.base, &t))).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let tasks = fetchers::tasks(&ctx, &perms, None, &params).await?;
    Ok(list_of(&ctx.base, "/v3/tasks", &params, tasks, |t| {
        task_json(&ctx.base, t)
    }))
}

pub async fn app_tasks(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(app_guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let tasks = fetchers::tasks(&ctx, &perms, Some(&app_guid), &params).await?;
    let path = format!("/v3/apps/{app_guid}/tasks");
    Ok(list_of(&ctx.base, &path, &params, tasks, |t| {
        task_json(&ctx.base, t)
    }))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = fetchers::one::<crate::db::Task>(&ctx, &guid).await?;
    Ok(Json(task_json(&ctx.base, &t)))
}

/// `POST /v3/tasks/:guid/actions/cancel` (and the cf CLI's older `PUT
/// /v3/tasks/:guid/cancel`): 202 with the task.
pub async fn cancel(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    let t = actions::tasks::cancel(&ctx, &guid).await?;
    Ok((StatusCode::ACCEPTED, Json(task_json(&ctx.base, &t))).into_response())
}
