//! App features (CC's `AppFeatures`): `ssh` and `revisions`, each a flag
//! on the app. Kiln has no SSH proxy, so `ssh` is stored and shown but
//! `ssh_enabled` is false "globally", as on a CC with `allow_app_ssh_access`
//! off. `revisions` decides whether a deployment records a revision.

use crate::context::Ctx;
use crate::db::{self, App};
use crate::error::{ApiError, ApiResult};

pub const SSH: &str = "ssh";
pub const REVISIONS: &str = "revisions";

/// CC's reason when the platform allows no SSH at all.
pub const SSH_DISABLED_GLOBALLY: &str = "ssh is disabled globally";

/// One feature as CC presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub description: &'static str,
    pub enabled: bool,
}

/// The feature's column on `apps`; an unknown name is CC's 404.
fn column(name: &str) -> ApiResult<(&'static str, &'static str, &'static str)> {
    match name {
        SSH => Ok((SSH, "enable_ssh", "Enable SSHing into the app.")),
        REVISIONS => Ok((
            REVISIONS,
            "revisions_enabled",
            "Enable versioning of an application",
        )),
        _ => Err(ApiError::not_found("Feature")),
    }
}

/// Every feature of the app (which must exist).
pub async fn list(ctx: &Ctx, app_guid: &str) -> ApiResult<Vec<Feature>> {
    let mut out = Vec::new();
    for name in [SSH, REVISIONS] {
        out.push(get(ctx, app_guid, name).await?);
    }
    Ok(out)
}

pub async fn get(ctx: &Ctx, app_guid: &str, name: &str) -> ApiResult<Feature> {
    db::get::<App>(&ctx.pool, app_guid).await?;
    let (name, col, description) = column(name)?;
    let enabled = db::app_feature(&ctx.pool, app_guid, col).await?;
    Ok(Feature {
        name,
        description,
        enabled,
    })
}

pub async fn set(ctx: &Ctx, app_guid: &str, name: &str, enabled: bool) -> ApiResult<Feature> {
    db::get::<App>(&ctx.pool, app_guid).await?;
    let (_, col, _) = column(name)?;
    db::update::<App>(&ctx.pool, app_guid, vec![(col, enabled.into())]).await?;
    get(ctx, app_guid, name).await
}

/// Whether a deployment of the app records a revision.
pub async fn revisions_enabled(
    exec: impl kiln_store::Executor<'_>,
    app_guid: &str,
) -> ApiResult<bool> {
    db::app_feature(exec, app_guid, "revisions_enabled").await
}
