//! Cloud Controller ↔ BBS: recording staging results (Task completion,
//! with a periodic resync) and keeping each started app's processes desired
//! as DesiredLrps (on every change, plus a periodic reconcile).

use crate::db::{self, App, Build, Buildpack, Droplet, Process};
use crate::error::ApiResult;
use crate::{Ctx, Shared, signing, util};
use futures_util::StreamExt;
use kiln_bbs::BbsError;
use kiln_logs::LogSink;
use kiln_model::bbs::{
    ArtifactKind, BbsEvent, Checksum, DesiredLrp, DesiredLrpUpdate, DownloadAction, EnvVar,
    HealthCheck, RunAction, Task,
};
use kiln_model::logs::{LogEnvelope, MessageType};
use kiln_model::staging::{StagingFailure, StagingResult};
use kiln_model::{
    APPS_DOMAIN, BuildState, DropletState, LIFECYCLE_BINARY_PATH, STAGING_DOMAIN, TaskState,
};
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const STAGING_RESYNC: Duration = Duration::from_secs(10);
pub const PROCESS_RECONCILE: Duration = Duration::from_secs(30);

/// Emits an `API` log line for an app.
pub fn api_log(ctx: &Ctx, app_guid: &str, message: &str) {
    ctx.logs.emit(LogEnvelope {
        timestamp: util::now_nanos(),
        source_id: app_guid.to_string(),
        instance_id: String::new(),
        source_type: kiln_model::LOG_SOURCE_API.into(),
        message_type: MessageType::Out,
        message: message.to_string(),
    });
}

pub fn lrp_guid(p: &Process) -> String {
    format!("{}-{}", p.guid, p.version)
}

