//! A Task's life on the cell: create the container directory, download
//! (in parallel), run the one process, read the result file, upload (in
//! parallel), report the outcome, destroy the container (after the
//! report, as Diego's rep completes a task before deleting its container:
//! a staging build is not kept waiting on the cleanup). The whole of it runs under the task's
//! `timeout_ms`; on expiry the process gets TERM, then KILL, and the task
//! fails with `exceeded <N>s timeout`. Failure reasons use the contracts'
//! wording, since Cloud Controller turns them into build errors.

use super::{CellCtx, Process, human_duration, human_size};
use crate::container::ContainerDir;
use crate::download::Downloaded;
use crate::envs;
use crate::logs::LogTarget;
use crate::runtime::valid_id;
use crate::upload;
use futures_util::future::join_all;
use kiln_image::ImageError;
use kiln_model::bbs::{ResolveImageAction, Task};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first bytes of the result file that become the task's `result`.
pub const RESULT_LIMIT: u64 = 10 * 1024;

/// How a task ended, for `complete_task`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub failed: bool,
    pub failure_reason: String,
    pub result: String,
}

impl TaskOutcome {
    fn failed(reason: impl Into<String>) -> TaskOutcome {
        TaskOutcome {
            failed: true,
            failure_reason: reason.into(),
            result: String::new(),
        }
    }
}

enum Stop {
    /// The cell was told to stop the task (cancelled, or shutting down).
    Stopped,
    TimedOut,
}

/// Runs `task` to its end. `None` when there is nothing left to report:
/// it was stopped (the BBS already knows, or the cell is going away), or
/// its completion was reported here, before the container was destroyed.
#[tracing::instrument(name = "task", skip_all, fields(task_guid = %task.task_guid))]
pub async fn run(ctx: Arc<CellCtx>, task: Task, stop: CancellationToken) -> Option<TaskOutcome> {
    let id = task.task_guid.clone();
    if !valid_id(&id) {
        return Some(TaskOutcome::failed(format!("invalid task guid {id:?}")));
    }
    let dir = ContainerDir::new(&ctx.containers_dir, &id);
    let timeout_ms = task.definition.timeout_ms;
    let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
    let log = LogTarget {
        sink: ctx.logs.clone(),
        source_id: task.definition.log_guid.clone(),
        source_type: task.definition.log_source.clone(),
        instance_id: "0".into(),
    };
    let started = std::time::Instant::now();
    tracing::info!("task starting");
    let outcome = match &task.definition.resolve_image {
        // No container: nothing to destroy.
        Some(action) => resolve_image(&ctx, &task, action, &log, deadline, &stop)
            .await
            .map(Some),
        None => {
            let outcome = execute(&ctx, &task, &dir, &log, deadline, &stop).await;
            let outcome = report_early(&ctx, &id, outcome, timeout_ms).await;
            // A staging task's instance usually starts next: its teardown
            // waits for that start (see `quiet`) unless the completion
            // still has to be reported after it.
            ctx.quiet.touch();
            ctx.destroy(&id, &dir, !matches!(outcome, Ok(Some(_))))
                .await;
            outcome
        }
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(Stop::Stopped) => None,
        Err(Stop::TimedOut) => Some(TaskOutcome::failed(format!(
            "exceeded {} timeout",
            human_duration(timeout_ms)
        ))),
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        failed = outcome.as_ref().map(|o| o.failed),
        failure_reason = outcome.as_ref().map(|o| o.failure_reason.as_str()),
        "task finished"
    );
    outcome
}

