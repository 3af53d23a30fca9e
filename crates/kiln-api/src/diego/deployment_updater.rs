//! Cloud Controller's `DeploymentUpdater`: moves each deploying deployment
//! on by one batch once every new instance is RUNNING. The previous
//! DesiredLrp shrinks only by as many instances as new ones run, so the
//! app keeps its instance count while the router sends traffic to both.
//! Also finishes cancels (the previous droplet back, the new DesiredLrp
//! gone) and ends deployments that a stop or restart overrides.

use super::sync::sync_app;
use crate::context::{Ctx, Shared};
use crate::db::{self, App, Deployment, Droplet, Process, Val};
use crate::error::ApiResult;
use crate::util;
use futures_util::StreamExt;
use kiln_model::bbs::BbsEvent;
use kiln_model::{ActualLrpState, DeploymentState};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often deployments are looked at even when no instance changed.
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the updater: on every ActualLrp change (a new instance may have
/// become RUNNING) and on a steady tick.
pub fn spawn(ctx: Shared, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = ctx.bbs.subscribe();
        let mut tick = tokio::time::interval(UPDATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                event = events.next() => match event {
                    Some(BbsEvent::ActualLrpChanged { .. }) | Some(BbsEvent::Lagged) => {}
                    Some(_) => continue,
                    None => {
                        tokio::time::sleep(UPDATE_INTERVAL).await;
                        events = ctx.bbs.subscribe();
                    }
                },
            }
            if let Err(error) = update_all(&ctx).await {
                tracing::warn!(%error, "deployment update failed");
            }
        }
    })
}

/// One pass over every deployment that needs work.
pub async fn update_all(ctx: &Ctx) -> ApiResult<()> {
    for d in
        db::where_eq::<Deployment>(&ctx.pool, "state", DeploymentState::Canceling.as_str()).await?
    {
        finish_cancel(ctx, &d).await?;
    }
    for d in
        db::where_eq::<Deployment>(&ctx.pool, "state", DeploymentState::Deploying.as_str()).await?
    {
        scale(ctx, &d).await?;
    }
    Ok(())
}

/// How many of the new DesiredLrp's wanted instances are RUNNING.
async fn new_running(ctx: &Ctx, d: &Deployment) -> ApiResult<i64> {
    let actuals = ctx
        .bbs
        .actual_lrps(kiln_bbs::ActualLrpFilter {
            process_guid: Some(format!("{}-{}", d.process_guid, d.new_version)),
            ..kiln_bbs::ActualLrpFilter::default()
        })
        .await?;
    Ok(actuals
        .iter()
        .filter(|a| a.state == ActualLrpState::Running && i64::from(a.key.index) < d.new_instances)
        .count() as i64)
}

/// One step of a deploying deployment (CC's `Actions::Scale`): wait until
/// the batch runs; a canary then pauses; otherwise the old process shrinks
/// by what runs and the next batch starts, until the new one is whole.
async fn scale(ctx: &Ctx, d: &Deployment) -> ApiResult<()> {
    let running = new_running(ctx, d).await?;
    if running < d.new_instances {
        return Ok(());
    }
    if d.strategy == "canary" && !d.continued {
        let paused = [("status_reason", "PAUSED".into())];
        if transition(ctx, d, DeploymentState::Paused, paused.to_vec()).await? {
            tracing::info!(deployment_guid = %d.guid, "canary running, deployment paused");
        }
        return Ok(());
    }
    if d.new_instances >= d.target_instances {
        let done = vec![
            ("status_reason", "DEPLOYED".into()),
            ("old_instances", 0.into()),
        ];
        if transition(ctx, d, DeploymentState::Deployed, done).await? {
            tracing::info!(deployment_guid = %d.guid, app_guid = %d.app_guid, "deployment deployed");
        }
    } else {
        let old = (d.target_instances - running).max(0);
        let new = (d.new_instances + d.max_in_flight).min(d.target_instances);
        db::update::<Deployment>(
            &ctx.pool,
            &d.guid,
            vec![("old_instances", old.into()), ("new_instances", new.into())],
        )
        .await?;
        tracing::info!(deployment_guid = %d.guid, old, new, "deployment scaled");
    }
    sync_app(ctx, &d.app_guid).await
}

