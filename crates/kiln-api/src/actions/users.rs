//! Users: UAA's SCIM create and password change (a change revokes the
//! user's tokens), and Cloud Controller's own user records
//! (`user_create.rb`, `user_delete.rb`: the guid is the UAA user id).

use crate::context::Ctx;
use crate::db::{self, CcUser, Role, User};
use crate::error::{ApiError, ApiResult};
use crate::messages::{CreateUser, ScimPassword, ScimUser};
use crate::permissions::Permissions;
use crate::util;
use axum::http::StatusCode;

fn uaa_error(status: StatusCode, error: &'static str, description: String) -> ApiError {
    ApiError::Uaa {
        status,
        error,
        description,
    }
}

async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || util::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// `POST /Users`: a new UAA user with the read and write scopes.
pub async fn scim_create(ctx: &Ctx, msg: ScimUser) -> ApiResult<User> {
    let email = msg.validate()?;
    let hash = hash(msg.password.clone().unwrap_or_default()).await?;
    let guid = util::new_guid();
    let now = util::now();
    let inserted = db::insert::<User>(
        &ctx.pool,
        vec![
            ("guid", guid.as_str().into()),
            ("username", msg.user_name.as_str().into()),
            ("email", email.into()),
            ("password_hash", hash.into()),
            ("origin", "uaa".into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    match inserted {
        Err(ApiError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            return Err(uaa_error(
                StatusCode::CONFLICT,
                "scim_resource_already_exists",
                format!("Username already in use: {}", msg.user_name),
            ));
        }
        other => other?,
    }
    tracing::info!(user_guid = %guid, username = %msg.user_name, "uaa user created");
    db::get::<User>(&ctx.pool, &guid).await
}

/// `PUT /Users/:id/password`: the user itself (with its old password) or an
/// admin. Bumps the token generation, so every token issued before stops
/// working.
pub async fn change_password(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
    msg: ScimPassword,
) -> ApiResult<()> {
    let user = db::find::<User>(&ctx.pool, guid).await?;
    let user = match user {
        Some(u) if perms.is_admin() || u.guid == perms.user_guid => u,
        // Another user's password: UAA does not tell whether it exists.
        _ => {
            return Err(uaa_error(
                StatusCode::FORBIDDEN,
                "access_denied",
                "Access is denied".into(),
            ));
        }
    };
    if msg.password.is_empty() {
        return Err(uaa_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_password",
            "Password must not be empty".into(),
        ));
    }
    if !perms.is_admin() {
        let old = msg.old_password.clone().unwrap_or_default();
        let stored = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || util::verify_password(&old, &stored))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(uaa_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Old password is incorrect".into(),
            ));
        }
    }
    let hash = hash(msg.password).await?;
    db::update::<User>(
        &ctx.pool,
        guid,
        vec![
            ("password_hash", hash.into()),
            ("token_generation", (user.token_generation + 1).into()),
        ],
    )
    .await?;
    tracing::info!(user_guid = %guid, "password changed; earlier tokens revoked");
    Ok(())
}

/// The UAA user with this username and origin.
pub async fn uaa_user_named(ctx: &Ctx, username: &str, origin: &str) -> ApiResult<Option<User>> {
    db::first_where::<User>(&ctx.pool, &[("username", username), ("origin", origin)]).await
}

/// Cloud Controller's record of a user, created if missing (a role for a
/// user CC has not seen yet creates it, as CC's RoleCreate does).
pub async fn ensure_cc_user(ctx: &Ctx, guid: &str) -> ApiResult<CcUser> {
    let now = util::now();
    db::insert_if_absent::<CcUser>(
        &ctx.pool,
        vec![
            ("guid", guid.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    db::get::<CcUser>(&ctx.pool, guid).await
}

/// `POST /v3/users`.
pub async fn create(ctx: &Ctx, msg: CreateUser) -> ApiResult<CcUser> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    msg.validate()?;
    let guid = match (&msg.guid, &msg.username, &msg.origin) {
        (Some(guid), _, _) => guid.clone(),
        (None, Some(name), Some(origin)) => uaa_user_named(ctx, name, origin)
            .await?
            .map(|u| u.guid)
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "No user exists with the username '{name}' and origin '{origin}'."
                ))
            })?,
        _ => return Err(ApiError::unprocessable("Invalid user")),
    };
    if db::find::<CcUser>(&ctx.pool, &guid).await?.is_some() {
        return Err(ApiError::unprocessable(format!(
            "User with guid '{guid}' already exists."
        )));
    }
    let user = ensure_cc_user(ctx, &guid).await?;
    super::metadata::apply(ctx, &guid, &meta).await?;
    Ok(user)
}

/// `DELETE /v3/users/:guid`: the user's roles and record (UAA's user stays,
/// as CC leaves UAA alone).
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    db::get::<CcUser>(&ctx.pool, guid).await?;
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<Role>(&mut *tx, "user_guid", guid).await?;
    db::delete_where::<CcUser>(&mut *tx, "guid", guid).await?;
    tx.commit().await?;
    Ok(())
}
