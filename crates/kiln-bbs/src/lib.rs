//! Kiln's BBS: Diego's bulletin board.
//!
//! Owns desired versus actual state for LRPs and tasks, the placement of
//! work on cells (the auctioneer) and convergence. It sees process guids,
//! domains and actions, exactly like Diego; it knows nothing of apps, spaces
//! or buildpacks.
//!
//! [`Bbs`] is the in-process implementation of [`BbsClient`] over its own
//! SQLite database; [`Bbs::run`] drives the auction and convergence loops.
//! Writes are serialised by one async mutex: there is one active BBS (as in
//! Diego, which holds a lock for it), and read-check-write sequences then
//! cannot interleave.

pub mod auction;
pub mod client;
pub mod crash;
mod store;

pub use client::{ActualLrpFilter, BbsClient, BbsError};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use kiln_model::bbs::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, BbsEvent, CellPresence,
    CellWork, DesiredLrp, DesiredLrpUpdate, Nanos, Task, TaskDefinition,
};
use kiln_model::{ActualLrpState, TaskState};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BbsConfig {
    /// How often convergence runs (Diego: 30 s). It also runs after every
    /// change that needs an auction.
    pub convergence_interval: Duration,
    /// A cell that has not heartbeated for this long is lost (Locket's TTL).
    pub cell_ttl: Duration,
    /// A task not placed within this long fails (Diego: 30 min).
    pub pending_task_expiry: Duration,
    /// A RESOLVING task whose resolver vanished goes back to COMPLETED.
    pub resolving_timeout: Duration,
}

impl Default for BbsConfig {
    fn default() -> Self {
        BbsConfig {
            convergence_interval: Duration::from_secs(5),
            cell_ttl: Duration::from_secs(15),
            pending_task_expiry: Duration::from_secs(30 * 60),
            resolving_timeout: Duration::from_secs(30),
        }
    }
}

/// The in-process BBS. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Bbs {
    inner: Arc<Inner>,
}

struct Inner {
    pool: kiln_store::SqlitePool,
    write: tokio::sync::Mutex<()>,
    events: broadcast::Sender<BbsEvent>,
    cells: Mutex<HashMap<String, (CellPresence, Instant)>>,
    wake: Notify,
    config: BbsConfig,
}

const MIGRATIONS: &[kiln_store::MigrationStep] =
    &[(1, "bbs tables", include_str!("../migrations/0001_bbs.sql"))];

pub(crate) fn now_nanos() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as Nanos)
}

/// What one convergence pass changed, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConvergenceReport {
    pub missing_created: usize,
    pub extra_removed: usize,
    pub crashed_restarted: usize,
    pub lost_cell_reclaimed: usize,
    pub tasks_failed: usize,
    pub placed: usize,
    pub unplaced: usize,
}

impl Bbs {
    pub async fn open(path: &Path) -> Result<Bbs, BbsError> {
        Bbs::open_with(path, BbsConfig::default()).await
    }

    pub async fn open_with(path: &Path, config: BbsConfig) -> Result<Bbs, BbsError> {
        let pool = kiln_store::open_database(path, &kiln_store::migrator(MIGRATIONS))
            .await
            .map_err(|e| BbsError::Unavailable(e.to_string()))?;
        Ok(Bbs {
            inner: Arc::new(Inner {
                pool,
                write: tokio::sync::Mutex::new(()),
                events: broadcast::channel(4096).0,
                cells: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                config,
            }),
        })
    }

