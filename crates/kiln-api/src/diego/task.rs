//! Tasks (`cf run-task`) on Diego: the BBS Task that runs one in the
//! `cf-tasks` domain, built from the same lifecycle pieces as a
//! DesiredLrp (the droplet's download, the launcher, the running
//! environment), and what the API records as the BBS Task moves.

use crate::context::Ctx;
use crate::db::{self, App, Droplet, Process, Task};
use crate::error::ApiResult;
use kiln_model::bbs::TaskDefinition;
use kiln_model::{AppTaskState, TaskState};

/// Where a task's output goes in the app's logs (`APP/TASK/<name>`).
pub fn log_source(task_name: &str) -> String {
    format!("APP/TASK/{task_name}")
}

/// The task as a one-off process of its app: the shape the lifecycle's
/// run actions and the running environment take.
fn as_process(t: &Task) -> Process {
    Process {
        guid: t.guid.clone(),
        app_guid: t.app_guid.clone(),
        r#type: "task".into(),
        command: Some(t.command.clone()),
        instances: 1,
        memory_in_mb: t.memory_in_mb,
        disk_in_mb: t.disk_in_mb,
        health_check_type: "process".into(),
        health_check_endpoint: None,
        health_check_timeout: None,
        health_check_invocation_timeout: None,
        version: t.guid.clone(),
        created_at: t.created_at.clone(),
        updated_at: t.updated_at.clone(),
    }
}

/// The BBS Task definition of a task: its app's droplet and environment,
/// its command, memory and disk; no timeout (Diego's tasks have none).
pub async fn definition(
    ctx: &Ctx,
    app: &App,
    t: &Task,
    droplet: &Droplet,
) -> ApiResult<TaskDefinition> {
    let actions = super::run_actions(ctx, app, &as_process(t), droplet).await?;
    Ok(TaskDefinition {
        rootfs: actions.rootfs,
        resolve_image: None,
        image_username: actions.image_username,
        image_password: actions.image_password,
        log_guid: app.guid.clone(),
        log_source: log_source(&t.name),
        memory_mb: t.memory_in_mb.max(0) as u64,
        disk_mb: t.disk_in_mb.max(0) as u64,
        env: Vec::new(),
        downloads: actions.downloads,
        run: actions.run,
        uploads: actions.uploads,
        result_file: String::new(),
        timeout_ms: 0,
    })
}

/// Moves a task by compare-and-set, re-reading and retrying when another
/// writer moved it first (a cancel racing a completion). A task already
/// past the move (terminal, or `to` not reachable) is left alone.
pub async fn move_task(
    ctx: &Ctx,
    guid: &str,
    to: AppTaskState,
    failure_reason: Option<&str>,
) -> ApiResult<bool> {
    for _ in 0..3 {
        let Some(t) = db::find::<Task>(&ctx.pool, guid).await? else {
            return Ok(false);
        };
        if t.state == to || t.state.transition_to(to).is_err() {
            return Ok(false);
        }
        let also = vec![("failure_reason", failure_reason.into())];
        if db::transition::<Task>(&ctx.pool, guid, t.state, to, also).await? {
            tracing::info!(task_guid = guid, state = %to, failure_reason, "task moved");
            return Ok(true);
        }
    }
    Ok(false)
}

/// A BBS Task of the `cf-tasks` domain moved: RUNNING marks the task
/// running; a completion is the caller's (it resolves the BBS Task first).
pub async fn follow(ctx: &Ctx, task: &kiln_model::bbs::Task) -> ApiResult<()> {
    if task.state == TaskState::Running {
        move_task(ctx, &task.task_guid, AppTaskState::Running, None).await?;
    }
    Ok(())
}

/// Records a completed BBS Task's outcome on its task: SUCCEEDED, or
/// FAILED with the BBS's failure reason.
pub async fn record_outcome(ctx: &Ctx, task: &kiln_model::bbs::Task) -> ApiResult<()> {
    if task.failed {
        move_task(
            ctx,
            &task.task_guid,
            AppTaskState::Failed,
            Some(&task.failure_reason),
        )
        .await?;
    } else {
        move_task(ctx, &task.task_guid, AppTaskState::Succeeded, None).await?;
    }
    Ok(())
}

/// Cloud Controller's reason for a task whose BBS Task is gone.
pub const LOST_TASK_REASON: &str = "Unable to find task";
