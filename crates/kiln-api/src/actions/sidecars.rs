//! Sidecars (Cloud Controller's `SidecarCreate`, `SidecarUpdate` and the
//! manifest's `sidecars:`): a name unique per app, and CC's memory rule:
//! the sidecars of a process type together use less memory than each of
//! its processes, whose limit they share. They reach the containers at the
//! process's next start.

use crate::context::Ctx;
use crate::db::{self, App, Droplet, Process, Sidecar};
use crate::error::{ApiError, ApiResult};
use crate::messages::sidecars::SidecarBody;
use crate::util;
use kiln_model::staging::BuildpackSidecar;

/// CC's `origin` of a sidecar made through the API or a manifest.
pub const ORIGIN_USER: &str = "user";
/// CC's `origin` of a sidecar a droplet's buildpacks declared.
pub const ORIGIN_BUILDPACK: &str = "buildpack";

fn name_taken(name: &str) -> String {
    format!("Sidecar with name '{name}' already exists for given app")
}

/// `POST /v3/apps/:guid/sidecars`.
pub async fn create(ctx: &Ctx, app_guid: &str, msg: SidecarBody) -> ApiResult<Sidecar> {
    msg.validate_create()?;
    db::get::<App>(&ctx.pool, app_guid).await?;
    let name = msg.name.clone().unwrap_or_default();
    let types = msg.process_types().unwrap_or_default();
    check_memory(ctx, app_guid, None, &types, msg.memory_in_mb).await?;
    let guid = util::new_guid();
    let now = util::now();
    let inserted = db::insert::<Sidecar>(
        &ctx.pool,
        vec![
            ("guid", guid.as_str().into()),
            ("name", name.as_str().into()),
            ("command", msg.command.unwrap_or_default().into()),
            ("app_guid", app_guid.into()),
            ("process_types", db::json_text(&types)),
            ("memory_in_mb", msg.memory_in_mb.into()),
            ("origin", ORIGIN_USER.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || name_taken(&name))?;
    tracing::info!(sidecar_guid = %guid, app_guid, "sidecar created");
    db::get::<Sidecar>(&ctx.pool, &guid).await
}

/// `PATCH /v3/sidecars/:guid`: what the body leaves out stays.
pub async fn update(ctx: &Ctx, guid: &str, msg: SidecarBody) -> ApiResult<Sidecar> {
    msg.validate_update()?;
    let current = db::get::<Sidecar>(&ctx.pool, guid).await?;
    let types = msg
        .process_types()
        .unwrap_or_else(|| current.process_types.clone());
    let memory = msg.memory_in_mb.or(current.memory_in_mb);
    check_memory(ctx, &current.app_guid, Some(guid), &types, memory).await?;
    let mut sets = vec![("process_types", db::json_text(&types))];
    if let Some(m) = msg.memory_in_mb {
        sets.push(("memory_in_mb", m.into()));
    }
    if let Some(c) = msg.command {
        sets.push(("command", c.into()));
    }
    let name = msg.name.clone().unwrap_or_else(|| current.name.clone());
    if msg.name.is_some() {
        sets.push(("name", name.as_str().into()));
    }
    let updated = db::update::<Sidecar>(&ctx.pool, guid, sets).await;
    db::unique_or_taken(updated, || name_taken(&name))?;
    db::get::<Sidecar>(&ctx.pool, guid).await
}

/// `DELETE /v3/sidecars/:guid` (204).
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    db::get::<Sidecar>(&ctx.pool, guid).await?;
    db::delete_where::<Sidecar>(&ctx.pool, "guid", guid).await?;
    tracing::info!(sidecar_guid = guid, "sidecar deleted");
    Ok(())
}

/// A manifest's sidecar: the app's sidecar of that name is updated, or a
/// new one made (`app_apply_manifest.rb#update_sidecars`).
pub async fn apply_manifest(ctx: &Ctx, app_guid: &str, msg: SidecarBody) -> ApiResult<Sidecar> {
    let name = msg.name.clone().unwrap_or_default();
    let existing =
        db::first_where::<Sidecar>(&ctx.pool, &[("app_guid", app_guid), ("name", &name)]).await?;
    match existing {
        Some(s) => update(ctx, &s.guid, msg).await,
        None => create(ctx, app_guid, msg).await,
    }
}

/// The other side of CC's rule, when a process is scaled: its sidecars
/// together must stay below the memory it is scaled to.
pub async fn check_scaled_memory(ctx: &Ctx, p: &Process, memory_in_mb: i64) -> ApiResult<()> {
    let sidecars = db::where_eq::<Sidecar>(&ctx.pool, "app_guid", &p.app_guid).await?;
    let sidecars = memory_of(&sidecars, &p.r#type, None);
    if sidecars > 0 && sidecars >= memory_in_mb {
        return Err(ApiError::unprocessable(
            "The requested memory allocation is not large enough to run all of your sidecar processes",
        ));
    }
    Ok(())
}

/// The memory the sidecars of `process_type` use together, leaving out
/// `except` (a sidecar whose memory is about to change).
fn memory_of(sidecars: &[Sidecar], process_type: &str, except: Option<&str>) -> i64 {
    sidecars
        .iter()
        .filter(|s| Some(s.guid.as_str()) != except)
        .filter(|s| s.process_types.iter().any(|t| t == process_type))
        .filter_map(|s| s.memory_in_mb)
        .sum()
}

/// CC's `SidecarMemoryLessThanProcessMemory`: for each process of a type
/// the sidecar joins, all its sidecars' memory (this one's as it would be)
/// stays below the process's.
async fn check_memory(
    ctx: &Ctx,
    app_guid: &str,
    this: Option<&str>,
    types: &[String],
    memory_in_mb: Option<i64>,
) -> ApiResult<()> {
    let Some(memory_in_mb) = memory_in_mb else {
        return Ok(());
    };
    let processes = db::where_eq::<Process>(&ctx.pool, "app_guid", app_guid).await?;
    let sidecars = db::where_eq::<Sidecar>(&ctx.pool, "app_guid", app_guid).await?;
    for p in processes.iter().filter(|p| types.contains(&p.r#type)) {
        let others = memory_of(&sidecars, &p.r#type, this);
        if others + memory_in_mb >= p.memory_in_mb {
            return Err(ApiError::unprocessable(format!(
                "The memory allocation defined is too large to run with the dependent \"{}\" process",
                p.r#type
            )));
        }
    }
    Ok(())
}

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
        let total = memory_of(&kept, &p.r#type, None)
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