fn ignore_not_found(r: Result<(), BbsError>) -> Result<(), BbsError> {
    match r {
        Err(BbsError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// Removes the DesiredLrps of a process, except `keep`.
pub async fn remove_lrps_of(ctx: &Ctx, process_guid: &str, keep: Option<&str>) -> ApiResult<()> {
    let prefix = format!("{process_guid}-");
    for lrp in ctx.bbs.desired_lrps(Some(APPS_DOMAIN)).await? {
        if lrp.process_guid.starts_with(&prefix) && Some(lrp.process_guid.as_str()) != keep {
            ignore_not_found(ctx.bbs.remove_desired_lrp(&lrp.process_guid).await)?;
            tracing::info!(process_guid = %lrp.process_guid, "desired lrp removed");
        }
    }
    Ok(())
}

/// The DesiredLrp of one process, per the contract with the cell.
async fn desired_lrp(
    ctx: &Ctx,
    app: &App,
    p: &Process,
    droplet: &Droplet,
) -> ApiResult<DesiredLrp> {
    // The app-level VCAP_APPLICATION (as `/v3/apps/:guid/env` shows it),
    // narrowed to this process's routes, plus what an instance also gets.
    let mut vcap = crate::apps::vcap_application(ctx, app, Some(&p.r#type)).await?;
    vcap["limits"] = json!({"fds": 16384, "mem": p.memory_in_mb, "disk": p.disk_in_mb});
    vcap["process_id"] = json!(p.guid);
    vcap["process_type"] = json!(p.r#type);
    vcap["version"] = json!(p.version);
    vcap["application_version"] = json!(p.version);
    let mut env = vec![
        EnvVar::new("VCAP_APPLICATION", vcap.to_string()),
        EnvVar::new("MEMORY_LIMIT", format!("{}m", p.memory_in_mb)),
        EnvVar::new("VCAP_SERVICES", "{}"),
        EnvVar::new("LANG", "en_US.UTF-8"),
        EnvVar::new("VCAP_APP_HOST", "0.0.0.0"),
    ];
    env.extend(
        app.environment_variables
            .iter()
            .map(|(k, v)| EnvVar::new(k, v)),
    );
    let command = match &p.command {
        Some(c) => c.clone(),
        None if p.r#type == "web" => String::new(),
        None => droplet
            .process_types
            .get(&p.r#type)
            .cloned()
            .unwrap_or_default(),
    };
    let health_check = match p.health_check_type.as_str() {
        "http" => HealthCheck::Http {
            endpoint: p
                .health_check_endpoint
                .clone()
                .unwrap_or_else(|| "/".into()),
        },
        "process" => HealthCheck::Process,
        _ => HealthCheck::Port,
    };
    Ok(DesiredLrp {
        process_guid: lrp_guid(p),
        domain: APPS_DOMAIN.into(),
        instances: p.instances.max(0) as u32,
        rootfs: format!("preloaded:{}", droplet.stack),
        memory_mb: p.memory_in_mb.max(0) as u64,
        disk_mb: p.disk_in_mb.max(0) as u64,
        env: Vec::new(),
        setup: vec![DownloadAction {
            artifact: "droplet".into(),
            from: signing::sign(
                ctx,
                "GET",
                &format!("/internal/v4/droplets/{}/download", droplet.guid),
                signing::LRP_URL_SECS,
            ),
            to: "/home/vcap".into(),
            kind: ArtifactKind::Tgz,
            cache_key: Some(format!("droplet-{}", droplet.guid)),
            checksum: droplet.sha256.as_ref().map(|v| Checksum {
                algorithm: "sha256".into(),
                value: v.clone(),
            }),
            optional: false,
        }],
        action: RunAction {
            path: LIFECYCLE_BINARY_PATH.into(),
            args: vec![
                "lifecycle".into(),
                "launcher".into(),
                "app".into(),
                command,
                String::new(),
            ],
            env,
            dir: Some("/home/vcap".into()),
            user: kiln_model::CONTAINER_USER.into(),
        },
        health_check,
        start_timeout_ms: p
            .health_check_timeout
            .filter(|t| *t > 0)
            .map_or(kiln_model::DEFAULT_START_TIMEOUT_MS, |t| t as u64 * 1000),
        routes: crate::routes::app_routes(ctx, &app.guid, Some(&p.r#type)).await?,
        log_guid: app.guid.clone(),
        log_source: format!("APP/PROC/{}", p.r#type.to_uppercase()),
        annotation:
            json!({"app_guid": app.guid, "process_type": p.r#type, "droplet_guid": droplet.guid})
                .to_string(),
    })
}

/// Makes the BBS run exactly what the app's processes want.
pub async fn sync_app(ctx: &Ctx, app_guid: &str) -> ApiResult<()> {
    let _guard = ctx.sync_lock.lock().await;
    sync_app_locked(ctx, app_guid).await
}

async fn sync_app_locked(ctx: &Ctx, app_guid: &str) -> ApiResult<()> {
    let Some(app) = db::find::<App>(&ctx.pool, app_guid).await? else {
        return Ok(());
    };
    let droplet = match &app.droplet_guid {
        Some(g) => db::find::<Droplet>(&ctx.pool, g).await?,
        None => None,
    };
    let existing = ctx.bbs.desired_lrps(Some(APPS_DOMAIN)).await?;
    for p in db::where_eq::<Process>(&ctx.pool, "app_guid", app_guid).await? {
        let want = lrp_guid(&p);
        let run = app.state == "STARTED" && p.instances > 0;
        let prefix = format!("{}-", p.guid);
        for lrp in existing
            .iter()
            .filter(|l| l.process_guid.starts_with(&prefix))
        {
            if !run || droplet.is_none() || lrp.process_guid != want {
                ignore_not_found(ctx.bbs.remove_desired_lrp(&lrp.process_guid).await)?;
                tracing::info!(process_guid = %lrp.process_guid, app_guid, "desired lrp removed");
            }
        }
        let Some(droplet) = droplet.as_ref().filter(|_| run) else {
            continue;
        };
        let desired = desired_lrp(ctx, &app, &p, droplet).await?;
        match existing.iter().find(|l| l.process_guid == want) {
            None => match ctx.bbs.desire_lrp(desired).await {
                Ok(()) => tracing::info!(process_guid = %want, app_guid, "desired lrp created"),
                Err(BbsError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            Some(current) => {
                if current.instances != desired.instances || current.routes != desired.routes {
                    let update = DesiredLrpUpdate {
                        instances: Some(desired.instances),
                        routes: Some(desired.routes),
                        annotation: None,
                    };
                    ctx.bbs.update_desired_lrp(&want, update).await?;
                    tracing::info!(process_guid = %want, app_guid, "desired lrp updated");
                }
            }
        }
    }
    Ok(())
}

/// Routes of an app changed: update its DesiredLrps.
pub async fn refresh_routes(ctx: &Ctx, app_guid: &str) -> ApiResult<()> {
    sync_app(ctx, app_guid).await
}

/// Several apps' routes may have changed.
pub async fn refresh_all_routes(ctx: &Ctx) -> ApiResult<()> {
    reconcile(ctx).await
}

/// Every app synced, and DesiredLrps of processes that no longer exist removed.
pub async fn reconcile(ctx: &Ctx) -> ApiResult<()> {
    let apps = db::all::<App>(&ctx.pool).await?;
    for app in &apps {
        sync_app(ctx, &app.guid).await?;
    }
    let _guard = ctx.sync_lock.lock().await;
    let processes = db::all::<Process>(&ctx.pool).await?;
    for lrp in ctx.bbs.desired_lrps(Some(APPS_DOMAIN)).await? {
        let known = processes.iter().any(|p| {
            lrp.process_guid.starts_with(&format!("{}-", p.guid))
                && apps.iter().any(|a| a.guid == p.app_guid)
        });
        if !known {
            ignore_not_found(ctx.bbs.remove_desired_lrp(&lrp.process_guid).await)?;
            tracing::info!(process_guid = %lrp.process_guid, "stale desired lrp removed");
        }
    }
    Ok(())
}

// ---- staging completion ----

/// Marks a STAGING build and its droplet FAILED with `error`. A build that
/// already left STAGING (another path recorded its outcome) is left alone.
pub async fn fail_build(ctx: &Ctx, build_guid: &str, error: &str) -> ApiResult<()> {
    // The app (and its builds) may have been deleted meanwhile.
    let Some(build) = db::find::<Build>(&ctx.pool, build_guid).await? else {
        return Ok(());
    };
    let from: BuildState = build.state.parse()?;
    if from != BuildState::Staging {
        return Ok(());
    }
    let to = from.transition_to(BuildState::Failed)?;
    let droplet = match &build.droplet_guid {
        Some(g) => db::find::<Droplet>(&ctx.pool, g).await?,
        None => None,
    };
    let now = util::now();
    let mut tx = ctx.pool.begin().await?;
    let won = sqlx::query(
        "UPDATE builds SET state = ?, error = ?, updated_at = ? WHERE guid = ? AND state = ?",
    )
    .bind(to.as_str())
    .bind(error)
    .bind(&now)
    .bind(build_guid)
    .bind(from.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !won {
        return Ok(());
    }
    if let Some(droplet) = &droplet {
        let from: DropletState = droplet.state.parse()?;
        if let Ok(to) = from.transition_to(DropletState::Failed) {
            sqlx::query(
                "UPDATE droplets SET state = ?, error = ?, updated_at = ? WHERE guid = ? AND state = ?",
            )
            .bind(to.as_str())
            .bind(error)
            .bind(&now)
            .bind(&droplet.guid)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    if let Some(droplet_guid) = &build.droplet_guid {
        ctx.blobstore
            .delete(&format!("droplets/{droplet_guid}"))
            .await?;
    }
    tracing::info!(build_guid, error, "build failed");
    api_log(
        ctx,
        &build.app_guid,
        &format!("Staging failed for build {build_guid}: {error}"),
    );
    Ok(())
}

fn failure_error(reason: &str) -> String {
    match reason
        .strip_prefix("Exited with status ")
        .and_then(|code| code.trim().parse::<i32>().ok())
    {
        Some(code) => StagingFailure::from_exit_code(code).build_error(""),
        None => format!("StagingError - Staging error: {reason}"),
    }
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
    if droplet.sha256.is_none()
        || !ctx
            .blobstore
            .exists(&format!("droplets/{droplet_guid}"))
            .await?
    {
        return Ok(Err(
            "StagingError - Staging error: the droplet was not uploaded".into(),
        ));
    }
    let admin = db::all::<Buildpack>(&ctx.pool).await?;
    let buildpacks: Vec<_> = result
        .lifecycle_metadata
        .buildpacks
        .iter()
        .map(|b| {
            let name = admin
                .iter()
                .find(|a| a.guid == b.key || a.name == b.key)
                .map_or_else(|| b.key.clone(), |a| a.name.clone());
            json!({
                "name": name,
                "detect_output": if result.lifecycle_metadata.detected_buildpack.is_empty() { serde_json::Value::Null } else { json!(result.lifecycle_metadata.detected_buildpack) },
                "buildpack_name": b.name,
                "version": if b.version.is_empty() { serde_json::Value::Null } else { json!(b.version) },
            })
        })
        .collect();
    let droplet_from: DropletState = droplet.state.parse()?;
    let droplet_to = droplet_from.transition_to(DropletState::Staged)?;
    let build_from: BuildState = build.state.parse()?;
    let build_to = build_from.transition_to(BuildState::Staged)?;
    let now = util::now();
    let mut tx = ctx.pool.begin().await?;
    // Both rows move only from the states read above; if either moved
    // meanwhile, nothing is recorded (the other outcome stands).
    let build_moved =
        sqlx::query("UPDATE builds SET state = ?, updated_at = ? WHERE guid = ? AND state = ?")
            .bind(build_to.as_str())
            .bind(&now)
            .bind(&build.guid)
            .bind(build_from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let droplet_moved = sqlx::query("UPDATE droplets SET state = ?, process_types = ?, buildpacks = ?, execution_metadata = ?, updated_at = ? WHERE guid = ? AND state = ?")
        .bind(droplet_to.as_str())
        .bind(serde_json::to_string(&result.process_types).unwrap_or_default())
        .bind(serde_json::Value::Array(buildpacks).to_string())
        .bind(&result.execution_metadata)
        .bind(&now)
        .bind(droplet_guid)
        .bind(droplet_from.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if build_moved != 1 || droplet_moved != 1 {
        tx.rollback().await?;
        tracing::info!(build_guid = %build.guid, "build changed while recording its staging result");
        return Ok(Ok(()));
    }
    tx.commit().await?;
    tracing::info!(build_guid = %build.guid, droplet_guid = %droplet_guid, "build staged");
    Ok(Ok(()))
}

/// Records a completed staging Task's outcome, then deletes the Task.
pub async fn handle_staging_task(ctx: &Ctx, task: &Task) -> ApiResult<()> {
    if task.domain != STAGING_DOMAIN || task.state != TaskState::Completed {
        return Ok(());
    }
    match ctx.bbs.resolving_task(&task.task_guid).await {
        Ok(()) => {}
        // Another resolver won, or the task is gone.
        Err(BbsError::InvalidTransition { .. } | BbsError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if let Some(build) = db::find::<Build>(&ctx.pool, &task.task_guid).await?
        && build.state == BuildState::Staging.as_str()
    {
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
                api_log(
                    ctx,
                    &build.app_guid,
                    &format!("Staging complete for build {}", build.guid),
                );
            }
        }
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
    let tasks = ctx.bbs.tasks(Some(STAGING_DOMAIN)).await?;
    for task in &tasks {
        if let Err(error) = handle_staging_task(ctx, task).await {
            tracing::warn!(task_guid = %task.task_guid, %error, "recording a staging result failed");
        }
    }
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

pub fn spawn_loops(ctx: Shared, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
    let staging = {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut events = ctx.bbs.subscribe();
            if let Err(error) = resync_staging(&ctx).await {
                tracing::warn!(%error, "staging resync failed");
            }
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
                        Some(BbsEvent::TaskChanged { task }) => {
                            if let Err(error) = handle_staging_task(&ctx, &task).await {
                                tracing::warn!(task_guid = %task.task_guid, %error, "recording a staging result failed");
                            }
                        }
                        Some(BbsEvent::Lagged) => {
                            if let Err(error) = resync_staging(&ctx).await {
                                tracing::warn!(%error, "staging resync failed");
                            }
                        }
                        Some(_) => {}
                        None => {
                            // The stream ended (BBS restarting?): resubscribe after a pause.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            events = ctx.bbs.subscribe();
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
