//! One ActualLrp instance on the cell: allocate a host port, create the
//! container directory, run the setup downloads, start the action, probe
//! until healthy (then `start_actual_lrp`, CLAIMED → RUNNING), and keep
//! probing for liveness until the process exits, a probe fails, or the cell
//! is told to stop it. While it runs, its container metrics go to the log
//! sink every 10 s. The crash reason uses Diego's words (with "(out of
//! memory)" for an OOM kill); the rep reports it, this module only returns
//! it.

use super::metrics::{self, InstanceMetrics};
use super::{CellCtx, Process, human_duration, human_size};
use crate::container::ContainerDir;
use crate::download::Downloaded;
use crate::envs::{self, InstanceEnv};
use crate::health;
use crate::logs::LogTarget;
use crate::network::HeldPort;
use crate::runtime::valid_id;
use kiln_bbs_client::BbsError;
use kiln_model::bbs::{
    ActualLrpInstanceKey, ActualLrpNetInfo, HealthCheck, LrpAssignment, PortMapping,
};
use kiln_model::logs::ContainerMetric;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Between startup probes, at most (Diego's healthcheck uses 2 s; a faster
/// start is worth a few more connects).
pub const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Between the first [`FAST_STARTUP_PROBES`] startup probes: most apps
/// listen within a few hundred milliseconds, and a probe is one loopback
/// connect, so a short pause finds them listening within 10 ms (pauses
/// doubling from 10 ms found an app that listened at 200 ms only at 310).
pub const FIRST_STARTUP_PROBE_PAUSE: Duration = Duration::from_millis(10);
/// Fast probes, about a second's worth; then each pause doubles, up to
/// [`STARTUP_PROBE_INTERVAL`], for apps that take long to start.
pub const FAST_STARTUP_PROBES: u32 = 100;

/// The pause after `attempts` failed startup probes.
fn startup_pause(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(FAST_STARTUP_PROBES).min(16);
    FIRST_STARTUP_PROBE_PAUSE
        .saturating_mul(1 << doublings)
        .min(STARTUP_PROBE_INTERVAL)
}
/// Between liveness probes once RUNNING.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(10);

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LrpEnd {
    /// To be reported with `crash_actual_lrp`.
    Crashed(String),
    /// Stopped by the cell (no longer wanted here, or shutting down).
    Stopped,
}

#[tracing::instrument(name = "lrp", skip_all, fields(
    process_guid = %assignment.actual.key.process_guid,
    index = assignment.actual.key.index,
    instance_guid = tracing::field::Empty,
))]
pub async fn run(ctx: Arc<CellCtx>, assignment: LrpAssignment, stop: CancellationToken) -> LrpEnd {
    let Some(instance_key) = assignment.actual.instance_key.clone() else {
        return LrpEnd::Stopped;
    };
    tracing::Span::current().record("instance_guid", instance_key.instance_guid.as_str());
    let id = instance_key.instance_guid.clone();
    if !valid_id(&id) {
        return LrpEnd::Crashed(format!("invalid instance guid {id:?}"));
    }
    let desired = &assignment.desired;
    let log = LogTarget {
        sink: ctx.logs.clone(),
        source_id: desired.log_guid.clone(),
        source_type: desired.log_source.clone(),
        instance_id: assignment.actual.key.index.to_string(),
    };
    let cell_log = log.cell();
    let cell_id = &ctx.config.cell_id;
    cell_log.out(format!(
        "Cell {cell_id} creating container for instance {id}"
    ));
    let Some((port, held)) = ctx.take_port() else {
        return LrpEnd::Crashed(format!(
            "no free host port in {}..{}",
            ctx.config.port_range.start, ctx.config.port_range.end
        ));
    };
    let dir = ContainerDir::new(&ctx.containers_dir, &id);
    let end = execute(
        &ctx,
        &assignment,
        &instance_key,
        &dir,
        &log,
        (port, held),
        &stop,
    )
    .await;
    if end == LrpEnd::Stopped {
        cell_log.out(format!("Cell {cell_id} stopping instance {id}"));
    }
    cell_log.out(format!(
        "Cell {cell_id} destroying container for instance {id}"
    ));
    // A stopped instance's teardown yields to starts (a push's new
    // instance); a crash's is reported after it, so it goes at once.
    ctx.destroy(&id, &dir, end == LrpEnd::Stopped).await;
    ctx.ports.release(port);
    cell_log.out(format!(
        "Cell {cell_id} successfully destroyed container for instance {id}"
    ));
    tracing::info!(?end, "instance ended");
    end
}

