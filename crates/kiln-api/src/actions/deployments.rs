//! Deployment actions (Cloud Controller's `DeploymentCreate`,
//! `DeploymentCancel`, `DeploymentContinue`): a rolling or canary
//! replacement of the web process with a new droplet, recorded as a
//! revision. The batches themselves are `diego::deployment_updater`'s.

use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, App, Deployment, Droplet, Process, Revision, Val};
use crate::diego::{deployment_updater, sync};
use crate::error::{ApiError, ApiResult};
use crate::messages::CreateDeployment;
use crate::util;
use kiln_model::{AppState, DeploymentState, DropletState};
use serde_json::json;
use std::collections::BTreeMap;

/// What a deployment deploys: a droplet, with the environment of the
/// revision it came from (if any).
struct Target {
    droplet: Droplet,
    env: Option<BTreeMap<String, String>>,
    description: String,
}

async fn resolve_target(ctx: &Ctx, app: &App, msg: &CreateDeployment) -> ApiResult<Target> {
    let invalid = || {
        ApiError::unprocessable(
            "Invalid droplet. Please specify a droplet in the request or set a current droplet for the app.",
        )
    };
    let (droplet_guid, env, description) = if let Some(r) = &msg.revision {
        let rev = db::find::<Revision>(&ctx.pool, &r.guid)
            .await?
            .filter(|rev| rev.app_guid == app.guid)
            .ok_or_else(|| {
                ApiError::unprocessable("The revision does not exist or belongs to another app.")
            })?;
        let text = format!("Rolled back to revision {}.", rev.version);
        (rev.droplet_guid, Some(rev.environment_variables), text)
    } else {
        let guid = match &msg.droplet {
            Some(d) => d.guid.clone(),
            None => app.droplet_guid.clone().ok_or_else(invalid)?,
        };
        (guid, None, String::new())
    };
    let droplet = db::find::<Droplet>(&ctx.pool, &droplet_guid)
        .await?
        .filter(|d| d.app_guid == app.guid && d.state == DropletState::Staged)
        .ok_or_else(invalid)?;
    Ok(Target {
        droplet,
        env,
        description,
    })
}

