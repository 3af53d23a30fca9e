//! Diego's rep: the cell's loop.
//!
//! At start: build the stack, destroy whatever a previous run of this cell
//! left in runc (after a crash or `kill -9` nothing else would), remove and
//! recreate the cell's network, heartbeat.
//! Then, until shutdown: heartbeat every `heartbeat_interval`, sync on
//! every BBS event that may change what this cell runs (not on the echo of
//! its own report on an instance it already runs), and bulk-sync every
//! `bulk_sync_interval` (Diego's rep: 30 s) as a backstop. Events are how
//! new work arrives (Diego's auctioneer pushes it to the rep); a periodic
//! re-read of every cell's whole work would cost the BBS cells × work
//! every interval. After the event stream broke, the cell re-reads its
//! work once it has resubscribed (what it missed). A sync reads
//! `cell_work` and reconciles: PENDING tasks placed here are started
//! (`start_task`), RUNNING tasks placed here that no container runs are
//! failed ("cell restarted before completion"), listed LRP instances with
//! no container are started, and containers whose work is no longer listed
//! are stopped. Executors report back to this loop, which makes the BBS
//! calls that end work (`complete_task`, `crash_actual_lrp`), so every
//! decision about a unit of work is taken in one place, in order. A report
//! the BBS did not take is retried on the next sync while the work is still
//! listed, at the next heartbeat.

use crate::disk;
use crate::download::Downloader;
use crate::executor::CellCtx;
use crate::executor::lrp::{self, LrpEnd};
use crate::executor::task::{self, TaskOutcome};
use crate::network::CellNetwork;
use crate::ports::PortAllocator;
use crate::runtime::cgroups::Cgroups;
use crate::runtime::{ContainerRuntime, valid_id};
use crate::{CellConfig, CellError, stack};
use futures_util::{FutureExt, StreamExt};
use kiln_bbs_client::{BbsClient, BbsError};
use kiln_logs::LogSink;
use kiln_model::TaskState;
use kiln_model::bbs::{
    ActualLrpInstanceKey, ActualLrpKey, BbsEvent, CellCapacity, CellPresence, LrpAssignment, Task,
};
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The reason a RUNNING task is failed when this cell lost track of it.
pub const CELL_RESTARTED: &str = "cell restarted before completion";

/// How long shutdown waits for executors to stop their containers.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// Which BBS record a container runs.
#[derive(Debug, Clone)]
enum Work {
    Task {
        task_guid: String,
    },
    Lrp {
        key: ActualLrpKey,
        instance_key: ActualLrpInstanceKey,
    },
}

