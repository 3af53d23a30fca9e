//! First start: what a fresh platform needs (the admin user, org `kiln`,
//! space `dev`, the shared domain, the stack). Idempotent.

use crate::context::Ctx;
use crate::db::{self, Domain, Organization, Space, Stack, User};
use crate::error::ApiResult;
use crate::util;

pub const DEFAULT_ORG: &str = "kiln";
pub const DEFAULT_SPACE: &str = "dev";
/// The admin's UAA groups.
pub const ADMIN_SCOPES: &str = "cloud_controller.admin cloud_controller.read cloud_controller.write openid uaa.admin scim.write scim.read";

/// Returns the admin password when it was generated now.
pub async fn bootstrap(ctx: &Ctx) -> ApiResult<Option<String>> {
    let now = util::now();
    let generated = admin(ctx, &now).await?;
    db::insert_if_absent::<Organization>(
        &ctx.pool,
        vec![
            ("guid", util::new_guid().into()),
            ("name", DEFAULT_ORG.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
        ],
    )
    .await?;
    super::quotas::ensure_default(ctx).await?;
    let org = db::first_where::<Organization>(&ctx.pool, &[("name", DEFAULT_ORG)])
        .await?
        .ok_or_else(|| crate::error::ApiError::not_found("Organization"))?;
    db::insert_if_absent::<Space>(
        &ctx.pool,
        vec![
            ("guid", util::new_guid().into()),
            ("name", DEFAULT_SPACE.into()),
            ("organization_guid", org.guid.as_str().into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
        ],
    )
    .await?;
    db::insert_if_absent::<Domain>(
        &ctx.pool,
        vec![
            ("guid", util::new_guid().into()),
            ("name", ctx.config.domain.as_str().into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
        ],
    )
    .await?;
    db::insert_if_absent::<Stack>(
        &ctx.pool,
        vec![
            ("guid", util::new_guid().into()),
            ("name", ctx.config.stack.as_str().into()),
            (
                "description",
                "the host's own operating system, read-only".into(),
            ),
            ("is_default", true.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
        ],
    )
    .await?;
    // The configured stack is the one default.
    let mut tx = ctx.pool.begin().await?;
    db::update_all::<Stack>(&mut *tx, vec![("is_default", false.into())]).await?;
    db::update_where::<Stack>(
        &mut *tx,
        "name",
        &ctx.config.stack,
        vec![("is_default", true.into())],
    )
    .await?;
    tx.commit().await?;
    Ok(generated)
}

/// The admin user with the configured password, or a generated one on the
/// first start (written to `<data_dir>/admin-password`).
async fn admin(ctx: &Ctx, now: &str) -> ApiResult<Option<String>> {
    let existing = db::first_where::<User>(&ctx.pool, &[("username", "admin")]).await?;
    let (password, generated) = match (&ctx.config.admin_password, &existing) {
        (Some(password), _) => (password.clone(), false),
        (None, Some(_)) => return Ok(None),
        (None, None) => {
            let password = util::random_password(24);
            crate::context::write_private(&ctx.config.data_dir.join("admin-password"), &password)
                .await?;
            (password, true)
        }
    };
    let hash = util::hash_password(&password)?;
    match existing {
        Some(user) => {
            db::update_where::<User>(
                &ctx.pool,
                "guid",
                &user.guid,
                vec![("password_hash", hash.into())],
            )
            .await?;
        }
        None => {
            db::insert::<User>(
                &ctx.pool,
                vec![
                    ("guid", util::new_guid().into()),
                    ("username", "admin".into()),
                    ("email", "admin".into()),
                    ("password_hash", hash.into()),
                    ("scopes", ADMIN_SCOPES.into()),
                    ("created_at", now.into()),
                    ("updated_at", now.into()),
                ],
            )
            .await?;
        }
    }
    Ok(generated.then_some(password))
}
