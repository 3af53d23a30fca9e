//! Sidecars (Cloud Controller's `SidecarCreate`, `SidecarUpdate` and the
//! manifest's `sidecars:`): a name unique per app, and CC's memory rule:
//! the sidecars of a process type together use less memory than each of
//! its processes, whose limit they share. They reach the containers at the
//! process's next start.

use crate::context::Ctx;
use crate::db::{self, App, Process, Sidecar};
use crate::error::{ApiError, ApiResult};
use crate::messages::sidecars::SidecarBody;
use crate::util;

/// CC's `origin` of a sidecar made through the API or a manifest.
pub const ORIGIN_USER: &str = "user";

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
