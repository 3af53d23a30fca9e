//! Roles: grant and revoke with Cloud Controller's rules and words
//! (`roles_controller.rb`, `role_create.rb`, `role_delete.rb`): the user and
//! the org or space must exist and be visible to the granter, the granter
//! must hold the right to grant (admin; an org manager anything in its org;
//! a space manager its space's roles), a space role needs the user's
//! organization_user role first, and a duplicate is a 422.

use super::users;
use crate::context::Ctx;
use crate::db::{self, CcUser, Organization, Role, Space, User, Val};
use crate::error::{ApiError, ApiResult};
use crate::messages::{CreateRole, RoleTarget};
use crate::permissions::Permissions;
use crate::util;

fn invalid(what: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "Invalid {what}. Ensure that the {what} exists and you have access to it."
    ))
}

/// The user a role names: a CC user by guid (made from the UAA user of that
/// id if CC has none yet), or the UAA user of that username and origin.
async fn role_user(ctx: &Ctx, msg: &CreateRole) -> ApiResult<(CcUser, Option<User>)> {
    let data = &msg.relationships.user.data;
    let uaa = match (&data.guid, &data.username) {
        (Some(guid), _) => {
            let uaa = db::find::<User>(&ctx.pool, guid).await?;
            if uaa.is_none() && db::find::<CcUser>(&ctx.pool, guid).await?.is_none() {
                return Err(invalid("user"));
            }
            let cc = users::ensure_cc_user(ctx, guid).await?;
            return Ok((cc, uaa));
        }
        (None, Some(name)) => {
            let origin = data.origin.as_deref().unwrap_or("uaa");
            users::uaa_user_named(ctx, name, origin)
                .await?
                .ok_or_else(|| {
                    ApiError::unprocessable(format!(
                        "No user exists with the username '{name}' and origin '{origin}'."
                    ))
                })?
        }
        (None, None) => return Err(invalid("user")),
    };
    let cc = users::ensure_cc_user(ctx, &uaa.guid).await?;
    Ok((cc, Some(uaa)))
}

/// Where the role goes: (org guid, space, name shown in errors).
async fn role_scope(
    ctx: &Ctx,
    perms: &Permissions,
    target: &RoleTarget,
) -> ApiResult<(String, Option<Space>, String)> {
    match target {
        RoleTarget::Organization(guid) => {
            let org = db::find::<Organization>(&ctx.pool, guid)
                .await?
                .filter(|o| perms.can_read_org(&o.guid))
                .ok_or_else(|| invalid("organization"))?;
            Ok((org.guid, None, format!("organization '{}'", org.name)))
        }
        RoleTarget::Space(guid) => {
            let space = db::find::<Space>(&ctx.pool, guid)
                .await?
                .filter(|s| perms.can_read_space(&s.guid))
                .ok_or_else(|| invalid("space"))?;
            let name = format!("space '{}'", space.name);
            Ok((space.organization_guid.clone(), Some(space), name))
        }
    }
}

/// `POST /v3/roles`.
pub async fn create(ctx: &Ctx, perms: &Permissions, msg: CreateRole) -> ApiResult<Role> {
    let target = msg.validate()?;
    let (org, space, scope_name) = role_scope(ctx, perms, &target).await?;
    let space_guid = space.as_ref().map(|s| s.guid.clone());
    if !perms.can_grant(&org, space_guid.as_deref()) {
        return Err(ApiError::not_authorized());
    }
    let (user, uaa) = role_user(ctx, &msg).await?;
    if space.is_some() {
        let member = db::first_where::<Role>(
            &ctx.pool,
            &[
                ("user_guid", user.guid.as_str()),
                ("type", "organization_user"),
                ("scope_guid", org.as_str()),
            ],
        )
        .await?;
        if member.is_none() {
            return Err(ApiError::unprocessable(
                "Users cannot be assigned roles in a space if they do not have a role in that space's organization.",
            ));
        }
    }
    let guid = util::new_guid();
    let now = util::now();
    let scope_guid = space_guid.clone().unwrap_or_else(|| org.clone());
    let inserted = db::insert::<Role>(
        &ctx.pool,
        vec![
            ("guid", guid.as_str().into()),
            ("type", msg.kind.as_str().into()),
            ("user_guid", user.guid.as_str().into()),
            ("organization_guid", org.as_str().into()),
            ("space_guid", space_guid.into()),
            ("scope_guid", scope_guid.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    let shown = uaa.map_or(user.guid.clone(), |u| u.username);
    db::unique_or_taken(inserted, || {
        format!(
            "User '{shown}' already has '{}' role in {scope_name}.",
            msg.kind
        )
    })?;
    tracing::info!(role_guid = %guid, kind = %msg.kind, user_guid = %user.guid, "role created");
    db::get::<Role>(&ctx.pool, &guid).await
}

/// Makes the user who created an org (with `user_org_creation` on) its
/// user and manager, as CC does.
pub async fn grant_org_creator(ctx: &Ctx, org: &str, user_guid: &str) -> ApiResult<()> {
    super::users::ensure_cc_user(ctx, user_guid).await?;
    let now = util::now();
    let mut tx = ctx.pool.begin().await?;
    for kind in ["organization_user", "organization_manager"] {
        db::insert::<Role>(
            &mut *tx,
            vec![
                ("guid", util::new_guid().into()),
                ("type", kind.into()),
                ("user_guid", user_guid.into()),
                ("organization_guid", org.into()),
                ("space_guid", Val::Text(None)),
                ("scope_guid", org.into()),
                ("created_at", now.as_str().into()),
                ("updated_at", now.as_str().into()),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `DELETE /v3/roles/:guid` (the caller sees the role: checked before).
pub async fn delete(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<()> {
    let role = db::get::<Role>(&ctx.pool, guid).await?;
    if !perms.can_grant(&role.organization_guid, role.space_guid.as_deref()) {
        return Err(ApiError::not_authorized());
    }
    // A space role needs the org membership: the membership goes last.
    if role.r#type == "organization_user" {
        let in_spaces = db::list::<Role>(
            &ctx.pool,
            &[
                db::Cond::In("user_guid", vec![role.user_guid.clone()]),
                db::Cond::In("organization_guid", vec![role.organization_guid.clone()]),
            ],
        )
        .await?
        .into_iter()
        .any(|r| r.space_guid.is_some());
        if in_spaces {
            return Err(ApiError::unprocessable(
                "Cannot delete the organization_user role while the user has roles in spaces of the organization.",
            ));
        }
    }
    db::delete_where::<Role>(&ctx.pool, "guid", guid).await?;
    tracing::info!(role_guid = %guid, "role deleted");
    Ok(())
}