    /// Runs convergence and the auction until `shutdown`: every
    /// `convergence_interval`, and at once whenever work needs placing.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), BbsError> {
        let mut tick = tokio::time::interval(self.inner.config.convergence_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            match self.converge().await {
                Ok(report) if report != ConvergenceReport::default() => {
                    tracing::debug!(?report, "convergence pass")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "convergence pass failed"),
            }
        }
    }

    fn emit(&self, event: BbsEvent) {
        // No subscribers is fine: the store is the truth.
        let _ = self.inner.events.send(event);
    }

    fn wake_auction(&self) {
        self.inner.wake.notify_one();
    }

    fn live_cells(&self) -> Vec<CellPresence> {
        let ttl = self.inner.config.cell_ttl;
        let cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .values()
            .filter(|(_, seen)| seen.elapsed() <= ttl)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// One convergence pass followed by an auction of everything unplaced
    /// (Diego's converger and auctioneer, in one loop).
    pub async fn converge(&self) -> Result<ConvergenceReport, BbsError> {
        let _write = self.inner.write.lock().await;
        let now = now_nanos();
        let live: Vec<CellPresence> = self.live_cells();
        let mut report = ConvergenceReport::default();
        let mut changed: Vec<BbsEvent> = Vec::new();

        let desired = store::desired_lrps(&self.inner.pool, None).await?;
        let desired_by_guid: HashMap<&str, &DesiredLrp> = desired
            .iter()
            .map(|d| (d.process_guid.as_str(), d))
            .collect();
        let actuals = store::actual_lrps(&self.inner.pool, &ActualLrpFilter::default()).await?;

        // Orphans and extra indices: retire them (their cells stop them).
        let mut present: HashMap<&str, Vec<u32>> = HashMap::new();
        for a in &actuals {
            match desired_by_guid.get(a.key.process_guid.as_str()) {
                Some(d) if a.key.index < d.instances => present
                    .entry(d.process_guid.as_str())
                    .or_default()
                    .push(a.key.index),
                _ => {
                    store::delete_actual_lrp(&self.inner.pool, &a.key).await?;
                    report.extra_removed += 1;
                    changed.push(BbsEvent::ActualLrpRemoved { key: a.key.clone() });
                }
            }
        }
        // Missing indices: create them UNCLAIMED.
        for d in &desired {
            let have = present.get(d.process_guid.as_str());
            for index in 0..d.instances {
                if have.is_none_or(|v| !v.contains(&index)) {
                    let a = store::insert_unclaimed(&self.inner.pool, d, index, now).await?;
                    report.missing_created += 1;
                    changed.push(BbsEvent::ActualLrpChanged { actual_lrp: a });
                }
            }
        }
        // Crashed instances whose back-off is over, and instances on lost cells.
        let live_ids: Vec<&str> = live.iter().map(|c| c.cell_id.as_str()).collect();
        for a in &actuals {
            if !desired_by_guid.contains_key(a.key.process_guid.as_str()) {
                continue;
            }
            let on_lost_cell = matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
                && a.instance_key
                    .as_ref()
                    .is_some_and(|ik| !live_ids.contains(&ik.cell_id.as_str()));
            let restart = a.state == ActualLrpState::Crashed
                && crash::should_restart(a.crash_count, a.since, now);
            if on_lost_cell || restart {
                let mut next = a.clone();
                next.state =
                    a.state
                        .transition_to(ActualLrpState::Unclaimed)
                        .map_err(|source| BbsError::InvalidTransition {
                            kind: "actual lrp",
                            guid: a.key.process_guid.clone(),
                            source,
                        })?;
                next.instance_key = None;
                next.net_info = None;
                next.since = now;
                store::update_actual_lrp(&self.inner.pool, &next).await?;
                if on_lost_cell {
                    report.lost_cell_reclaimed += 1;
                } else {
                    report.crashed_restarted += 1;
                }
                changed.push(BbsEvent::ActualLrpChanged { actual_lrp: next });
            }
        }

        // Tasks: expire unplaced ones, fail those on lost cells, and hand
        // back RESOLVING ones whose resolver went away.
        let tasks = store::tasks(&self.inner.pool, None).await?;
        let expiry = self.inner.config.pending_task_expiry.as_nanos() as Nanos;
        let resolving_timeout = self.inner.config.resolving_timeout.as_nanos() as Nanos;
        for t in &tasks {
            let failure = match t.state {
                TaskState::Pending if now - t.created_at > expiry => {
                    Some("not started within time limit")
                }
                TaskState::Running if !live_ids.contains(&t.cell_id.as_str()) => {
                    Some("cell disappeared before completion")
                }
                _ => None,
            };
            if let Some(reason) = failure {
                let task = store::complete_task(&self.inner.pool, t, true, reason, "", now).await?;
                report.tasks_failed += 1;
                changed.push(BbsEvent::TaskChanged { task });
            } else if t.state == TaskState::Resolving && now - t.updated_at > resolving_timeout {
                let task =
                    store::set_task_state(&self.inner.pool, t, TaskState::Completed, now).await?;
                changed.push(BbsEvent::TaskChanged { task });
            }
        }

        let (placed, unplaced, auction_events) = self.auction_locked(&live, now).await?;
        report.placed = placed;
        report.unplaced = unplaced;
        changed.extend(auction_events);
        for event in changed {
            self.emit(event);
        }
        Ok(report)
    }

    /// Places every UNCLAIMED ActualLrp and unplaced PENDING task it can.
    /// Must be called with the write lock held.
    async fn auction_locked(
        &self,
        live: &[CellPresence],
        now: Nanos,
    ) -> Result<(usize, usize, Vec<BbsEvent>), BbsError> {
        use auction::{CellLoad, Work, WorkKind};
        let pool = &self.inner.pool;
        let desired: HashMap<String, DesiredLrp> = store::desired_lrps(pool, None)
            .await?
            .into_iter()
            .map(|d| (d.process_guid.clone(), d))
            .collect();
        let actuals = store::actual_lrps(pool, &ActualLrpFilter::default()).await?;
        let tasks = store::tasks(pool, None).await?;

        let mut cells: Vec<CellLoad> = live
            .iter()
            .map(|p| CellLoad {
                cell_id: p.cell_id.clone(),
                rootfs_providers: p.rootfs_providers.clone(),
                memory_mb: p.capacity.memory_mb,
                disk_mb: p.capacity.disk_mb,
                containers: p.capacity.containers,
                used_memory_mb: 0,
                used_disk_mb: 0,
                used_containers: 0,
                starting: 0,
                instances_by_process: HashMap::new(),
                tasks: 0,
            })
            .collect();
        let index_of: HashMap<String, usize> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.cell_id.clone(), i))
            .collect();

        let mut batch = Vec::new();
        for a in &actuals {
            let Some(d) = desired.get(&a.key.process_guid) else {
                continue;
            };
            match (&a.state, &a.instance_key) {
                (ActualLrpState::Claimed | ActualLrpState::Running, Some(ik)) => {
                    if let Some(&i) = index_of.get(&ik.cell_id) {
                        let c = &mut cells[i];
                        c.used_memory_mb += d.memory_mb;
                        c.used_disk_mb += d.disk_mb;
                        c.used_containers += 1;
                        c.starting += u32::from(a.state == ActualLrpState::Claimed);
                        *c.instances_by_process
                            .entry(d.process_guid.clone())
                            .or_default() += 1;
                    }
                }
                (ActualLrpState::Unclaimed, _) => batch.push(Work {
                    kind: WorkKind::Lrp {
                        process_guid: d.process_guid.clone(),
                        index: a.key.index,
                    },
                    rootfs: d.rootfs.clone(),
                    memory_mb: d.memory_mb,
                    disk_mb: d.disk_mb,
                }),
                _ => {}
            }
        }
        for t in &tasks {
            match t.state {
                TaskState::Pending if t.cell_id.is_empty() => batch.push(Work {
                    kind: WorkKind::Task {
                        task_guid: t.task_guid.clone(),
                    },
                    rootfs: t.definition.rootfs.clone(),
                    memory_mb: t.definition.memory_mb,
                    disk_mb: t.definition.disk_mb,
                }),
                TaskState::Pending | TaskState::Running => {
                    if let Some(&i) = index_of.get(&t.cell_id) {
                        let c = &mut cells[i];
                        c.used_memory_mb += t.definition.memory_mb;
                        c.used_disk_mb += t.definition.disk_mb;
                        c.used_containers += 1;
                        c.tasks += 1;
                    }
                }
                _ => {}
            }
        }
        auction::sort_batch(&mut batch);

        let (mut placed, mut unplaced, mut events) = (0, 0, Vec::new());
        for work in &batch {
            let outcome = auction::place(&mut cells, work);
            match (&work.kind, outcome) {
                (
                    WorkKind::Lrp {
                        process_guid,
                        index,
                    },
                    outcome,
                ) => {
                    let Some(mut a) = actuals
                        .iter()
                        .find(|a| a.key.process_guid == *process_guid && a.key.index == *index)
                        .cloned()
                    else {
                        continue;
                    };
                    match outcome {
                        Ok(i) => {
                            a.state = a.state.transition_to(ActualLrpState::Claimed).map_err(
                                |source| BbsError::InvalidTransition {
                                    kind: "actual lrp",
                                    guid: process_guid.clone(),
                                    source,
                                },
                            )?;
                            a.instance_key = Some(ActualLrpInstanceKey {
                                instance_guid: uuid::Uuid::new_v4().to_string(),
                                cell_id: cells[i].cell_id.clone(),
                            });
                            a.placement_error.clear();
                            a.since = now;
                            placed += 1;
                        }
                        Err(placement_error) => {
                            unplaced += 1;
                            if a.placement_error == placement_error {
                                continue;
                            }
                            a.placement_error = placement_error;
                        }
                    }
                    store::update_actual_lrp(&self.inner.pool, &a).await?;
                    events.push(BbsEvent::ActualLrpChanged { actual_lrp: a });
                }
                (WorkKind::Task { task_guid }, Ok(i)) => {
                    let Some(t) = tasks.iter().find(|t| t.task_guid == *task_guid) else {
                        continue;
                    };
                    let task =
                        store::place_task(&self.inner.pool, t, &cells[i].cell_id, now).await?;
                    placed += 1;
                    events.push(BbsEvent::TaskChanged { task });
                }
                (WorkKind::Task { task_guid }, Err(placement_error)) => {
                    unplaced += 1;
                    tracing::debug!(task_guid, placement_error, "task not placed yet");
                }
            }
        }
        Ok((placed, unplaced, events))
    }

    async fn actual_for_update(&self, key: &ActualLrpKey) -> Result<ActualLrp, BbsError> {
        store::actual_lrp(&self.inner.pool, key)
            .await?
            .ok_or_else(|| BbsError::NotFound {
                kind: "actual lrp",
                guid: format!("{}/{}", key.process_guid, key.index),
            })
    }
}