async fn execute(
    ctx: &CellCtx,
    assignment: &LrpAssignment,
    instance_key: &ActualLrpInstanceKey,
    dir: &ContainerDir,
    log: &LogTarget,
    (port, held): (u16, Option<HeldPort>),
    stop: &CancellationToken,
) -> LrpEnd {
    let desired = &assignment.desired;
    let key = &assignment.actual.key;
    let id = instance_key.instance_guid.as_str();
    let cell_log = log.cell();
    let cell_id = &ctx.config.cell_id;
    let created = std::time::Instant::now();
    // Until healthy (or ended): teardowns on the cell wait for it.
    let starting = ctx.quiet.starting();
    let app_port = desired
        .ports
        .first()
        .copied()
        .unwrap_or(crate::network::CONTAINER_PORT);
    // The disk and the network do not depend on each other: both are made
    // at once, so a start waits for the slower only.
    let (disk, net) = tokio::join!(
        ctx.create_container_dir(dir, desired.disk_mb),
        ctx.attach_network(id, held, app_port),
    );
    let (disk, net) = match (disk, net) {
        (Ok(disk), Ok(net)) => (disk, net),
        (Err(reason), _) | (_, Err(reason)) => return LrpEnd::Crashed(reason),
    };
    let container_ms = created.elapsed().as_millis() as u64;
    cell_log.out(format!(
        "Cell {cell_id} successfully created container for instance {id}"
    ));

    // Setup: the droplet, usually. A failure counts as a crash (Diego).
    for action in &desired.setup {
        cell_log.out(format!("Downloading {}...", action.artifact));
        let result = tokio::select! {
            _ = stop.cancelled() => return LrpEnd::Stopped,
            r = ctx.downloader.run(action, dir) => r,
        };
        match result {
            Ok(Downloaded::Extracted { size, cached }) => cell_log.out(format!(
                "Downloaded {} ({}{})",
                action.artifact,
                human_size(size),
                if cached { ", cached" } else { "" }
            )),
            Ok(Downloaded::Missing) => {}
            Err(e) => {
                let reason = format!("Downloading {} failed: {e}", action.artifact);
                cell_log.err(reason.clone());
                return LrpEnd::Crashed(reason);
            }
        }
    }
    if let Err(reason) = ctx.finish_container_dir(id, dir, &desired.action) {
        return LrpEnd::Crashed(reason);
    }
    let root = tokio::select! {
        _ = stop.cancelled() => return LrpEnd::Stopped,
        root = ctx.prepare_root(
            &desired.rootfs,
            (&desired.image_username, &desired.image_password),
            dir,
            &cell_log,
        ) => root,
    };
    let root = match root {
        Ok(root) => root,
        Err(reason) => {
            cell_log.err(reason.clone());
            return LrpEnd::Crashed(reason);
        }
    };

    let address = ctx.config.address.as_str();
    // With a network of its own the app listens on its port (8080, or a
    // docker image's first exposed one) at its own
    // address, which health checks probe directly; without, on the host
    // port at the cell's address.
    let (internal_ip, container_port) = match &net {
        Some(net) => (net.ip.to_string(), app_port),
        None => (address.to_string(), port),
    };
    let env = envs::build(
        &desired.env,
        &desired.action.env,
        Some(&InstanceEnv {
            instance_guid: id,
            index: key.index,
            address,
            port,
            internal_ip: &internal_ip,
            container_port,
        }),
    );
    let spec = ctx
        .spec(id, dir, &desired.action, env, desired.memory_mb, &root)
        .and_then(|mut spec| {
            let logs = super::sidecars::add(&mut spec, &desired.sidecars, log)?;
            Ok((spec, logs))
        });
    let (spec, sidecar_logs) = match spec {
        Ok(spec) => spec,
        Err(reason) => return LrpEnd::Crashed(reason),
    };
    let prepared_ms = created.elapsed().as_millis() as u64;
    let mut process = match Process::start(ctx.runtime.as_ref(), &spec, log).await {
        Ok(p) => p,
        Err(e) => return LrpEnd::Crashed(format!("starting container: {e}")),
    };
    process.pump_sidecar_logs(sidecar_logs);
    // Diego's words for an exit, in the app's log, the cell's (for an OOM
    // kill) and the crash reason.
    let cell_log = &cell_log;
    let exited = |code: i32| async move {
        let (description, oom) = ctx.exit_description(id, code).await;
        let note = if oom { " (out of memory)" } else { "" };
        log.out(format!("Exit status {code}{note}"));
        if oom {
            cell_log.err(description.clone());
        }
        LrpEnd::Crashed(format!("{}: {description}", desired.log_source))
    };

    // Startup check: until healthy, the process exits, or the start timeout.
    let check = &desired.health_check;
    if *check != HealthCheck::Process {
        cell_log.out("Starting health monitoring of container");
    }
    let start_timeout_ms = match desired.start_timeout_ms {
        0 => kiln_model::DEFAULT_START_TIMEOUT_MS,
        ms => ms,
    };
    let deadline = Instant::now() + Duration::from_millis(start_timeout_ms);
    let mut last_error = String::from("not probed yet");
    let mut attempts = 0u32;
    loop {
        let pause = startup_pause(attempts);
        let probe = async {
            let r = health::probe(check, &internal_ip, container_port).await;
            if r.is_err() {
                tokio::time::sleep(pause).await;
            }
            r
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                process.stop(ctx.runtime.as_ref(), id, ctx.grace()).await;
                process.drain_logs().await;
                return LrpEnd::Stopped;
            }
            code = process.wait() => {
                process.drain_logs().await;
                return exited(code).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                process.stop(ctx.runtime.as_ref(), id, Duration::ZERO).await;
                process.drain_logs().await;
                let after = human_duration(start_timeout_ms);
                cell_log.err(format!(
                    "Timed out after {after} ({attempts} attempts) waiting for startup check to succeed: {last_error}"
                ));
                return LrpEnd::Crashed(format!("Instance never healthy after {after}: {last_error}"));
            }
            result = probe => {
                attempts += 1;
                match result {
                    Ok(()) => break,
                    Err(e) => last_error = e,
                }
            }
        }
    }
    drop(starting);
    if *check != HealthCheck::Process {
        cell_log.out("Container became healthy");
    }
    // The phases of a start, for tuning: container (disk and network),
    // prepared (downloads, root, spec), then the process until healthy.
    tracing::info!(
        port,
        container_ms,
        prepared_ms,
        healthy_ms = created.elapsed().as_millis() as u64,
        process_ms = process.started.elapsed().as_millis() as u64,
        "instance healthy"
    );

    let net_info = ActualLrpNetInfo {
        address: address.into(),
        ports: vec![PortMapping {
            container_port,
            host_port: port,
        }],
        instance_address: internal_ip.clone(),
    };
    let usage = InstanceMetrics::new(
        ContainerMetric {
            timestamp: 0,
            source_id: desired.log_guid.clone(),
            process_id: desired.process_guid.clone(),
            instance_id: key.index.to_string(),
            instance_guid: id.to_string(),
            cpu_percentage: 0.0,
            memory_bytes: 0,
            disk_bytes: 0,
            memory_bytes_quota: desired.memory_mb.saturating_mul(1024 * 1024),
            disk_bytes_quota: desired.disk_mb.saturating_mul(1024 * 1024),
        },
        disk,
        process.started,
    );
    // Stops (aborted on drop) when this function returns, before destroy.
    let _metrics = metrics::spawn(usage, ctx.runtime.clone(), ctx.logs.clone(), id);
    let mut reported = false;
    loop {
        if !reported {
            match ctx
                .bbs
                .start_actual_lrp(key, instance_key, net_info.clone())
                .await
            {
                Ok(()) => reported = true,
                Err(
                    error @ (BbsError::InstanceMismatch { .. }
                    | BbsError::NotFound { .. }
                    | BbsError::InvalidTransition { .. }),
                ) => {
                    // The BBS no longer wants this instance here.
                    tracing::info!(%error, "instance not wanted any more");
                    process.stop(ctx.runtime.as_ref(), id, ctx.grace()).await;
                    process.drain_logs().await;
                    return LrpEnd::Stopped;
                }
                Err(error) => {
                    tracing::warn!(%error, "reporting instance running; will retry");
                }
            }
        }
        let interval = if reported {
            LIVENESS_INTERVAL
        } else {
            Duration::from_secs(1)
        };
        let liveness = async {
            tokio::time::sleep(interval).await;
            if reported {
                health::probe(check, &internal_ip, container_port).await
            } else {
                Ok(())
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                process.stop(ctx.runtime.as_ref(), id, ctx.grace()).await;
                process.drain_logs().await;
                return LrpEnd::Stopped;
            }
            code = process.wait() => {
                process.drain_logs().await;
                return exited(code).await;
            }
            result = liveness => {
                if let Err(e) = result {
                    // A dying process fails its probe too; its exit is the
                    // better reason.
                    if let Ok(code) = tokio::time::timeout(Duration::from_millis(200), process.wait()).await {
                        process.drain_logs().await;
                        return exited(code).await;
                    }
                    process.stop(ctx.runtime.as_ref(), id, Duration::ZERO).await;
                    process.drain_logs().await;
                    cell_log.err(format!("Container became unhealthy: {e}"));
                    return LrpEnd::Crashed(format!("Instance became unhealthy: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_probes_start_fast_and_back_off() {
        let pauses: Vec<u64> = [0, 1, 99, 100, 101, 102, 103, 104, 105, 106]
            .into_iter()
            .map(|a| startup_pause(a).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 10, 10, 10, 20, 40, 80, 160, 200, 200]);
        assert_eq!(startup_pause(u32::MAX), STARTUP_PROBE_INTERVAL);
    }
}