/// Creates a deployment. On a running app the new web DesiredLrp starts
/// beside the old one; on a stopped app the app simply starts and the
/// deployment is DEPLOYED at once, as in Cloud Controller.
pub async fn create(ctx: &Ctx, msg: CreateDeployment) -> ApiResult<Deployment> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    msg.validate()?;
    let app = db::find::<App>(&ctx.pool, &msg.relationships.app.data.guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Unable to use app. Ensure that the app exists and you have access to it.",
            )
        })?;
    let target = resolve_target(ctx, &app, &msg).await?;
    let sidecars =
        crate::diego::droplet_sidecars::plan_from_droplet(ctx, &app.guid, &target.droplet).await?;
    let processes = db::where_eq::<Process>(&ctx.pool, "app_guid", &app.guid).await?;
    let web = processes
        .iter()
        .find(|p| p.r#type == "web")
        .ok_or_else(|| ApiError::unprocessable("The app has no web process to deploy."))?;
    // A newer deployment takes over from an active one.
    deployment_updater::end_active(ctx, &app.guid, false).await?;
    let running = app.state == AppState::Started && app.droplet_guid.is_some() && web.instances > 0;
    let (state, reason) = if running {
        (DeploymentState::Deploying, "DEPLOYING")
    } else {
        (DeploymentState::Deployed, "DEPLOYED")
    };
    let first = match msg.strategy() {
        "canary" => 1,
        _ => msg.max_in_flight(),
    }
    .min(web.instances);
    let guid = util::new_guid();
    let new_version = util::new_guid();
    let now = util::now();
    let mut event = deployment_event(
        ctx,
        &app,
        types::APP_DEPLOYMENT_CREATE,
        &guid,
        &target.droplet.guid,
    )
    .await?;
    event.data["type"] = json!(msg.strategy());
    let mut tx = ctx.pool.begin().await?;
    // An app with its revisions feature off records none (CC's rule).
    let revision_guid = if super::app_features::revisions_enabled(&mut *tx, &app.guid).await? {
        Some(insert_revision(&mut tx, &app, &target).await?)
    } else {
        None
    };
    event.data["revision_guid"] = json!(revision_guid);
    let mut app_sets = vec![("droplet_guid", target.droplet.guid.as_str().into())];
    if let Some(env) = &target.env {
        app_sets.push(("environment_variables", db::json_text(env)));
    }
    db::update::<App>(&mut *tx, &app.guid, app_sets).await?;
    crate::diego::droplet_sidecars::apply_from_droplet(&mut tx, sidecars).await?;
    // Every process runs the new droplet: web through the deployment, the
    // others replaced at once.
    for p in &processes {
        let version = if p.guid == web.guid {
            new_version.clone()
        } else {
            util::new_guid()
        };
        db::update::<Process>(&mut *tx, &p.guid, vec![("version", version.into())]).await?;
    }
    db::insert::<Deployment>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("app_guid", app.guid.as_str().into()),
            ("state", state.as_str().into()),
            ("status_reason", reason.into()),
            ("strategy", msg.strategy().into()),
            ("max_in_flight", msg.max_in_flight().into()),
            ("continued", false.into()),
            ("droplet_guid", target.droplet.guid.as_str().into()),
            ("previous_droplet_guid", app.droplet_guid.clone().into()),
            ("revision_guid", revision_guid.into()),
            ("process_guid", web.guid.as_str().into()),
            ("old_version", web.version.as_str().into()),
            ("new_version", new_version.as_str().into()),
            ("target_instances", web.instances.into()),
            ("old_instances", web.instances.into()),
            ("new_instances", first.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    tracing::info!(deployment_guid = %guid, app_guid = %app.guid, strategy = msg.strategy(), "deployment created");
    if running {
        sync::sync_app(ctx, &app.guid).await?;
    } else {
        super::apps::start(ctx, &app.guid, false).await?;
    }
    db::get::<Deployment>(&ctx.pool, &guid).await
}

/// A deployment event (CC's `DeploymentEventRepository`).
async fn deployment_event(
    ctx: &Ctx,
    app: &App,
    kind: &'static str,
    deployment_guid: &str,
    droplet_guid: &str,
) -> ApiResult<audit::Event> {
    let data =
        json!({"droplet_guid": droplet_guid, "deployment_guid": deployment_guid, "request": {}});
    audit::app_event(&ctx.pool, app, kind, data).await
}

/// Records the droplet and environment being deployed as the app's next
/// revision; returns its guid.
async fn insert_revision(
    tx: &mut kiln_store::Connection,
    app: &App,
    target: &Target,
) -> ApiResult<String> {
    let version = db::next_revision_version(&mut *tx, &app.guid).await?;
    let description = if !target.description.is_empty() {
        target.description.clone()
    } else if version == 1 {
        "Initial revision.".to_string()
    } else {
        "New droplet deployed.".to_string()
    };
    let env = target.env.as_ref().unwrap_or(&app.environment_variables);
    let guid = util::new_guid();
    let now = util::now();
    db::insert::<Revision>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("app_guid", app.guid.as_str().into()),
            ("version", version.into()),
            ("droplet_guid", target.droplet.guid.as_str().into()),
            ("environment_variables", db::json_text(env)),
            ("description", description.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    Ok(guid)
}

fn status_words(d: &Deployment) -> String {
    let value = if d.state.is_active() || d.state == DeploymentState::Canceling {
        "ACTIVE"
    } else {
        "FINALIZED"
    };
    format!("status: {value} and reason: {}", d.status_reason)
}

/// Cancels a deploying or paused deployment: the previous droplet runs
/// again at full size and the new instances go.
pub async fn cancel(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let d = db::get::<Deployment>(&ctx.pool, guid).await?;
    if !d.state.is_active() {
        return Err(ApiError::unprocessable(format!(
            "Cannot cancel a deployment with {}.",
            status_words(&d)
        )));
    }
    move_with_event(
        ctx,
        &d,
        DeploymentState::Canceling,
        vec![("status_reason", "CANCELING".into())],
        types::APP_DEPLOYMENT_CANCEL,
        "The deployment changed while it was being canceled; try again.",
    )
    .await?;
    let canceling = db::get::<Deployment>(&ctx.pool, guid).await?;
    deployment_updater::finish_cancel(ctx, &canceling).await
}

/// Continues a paused canary: the rest deploys in batches.
pub async fn continue_(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let d = db::get::<Deployment>(&ctx.pool, guid).await?;
    if d.state != DeploymentState::Paused {
        return Err(ApiError::unprocessable(format!(
            "Cannot continue a deployment with {}.",
            status_words(&d)
        )));
    }
    move_with_event(
        ctx,
        &d,
        DeploymentState::Deploying,
        vec![
            ("status_reason", "DEPLOYING".into()),
            ("continued", true.into()),
        ],
        types::APP_DEPLOYMENT_CONTINUE,
        "The deployment changed while it was being continued; try again.",
    )
    .await?;
    deployment_updater::update_all(ctx).await
}

/// Moves `d` to `to` with `also` set and records its audit event `kind`
/// in the same transaction; if another request moved it first, nothing is
/// recorded and the answer is a 422 in `changed`'s words.
async fn move_with_event(
    ctx: &Ctx,
    d: &Deployment,
    to: DeploymentState,
    also: Vec<(&'static str, Val)>,
    kind: &'static str,
    changed: &'static str,
) -> ApiResult<()> {
    let app = db::get::<App>(&ctx.pool, &d.app_guid).await?;
    let event = deployment_event(ctx, &app, kind, &d.guid, &d.droplet_guid).await?;
    let mut tx = ctx.pool.begin().await?;
    let moved = db::transition::<Deployment>(&mut *tx, &d.guid, d.state, to, also).await?;
    if moved {
        audit::record(&mut *tx, event).await?;
    }
    tx.commit().await?;
    if !moved {
        return Err(ApiError::unprocessable(changed));
    }
    Ok(())
}
