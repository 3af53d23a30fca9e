//! App actions: create (with its web process), update, delete (with
//! everything it owns), start/stop/restart, the current droplet and
//! environment variables.

use super::processes;
use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, App, Build, Destination, Droplet, Package, Process, Space, Stack, Val};
use crate::diego::{self, LifecycleType};
use crate::error::{ApiError, ApiResult};
use crate::messages::{CreateApp, Lifecycle, PatchEnv, SetDroplet, UpdateApp, env_string};
use crate::uploads::{build_cache_key, droplet_key, package_key};
use crate::util;
use kiln_model::{AppState, BuildState, DropletState};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The request an app event keeps: what changed, secrets censored.
fn app_request(name: Option<&str>, lifecycle: &AppLifecycle, env_given: bool) -> Value {
    let mut request = json!({
        "lifecycle": match lifecycle.kind {
            LifecycleType::Docker => json!({"type": "docker", "data": {}}),
            LifecycleType::Buildpack => json!({"type": "buildpack", "data": {"buildpacks": lifecycle.buildpacks, "stack": lifecycle.stack}}),
        },
    });
    if let Some(name) = name {
        request["name"] = json!(name);
    }
    if env_given {
        request["environment_variables"] = json!(audit::PRIVATE_DATA_HIDDEN);
    }
    json!({ "request": request })
}

/// An app event by the current actor, made before the transaction that
/// records it opens (its space's org is read from the pool).
async fn event(ctx: &Ctx, app: &App, kind: &'static str, data: Value) -> ApiResult<audit::Event> {
    audit::app_event(&ctx.pool, app, kind, data).await
}

/// An app's lifecycle columns: its type, buildpacks and stack.
struct AppLifecycle {
    kind: LifecycleType,
    buildpacks: Vec<String>,
    stack: String,
}

/// Checks a lifecycle against the app's `current` one (a new app's
/// defaults): its type is known and, as in Cloud Controller, never changes
/// on an existing app; a buildpack app's stack exists; a docker app has no
/// buildpacks.
async fn resolve_lifecycle(
    ctx: &Ctx,
    lifecycle: Option<Lifecycle>,
    current: AppLifecycle,
    existing: bool,
) -> ApiResult<AppLifecycle> {
    let Some(l) = lifecycle else {
        return Ok(current);
    };
    let kind = LifecycleType::parse(&l.kind).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "Lifecycle type '{}' is not supported; use 'buildpack' or 'docker'",
            l.kind
        ))
    })?;
    if existing && kind != current.kind {
        return Err(ApiError::unprocessable("Lifecycle type cannot be changed"));
    }
    let data = l.data.unwrap_or_default();
    if kind == LifecycleType::Docker {
        super::settings::require(ctx, None, "diego_docker").await?;
        if data.buildpacks.is_some() || data.stack.is_some() {
            return Err(ApiError::unprocessable(
                "Lifecycle data must be empty for a docker app",
            ));
        }
        return Ok(AppLifecycle {
            kind,
            buildpacks: Vec::new(),
            stack: current.stack,
        });
    }
    let buildpacks = data.buildpacks.unwrap_or(current.buildpacks);
    let stack = data.stack.unwrap_or(current.stack);
    if db::first_where::<Stack>(&ctx.pool, &[("name", &stack)])
        .await?
        .is_none()
    {
        return Err(ApiError::unprocessable(format!(
            "Stack '{stack}' does not exist"
        )));
    }
    Ok(AppLifecycle {
        kind,
        buildpacks,
        stack,
    })
}