async fn transition(
    ctx: &Ctx,
    d: &Deployment,
    to: DeploymentState,
    also: Vec<(&'static str, Val)>,
) -> ApiResult<bool> {
    db::transition::<Deployment>(&ctx.pool, &d.guid, d.state, to, also).await
}

/// The end of a cancel (CC's `Actions::Cancel`): the previous droplet is the
/// app's again and the web process its previous version, so sync grows the
/// previous DesiredLrp back and removes the new one.
pub async fn finish_cancel(ctx: &Ctx, d: &Deployment) -> ApiResult<()> {
    let processes = db::where_eq::<Process>(&ctx.pool, "app_guid", &d.app_guid).await?;
    // The previous droplet's buildpack sidecars come back with it; a cancel
    // goes on without them if they no longer fit (a user's sidecar took
    // their name meanwhile).
    let sidecars = match &d.previous_droplet_guid {
        Some(previous) => match db::find::<Droplet>(&ctx.pool, previous).await? {
            Some(droplet) => super::droplet_sidecars::plan_from_droplet(ctx, &d.app_guid, &droplet)
                .await
                .inspect_err(|error| tracing::warn!(%error, "previous droplet's sidecars"))
                .ok(),
            None => None,
        },
        None => None,
    };
    let mut tx = ctx.pool.begin().await?;
    let moved = db::transition::<Deployment>(
        &mut *tx,
        &d.guid,
        DeploymentState::Canceling,
        DeploymentState::Canceled,
        vec![("status_reason", "CANCELED".into())],
    )
    .await?;
    if !moved {
        return Ok(());
    }
    if let Some(previous) = &d.previous_droplet_guid {
        db::update::<App>(
            &mut *tx,
            &d.app_guid,
            vec![("droplet_guid", previous.as_str().into())],
        )
        .await?;
    }
    if let Some(sidecars) = sidecars {
        super::droplet_sidecars::apply_from_droplet(&mut tx, sidecars).await?;
    }
    for p in processes {
        let version = if p.guid == d.process_guid {
            d.old_version.clone()
        } else {
            util::new_guid()
        };
        db::update::<Process>(&mut *tx, &p.guid, vec![("version", version.into())]).await?;
    }
    tx.commit().await?;
    tracing::info!(deployment_guid = %d.guid, app_guid = %d.app_guid, "deployment canceled");
    sync_app(ctx, &d.app_guid).await
}

/// Ends the app's active deployment because something else now decides
/// what runs: a stop cancels it (keeping the droplet), a restart or a new
/// current droplet supersedes it. Sync then removes the previous
/// DesiredLrp with the rest.
pub async fn end_active(ctx: &Ctx, app_guid: &str, stopped: bool) -> ApiResult<()> {
    let Some(d) = super::sync::active_deployment(ctx, app_guid).await? else {
        return Ok(());
    };
    let moved = if stopped {
        let canceling = vec![("status_reason", "CANCELING".into())];
        transition(ctx, &d, DeploymentState::Canceling, canceling).await?
            && db::transition::<Deployment>(
                &ctx.pool,
                &d.guid,
                DeploymentState::Canceling,
                DeploymentState::Canceled,
                vec![("status_reason", "CANCELED".into())],
            )
            .await?
    } else {
        let superseded = vec![("status_reason", "SUPERSEDED".into())];
        transition(ctx, &d, DeploymentState::Deployed, superseded).await?
    };
    if moved {
        tracing::info!(deployment_guid = %d.guid, stopped, "deployment ended");
    }
    Ok(())
}