fn held_by(actual: &ActualLrp, instance_key: &ActualLrpInstanceKey) -> bool {
    actual.instance_key.as_ref() == Some(instance_key)
}

fn mismatch(key: &ActualLrpKey, instance_key: &ActualLrpInstanceKey) -> BbsError {
    BbsError::InstanceMismatch {
        process_guid: key.process_guid.clone(),
        index: key.index,
        instance_guid: instance_key.instance_guid.clone(),
    }
}

fn valid_guid(guid: &str) -> bool {
    !guid.is_empty()
        && guid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[async_trait]
impl BbsClient for Bbs {
    async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        definition: TaskDefinition,
    ) -> Result<(), BbsError> {
        if !valid_guid(task_guid) || domain.is_empty() {
            return Err(BbsError::InvalidRequest(format!(
                "task guid {task_guid:?} or domain {domain:?}"
            )));
        }
        let _write = self.inner.write.lock().await;
        if store::task(&self.inner.pool, task_guid).await?.is_some() {
            return Err(BbsError::AlreadyExists {
                kind: "task",
                guid: task_guid.into(),
            });
        }
        let task = store::insert_task(&self.inner.pool, task_guid, domain, definition, now_nanos())
            .await?;
        tracing::info!(task_guid, domain, "task desired");
        self.emit(BbsEvent::TaskChanged { task });
        self.wake_auction();
        Ok(())
    }

    async fn task_by_guid(&self, task_guid: &str) -> Result<Task, BbsError> {
        store::task(&self.inner.pool, task_guid)
            .await?
            .ok_or_else(|| BbsError::NotFound {
                kind: "task",
                guid: task_guid.into(),
            })
    }

    async fn tasks(&self, domain: Option<&str>) -> Result<Vec<Task>, BbsError> {
        store::tasks(&self.inner.pool, domain).await
    }

    async fn cancel_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let t = self.task_by_guid(task_guid).await?;
        let task = store::complete_task(
            &self.inner.pool,
            &t,
            true,
            "task was cancelled",
            "",
            now_nanos(),
        )
        .await?;
        self.emit(BbsEvent::TaskChanged { task });
        Ok(())
    }

    async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let t = self.task_by_guid(task_guid).await?;
        let task =
            store::set_task_state(&self.inner.pool, &t, TaskState::Resolving, now_nanos()).await?;
        self.emit(BbsEvent::TaskChanged { task });
        Ok(())
    }

    async fn delete_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let t = self.task_by_guid(task_guid).await?;
        if t.state != TaskState::Resolving {
            return Err(BbsError::InvalidRequest(format!(
                "task {task_guid} is {} and can be deleted only once RESOLVING",
                t.state
            )));
        }
        store::delete_task(&self.inner.pool, task_guid).await?;
        self.emit(BbsEvent::TaskRemoved {
            task_guid: task_guid.into(),
        });
        Ok(())
    }

    async fn desire_lrp(&self, desired_lrp: DesiredLrp) -> Result<(), BbsError> {
        if !valid_guid(&desired_lrp.process_guid) || desired_lrp.domain.is_empty() {
            return Err(BbsError::InvalidRequest(format!(
                "process guid {:?} or domain {:?}",
                desired_lrp.process_guid, desired_lrp.domain
            )));
        }
        let _write = self.inner.write.lock().await;
        let pool = &self.inner.pool;
        if store::desired_lrp(pool, &desired_lrp.process_guid)
            .await?
            .is_some()
        {
            return Err(BbsError::AlreadyExists {
                kind: "desired lrp",
                guid: desired_lrp.process_guid,
            });
        }
        let now = now_nanos();
        store::insert_desired_lrp(pool, &desired_lrp, now).await?;
        let mut events = vec![BbsEvent::DesiredLrpChanged {
            desired_lrp: desired_lrp.clone(),
        }];
        for index in 0..desired_lrp.instances {
            let actual_lrp = store::insert_unclaimed(pool, &desired_lrp, index, now).await?;
            events.push(BbsEvent::ActualLrpChanged { actual_lrp });
        }
        tracing::info!(process_guid = %desired_lrp.process_guid, instances = desired_lrp.instances, "desired lrp created");
        for e in events {
            self.emit(e);
        }
        self.wake_auction();
        Ok(())
    }

    async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: DesiredLrpUpdate,
    ) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let pool = &self.inner.pool;
        let mut d = store::desired_lrp(pool, process_guid)
            .await?
            .ok_or_else(|| BbsError::NotFound {
                kind: "desired lrp",
                guid: process_guid.into(),
            })?;
        let before = d.instances;
        if let Some(instances) = update.instances {
            d.instances = instances;
        }
        if let Some(routes) = update.routes {
            d.routes = routes;
        }
        if let Some(annotation) = update.annotation {
            d.annotation = annotation;
        }
        store::update_desired_lrp(pool, &d, now_nanos()).await?;
        self.emit(BbsEvent::DesiredLrpChanged {
            desired_lrp: d.clone(),
        });
        if d.instances != before {
            // Convergence creates the missing indices and retires the extra
            // ones; run it now rather than at the next tick.
            self.wake_auction();
        }
        Ok(())
    }

    async fn remove_desired_lrp(&self, process_guid: &str) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let pool = &self.inner.pool;
        if store::desired_lrp(pool, process_guid).await?.is_none() {
            return Err(BbsError::NotFound {
                kind: "desired lrp",
                guid: process_guid.into(),
            });
        }
        let filter = ActualLrpFilter {
            process_guid: Some(process_guid.into()),
            ..Default::default()
        };
        let actuals = store::actual_lrps(pool, &filter).await?;
        store::delete_desired_lrp(pool, process_guid).await?;
        tracing::info!(process_guid, "desired lrp removed");
        for a in actuals {
            self.emit(BbsEvent::ActualLrpRemoved { key: a.key });
        }
        self.emit(BbsEvent::DesiredLrpRemoved {
            process_guid: process_guid.into(),
        });
        Ok(())
    }

    async fn desired_lrps(&self, domain: Option<&str>) -> Result<Vec<DesiredLrp>, BbsError> {
        store::desired_lrps(&self.inner.pool, domain).await
    }

    async fn desired_lrp_by_process_guid(
        &self,
        process_guid: &str,
    ) -> Result<DesiredLrp, BbsError> {
        store::desired_lrp(&self.inner.pool, process_guid)
            .await?
            .ok_or_else(|| BbsError::NotFound {
                kind: "desired lrp",
                guid: process_guid.into(),
            })
    }

    async fn actual_lrps(&self, filter: ActualLrpFilter) -> Result<Vec<ActualLrp>, BbsError> {
        store::actual_lrps(&self.inner.pool, &filter).await
    }

    async fn heartbeat_cell(&self, presence: CellPresence) -> Result<(), BbsError> {
        if presence.cell_id.is_empty() {
            return Err(BbsError::InvalidRequest("empty cell id".into()));
        }
        let is_new = {
            let mut cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
            let ttl = self.inner.config.cell_ttl;
            let was_live = cells
                .get(&presence.cell_id)
                .is_some_and(|(_, seen)| seen.elapsed() <= ttl);
            cells.insert(presence.cell_id.clone(), (presence.clone(), Instant::now()));
            !was_live
        };
        if is_new {
            tracing::info!(cell_id = %presence.cell_id, "cell present");
            self.wake_auction();
        }
        Ok(())
    }

    async fn cells(&self) -> Result<Vec<CellPresence>, BbsError> {
        Ok(self.live_cells())
    }

    async fn cell_work(&self, cell_id: &str) -> Result<CellWork, BbsError> {
        store::cell_work(&self.inner.pool, cell_id).await
    }

    async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool, BbsError> {
        let _write = self.inner.write.lock().await;
        let t = self.task_by_guid(task_guid).await?;
        if t.cell_id != cell_id {
            return Ok(false);
        }
        match t.state {
            TaskState::Running => Ok(true),
            TaskState::Pending => {
                let task =
                    store::set_task_state(&self.inner.pool, &t, TaskState::Running, now_nanos())
                        .await?;
                self.emit(BbsEvent::TaskChanged { task });
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let t = self.task_by_guid(task_guid).await?;
        if t.cell_id != cell_id {
            return Err(BbsError::InvalidRequest(format!(
                "task {task_guid} is not on cell {cell_id}"
            )));
        }
        if matches!(t.state, TaskState::Completed | TaskState::Resolving) {
            // Already completed (cancelled, or failed by convergence): the
            // first outcome stands.
            return Ok(());
        }
        let task = store::complete_task(
            &self.inner.pool,
            &t,
            failed,
            failure_reason,
            result,
            now_nanos(),
        )
        .await?;
        tracing::info!(task_guid, failed, failure_reason, "task completed");
        self.emit(BbsEvent::TaskChanged { task });
        Ok(())
    }

    async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: ActualLrpNetInfo,
    ) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let mut a = self.actual_for_update(key).await?;
        let allowed = match a.state {
            ActualLrpState::Unclaimed => true,
            ActualLrpState::Claimed | ActualLrpState::Running => held_by(&a, instance_key),
            ActualLrpState::Crashed => false,
        };
        if !allowed {
            return Err(mismatch(key, instance_key));
        }
        let previous = a.state;
        a.state = a
            .state
            .transition_to(ActualLrpState::Running)
            .map_err(|source| BbsError::InvalidTransition {
                kind: "actual lrp",
                guid: key.process_guid.clone(),
                source,
            })?;
        a.instance_key = Some(instance_key.clone());
        a.net_info = Some(net_info);
        a.placement_error.clear();
        if previous != ActualLrpState::Running {
            a.since = now_nanos();
        }
        store::update_actual_lrp(&self.inner.pool, &a).await?;
        tracing::info!(process_guid = %key.process_guid, index = key.index, instance_guid = %instance_key.instance_guid, "actual lrp running");
        self.emit(BbsEvent::ActualLrpChanged { actual_lrp: a });
        Ok(())
    }

    async fn crash_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let mut a = self.actual_for_update(key).await?;
        if !matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
            || !held_by(&a, instance_key)
        {
            return Err(mismatch(key, instance_key));
        }
        let now = now_nanos();
        let running_for = (a.state == ActualLrpState::Running).then(|| now - a.since);
        a.crash_count = crash::next_crash_count(a.crash_count, running_for);
        a.crash_reason = reason.to_string();
        let to = if crash::restarts_immediately(a.crash_count) {
            ActualLrpState::Unclaimed
        } else {
            ActualLrpState::Crashed
        };
        // Through CRASHED, the state every crash passes, then on to UNCLAIMED
        // when the policy restarts it at once.
        a.state = a
            .state
            .transition_to(ActualLrpState::Crashed)
            .and_then(|s| if to == s { Ok(s) } else { s.transition_to(to) })
            .map_err(|source| BbsError::InvalidTransition {
                kind: "actual lrp",
                guid: key.process_guid.clone(),
                source,
            })?;
        a.instance_key = None;
        a.net_info = None;
        a.since = now;
        store::update_actual_lrp(&self.inner.pool, &a).await?;
        tracing::info!(process_guid = %key.process_guid, index = key.index, crash_count = a.crash_count, reason, "actual lrp crashed");
        // Diego's ActualLRPCrashedEvent: Cloud Controller records it as an
        // audit event; the change event below is for everyone else.
        self.emit(BbsEvent::ActualLrpCrashed {
            key: key.clone(),
            instance_key: instance_key.clone(),
            crash_count: a.crash_count,
            crash_reason: a.crash_reason.clone(),
            since: a.since,
        });
        self.emit(BbsEvent::ActualLrpChanged { actual_lrp: a });
        if to == ActualLrpState::Unclaimed {
            self.wake_auction();
        }
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, BbsEvent> {
        let receiver = self.inner.events.subscribe();
        Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move {
                match receiver.recv().await {
                    Ok(event) => Some((event, receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Some((BbsEvent::Lagged, receiver))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }
}
