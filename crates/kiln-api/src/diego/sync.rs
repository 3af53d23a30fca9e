//! Process sync: each started app's processes desired as DesiredLrps, on
//! every change and by a periodic reconcile (Cloud Controller's
//! `ProcessesSync`).

use crate::context::Ctx;
use crate::db::{self, App, Deployment, Droplet, Process};
use crate::error::ApiResult;
use kiln_bbs::BbsError;
use kiln_model::bbs::DesiredLrpUpdate;
use kiln_model::{APPS_DOMAIN, AppState};

pub fn ignore_not_found(r: Result<(), BbsError>) -> Result<(), BbsError> {
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
    let deployment = active_deployment(ctx, app_guid).await?;
    for p in db::where_eq::<Process>(&ctx.pool, "app_guid", app_guid).await? {
        let want = super::lrp_guid(&p);
        let run = app.state == AppState::Started && p.instances > 0;
        // While a deployment replaces this process, its previous DesiredLrp
        // keeps running at the size the deployment gives it.
        let rolling = deployment
            .as_ref()
            .filter(|d| d.process_guid == p.guid && run && droplet.is_some());
        let old = rolling.map(|d| (format!("{}-{}", p.guid, d.old_version), d.old_instances));
        let prefix = format!("{}-", p.guid);
        for lrp in existing
            .iter()
            .filter(|l| l.process_guid.starts_with(&prefix))
        {
            if let Some((old_guid, old_instances)) = &old
                && &lrp.process_guid == old_guid
            {
                resize(ctx, old_guid, lrp.instances, *old_instances).await?;
                continue;
            }
            if !run || droplet.is_none() || lrp.process_guid != want {
                ignore_not_found(ctx.bbs.remove_desired_lrp(&lrp.process_guid).await)?;
                tracing::info!(process_guid = %lrp.process_guid, app_guid, "desired lrp removed");
            }
        }
        let Some(droplet) = droplet.as_ref().filter(|_| run) else {
            continue;
        };
        let mut desired = super::desired_lrp(ctx, &app, &p, droplet).await?;
        if let Some(d) = rolling {
            desired.instances = d.new_instances.max(0) as u32;
        }
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

/// The app's deploying or paused deployment, if any.
pub async fn active_deployment(ctx: &Ctx, app_guid: &str) -> ApiResult<Option<Deployment>> {
    Ok(db::where_eq::<Deployment>(&ctx.pool, "app_guid", app_guid)
        .await?
        .into_iter()
        .rev()
        .find(|d| d.state.is_active()))
}

/// Sets a DesiredLrp's instance count if it differs.
async fn resize(ctx: &Ctx, lrp_guid: &str, current: u32, want: i64) -> ApiResult<()> {
    let want = want.max(0) as u32;
    if current == want {
        return Ok(());
    }
    let update = DesiredLrpUpdate {
        instances: Some(want),
        routes: None,
        annotation: None,
    };
    ctx.bbs.update_desired_lrp(lrp_guid, update).await?;
    tracing::info!(process_guid = %lrp_guid, instances = want, "desired lrp resized");
    Ok(())
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
