//! Task completion: a completed staging Task's outcome recorded on its
//! build and droplet (Cloud Controller's staging completion handler), a
//! task's (`cf run-task`) on the task, through one resolve → record →
//! delete path, with a periodic resync so no build or task waits forever;
//! and the loops that run it, crash events and process sync.

use super::sync::{ignore_not_found, reconcile};
use crate::context::{Ctx, Shared};
use crate::db::{self, Build, Buildpack, Droplet, Val};
use crate::error::ApiResult;
use crate::uploads::droplet_key;
use crate::util;
use futures_util::StreamExt;
use kiln_bbs::BbsError;
use kiln_model::bbs::{BbsEvent, Task};
use kiln_model::staging::{StagingFailure, StagingResult};
use kiln_model::{AppTaskState, BuildState, DropletState, STAGING_DOMAIN, TASKS_DOMAIN, TaskState};
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const STAGING_RESYNC: Duration = Duration::from_secs(10);
pub const PROCESS_RECONCILE: Duration = Duration::from_secs(30);

/// Marks a STAGING build and its droplet FAILED with `error`. A build that
/// already left STAGING (another path recorded its outcome) is left alone.
pub async fn fail_build(ctx: &Ctx, build_guid: &str, error: &str) -> ApiResult<()> {
    // The app (and its builds) may have been deleted meanwhile.
    let Some(build) = db::find::<Build>(&ctx.pool, build_guid).await? else {
        return Ok(());
    };
    if build.state != BuildState::Staging {
        return Ok(());
    }
    let droplet = match &build.droplet_guid {
        Some(g) => db::find::<Droplet>(&ctx.pool, g).await?,
        None => None,
    };
    let mut tx = ctx.pool.begin().await?;
    let won = db::transition::<Build>(
        &mut *tx,
        build_guid,
        build.state,
        BuildState::Failed,
        vec![("error", error.into())],
    )
    .await?;
    if !won {
        return Ok(());
    }
    if let Some(droplet) = &droplet
        && droplet.state.transition_to(DropletState::Failed).is_ok()
    {
        db::transition::<Droplet>(
            &mut *tx,
            &droplet.guid,
            droplet.state,
            DropletState::Failed,
            vec![("error", error.into())],
        )
        .await?;
    }
    tx.commit().await?;
    if let Some(droplet_guid) = &build.droplet_guid {
        ctx.blobstore.delete(&droplet_key(droplet_guid)).await?;
    }
    tracing::info!(build_guid, error, "build failed");
    ctx.api_log(
        &build.app_guid,
        &format!("Staging failed for build {build_guid}: {error}"),
    );
    Ok(())
}

/// The build's error for a failed staging task, with Cloud Controller's
/// error ids (its `FailureReasonSanitizer`): the auction's placement errors
/// become `InsufficientResources` / `NoCompatibleCell`, keeping Diego's
/// words so the user sees what was short.
fn failure_error(reason: &str) -> String {
    if reason.starts_with("insufficient resources") {
        return format!("InsufficientResources - {reason}");
    }
    if reason.starts_with("found no compatible cell") {
        return format!("NoCompatibleCell - {reason}");
    }
    match reason
        .strip_prefix("Exited with status ")
        .and_then(|code| code.trim().parse::<i32>().ok())
    {
        Some(code) => StagingFailure::from_exit_code(code).build_error(""),
        None => format!("StagingError - Staging error: {reason}"),
    }
}

/// Whether the droplet's bits are in the blobstore: uploaded (a checksum
/// recorded) and, for a droplet the cell PUT into the store itself, the
/// object under its key still the one checked when the cell reported it.
async fn droplet_stored(ctx: &Ctx, droplet: &Droplet) -> ApiResult<Result<(), String>> {
    let key = droplet_key(&droplet.guid);
    let not_uploaded = || Err("StagingError - Staging error: the droplet was not uploaded".into());
    if droplet.sha256.is_none() {
        return Ok(not_uploaded());
    }
    let Some(size) = droplet.blob_size else {
        return Ok(if ctx.blobstore.exists(&key).await? {
            Ok(())
        } else {
            not_uploaded()
        });
    };
    let stat = ctx.blobstore.stat(&key).await?;
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    Ok(
        match crate::uploads::blob_mismatch(stat.as_ref(), size, droplet.blob_etag.as_deref()) {
            None => Ok(()),
            Some(why) => Err(format!(
                "StagingError - Staging error: the droplet in the blobstore is not the one the cell uploaded: {why}"
            )),
        },
    )
}

