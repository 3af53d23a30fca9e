//! Task actions (Cloud Controller's `TaskCreate` and `TaskCancel`): a
//! one-off command run with the app's droplet and environment as a BBS
//! Task in the `cf-tasks` domain. What happens to it afterwards follows
//! the BBS (`diego::task`).

use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, App, Droplet, Process, Task, Val};
use crate::diego;
use crate::error::{ApiError, ApiResult};
use crate::messages::CreateTask;
use crate::util;
use kiln_bbs::BbsError;
use kiln_model::{AppTaskState, DropletState, TASKS_DOMAIN};
use serde_json::json;

/// Memory and disk a task gets when neither the request nor a template
/// process names them (Kiln's process defaults).
const DEFAULT_MEMORY_MB: i64 = 256;
const DEFAULT_DISK_MB: i64 = 1024;

/// The droplet a task runs: the one named, else the app's current one.
async fn task_droplet(ctx: &Ctx, app: &App, named: Option<&str>) -> ApiResult<Droplet> {
    if let Some(guid) = named {
        return db::find::<Droplet>(&ctx.pool, guid)
            .await?
            .filter(|d| d.app_guid == app.guid && d.state == DropletState::Staged)
            .ok_or_else(|| ApiError::not_found("Droplet"));
    }
    let none = || {
        ApiError::unprocessable(
            "Task must have a droplet. Specify droplet or assign current droplet to app.",
        )
    };
    let guid = app.droplet_guid.as_deref().ok_or_else(none)?;
    db::find::<Droplet>(&ctx.pool, guid).await?.ok_or_else(none)
}

/// The process a task copies (`template.process.guid`), one of the app's.
async fn template_process(ctx: &Ctx, app: &App, msg: &CreateTask) -> ApiResult<Option<Process>> {
    let Some(t) = &msg.template else {
        return Ok(None);
    };
    db::find::<Process>(&ctx.pool, &t.process.guid)
        .await?
        .filter(|p| p.app_guid == app.guid)
        .map(Some)
        .ok_or_else(|| ApiError::not_found("Process"))
}

/// A process's command: its own, else its droplet's for its type.
fn process_command(p: &Process, droplet: &Droplet) -> Option<String> {
    p.command
        .clone()
        .or_else(|| droplet.process_types.get(&p.r#type).cloned())
        .filter(|c| !c.is_empty())
}

/// A task name CC would pick: 8 random hex digits.
fn random_name() -> String {
    hex::encode(util::random_bytes(4))
}

/// Creates a task and desires its BBS Task (`POST /v3/apps/:guid/tasks`).
pub async fn create(ctx: &Ctx, app_guid: &str, msg: CreateTask) -> ApiResult<Task> {
    let _ = msg.log_rate_limit_in_bytes_per_second;
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let app = db::get::<App>(&ctx.pool, app_guid).await?;
    msg.validate()?;
    let droplet = task_droplet(ctx, &app, msg.droplet_guid.as_deref()).await?;
    super::quotas::check_task(ctx, &app).await?;
    let template = template_process(ctx, &app, &msg).await?;
    let command = match (&msg.command, &template) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) => process_command(p, &droplet).ok_or_else(|| {
            ApiError::unprocessable("The task request is invalid: command presence")
        })?,
        (None, None) => unreachable!("validate requires a command or a template"),
    };
    let memory = msg
        .memory_in_mb
        .or(template.as_ref().map(|p| p.memory_in_mb))
        .unwrap_or(DEFAULT_MEMORY_MB);
    let disk = msg
        .disk_in_mb
        .or(template.as_ref().map(|p| p.disk_in_mb))
        .unwrap_or(DEFAULT_DISK_MB);
    let name = msg.name.clone().unwrap_or_else(random_name);
    let guid = util::new_guid();
    let now = util::now();

    let event = audit::app_event(
        &ctx.pool,
        &app,
        types::APP_TASK_CREATE,
        json!({
            "task_guid": guid,
            "request": {"name": name, "memory_in_mb": memory, "command": audit::PRIVATE_DATA_HIDDEN},
        }),
    )
    .await?;
    let mut tx = ctx.pool.begin().await?;
    let sequence_id = db::next_task_sequence_id(&mut tx, app_guid).await?;
    db::insert::<Task>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("app_guid", app_guid.into()),
            ("name", name.as_str().into()),
            ("command", command.into()),
            ("state", AppTaskState::Pending.as_str().into()),
            ("memory_in_mb", memory.into()),
            ("disk_in_mb", disk.into()),
            ("droplet_guid", droplet.guid.as_str().into()),
            ("sequence_id", sequence_id.into()),
            ("failure_reason", Val::Text(None)),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    let task = db::get::<Task>(&ctx.pool, &guid).await?;
    submit(ctx, &app, &task, &droplet).await?;
    tracing::info!(app_guid, task_guid = %guid, sequence_id, "task created");
    db::get::<Task>(&ctx.pool, &guid).await
}

/// Desires the task's BBS Task; a task the BBS refuses fails at once
/// with Cloud Controller's reason, and the caller sees the BBS's error.
async fn submit(ctx: &Ctx, app: &App, task: &Task, droplet: &Droplet) -> ApiResult<()> {
    let submitted = match diego::task::definition(ctx, app, task, droplet).await {
        Ok(definition) => ctx
            .bbs
            .desire_task(&task.guid, TASKS_DOMAIN, definition)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = submitted {
        let reason = Some("Unable to request task to be run");
        diego::task::move_task(ctx, &task.guid, AppTaskState::Failed, reason).await?;
        return Err(e);
    }
    Ok(())
}

/// Cancels a task (`POST /v3/tasks/:guid/actions/cancel`): CANCELING with
/// its audit event, then the BBS cancels it and the outcome (FAILED, "task
/// was cancelled") comes back as for any task.
pub async fn cancel(ctx: &Ctx, guid: &str) -> ApiResult<Task> {
    let task = db::get::<Task>(&ctx.pool, guid).await?;
    if task.state.is_terminal() {
        return Err(ApiError::unprocessable(format!(
            "Task state is {} and therefore cannot be canceled",
            task.state
        )));
    }
    if task.state != AppTaskState::Canceling {
        let app = db::get::<App>(&ctx.pool, &task.app_guid).await?;
        let event = audit::app_event(
            &ctx.pool,
            &app,
            types::APP_TASK_CANCEL,
            json!({
                "task_guid": task.guid,
                "request": {"name": task.name, "memory_in_mb": task.memory_in_mb, "command": audit::PRIVATE_DATA_HIDDEN},
            }),
        )
        .await?;
        let mut tx = ctx.pool.begin().await?;
        let moved = db::transition::<Task>(
            &mut *tx,
            guid,
            task.state,
            AppTaskState::Canceling,
            Vec::new(),
        )
        .await?;
        if !moved {
            // It moved meanwhile (ended, or another cancel): look again.
            tx.rollback().await?;
            return Box::pin(cancel(ctx, guid)).await;
        }
        audit::record(&mut *tx, event).await?;
        tx.commit().await?;
    }
    match ctx.bbs.cancel_task(guid).await {
        Ok(()) => {}
        // Already completed: its outcome is on its way.
        Err(BbsError::InvalidTransition { .. }) => {}
        Err(BbsError::NotFound { .. }) => {
            let reason = Some(diego::task::LOST_TASK_REASON);
            diego::task::move_task(ctx, guid, AppTaskState::Failed, reason).await?;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(task_guid = guid, "task cancel requested");
    db::get::<Task>(&ctx.pool, guid).await
}