struct Running {
    work: Work,
    /// The container's disk quota, counted against the cell's disk.
    disk_mb: u64,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// What an executor sends back when its container is gone.
struct Finished {
    id: String,
    end: End,
}

enum End {
    Task(Option<TaskOutcome>),
    Lrp(LrpEnd),
}

/// A BBS call that ends a unit of work, kept until the BBS takes it.
#[derive(Debug, Clone)]
enum Report {
    TaskCompleted {
        task_guid: String,
        outcome: TaskOutcome,
    },
    LrpCrashed {
        key: ActualLrpKey,
        instance_key: ActualLrpInstanceKey,
        reason: String,
    },
}

struct Rep {
    ctx: Arc<CellCtx>,
    running: HashMap<String, Running>,
    unreported: HashMap<String, Report>,
    finished_tx: mpsc::UnboundedSender<Finished>,
    /// Set once the cell evacuates: it then starts nothing new.
    evacuation: Option<Evacuation>,
}

struct Evacuation {
    deadline: tokio::time::Instant,
    /// Whether the BBS has taken the evacuation (it is retried until then).
    accepted: bool,
    /// Instances already handed over, waiting out the route drain.
    retiring: HashSet<String>,
}

/// Between telling the BBS an evacuated instance is going and stopping
/// it: time for routers to re-read and send new requests elsewhere.
const EVACUATION_ROUTE_DRAIN: Duration = Duration::from_secs(2);

pub async fn run(
    config: CellConfig,
    runtime: Arc<dyn ContainerRuntime>,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    evacuate: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), CellError> {
    if config.cell_id.is_empty() {
        return Err(CellError::Config("cell id is empty".into()));
    }
    if config.port_range.is_empty() {
        return Err(CellError::Config("port range is empty".into()));
    }
    for (what, path) in [
        ("lifecycle binary", &config.lifecycle_binary),
        ("runc", &config.runc),
    ] {
        if !path.is_file() {
            return Err(CellError::Config(format!(
                "{what} {} is not a file",
                path.display()
            )));
        }
    }
    if !disk::available() {
        return Err(CellError::Config(
            "disk quotas need mkfs.ext4 (Debian package e2fsprogs)".into(),
        ));
    }
    let containers_dir = config.data_dir.join("containers");
    let cache_dir = config.data_dir.join("cache");
    for dir in [&config.data_dir, &containers_dir, &cache_dir] {
        std::fs::create_dir_all(dir).map_err(|source| CellError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let stack_dir = config.data_dir.join("stacks").join(&config.stack_name);
    let stack_name = config.stack_name.clone();
    let started = std::time::Instant::now();
    let stack =
        tokio::task::spawn_blocking(move || stack::build_host_stack(&stack_dir, &stack_name))
            .await
            .map_err(|e| CellError::Config(format!("stack build panicked: {e}")))??;
    tracing::info!(
        cell_id = %config.cell_id,
        stack = %stack.name,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stack ready"
    );

    claim_cell_id(bbs.as_ref(), &config, &containers_dir, &stack).await?;
    sweep(runtime.as_ref(), &containers_dir, &config.cell_id).await?;
    // After the sweep: a previous run's namespaces are free only once its
    // containers are gone.
    let network = match &config.network {
        Some(net) => Some(Arc::new(
            CellNetwork::setup(
                &config.cell_id,
                net,
                config
                    .address
                    .parse()
                    .ok()
                    .filter(|ip: &std::net::Ipv4Addr| !ip.is_unspecified()),
                &config.data_dir.join("network"),
            )
            .await?,
        )),
        None => None,
    };

    let http = reqwest::Client::builder()
        // Blob URLs point at Kiln's own API; a proxy from the environment
        // would only get in the way.
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        // A transfer that stalls fails instead of holding an instance in
        // CLAIMED forever (tasks are bounded by their timeout anyway).
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| CellError::Config(format!("http client: {e}")))?;
    let images = crate::image::Images::open(&config.data_dir, &config.images)?;
    let ctx = Arc::new(CellCtx {
        images,
        downloader: Downloader::new(http.clone(), cache_dir),
        ports: PortAllocator::new(config.port_range.clone()),
        http,
        stack,
        runtime,
        bbs,
        logs,
        disks: disk::DiskPool::new(&containers_dir),
        containers_dir,
        network,
        limit_swap: Cgroups::detect().swap_limit,
        shutdown: shutdown.clone(),
        quiet: Default::default(),
        config,
    });
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel();
    let mut rep = Rep {
        ctx: ctx.clone(),
        running: HashMap::new(),
        unreported: HashMap::new(),
        finished_tx,
        evacuation: None,
    };

    let mut events = ctx.bbs.subscribe();
    let _ = rep.heartbeat().await;
    // Set when another process now holds this cell's id.
    let mut replaced = false;
    let mut heartbeat = tokio::time::interval(ctx.config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first bulk sync at once: work placed before the cell started.
    let mut bulk_sync = tokio::time::interval(ctx.config.bulk_sync_interval);
    bulk_sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gc_tick = tokio::time::interval(IMAGE_GC_INTERVAL);
    gc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stack_tick = tokio::time::interval(STACK_REFRESH_INTERVAL);
    stack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = gc_tick.tick() => collect_image_garbage(&ctx),
            _ = stack_tick.tick() => refresh_stack(&ctx).await,
            _ = evacuate.cancelled(), if rep.evacuation.is_none() => {
                rep.evacuation = Some(Evacuation {
                    deadline: tokio::time::Instant::now() + ctx.config.evacuation_timeout,
                    accepted: false,
                    retiring: HashSet::new(),
                });
                if rep.evacuate().await {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                if !rep.heartbeat().await {
                    replaced = true;
                    break;
                }
                // An evacuation advances and a report the BBS did not
                // take is retried at every heartbeat, not only at the
                // next bulk sync.
                if (rep.evacuation.is_some() || !rep.unreported.is_empty())
                    && rep.reconcile().await
                {
                    break;
                }
            }
            _ = bulk_sync.tick() => {
                if rep.reconcile().await {
                    break;
                }
            }
            Some(finished) = finished_rx.recv() => {
                rep.finished(finished).await;
                if rep.evacuation.is_some() && rep.evacuate().await {
                    break;
                }
            }
            event = events.next() => match event {
                Some(event) => {
                    let mut relevant = rep.concerns(&event);
                    // Coalesce a burst of events into one sync.
                    while let Some(Some(more)) = events.next().now_or_never() {
                        relevant |= rep.concerns(&more);
                    }
                    if relevant && rep.reconcile().await {
                        break;
                    }
                }
                None => {
                    // The event stream ended (a remote BBS went away):
                    // resubscribe shortly, then re-read the work, which
                    // may have changed with no event reaching this cell.
                    tokio::time::sleep(ctx.config.heartbeat_interval).await;
                    events = ctx.bbs.subscribe();
                    if rep.reconcile().await {
                        break;
                    }
                }
            },
        }
    }

    // Shutdown: every executor's stop token is a child of `shutdown`, so
    // they are all stopping (with no grace period) already.
    tracing::info!(cell_id = %ctx.config.cell_id, containers = rep.running.len(), "cell stopping");
    let handles: Vec<JoinHandle<()>> = rep.running.drain().map(|(_, r)| r.handle).collect();
    if tokio::time::timeout(SHUTDOWN_WAIT, futures_util::future::join_all(handles))
        .await
        .is_err()
    {
        tracing::warn!(cell_id = %ctx.config.cell_id, "executors did not stop in time");
    }
    // Before the sweep, which then finds no ready disk being made.
    ctx.disks.close(SHUTDOWN_WAIT).await;
    sweep(
        ctx.runtime.as_ref(),
        &ctx.containers_dir,
        &ctx.config.cell_id,
    )
    .await?;
    if replaced {
        // The bridge and nft table are named after the id, which another
        // process holds now: they are its, not ours to remove.
        return Err(CellError::Bbs(BbsError::CellIdInUse {
            cell_id: ctx.config.cell_id.clone(),
        }));
    }
    if let Some(network) = &ctx.network {
        network.teardown().await;
    }
    tracing::info!(cell_id = %ctx.config.cell_id, "cell stopped");
    Ok(())
}

/// Announces the cell (its first heartbeat) before touching anything named
/// after its id (containers, bridge, nft table): a BBS that knows another
/// live cell under this id refuses, and this process stops before it
/// could tear down that cell's network or run its work. Work placed now
/// waits in `cell_work` for the first sync. (With no capacity instead, the
/// auction would fail at once a task desired meanwhile that fits nowhere.)
/// The configured capacity, its disk no more than the containers' file
/// system can give: what is free there plus the quotas of the containers
/// running (images are sparse, so their unwritten quota still shows as
/// free, and the auction subtracts those quotas from the capacity). A full
/// disk thus stops the auction from placing more here.
fn measured_capacity(
    config: &CellConfig,
    containers_dir: &std::path::Path,
    allocated_mb: u64,
) -> CellCapacity {
    let mut capacity = config.capacity;
    match crate::disk::free_mb(containers_dir) {
        Ok(free) => {
            capacity.disk_mb = capacity.disk_mb.min(free.saturating_add(allocated_mb));
        }
        Err(error) => {
            tracing::warn!(%error, "reading free disk failed; reporting the configured disk")
        }
    }
    capacity
}

/// What the cell runs: its stack, and docker images. One list for every
/// heartbeat, so the first one does not offer less than the later ones.
fn rootfs_providers(stack: &stack::Stack) -> Vec<kiln_model::rootfs::RootFsProvider> {
    vec![
        stack.rootfs_provider(),
        kiln_model::rootfs::RootFsProvider::Docker,
    ]
}

async fn claim_cell_id(
    bbs: &dyn BbsClient,
    config: &CellConfig,
    containers_dir: &std::path::Path,
    stack: &stack::Stack,
) -> Result<(), CellError> {
    let presence = CellPresence {
        cell_id: config.cell_id.clone(),
        address: config.address.clone(),
        capacity: measured_capacity(config, containers_dir, 0),
        rootfs_providers: rootfs_providers(stack),
    };
    match bbs.heartbeat_cell(presence).await {
        Err(error @ (BbsError::CellIdInUse { .. } | BbsError::Unauthorized(_))) => {
            tracing::error!(cell_id = %config.cell_id, %error, "the bbs refused this cell");
            Err(error.into())
        }
        Err(error) => {
            tracing::warn!(cell_id = %config.cell_id, %error, "first heartbeat failed; carrying on");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Destroys every container in the runtime and every container directory
/// (unmounting its file system, removing its cgroups): at start they are a
/// previous run's leftovers, at shutdown stragglers.
async fn sweep(
    runtime: &dyn ContainerRuntime,
    containers_dir: &std::path::Path,
    cell_id: &str,
) -> Result<(), CellError> {
    let leftovers = runtime.list().await?;
    for id in &leftovers {
        tracing::info!(cell_id, container = %id, "destroying leftover container");
        if let Err(error) = runtime.destroy(id).await {
            tracing::warn!(cell_id, container = %id, %error, "destroying leftover container");
        }
    }
    // Container directories are named by container id.
    let names: Vec<String> = std::fs::read_dir(containers_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| valid_id(name))
                .collect()
        })
        .unwrap_or_default();
    for name in &names {
        runtime.remove_leftovers(name).await;
    }
    let dir = containers_dir.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
        for mount in disk::mounts_under(&dir)? {
            if mount != dir {
                disk::unmount(&mount).map_err(std::io::Error::other)?;
            }
        }
        let mut n = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            n += 1;
        }
        Ok(n)
    })
    .await
    .map_err(|e| CellError::Config(format!("sweep panicked: {e}")))?
    .map_err(|source| CellError::DataDir {
        path: containers_dir.to_path_buf(),
        source,
    })?;
    if !leftovers.is_empty() || removed > 0 {
        tracing::info!(
            cell_id,
            containers = leftovers.len(),
            directories = removed,
            "swept leftovers"
        );
    }
    Ok(())
}

