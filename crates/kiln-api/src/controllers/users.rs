//! UAA's SCIM `/Users` and Cloud Controller's `/v3/users`.

use super::{accepted, list_of};
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::messages::{CreateUser, ScimPassword, ScimUser};
use crate::permissions::Permissions;
use crate::presenters::{scim_user_json, user_json};
use crate::web::{CfJson, ListParams};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

/// `POST /Users` (UAA).
pub async fn scim_create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<ScimUser>,
) -> ApiResult<Response> {
    let user = actions::users::scim_create(&ctx, msg).await?;
    Ok((StatusCode::CREATED, Json(scim_user_json(&user))).into_response())
}

/// `PUT /Users/:id/password` (UAA).
pub async fn scim_password(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
    CfJson(msg): CfJson<ScimPassword>,
) -> ApiResult<Json<Value>> {
    actions::users::change_password(&ctx, &perms, &guid, msg).await?;
    Ok(Json(json!({"status": "ok", "message": "password updated"})))
}

fn present(b: &str, (cc, uaa): &fetchers::UserView) -> Value {
    user_json(b, &cc.guid, &cc.created_at, &cc.updated_at, uaa.as_ref())
}

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(msg): CfJson<CreateUser>,
) -> ApiResult<Response> {
    let user = actions::users::create(&ctx, msg).await?;
    let uaa = crate::fetchers::one::<crate::db::User>(&ctx, &user.guid)
        .await
        .ok();
    Ok((StatusCode::CREATED, Json(present(&ctx.base, &(user, uaa)))).into_response())
}

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let users = fetchers::users(&ctx, &perms, &params).await?;
    Ok(list_of(&ctx.base, "/v3/users", &params, users, |u| {
        present(&ctx.base, u)
    }))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = fetchers::user(&ctx, &perms, &guid).await?;
    Ok(Json(present(&ctx.base, &user)))
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    actions::users::delete(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "user.delete", "user", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}