async fn succeed_build(
    ctx: &Ctx,
    build: &Build,
    result: &StagingResult,
) -> ApiResult<Result<(), String>> {
    let Some(droplet_guid) = &build.droplet_guid else {
        return Ok(Err(
            "StagingError - Staging error: the build has no droplet".into(),
        ));
    };
    let Some(droplet) = db::find::<Droplet>(&ctx.pool, droplet_guid).await? else {
        return Ok(Err(
            "StagingError - Staging error: the droplet no longer exists".into(),
        ));
    };
    // A docker droplet is the image, pinned: nothing is uploaded.
    let docker = super::LifecycleType::of_droplet(&droplet) == super::LifecycleType::Docker;
    let image = &result.lifecycle_metadata.docker_image;
    if docker && image.is_empty() {
        return Ok(Err(
            "StagingError - Staging error: the staging result names no image".into(),
        ));
    }
    if !docker && let Err(error) = droplet_stored(ctx, &droplet).await? {
        return Ok(Err(error));
    }
    let admin = db::all::<Buildpack>(&ctx.pool).await?;
    let last = result.lifecycle_metadata.buildpacks.len().saturating_sub(1);
    let buildpacks: Vec<_> = result
        .lifecycle_metadata
        .buildpacks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // Admin buildpacks by name, custom ones by their URL.
            let custom = build
                .buildpacks
                .iter()
                .find(|n| super::custom_buildpack_kind(n).is_some() && super::url_key(n) == b.key);
            let name = admin
                .iter()
                .find(|a| a.guid == b.key || a.name == b.key)
                .map(|a| a.name.clone())
                .or_else(|| custom.cloned())
                .unwrap_or_else(|| b.key.clone());
            json!({
                "name": name,
                // What detection said belongs to the final buildpack only.
                "detect_output": if i != last || result.lifecycle_metadata.detected_buildpack.is_empty() { serde_json::Value::Null } else { json!(result.lifecycle_metadata.detected_buildpack) },
                "buildpack_name": b.name,
                "version": if b.version.is_empty() { serde_json::Value::Null } else { json!(b.version) },
            })
        })
        .collect();
    let mut tx = ctx.pool.begin().await?;
    // Both rows move only from the states read above; if either moved
    // meanwhile, nothing is recorded (the other outcome stands).
    let build_moved = db::transition::<Build>(
        &mut *tx,
        &build.guid,
        build.state,
        BuildState::Staged,
        Vec::new(),
    )
    .await?;
    let droplet_moved = db::transition::<Droplet>(
        &mut *tx,
        droplet_guid,
        droplet.state,
        DropletState::Staged,
        vec![
            ("process_types", db::json_text(&result.process_types)),
            (
                "buildpacks",
                Val::from(serde_json::Value::Array(buildpacks).to_string()),
            ),
            (
                "execution_metadata",
                result.execution_metadata.as_str().into(),
            ),
            ("docker_image", Val::Text(docker.then(|| image.clone()))),
            ("sidecars", db::json_text(&result.sidecars)),
        ],
    )
    .await?;
    if !build_moved || !droplet_moved {
        tx.rollback().await?;
        tracing::info!(build_guid = %build.guid, "build changed while recording its staging result");
        return Ok(Ok(()));
    }
    tx.commit().await?;
    tracing::info!(build_guid = %build.guid, droplet_guid = %droplet_guid, "build staged");
    Ok(Ok(()))
}