/// How often the layer cache is collected (the first at start).
pub const IMAGE_GC_INTERVAL: Duration = Duration::from_secs(300);

/// How often the stack's copies of host files (alternatives, apt sources,
/// dpkg's package list, ...) are brought up to date, so a tool installed on
/// the host after the cell started is visible to apps within this time.
pub const STACK_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Rebuilds the stack in place (idempotent, milliseconds; files and links
/// are replaced by rename, so containers starting meanwhile see no gap).
async fn refresh_stack(ctx: &Arc<CellCtx>) {
    let (dir, name) = (ctx.stack.rootfs.clone(), ctx.stack.name.clone());
    let built = tokio::task::spawn_blocking(move || stack::build_host_stack(&dir, &name)).await;
    if let Ok(Err(e)) = built {
        tracing::warn!(error = %e, "stack refresh failed");
    }
}

/// Collects the layer cache off the loop's thread. Layers of any image a
/// DesiredLrp or a task on this cell uses stay (an instance restarting
/// after a crash mounts nothing meanwhile but must not pull again); other
/// layers go once unused for the cache's grace period, or sooner while
/// the cache is over `--image-cache-mb`. When the BBS cannot say what is
/// desired, nothing is collected this time.
fn collect_image_garbage(ctx: &Arc<CellCtx>) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let needed = match desired_images(&ctx).await {
            Ok(needed) => needed,
            Err(error) => {
                tracing::warn!(%error, "not collecting image layers: desired work unknown");
                return;
            }
        };
        let images = ctx.images.clone();
        let report = tokio::task::spawn_blocking(move || images.gc(&needed)).await;
        let Ok(report) = report else { return };
        if !report.removed.is_empty() {
            tracing::info!(
                removed = report.removed.len(),
                freed_bytes = report.freed_bytes,
                kept_bytes = report.kept_bytes,
                "image layers collected"
            );
        }
        if report.over_limit {
            tracing::warn!(
                kept_bytes = report.kept_bytes,
                limit_bytes = ctx.config.images.cache_max_bytes,
                "image layers that desired work needs exceed --image-cache-mb"
            );
        }
    });
}

