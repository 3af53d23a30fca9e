//! A droplet's buildpack sidecars (CC's `SidecarSynchronizeFromAppDroplet`):
//! what the droplet's staging result declared becomes the app's `origin:
//! buildpack` sidecars when the droplet becomes current, through the
//! current-droplet relationship, a deployment, or a canceled deployment's
//! previous droplet.

use crate::context::Ctx;
use crate::db::{self, Droplet, Process, Sidecar};
use crate::error::{ApiError, ApiResult};
use crate::util;
use kiln_model::staging::BuildpackSidecar;

/// CC's `origin` of a sidecar a droplet's buildpacks declared.
pub const ORIGIN_BUILDPACK: &str = "buildpack";

/// What making `droplet` current does to the app's sidecars (CC's
/// `SidecarSynchronizeFromAppDroplet`): its buildpacks' sidecars replace
/// the app's `origin: buildpack` ones. Checked whole before anything
/// changes, so that a refused droplet leaves the sidecars as they were.
pub struct DropletSidecars {
    app_guid: String,
    stale: Vec<String>,
    new: Vec<BuildpackSidecar>,
}

/// Plans [`DropletSidecars`]: refused (422) when a buildpack's sidecar has
/// the name of a user's, or when the sidecars of a process type would use
/// all of its memory.
pub async fn plan_from_droplet(
    ctx: &Ctx,
    app_guid: &str,
    droplet: &Droplet,
) -> ApiResult<DropletSidecars> {
    let new: Vec<BuildpackSidecar> = serde_json::from_value(droplet.sidecars.clone())
        .map_err(|e| ApiError::unprocessable(format!("The droplet's sidecars are invalid: {e}")))?;
    let current = db::where_eq::<Sidecar>(&ctx.pool, "app_guid", app_guid).await?;
    let (stale, kept): (Vec<Sidecar>, Vec<Sidecar>) = current
        .into_iter()
        .partition(|s| s.origin == ORIGIN_BUILDPACK);
    for sidecar in &new {
        if kept.iter().any(|s| s.name == sidecar.name) {
            return Err(ApiError::unprocessable(format!(
                "Buildpack defined sidecar '{0}' conflicts with an existing user-defined sidecar. Consider renaming '{0}'.",
                sidecar.name
            )));
        }
    }
    let processes = db::where_eq::<Process>(&ctx.pool, "app_guid", app_guid).await?;
    for p in &processes {
        let total = kept
            .iter()
            .filter(|s| s.process_types.contains(&p.r#type))
            .filter_map(|s| s.memory_in_mb)
            .sum::<i64>()
            + new
                .iter()
                .filter(|s| s.process_types.contains(&p.r#type))
                .filter_map(|s| s.memory)
                .sum::<i64>();
        if total > 0 && total >= p.memory_in_mb {
            return Err(ApiError::unprocessable(format!(
                "The sidecar memory allocation defined is too large to run with the dependent \"{}\" process",
                p.r#type
            )));
        }
    }
    Ok(DropletSidecars {
        app_guid: app_guid.to_string(),
        stale: stale.into_iter().map(|s| s.guid).collect(),
        new,
    })
}

/// Applies a planned [`DropletSidecars`] in the caller's transaction.
pub async fn apply_from_droplet(
    tx: &mut kiln_store::Connection,
    plan: DropletSidecars,
) -> ApiResult<()> {
    for guid in &plan.stale {
        db::delete_where::<Sidecar>(&mut *tx, "guid", guid).await?;
    }
    let now = util::now();
    for sidecar in plan.new {
        db::insert::<Sidecar>(
            &mut *tx,
            vec![
                ("guid", util::new_guid().into()),
                ("name", sidecar.name.into()),
                ("command", sidecar.command.into()),
                ("app_guid", plan.app_guid.as_str().into()),
                ("process_types", db::json_text(&sidecar.process_types)),
                ("memory_in_mb", sidecar.memory.into()),
                ("origin", ORIGIN_BUILDPACK.into()),
                ("created_at", now.as_str().into()),
                ("updated_at", now.as_str().into()),
            ],
        )
        .await?;
    }
    Ok(())
}