/// Creates an app and its web process (`POST /v3/apps`, and apply_manifest
/// for an app the space lacks).
pub async fn create(ctx: &Ctx, msg: CreateApp) -> ApiResult<App> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    msg.validate()?;
    let space_guid = msg.relationships.space.data.guid;
    db::find::<Space>(&ctx.pool, &space_guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    let defaults = AppLifecycle {
        kind: LifecycleType::Buildpack,
        buildpacks: Vec::new(),
        stack: ctx.config.stack.clone(),
    };
    let lifecycle = resolve_lifecycle(ctx, msg.lifecycle, defaults, false).await?;
    let env_given = msg.environment_variables.is_some();
    let env: BTreeMap<String, String> = msg
        .environment_variables
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| env_string(v).map(|v| (k.clone(), v)))
        .collect();
    let guid = util::new_guid();
    let now = util::now();
    let request = app_request(Some(&msg.name), &lifecycle, env_given);
    let target = App {
        guid: guid.clone(),
        name: msg.name.clone(),
        space_guid: space_guid.clone(),
        state: AppState::Stopped,
        buildpacks: Vec::new(),
        stack: String::new(),
        environment_variables: BTreeMap::new(),
        droplet_guid: None,
        created_at: String::new(),
        updated_at: String::new(),
        lifecycle_type: lifecycle.kind.as_str().into(),
    };
    let created = event(ctx, &target, types::APP_CREATE, request).await?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<App>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", msg.name.as_str().into()),
            ("space_guid", space_guid.as_str().into()),
            ("state", AppState::Stopped.as_str().into()),
            ("buildpacks", db::json_text(&lifecycle.buildpacks)),
            ("stack", lifecycle.stack.into()),
            ("lifecycle_type", lifecycle.kind.as_str().into()),
            ("environment_variables", db::json_text(&env)),
            ("droplet_guid", Val::Text(None)),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || {
        format!("App with the name '{}' already exists.", msg.name)
    })?;
    processes::insert(&mut *tx, &guid, "web", 1, None).await?;
    audit::record(&mut *tx, created).await?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    tracing::info!(app_guid = %guid, name = %app.name, "app created");
    super::metadata::apply(ctx, &app.guid, &meta).await?;
    Ok(app)
}

/// Renames an app or changes its lifecycle (`PATCH /v3/apps/:guid`, and
/// apply_manifest for an existing app).
pub async fn update(ctx: &Ctx, guid: &str, msg: UpdateApp) -> ApiResult<App> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let app = db::get::<App>(&ctx.pool, guid).await?;
    let name = msg.name.unwrap_or(app.name.clone());
    let current = AppLifecycle {
        kind: LifecycleType::of(&app),
        buildpacks: app.buildpacks.clone(),
        stack: app.stack.clone(),
    };
    let lifecycle = resolve_lifecycle(ctx, msg.lifecycle, current, true).await?;
    let request = app_request(Some(&name), &lifecycle, false);
    let renamed = App {
        name: name.clone(),
        ..app
    };
    let updated_event = event(ctx, &renamed, types::APP_UPDATE, request).await?;
    let mut tx = ctx.pool.begin().await?;
    let updated = db::update::<App>(
        &mut *tx,
        guid,
        vec![
            ("name", name.as_str().into()),
            ("buildpacks", db::json_text(&lifecycle.buildpacks)),
            ("stack", lifecycle.stack.into()),
        ],
    )
    .await;
    db::unique_or_taken(updated, || {
        format!("App with the name '{name}' already exists.")
    })?;
    audit::record(&mut *tx, updated_event).await?;
    db::metadata::apply(&mut tx, guid, &meta).await?;
    tx.commit().await?;
    db::get::<App>(&ctx.pool, guid).await
}