/// The images of every DesiredLrp (any cell may be asked to run one) and
/// of the tasks placed on this cell.
async fn desired_images(ctx: &CellCtx) -> Result<Vec<String>, BbsError> {
    let lrps = ctx.bbs.desired_lrps(None).await?;
    let work = ctx.bbs.cell_work(&ctx.config.cell_id).await?;
    let images = lrps
        .iter()
        .map(|lrp| &lrp.rootfs)
        .chain(work.tasks.iter().map(|task| &task.definition.rootfs))
        .filter_map(|rootfs| rootfs.image().map(str::to_string))
        .collect();
    Ok(images)
}

impl Rep {
    /// Heartbeats; false when the BBS says another live cell holds this
    /// id (this one was silent past its TTL and was replaced): the cell
    /// must then stop rather than run work twice.
    async fn heartbeat(&self) -> bool {
        let config = &self.ctx.config;
        let allocated_mb = self.running.values().map(|r| r.disk_mb).sum();
        let presence = CellPresence {
            cell_id: config.cell_id.clone(),
            address: config.address.clone(),
            capacity: measured_capacity(config, &self.ctx.containers_dir, allocated_mb),
            rootfs_providers: rootfs_providers(&self.ctx.stack),
        };
        match self.ctx.bbs.heartbeat_cell(presence).await {
            Ok(()) => true,
            Err(error @ BbsError::CellIdInUse { .. }) => {
                tracing::error!(cell_id = %config.cell_id, %error, "another cell holds this id now; stopping");
                false
            }
            Err(error) => {
                tracing::warn!(cell_id = %config.cell_id, %error, "heartbeat failed");
                true
            }
        }
    }