/// Completes the task on the BBS before its container is destroyed. What
/// the BBS could not take (it is away) is left for the rep, which retries;
/// `Ok(None)` when it was taken, or refused for good (the task moved on).
async fn report_early(
    ctx: &CellCtx,
    task_guid: &str,
    outcome: Result<TaskOutcome, Stop>,
    timeout_ms: u64,
) -> Result<Option<TaskOutcome>, Stop> {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(Stop::TimedOut) => {
            TaskOutcome::failed(format!("exceeded {} timeout", human_duration(timeout_ms)))
        }
        Err(Stop::Stopped) => return Err(Stop::Stopped),
    };
    if ctx.shutdown.is_cancelled() {
        return Ok(Some(outcome));
    }
    let cell_id = &ctx.config.cell_id;
    let reported = ctx
        .bbs
        .complete_task(
            task_guid,
            cell_id,
            outcome.failed,
            &outcome.failure_reason,
            &outcome.result,
        )
        .await;
    match reported {
        Ok(()) => Ok(None),
        Err(kiln_bbs_client::BbsError::Unavailable(_)) => Ok(Some(outcome)),
        Err(error) => {
            tracing::info!(%cell_id, %error, "task completion not taken");
            Ok(None)
        }
    }
}

/// Waits for `work` unless the deadline passes or the task is stopped.
async fn bounded<T>(
    work: impl Future<Output = T>,
    deadline: Option<Instant>,
    stop: &CancellationToken,
) -> Result<T, Stop> {
    let expiry = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop.cancelled() => Err(Stop::Stopped),
        _ = expiry => Err(Stop::TimedOut),
        value = work => Ok(value),
    }
}

/// A docker staging Task: the image resolved on the host and its layers
/// pulled and verified into the cell's cache, its staging result the
/// Task's result. A failure's reason is the registry client's
/// message, which says which failure it is (not found, unauthorized,
/// unreachable, another platform, a digest mismatch, a time-out).
async fn resolve_image(
    ctx: &CellCtx,
    task: &Task,
    action: &ResolveImageAction,
    log: &LogTarget,
    deadline: Option<Instant>,
    stop: &CancellationToken,
) -> Result<TaskOutcome, Stop> {
    let def = &task.definition;
    if !def.downloads.is_empty() || !def.uploads.is_empty() || !def.run.path.is_empty() {
        return Ok(TaskOutcome::failed(
            "a Task that resolves an image does nothing else",
        ));
    }
    log.out("Staging...");
    let failed = |e: ImageError| {
        let reason = format!("Docker image {}: {e}", action.image);
        log.err(format!("Staging failed: {reason}"));
        Ok(TaskOutcome::failed(reason))
    };
    let image = match bounded(ctx.images.stage(action), deadline, stop).await? {
        Ok(image) => image,
        Err(e) => return failed(e),
    };
    log.out(format!(
        "Docker image {} resolved to {}",
        action.image, image.digest
    ));
    match bounded(ctx.images.pull(&image, action), deadline, stop).await? {
        Ok(layers) => log.out(format!("Docker image layers verified ({layers})")),
        Err(e) => return failed(e),
    }
    let result = crate::image::staging_result(&image);
    log.out("Staging complete");
    Ok(TaskOutcome {
        failed: false,
        failure_reason: String::new(),
        result: serde_json::to_string(&result).expect("staging result serializes"),
    })
}