/// The zips of a build's git buildpacks go once its staging is over.
async fn remove_git_buildpacks(ctx: &Ctx, build: &Build) -> ApiResult<()> {
    for (index, name) in build.buildpacks.iter().enumerate() {
        if super::custom_buildpack_kind(name) == Some(super::CustomKind::Git) {
            let id = crate::uploads::custom_buildpack_id(&build.guid, index);
            ctx.blobstore
                .delete(&crate::uploads::custom_buildpack_key(&id))
                .await?;
        }
    }
    Ok(())
}

/// Records a completed staging Task's outcome on its build and droplet.
async fn record_staging(ctx: &Ctx, task: &Task) -> ApiResult<()> {
    let Some(build) = db::find::<Build>(&ctx.pool, &task.task_guid).await? else {
        return Ok(());
    };
    if build.state != BuildState::Staging {
        return Ok(());
    }
    if task.failed {
        fail_build(ctx, &build.guid, &failure_error(&task.failure_reason)).await?;
    } else {
        let outcome = match serde_json::from_str::<StagingResult>(&task.result) {
            Ok(result) => succeed_build(ctx, &build, &result).await?,
            Err(e) => Err(format!(
                "StagingError - Staging error: malformed staging result: {e}"
            )),
        };
        if let Err(error) = outcome {
            fail_build(ctx, &build.guid, &error).await?;
        } else {
            ctx.api_log(
                &build.app_guid,
                &format!("Staging complete for build {}", build.guid),
            );
        }
    }
    remove_git_buildpacks(ctx, &build).await
}