    /// Whether an event may change what this cell should run.
    fn concerns(&self, event: &BbsEvent) -> bool {
        let cell_id = self.ctx.config.cell_id.as_str();
        let runs_key = |key: &ActualLrpKey| {
            self.running
                .values()
                .any(|r| matches!(&r.work, Work::Lrp { key: k, .. } if k == key))
        };
        match event {
            BbsEvent::TaskChanged { task } => {
                task.cell_id == cell_id || self.running.contains_key(&task.task_guid)
            }
            BbsEvent::TaskRemoved { task_guid } => self.running.contains_key(task_guid),
            BbsEvent::ActualLrpChanged { actual_lrp } => match &actual_lrp.instance_key {
                // Held here by an instance this cell already runs: the
                // echo of its own report (RUNNING), which changes nothing
                // a sync would do (Diego's rep does not re-sync on it).
                Some(ik) if ik.cell_id == cell_id => !self.running.contains_key(&ik.instance_guid),
                // New work for this cell, or a record that no longer
                // holds the instance this cell runs for its key.
                _ => runs_key(&actual_lrp.key),
            },
            BbsEvent::ActualLrpRemoved { key } => runs_key(key),
            BbsEvent::DesiredLrpRemoved { process_guid } => self.running.values().any(
                |r| matches!(&r.work, Work::Lrp { key, .. } if key.process_guid == *process_guid),
            ),
            // A crash comes with the ActualLrp's change, matched above.
            BbsEvent::DesiredLrpChanged { .. } | BbsEvent::ActualLrpCrashed { .. } => false,
            BbsEvent::Lagged => true,
        }
    }

    /// What a change to this cell's work calls for: while evacuating, the
    /// evacuation's next step (true once the cell may stop); otherwise a
    /// sync (false).
    async fn reconcile(&mut self) -> bool {
        if self.evacuation.is_some() {
            self.evacuate().await
        } else {
            self.sync().await;
            false
        }
    }

