//! Process actions: create one for an app, change its command and health
//! check, scale it.

use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, App, Process, Val};
use crate::diego;
use crate::error::{ApiError, ApiResult};
use crate::messages::{ScaleProcess, UpdateProcess};
use crate::util;
use kiln_store::Executor;
use serde_json::{Value, json};

/// A process event (CC's `ProcessEventRepository`): about the app, naming
/// the process, with the request; the `API` log line CC writes with it.
async fn process_event(
    ctx: &Ctx,
    p: &Process,
    kind: &'static str,
    request: Value,
) -> ApiResult<audit::Event> {
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    let data = json!({"process_guid": p.guid, "process_type": p.r#type, "request": request});
    audit::app_event(&ctx.pool, &app, kind, data).await
}

/// Creates a process of `ptype` for an app (web: port check); returns its guid.
pub async fn insert<'e>(
    exec: impl Executor<'e>,
    app_guid: &str,
    ptype: &str,
    instances: i64,
    health_check: Option<&str>,
) -> ApiResult<String> {
    let guid = util::new_guid();
    let now = util::now();
    let hc = health_check.unwrap_or(if ptype == "web" { "port" } else { "process" });
    db::insert::<Process>(
        exec,
        vec![
            ("guid", guid.as_str().into()),
            ("app_guid", app_guid.into()),
            ("type", ptype.into()),
            ("command", Val::Text(None)),
            ("instances", instances.into()),
            ("memory_in_mb", 256.into()),
            ("disk_in_mb", 1024.into()),
            ("health_check_type", hc.into()),
            ("health_check_endpoint", Val::Text(None)),
            ("health_check_timeout", Val::Int(None)),
            ("health_check_invocation_timeout", Val::Int(None)),
            ("version", util::new_guid().into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    Ok(guid)
}

/// The app's process of `ptype`, created if it has none (CC's
/// apply_manifest: web with one instance, the others with none until the
/// manifest scales them).
pub async fn process_of_type(ctx: &Ctx, app_guid: &str, ptype: &str) -> ApiResult<Process> {
    let found = [("app_guid", app_guid), ("type", ptype)];
    if let Some(p) = db::first_where::<Process>(&ctx.pool, &found).await? {
        return Ok(p);
    }
    let instances = i64::from(ptype == "web");
    let guid = insert(&ctx.pool, app_guid, ptype, instances, None).await?;
    db::get::<Process>(&ctx.pool, &guid).await
}

/// Changes a process's command and health check (`PATCH /v3/processes/:guid`).
pub async fn update(ctx: &Ctx, guid: &str, msg: UpdateProcess) -> ApiResult<Process> {
    let _ = &msg.readiness_health_check;
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let p = db::get::<Process>(&ctx.pool, guid).await?;
    msg.validate()?;
    let command = match msg.command {
        Some(c) if c.is_empty() => None,
        Some(c) => Some(c),
        None => p.command.clone(),
    };
    let (hc_type, endpoint, timeout, invocation) = match msg.health_check {
        Some(hc) => {
            let data = hc.data.unwrap_or_default();
            let _ = data.interval;
            (
                hc.kind,
                data.endpoint,
                data.timeout,
                data.invocation_timeout,
            )
        }
        None => (
            p.health_check_type.clone(),
            p.health_check_endpoint.clone(),
            p.health_check_timeout,
            p.health_check_invocation_timeout,
        ),
    };
    let mut request = json!({});
    if command != p.command {
        request["command"] = json!(audit::PRIVATE_DATA_HIDDEN);
    }
    if hc_type != p.health_check_type {
        request["health_check"] = json!({"type": hc_type});
    }
    let event = process_event(ctx, &p, types::APP_PROCESS_UPDATE, request).await?;
    let mut tx = ctx.pool.begin().await?;
    db::update::<Process>(
        &mut *tx,
        guid,
        vec![
            ("command", command.into()),
            ("health_check_type", hc_type.into()),
            ("health_check_endpoint", endpoint.into()),
            ("health_check_timeout", timeout.into()),
            ("health_check_invocation_timeout", invocation.into()),
        ],
    )
    .await?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, guid, &meta).await?;
    tx.commit().await?;
    ctx.api_log(&p.app_guid, &format!("Updating process: \"{}\"", p.r#type));
    db::get::<Process>(&ctx.pool, guid).await
}

/// Scales a process and syncs its app's DesiredLrps (the scale endpoints,
/// and apply_manifest).
pub async fn scale(ctx: &Ctx, p: &Process, msg: ScaleProcess) -> ApiResult<Process> {
    let _ = msg.log_rate_limit_in_bytes_per_second;
    msg.validate()?;
    if diego::sync::active_deployment(ctx, &p.app_guid)
        .await?
        .is_some_and(|d| d.process_guid == p.guid)
    {
        return Err(ApiError::unprocessable(
            "Cannot scale this process while a deployment is in flight.",
        ));
    }
    let (instances, memory) = (
        msg.instances.unwrap_or(p.instances),
        msg.memory_in_mb.unwrap_or(p.memory_in_mb),
    );
    super::quotas::check_scale(ctx, p, instances, memory).await?;
    if msg.memory_in_mb.is_some() {
        super::sidecars::check_scaled_memory(ctx, p, memory).await?;
    }
    let mut request = serde_json::Map::new();
    for (key, value) in [
        ("instances", msg.instances),
        ("memory_in_mb", msg.memory_in_mb),
        ("disk_in_mb", msg.disk_in_mb),
    ] {
        if let Some(v) = value {
            request.insert(key.into(), json!(v));
        }
    }
    let event = process_event(ctx, p, types::APP_PROCESS_SCALE, Value::Object(request)).await?;
    let mut tx = ctx.pool.begin().await?;
    db::update::<Process>(
        &mut *tx,
        &p.guid,
        vec![
            ("instances", msg.instances.unwrap_or(p.instances).into()),
            (
                "memory_in_mb",
                msg.memory_in_mb.unwrap_or(p.memory_in_mb).into(),
            ),
            ("disk_in_mb", msg.disk_in_mb.unwrap_or(p.disk_in_mb).into()),
        ],
    )
    .await?;
    audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    ctx.api_log(&p.app_guid, &format!("Scaling process: \"{}\"", p.r#type));
    diego::sync::sync_app(ctx, &p.app_guid).await?;
    db::get::<Process>(&ctx.pool, &p.guid).await
}