async fn execute(
    ctx: &CellCtx,
    task: &Task,
    dir: &ContainerDir,
    log: &LogTarget,
    deadline: Option<Instant>,
    stop: &CancellationToken,
) -> Result<TaskOutcome, Stop> {
    let def = &task.definition;
    let id = task.task_guid.as_str();
    if let Err(reason) = ctx.create_container_dir(dir, def.disk_mb).await {
        return Ok(TaskOutcome::failed(reason));
    }
    // Staging needs the outside (buildpacks fetch dependencies) but no
    // inbound port.
    if let Err(reason) = ctx
        .attach_network(id, None, crate::network::CONTAINER_PORT)
        .await
    {
        return Ok(TaskOutcome::failed(reason));
    }

    let downloads = def.downloads.iter().map(|action| async move {
        log.out(format!("Downloading {}...", action.artifact));
        let result = ctx.downloader.run(action, dir).await;
        match &result {
            Ok(Downloaded::Extracted { size, .. }) => log.out(format!(
                "Downloaded {} ({})",
                action.artifact,
                human_size(*size)
            )),
            Ok(Downloaded::Missing) => log.out(format!("Skipped {} (not found)", action.artifact)),
            Err(_) => {}
        }
        result.map_err(|e| format!("Downloading {} failed: {e}", action.artifact))
    });
    let results = bounded(join_all(downloads), deadline, stop).await?;
    if let Some(Err(reason)) = results.into_iter().find(Result::is_err) {
        log.err(reason.clone());
        return Ok(TaskOutcome::failed(reason));
    }

    if let Err(reason) = ctx.finish_container_dir(id, dir, &def.run) {
        return Ok(TaskOutcome::failed(reason));
    }
    // A docker app's task runs in its image.
    let creds = (def.image_username.as_str(), &def.image_password);
    let root = match bounded(
        ctx.prepare_root(&def.rootfs, creds, dir, log),
        deadline,
        stop,
    )
    .await?
    {
        Ok(root) => root,
        Err(reason) => return Ok(TaskOutcome::failed(reason)),
    };
    let env = envs::build(&def.env, &def.run.env, None);
    let spec = match ctx.spec(id, dir, &def.run, env, def.memory_mb, &root) {
        Ok(spec) => spec,
        Err(reason) => return Ok(TaskOutcome::failed(reason)),
    };
    let mut process = match Process::start(ctx.runtime.as_ref(), &spec, log).await {
        Ok(p) => p,
        Err(e) => return Ok(TaskOutcome::failed(format!("starting container: {e}"))),
    };
    let code = match bounded(process.wait(), deadline, stop).await {
        Ok(code) => code,
        Err(why) => {
            let grace = match why {
                Stop::Stopped => ctx.grace(),
                // Timed out: Diego's graceful interval is not owed past
                // the deadline, but a short TERM window lets it clean up.
                Stop::TimedOut => Duration::from_secs(1),
            };
            process.stop(ctx.runtime.as_ref(), id, grace).await;
            process.drain_logs().await;
            return Err(why);
        }
    };
    process.drain_logs().await;
    tracing::info!(
        exit_status = code,
        run_ms = process.started.elapsed().as_millis() as u64,
        "task process exited"
    );
    if code != 0 {
        let (reason, oom) = ctx.exit_description(id, code).await;
        if oom {
            log.cell().err(reason.clone());
        }
        return Ok(TaskOutcome::failed(reason));
    }

    let result = if def.result_file.is_empty() {
        String::new()
    } else {
        match read_result(dir, &def.result_file) {
            Ok(r) => r,
            Err(e) => {
                return Ok(TaskOutcome::failed(format!(
                    "Failed to read result file {}: {e}",
                    def.result_file
                )));
            }
        }
    };

    if !def.uploads.is_empty() {
        let names: Vec<&str> = def.uploads.iter().map(|u| u.artifact.as_str()).collect();
        log.out(format!("Uploading {}...", names.join(", ")));
        let uploads = def.uploads.iter().map(|action| async move {
            let sent = upload::upload(&ctx.http, action, dir)
                .await
                .map_err(|e| format!("Uploading {} failed: {e}", action.artifact))?;
            log.out(format!(
                "Uploaded {} ({})",
                action.artifact,
                human_size(sent)
            ));
            Ok::<_, String>(())
        });
        let results = bounded(join_all(uploads), deadline, stop).await?;
        if let Some(Err(reason)) = results.into_iter().find(Result::is_err) {
            log.err(reason.clone());
            return Ok(TaskOutcome::failed(reason));
        }
        log.out("Uploading complete");
    }
    Ok(TaskOutcome {
        failed: false,
        failure_reason: String::new(),
        result,
    })
}

fn read_result(dir: &ContainerDir, path: &str) -> Result<String, String> {
    let file = dir.open_written_file(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(RESULT_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