/// A BBS Task of the API's changed: a completed staging Task or task is
/// taken over (COMPLETED → RESOLVING, so exactly one resolver records
/// it), its outcome recorded, and the Task deleted, as Diego's
/// resolving/delete protocol has it; a task that started is marked so.
pub async fn handle_task(ctx: &Ctx, task: &Task) -> ApiResult<()> {
    let ours = task.domain == STAGING_DOMAIN || task.domain == TASKS_DOMAIN;
    if !ours {
        return Ok(());
    }
    if task.state != TaskState::Completed {
        return if task.domain == TASKS_DOMAIN {
            super::task::follow(ctx, task).await
        } else {
            Ok(())
        };
    }
    match ctx.bbs.resolving_task(&task.task_guid).await {
        Ok(()) => {}
        // Another resolver won, or the task is gone.
        Err(BbsError::InvalidTransition { .. } | BbsError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if task.domain == STAGING_DOMAIN {
        record_staging(ctx, task).await?;
    } else {
        super::task::record_outcome(ctx, task).await?;
    }
    ignore_not_found(ctx.bbs.delete_task(&task.task_guid).await)?;
    Ok(())
}

/// How long a STAGING build may exist without its Task before it is
/// considered lost (covers the moment between the build row and the Task).
pub const LOST_TASK_GRACE_SECS: i64 = 60;

/// Every completed staging Task handled, and STAGING builds whose Task is
/// gone failed: those already STAGING when this Api opened (the restart
/// interrupted them), or older than [`LOST_TASK_GRACE_SECS`] (the BBS lost
/// it). A build is never left STAGING forever.
pub async fn resync_staging(ctx: &Ctx) -> ApiResult<()> {
    for domain in [STAGING_DOMAIN, TASKS_DOMAIN] {
        for task in &ctx.bbs.tasks(Some(domain)).await? {
            if let Err(error) = handle_task(ctx, task).await {
                tracing::warn!(task_guid = %task.task_guid, %error, "recording a task result failed");
            }
        }
    }
    fail_lost_tasks(ctx).await?;
    let now = util::unix_now();
    for build in db::where_eq::<Build>(&ctx.pool, "state", BuildState::Staging.as_str()).await? {
        let created = util::parse_time(&build.created_at).unwrap_or(0);
        if !ctx.inherited_staging.contains(&build.guid) && now - created < LOST_TASK_GRACE_SECS {
            continue;
        }
        match ctx.bbs.task_by_guid(&build.guid).await {
            Err(BbsError::NotFound { .. }) => {
                tracing::warn!(build_guid = %build.guid, "staging task is gone");
                fail_build(
                    ctx,
                    &build.guid,
                    "StagingError - Staging error: staging was interrupted (the staging task no longer exists)",
                )
                .await?;
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Tasks the API still shows as not ended whose BBS Task is gone (lost
/// with a BBS's data, or deleted before their outcome was recorded) fail,
/// after the same grace as builds.
async fn fail_lost_tasks(ctx: &Ctx) -> ApiResult<()> {
    let open = [
        AppTaskState::Pending,
        AppTaskState::Running,
        AppTaskState::Canceling,
    ]
    .map(|s| s.as_str().to_string())
    .to_vec();
    let now = util::unix_now();
    for t in db::list::<db::Task>(&ctx.pool, &[db::Cond::In("state", open)]).await? {
        let created = util::parse_time(&t.created_at).unwrap_or(0);
        if now - created < LOST_TASK_GRACE_SECS {
            continue;
        }
        match ctx.bbs.task_by_guid(&t.guid).await {
            Err(BbsError::NotFound { .. }) => {
                tracing::warn!(task_guid = %t.guid, "task's bbs task is gone");
                let reason = Some(super::task::LOST_TASK_REASON);
                super::task::move_task(ctx, &t.guid, AppTaskState::Failed, reason).await?;
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Everything the event loop does again when it may have missed events.
async fn resync(ctx: &Ctx) {
    if let Err(error) = resync_staging(ctx).await {
        tracing::warn!(%error, "staging resync failed");
    }
    if let Err(error) = super::crashes::resync(ctx).await {
        tracing::warn!(%error, "crash resync failed");
    }
}

async fn on_event(ctx: &Ctx, event: BbsEvent) {
    match event {
        BbsEvent::TaskChanged { task } => {
            if let Err(error) = handle_task(ctx, &task).await {
                tracing::warn!(task_guid = %task.task_guid, %error, "recording a task result failed");
            }
        }
        BbsEvent::ActualLrpCrashed {
            key,
            instance_key,
            crash_count,
            crash_reason,
            since,
        } => {
            let crash = super::crashes::Crash {
                key: &key,
                instance_guid: &instance_key.instance_guid,
                cell_id: &instance_key.cell_id,
                crash_count,
                reason: &crash_reason,
                since,
            };
            if let Err(error) = super::crashes::record(ctx, &crash).await {
                tracing::warn!(process_guid = %key.process_guid, %error, "recording a crash failed");
            }
        }
        BbsEvent::Lagged => resync(ctx).await,
        _ => {}
    }
}

pub fn spawn_loops(ctx: Shared, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
    let staging = {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut events = ctx.bbs.subscribe();
            resync(&ctx).await;
            let mut tick = tokio::time::interval(STAGING_RESYNC);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(error) = resync_staging(&ctx).await {
                            tracing::warn!(%error, "staging resync failed");
                        }
                    }
                    event = events.next() => match event {
                        Some(event) => on_event(&ctx, event).await,
                        None => {
                            // The stream ended (BBS restarting?): resubscribe after a pause.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            events = ctx.bbs.subscribe();
                            resync(&ctx).await;
                        }
                    },
                }
            }
        })
    };
    let processes = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROCESS_RECONCILE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = reconcile(&ctx).await {
                        tracing::warn!(%error, "process reconcile failed");
                    }
                }
            }
        }
    });
    vec![staging, processes]
}

#[cfg(test)]
mod tests {
    use super::failure_error;

    #[test]
    fn placement_failures_get_cloud_controllers_ids() {
        assert_eq!(
            failure_error("insufficient resources: memory"),
            "InsufficientResources - insufficient resources: memory"
        );
        assert_eq!(
            failure_error("found no compatible cell for required rootfs"),
            "NoCompatibleCell - found no compatible cell for required rootfs"
        );
        assert_eq!(
            failure_error("not started within time limit"),
            "StagingError - Staging error: not started within time limit"
        );
    }
}