    /// The bulk sync: make the containers match the work listed here.
    async fn sync(&mut self) {
        let cell_id = self.ctx.config.cell_id.clone();
        let mut work = match self.ctx.bbs.cell_work(&cell_id).await {
            Ok(work) => work,
            Err(error) => {
                tracing::warn!(%cell_id, %error, "reading cell work failed");
                return;
            }
        };
        let mut listed: HashSet<String> = HashSet::new();

        for task in std::mem::take(&mut work.tasks) {
            if task.cell_id != cell_id {
                continue;
            }
            listed.insert(task.task_guid.clone());
            if self.running.contains_key(&task.task_guid) {
                continue;
            }
            if let Some(report) = self.unreported.get(&task.task_guid).cloned() {
                self.report(&task.task_guid, report).await;
                continue;
            }
            match task.state {
                TaskState::Pending => self.start_task(task).await,
                TaskState::Running => {
                    // Placed and started here, but no container runs it:
                    // this cell restarted (or lost it) mid-run.
                    let outcome = TaskOutcome {
                        failed: true,
                        failure_reason: CELL_RESTARTED.into(),
                        result: String::new(),
                    };
                    tracing::info!(%cell_id, task_guid = %task.task_guid, "failing task this cell no longer runs");
                    let report = Report::TaskCompleted {
                        task_guid: task.task_guid.clone(),
                        outcome,
                    };
                    self.report(&task.task_guid, report).await;
                }
                TaskState::Completed | TaskState::Resolving => {}
            }
        }

        let desired = work.desired_by_guid();
        for actual in &work.lrps {
            let Some(instance_key) = actual.instance_key.clone() else {
                continue;
            };
            if instance_key.cell_id != cell_id {
                continue;
            }
            let id = instance_key.instance_guid.clone();
            listed.insert(id.clone());
            if self.running.contains_key(&id) {
                continue;
            }
            if let Some(report) = self.unreported.get(&id).cloned() {
                self.report(&id, report).await;
                continue;
            }
            let Some(&desired) = desired.get(actual.key.process_guid.as_str()) else {
                continue;
            };
            self.start_lrp(LrpAssignment {
                actual: (**actual).clone(),
                desired: desired.clone(),
            });
        }

        for (id, running) in &self.running {
            if !listed.contains(id) && !running.stop.is_cancelled() {
                match &running.work {
                    Work::Task { task_guid } => {
                        tracing::info!(%cell_id, %task_guid, "stopping task no longer placed here")
                    }
                    Work::Lrp { key, .. } => tracing::info!(
                        %cell_id,
                        process_guid = %key.process_guid,
                        index = key.index,
                        instance_guid = %id,
                        "stopping instance no longer placed here"
                    ),
                }
                running.stop.cancel();
            }
        }
        self.unreported.retain(|id, _| listed.contains(id));
    }