/// Deletes an app: its DesiredLrps, staging Tasks, blobs and rows.
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<App> {
    let app = db::get::<App>(&ctx.pool, guid).await?;
    for p in db::where_eq::<Process>(&ctx.pool, "app_guid", guid).await? {
        diego::sync::remove_lrps_of(ctx, &p.guid, None).await?;
    }
    // Stop staging the app: its Tasks' results would have nowhere to go.
    for b in db::where_eq::<Build>(&ctx.pool, "app_guid", guid).await? {
        if b.state == BuildState::Staging {
            match ctx.bbs.cancel_task(&b.guid).await {
                Ok(()) | Err(kiln_bbs::BbsError::NotFound { .. }) => {}
                Err(kiln_bbs::BbsError::InvalidTransition { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for d in db::where_eq::<Droplet>(&ctx.pool, "app_guid", guid).await? {
        ctx.blobstore.delete(&droplet_key(&d.guid)).await?;
    }
    for p in db::where_eq::<Package>(&ctx.pool, "app_guid", guid).await? {
        ctx.blobstore.delete(&package_key(&p.guid)).await?;
    }
    ctx.blobstore.delete(&build_cache_key(guid)).await?;
    // Its tasks stop with it (CC cancels them as it deletes the app).
    for t in db::where_eq::<db::Task>(&ctx.pool, "app_guid", guid).await? {
        if !t.state.is_terminal() {
            match ctx.bbs.cancel_task(&t.guid).await {
                Ok(()) | Err(kiln_bbs::BbsError::NotFound { .. }) => {}
                Err(kiln_bbs::BbsError::InvalidTransition { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let data = json!({"request": {"recursive": true}});
    let deleted = event(ctx, &app, types::APP_DELETE_REQUEST, data).await?;
    // Its service bindings go with it, each with its event (as in CC).
    let mut unbound = Vec::new();
    for b in db::where_eq::<db::ServiceBinding>(&ctx.pool, "app_guid", guid).await? {
        unbound.push(super::service_bindings::delete_event(ctx, &b).await?);
    }
    let mut tx = ctx.pool.begin().await?;
    audit::record(&mut *tx, deleted).await?;
    for e in unbound {
        audit::record(&mut *tx, e).await?;
    }
    db::delete_where::<db::Task>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<db::ServiceBinding>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<db::Sidecar>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<Destination>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<Process>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<Package>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<Build>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<Droplet>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<db::Deployment>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<db::Revision>(&mut *tx, "app_guid", guid).await?;
    db::delete_where::<App>(&mut *tx, "guid", guid).await?;
    tx.commit().await?;
    // Its routes stay; the DesiredLrps of other apps on them change.
    diego::sync::reconcile(ctx).await?;
    tracing::info!(app_guid = %guid, name = %app.name, "app deleted");
    Ok(app)
}

/// Moves the app's desired state to `to` by compare-and-set from `from`.
/// Any move is legal, so a lost race (another request moved it first) is
/// retried from the state found, and the last request wins, as in Cloud
/// Controller; a request that finds the app already in `to` is done.
async fn set_state(
    ctx: &Ctx,
    app: &App,
    from: AppState,
    to: AppState,
    event: &'static str,
) -> ApiResult<()> {
    let mut from = from;
    let changed = self::event(ctx, app, event, json!({})).await?;
    for _ in 0..3 {
        let mut tx = ctx.pool.begin().await?;
        if db::transition::<App>(&mut *tx, &app.guid, from, to, Vec::new()).await? {
            audit::record(&mut *tx, changed.clone()).await?;
            tx.commit().await?;
            let change = format!("{{\"state\"=>\"{}\"}}", to.as_str());
            ctx.api_log(
                &app.guid,
                &format!("Updated app with guid {} ({change})", app.guid),
            );
            return Ok(());
        }
        from = db::get::<App>(&ctx.pool, &app.guid).await?.state;
        if from == to {
            return Ok(());
        }
    }
    Err(ApiError::Internal(format!(
        "app {} kept changing state while moving to {to}",
        app.guid
    )))
}

/// A new version of every process of the app: started processes get new
/// DesiredLrps that replace the old ones.
async fn bump_versions(ctx: &Ctx, app_guid: &str) -> ApiResult<()> {
    for p in db::where_eq::<Process>(&ctx.pool, "app_guid", app_guid).await? {
        db::update::<Process>(
            &ctx.pool,
            &p.guid,
            vec![("version", util::new_guid().into())],
        )
        .await?;
    }
    Ok(())
}

/// Starts an app (`restart`: stops it first if it runs).
pub async fn start(ctx: &Ctx, guid: &str, restart: bool) -> ApiResult<App> {
    let app = db::get::<App>(&ctx.pool, guid).await?;
    if app.droplet_guid.is_none() {
        return Err(ApiError::unprocessable(
            "Assign a droplet before starting this app.",
        ));
    }
    if app.state != AppState::Started {
        super::quotas::check_start(ctx, &app).await?;
    }
    if restart || app.state != AppState::Started {
        // A restart replaces every instance at once: no deployment goes on.
        diego::deployment_updater::end_active(ctx, guid, false).await?;
        let mut from = app.state;
        if restart && app.state == AppState::Started {
            set_state(ctx, &app, from, AppState::Stopped, types::APP_STOP).await?;
            from = AppState::Stopped;
        }
        bump_versions(ctx, guid).await?;
        let event = if restart {
            types::APP_RESTART
        } else {
            types::APP_START
        };
        set_state(ctx, &app, from, AppState::Started, event).await?;
    }
    diego::sync::sync_app(ctx, guid).await?;
    db::get::<App>(&ctx.pool, guid).await
}

pub async fn stop(ctx: &Ctx, guid: &str) -> ApiResult<App> {
    let app = db::get::<App>(&ctx.pool, guid).await?;
    diego::deployment_updater::end_active(ctx, guid, true).await?;
    if app.state != AppState::Stopped {
        set_state(ctx, &app, app.state, AppState::Stopped, types::APP_STOP).await?;
    }
    diego::sync::sync_app(ctx, guid).await?;
    db::get::<App>(&ctx.pool, guid).await
}

/// Sets the app's current droplet; returns its guid.
pub async fn set_current_droplet(ctx: &Ctx, guid: &str, msg: SetDroplet) -> ApiResult<String> {
    let app = db::get::<App>(&ctx.pool, guid).await?;
    let unable = || {
        ApiError::unprocessable(
            "Unable to assign current droplet. Ensure the droplet exists and belongs to this app.",
        )
    };
    let data = msg.data.ok_or_else(unable)?;
    let droplet = db::find::<Droplet>(&ctx.pool, &data.guid)
        .await?
        .filter(|d| d.app_guid == guid && d.state == DropletState::Staged)
        .ok_or_else(unable)?;
    let sidecars = diego::droplet_sidecars::plan_from_droplet(ctx, guid, &droplet).await?;
    let data = json!({"request": {"droplet_guid": droplet.guid}});
    let mapped = event(ctx, &app, types::APP_DROPLET_MAPPED, data).await?;
    let mut tx = ctx.pool.begin().await?;
    db::update::<App>(
        &mut *tx,
        guid,
        vec![("droplet_guid", droplet.guid.as_str().into())],
    )
    .await?;
    diego::droplet_sidecars::apply_from_droplet(&mut tx, sidecars).await?;
    audit::record(&mut *tx, mapped).await?;
    tx.commit().await?;
    // Process types the droplet brings that the app lacks appear with 0 instances.
    let existing = db::where_eq::<Process>(&ctx.pool, "app_guid", guid).await?;
    for ptype in droplet.process_types.keys() {
        if !existing.iter().any(|p| &p.r#type == ptype) {
            processes::insert(&ctx.pool, guid, ptype, 0, Some("process")).await?;
        }
    }
    // As Cloud Controller's AppAssignDroplet: running instances keep their
    // droplet; the next start, restart or deployment runs the new one (so a
    // push, which restarts next, replaces its instances once).
    Ok(droplet.guid)
}

/// Merges variables into an app's environment (a null value removes one).
pub async fn merge_env_vars(ctx: &Ctx, guid: &str, msg: PatchEnv) -> ApiResult<App> {
    msg.validate("Var")?;
    let app = db::get::<App>(&ctx.pool, guid).await?;
    let mut env = app.environment_variables.clone();
    for (k, v) in msg.var.unwrap_or_default() {
        match env_string(&v) {
            Some(v) => {
                env.insert(k, v);
            }
            None => {
                env.remove(&k);
            }
        }
    }
    let data = json!({"request": {"environment_variables": audit::PRIVATE_DATA_HIDDEN}});
    let updated = event(ctx, &app, types::APP_UPDATE, data).await?;
    let mut tx = ctx.pool.begin().await?;
    db::update::<App>(
        &mut *tx,
        guid,
        vec![("environment_variables", db::json_text(&env))],
    )
    .await?;
    audit::record(&mut *tx, updated).await?;
    tx.commit().await?;
    db::get::<App>(&ctx.pool, guid).await
}

/// `POST /v3/apps/:guid/actions/clear_buildpack_cache`: drops the app's
/// build cache blob (absent is fine).
pub async fn clear_buildpack_cache(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    db::get::<App>(&ctx.pool, guid).await?;
    ctx.blobstore.delete(&build_cache_key(guid)).await?;
    tracing::info!(app_guid = guid, "buildpack cache cleared");
    Ok(())
}
