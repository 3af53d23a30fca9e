//! A space's features (CC's `SpaceFeaturesController`): only `ssh`, the
//! space's `allow_ssh`. Kiln runs no SSH proxy, so it is kept and shown
//! only, as the app features' `ssh` is.

use crate::context::Ctx;
use crate::db::{self, Space};
use crate::error::{ApiError, ApiResult};

pub const SSH: &str = "ssh";
pub const SSH_DESCRIPTION: &str = "Enable SSHing into apps in the space.";

/// The `ssh` feature's state; any other name is CC's `Feature not found`.
pub async fn get(ctx: &Ctx, space_guid: &str, name: &str) -> ApiResult<bool> {
    let space = db::get::<Space>(&ctx.pool, space_guid).await?;
    if name != SSH {
        return Err(ApiError::not_found("Feature"));
    }
    Ok(space.allow_ssh)
}

pub async fn set(ctx: &Ctx, space_guid: &str, name: &str, enabled: bool) -> ApiResult<bool> {
    get(ctx, space_guid, name).await?;
    db::update::<Space>(&ctx.pool, space_guid, vec![("allow_ssh", enabled.into())]).await?;
    tracing::info!(space_guid, enabled, "space ssh feature set");
    get(ctx, space_guid, name).await
}