    /// One step of the evacuation: have the BBS take it, then stop every
    /// instance whose replacement runs elsewhere (or whose record is gone).
    /// Returns true once the cell may stop: nothing runs, or time is up.
    async fn evacuate(&mut self) -> bool {
        let cell_id = self.ctx.config.cell_id.clone();
        let Some(evacuation) = &mut self.evacuation else {
            return false;
        };
        if tokio::time::Instant::now() >= evacuation.deadline {
            tracing::warn!(%cell_id, remaining = self.running.len(), "evacuation timed out; stopping what is left");
            return true;
        }
        if !evacuation.accepted {
            match self.ctx.bbs.evacuate_cell(&cell_id).await {
                Ok(()) => {
                    tracing::info!(%cell_id, instances = self.running.len(), "cell evacuating");
                    evacuation.accepted = true;
                }
                Err(error) => {
                    tracing::warn!(%cell_id, %error, "evacuation not taken by the bbs; will retry");
                    return false;
                }
            }
        }
        let mut by_process: HashMap<String, Vec<(String, ActualLrpKey, ActualLrpInstanceKey)>> =
            HashMap::new();
        for (id, running) in &self.running {
            if let Work::Lrp { key, instance_key } = &running.work
                && !running.stop.is_cancelled()
                && !evacuation.retiring.contains(id)
            {
                by_process
                    .entry(key.process_guid.clone())
                    .or_default()
                    .push((id.clone(), key.clone(), instance_key.clone()));
            }
        }
        for (process_guid, instances) in by_process {
            let filter = kiln_bbs_client::ActualLrpFilter {
                process_guid: Some(process_guid),
                ..Default::default()
            };
            let Ok(records) = self.ctx.bbs.actual_lrps(filter).await else {
                continue;
            };
            for (id, key, instance_key) in instances {
                let replaced = match records.iter().find(|r| r.key.index == key.index) {
                    None => true,
                    Some(r) => {
                        r.state == kiln_model::ActualLrpState::Running
                            && r.instance_key.as_ref() != Some(&instance_key)
                    }
                };
                if !replaced {
                    continue;
                }
                evacuation.retiring.insert(id.clone());
                tracing::info!(%cell_id, process_guid = %key.process_guid, index = key.index, instance_guid = %id, "replacement runs elsewhere; stopping the evacuated instance");
                if let Err(error) = self
                    .ctx
                    .bbs
                    .remove_evacuating_lrp(&key, &instance_key)
                    .await
                {
                    tracing::warn!(%cell_id, %error, "removing the evacuating instance");
                }
                if let Some(running) = self.running.get(&id) {
                    let stop = running.stop.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(EVACUATION_ROUTE_DRAIN).await;
                        stop.cancel();
                    });
                }
            }
        }
        self.running.is_empty()
    }

    async fn start_task(&mut self, task: Task) {
        let cell_id = &self.ctx.config.cell_id;
        match self.ctx.bbs.start_task(&task.task_guid, cell_id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%cell_id, task_guid = %task.task_guid, %error, "starting task failed");
                return;
            }
        }
        let id = task.task_guid.clone();
        let work = Work::Task {
            task_guid: id.clone(),
        };
        let ctx = self.ctx.clone();
        let disk_mb = task.definition.disk_mb;
        self.spawn(id, work, disk_mb, move |stop| async move {
            End::Task(task::run(ctx, task, stop).await)
        });
    }

    fn start_lrp(&mut self, assignment: LrpAssignment) {
        let Some(instance_key) = assignment.actual.instance_key.clone() else {
            return;
        };
        let id = instance_key.instance_guid.clone();
        if !valid_id(&id) {
            tracing::warn!(instance_guid = %id, "refusing instance with an unusable guid");
            return;
        }
        let work = Work::Lrp {
            key: assignment.actual.key.clone(),
            instance_key,
        };
        let ctx = self.ctx.clone();
        let disk_mb = assignment.desired.disk_mb;
        self.spawn(id, work, disk_mb, move |stop| async move {
            End::Lrp(lrp::run(ctx, assignment, stop).await)
        });
    }

    fn spawn<F, Fut>(&mut self, id: String, work: Work, disk_mb: u64, executor: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = End> + Send + 'static,
    {
        let stop = self.ctx.shutdown.child_token();
        let fut = executor(stop.clone());
        let tx = self.finished_tx.clone();
        let failed_end = match &work {
            Work::Task { .. } => End::Task(Some(TaskOutcome {
                failed: true,
                failure_reason: "cell executor failed".into(),
                result: String::new(),
            })),
            Work::Lrp { .. } => End::Lrp(LrpEnd::Crashed("cell executor failed".into())),
        };
        let finished_id = id.clone();
        let handle = tokio::spawn(async move {
            // A panicking executor must still free its slot and report.
            let end = AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(container = %finished_id, "executor panicked");
                    failed_end
                });
            let _ = tx.send(Finished {
                id: finished_id,
                end,
            });
        });
        self.running.insert(
            id,
            Running {
                work,
                disk_mb,
                stop,
                handle,
            },
        );
    }

    async fn finished(&mut self, finished: Finished) {
        let Some(running) = self.running.remove(&finished.id) else {
            return;
        };
        if self.evacuation.is_some()
            && let Work::Lrp { key, instance_key } = &running.work
        {
            // An old instance that ended by itself is no longer routable.
            let _ = self.ctx.bbs.remove_evacuating_lrp(key, instance_key).await;
        }
        let report = match (running.work, finished.end) {
            (Work::Task { task_guid }, End::Task(Some(outcome))) => {
                Report::TaskCompleted { task_guid, outcome }
            }
            (Work::Lrp { key, instance_key }, End::Lrp(LrpEnd::Crashed(reason))) => {
                Report::LrpCrashed {
                    key,
                    instance_key,
                    reason,
                }
            }
            _ => return,
        };
        if self.ctx.shutdown.is_cancelled() {
            return;
        }
        self.report(&finished.id, report).await;
    }

    /// Makes the BBS call that ends a unit of work; keeps it for a retry
    /// when the BBS is unavailable.
    async fn report(&mut self, id: &str, report: Report) {
        let bbs = &self.ctx.bbs;
        let cell_id = &self.ctx.config.cell_id;
        let result = match &report {
            Report::TaskCompleted { task_guid, outcome } => {
                bbs.complete_task(
                    task_guid,
                    cell_id,
                    outcome.failed,
                    &outcome.failure_reason,
                    &outcome.result,
                )
                .await
            }
            Report::LrpCrashed {
                key,
                instance_key,
                reason,
            } => bbs.crash_actual_lrp(key, instance_key, reason).await,
        };
        match result {
            Ok(()) => {
                self.unreported.remove(id);
            }
            Err(kiln_bbs_client::BbsError::Unavailable(error)) => {
                tracing::warn!(%cell_id, container = id, %error, "report failed; will retry");
                self.unreported.insert(id.to_string(), report);
            }
            Err(error) => {
                // The BBS moved on (cancelled, re-placed, removed): nothing
                // left to report.
                tracing::info!(%cell_id, container = id, %error, "report not taken");
                self.unreported.remove(id);
            }
        }
    }
}
