//! Kiln's BBS: Diego's bulletin board.
//!
//! Owns desired versus actual state for LRPs and tasks, the placement of
//! work on cells (the auctioneer) and convergence. It sees process guids,
//! domains and actions, exactly like Diego; it knows nothing of apps, spaces
//! or buildpacks.
//!
//! [`Bbs`] is the in-process implementation of [`BbsClient`] over its own
//! SQLite database; [`Bbs::run`] drives the auction and convergence loops.
//! Single-record read-check-write sequences (a cell's report, a desire) hold
//! one async write mutex: there is one active BBS (as in Diego, which holds
//! a lock for it). Convergence and auction rounds compute on a snapshot
//! without it and write in short batches under it, each write a
//! compare-and-set on what the snapshot saw, so a report that lands
//! meanwhile is never overwritten.

pub mod auction;
mod auctioneer;
pub mod auth;
pub mod client;
mod converger;
pub mod crash;
mod desires;
mod evacuation;
pub mod lock;
mod mirror;
mod presence;
mod reports;
pub mod server;
pub mod standby;
mod store;
mod suspect;
mod writer;

pub use client::{ActualLrpFilter, BbsClient, BbsError};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use kiln_model::bbs::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, BbsEvent, CellPresence,
    CellWork, DesiredLrp, DesiredLrpUpdate, Nanos, Task, TaskDefinition,
};
use kiln_model::{ActualLrpState, TaskState};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::db;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BbsConfig {
    /// How often convergence runs (Diego: 30 s).
    pub convergence_interval: Duration,
    /// A cell that has not heartbeated for this long is lost (Locket's TTL).
    /// After a start, no cell is lost before this long has passed: presence
    /// lives in memory and the cells have not heartbeated to us yet.
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

/// How long after the last round the next one waits, so a burst of desires
/// (a push storm, a scale) is placed in few rounds, as Diego's auctioneer
/// batches the requests that arrive while it works. A nudge after a quiet
/// spell is placed at once: a lone push waits for no window.
const AUCTION_BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The longest pause between auction rounds, however long the last round
/// took: a round slowed by a loaded machine must not slow the next ones in
/// turn (a pause as long as the last round fed on itself under load).
const AUCTION_MAX_PAUSE: Duration = Duration::from_millis(250);

/// Each SQLite connection's page cache: the auction's and convergence's
/// write transactions (thousands of rows each at Diego's scale) dirty more
/// than SQLite's default 2 MiB, which spilled pages into the log before
/// every commit and re-read them from the file (a quarter of the CPU of a
/// re-placement after losing 100 of 1,000 cells).
const SQLITE_CACHE_KIB: u32 = 32 * 1024;

/// The log size (4 KiB pages, 800 MB) at which a commit checkpoints: the
/// calm convergence pass checkpoints (`checkpoint_when_calm`), so a burst
/// of writes does not stop to fold the log back (at 50,000 pages the
/// re-placement of 25,000 instances checkpointed inside its window:
/// 6.9 -> 5.9 CPU-s); the bound is kept for a BBS that finds no calm
/// moment.
const SQLITE_WAL_AUTOCHECKPOINT_PAGES: u32 = 200_000;

/// Events a subscriber may fall behind by before it is told it lagged
/// (and re-reads everything): a few write batches' worth (10,000 rows
/// each); with 4,096 one batch made every cell re-sync its whole work.
const EVENT_CAPACITY: usize = 32_768;

/// Presence is checked when the first cell's can expire (a cell heard
/// from later expires later), so an idle BBS with a few cells wakes for it
/// every few seconds; but no sooner than this after the last check, since
/// with many cells heartbeating the first expiry moves at every heartbeat.
/// A lost cell's instances wait up to this long after its presence expired
/// before convergence sees them (a check walks only the cells, ~1,000).
const PRESENCE_CHECK: Duration = Duration::from_millis(50);

/// The pause before an auction round after a nudge, counted from the end
/// of the last round: at least the batch window, so a burst of desires is
/// placed in few rounds; as long as the last round (a round's reads grow
/// with what is placed, and rounds back to back during a push storm would
/// take all the BBS's time), but never more than [`AUCTION_MAX_PAUSE`]. A
/// nudge after a quiet spell longer than that is auctioned at once.
#[derive(Debug, Default)]
struct AuctionPacing {
    last_round: Duration,
    last_end: Option<Instant>,
}

impl AuctionPacing {
    fn pause(&self) -> Duration {
        let spacing = self
            .last_round
            .clamp(AUCTION_BATCH_WINDOW, AUCTION_MAX_PAUSE);
        let quiet = self.last_end.map_or(spacing, |end| end.elapsed());
        spacing.saturating_sub(quiet)
    }
}

/// The in-process BBS. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Bbs {
    inner: Arc<Inner>,
}

struct Inner {
    pool: kiln_store::Pool,
    write: tokio::sync::Mutex<()>,
    /// One convergence pass or auction round at a time.
    pass: tokio::sync::Mutex<()>,
    events: broadcast::Sender<BbsEvent>,
    cells: Mutex<HashMap<String, (CellPresence, Instant)>>,
    wake: Notify,
    started: Instant,
    config: BbsConfig,
    evacuation: evacuation::Evacuation,
    suspects: suspect::Suspects,
    reports: reports::PendingStarts,
    desires: desires::PendingDesires,
    /// ActualLrps and DesiredLrps in memory for cells' work and the
    /// auction (see `mirror.rs` for why it equals the tables).
    mirror: mirror::Mirror,
    /// The connection batched writes use (see `writer.rs`).
    writer: writer::Writer,
}

const MIGRATIONS: &[kiln_store::MigrationStep] = &[
    (1, "bbs tables", include_str!("../migrations/0001_bbs.sql")),
    (2, "bbs scale", include_str!("../migrations/0002_scale.sql")),
    (
        3,
        "bbs kept instances",
        include_str!("../migrations/0003_kept_instances.sql"),
    ),
    (
        4,
        "bbs lock and cluster secrets",
        include_str!("../migrations/0004_lock.sql"),
    ),
    (
        5,
        "bbs writes fenced by the lock",
        include_str!("../migrations/0005_fence.sql"),
    ),
    (
        6,
        "bbs state index dropped",
        include_str!("../migrations/0006_state_index.sql"),
    ),
];

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
    /// Of those, RUNNING ones kept routed as SUSPECT until replaced.
    pub suspect: usize,
    /// Suspect instances whose replacement runs (or whose index went).
    pub suspect_removed: usize,
    pub tasks_failed: usize,
    /// Placed by the pass: instances of lost cells re-placed as they were
    /// taken off them, and what its auction round placed.
    pub placed: usize,
    pub unplaced: usize,
}

impl ConvergenceReport {
    /// Whether the pass wrote nothing: instances that fit nowhere and
    /// stay so are counted, not written again.
    fn is_calm(&self) -> bool {
        *self
            == ConvergenceReport {
                unplaced: self.unplaced,
                ..Default::default()
            }
    }
}

/// What one auction round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuctionReport {
    pub placed: usize,
    pub unplaced: usize,
    /// Staging and other tasks failed because they fit on no cell.
    pub tasks_failed: usize,
}

impl Bbs {
    pub async fn open(path: &Path) -> Result<Bbs, BbsError> {
        Bbs::open_with(path, BbsConfig::default()).await
    }

    pub async fn open_with(path: &Path, config: BbsConfig) -> Result<Bbs, BbsError> {
        let database = kiln_store::Database::Sqlite(path.to_path_buf());
        Bbs::open_on(&database, kiln_store::DEFAULT_MAX_CONNECTIONS, config).await
    }

    /// [`Bbs::open_with`] on `database` (SQLite or PostgreSQL), its pool
    /// limited to `max_connections`.
    pub async fn open_on(
        database: &kiln_store::Database,
        max_connections: u32,
        config: BbsConfig,
    ) -> Result<Bbs, BbsError> {
        Bbs::open_as(database, max_connections, config, None).await
    }

    /// [`Bbs::open_on`] for a cluster node's active BBS on PostgreSQL:
    /// every write it makes lands only while `lease_owner` holds the BBS
    /// lock, checked by the database in the write's own transaction (BBS
    /// migration 5), so a round still running when the lease is lost
    /// writes nothing.
    pub async fn open_fenced(
        database: &kiln_store::Database,
        max_connections: u32,
        config: BbsConfig,
        lease_owner: uuid::Uuid,
    ) -> Result<Bbs, BbsError> {
        Bbs::open_as(database, max_connections, config, Some(lease_owner)).await
    }

    async fn open_as(
        database: &kiln_store::Database,
        max_connections: u32,
        config: BbsConfig,
        lease_owner: Option<uuid::Uuid>,
    ) -> Result<Bbs, BbsError> {
        // synchronous=NORMAL (SQLite): a commit survives the process dying,
        // and a power loss can lose only the last commits. ActualLrps are
        // derived state (convergence and the cells' reports rebuild them),
        // and Cloud Controller's periodic sync re-desires DesiredLrps; an
        // fsync per commit would cost more than the whole placement of an
        // instance.
        let options = kiln_store::OpenOptions {
            durability: kiln_store::Durability::Normal,
            max_connections,
            lease_owner,
            sqlite_cache_kib: Some(SQLITE_CACHE_KIB),
            sqlite_wal_autocheckpoint: Some(SQLITE_WAL_AUTOCHECKPOINT_PAGES),
        };
        let pool = kiln_store::open(database, MIGRATIONS, options)
            .await
            .map_err(|e| BbsError::Unavailable(e.to_string()))?;
        let mirror = mirror::Mirror::load(&pool).await?;
        let bbs = Bbs {
            inner: Arc::new(Inner {
                pool,
                write: tokio::sync::Mutex::new(()),
                pass: tokio::sync::Mutex::new(()),
                events: broadcast::channel(EVENT_CAPACITY).0,
                cells: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                started: Instant::now(),
                config,
                evacuation: evacuation::Evacuation::default(),
                suspects: suspect::Suspects::default(),
                reports: reports::PendingStarts::default(),
                desires: desires::PendingDesires::default(),
                mirror,
                writer: writer::Writer::for_database(database),
            }),
        };
        bbs.restore_kept().await?;
        Ok(bbs)
    }

    /// Reloads the suspect and evacuating instances (and evacuating cells)
    /// a previous run kept: they stay listed and routed across a restart.
    async fn restore_kept(&self) -> Result<(), BbsError> {
        let pool = &self.inner.pool;
        let mut evacuating = Vec::new();
        for (kept, actual) in store::kept_instances(pool).await? {
            match kept {
                store::Kept::Suspect => self.inner.suspects.keep(actual),
                store::Kept::Evacuating => evacuating.push(actual),
            }
        }
        let cells = store::evacuating_cells(pool).await?;
        if !cells.is_empty() || !evacuating.is_empty() {
            tracing::info!(
                cells = cells.len(),
                instances = evacuating.len(),
                "evacuation restored from the database"
            );
        }
        self.inner.evacuation.restore(cells, evacuating);
        Ok(())
    }

    /// Runs convergence and the auction until `shutdown`: convergence every
    /// `convergence_interval`, an auction round whenever work is nudged
    /// (new instances, a crash, a cell that appears).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), BbsError> {
        let mut tick = tokio::time::interval(self.inner.config.convergence_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Presence is in memory: the first pass after a start must not see
        // every cell as lost, so convergence waits out one TTL (the cells
        // heartbeat well within it). The auction runs meanwhile.
        tick.reset_at(tokio::time::Instant::from_std(
            self.inner.started + self.inner.config.cell_ttl,
        ));
        self.wake_auction();
        // A cell whose presence expires is converged on at once (Diego's
        // BBS does so on a cell-disappeared event), not at the next tick.
        let mut presence_due = tokio::time::Instant::now() + PRESENCE_CHECK;
        let mut pacing = AuctionPacing::default();
        // When the next auction round is due: set by a nudge, after the
        // pause; presence and convergence are served while it waits.
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let at = due.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => match self.converge().await {
                    Ok(report) if !report.is_calm() => {
                        tracing::debug!(?report, "convergence pass")
                    }
                    Ok(_) => self.checkpoint_when_calm().await,
                    Err(error) => tracing::warn!(%error, "convergence pass failed"),
                },
                _ = tokio::time::sleep_until(presence_due) => {
                    let (expired, next) = self.forget_expired_cells();
                    presence_due = tokio::time::Instant::from_std(next)
                        .max(tokio::time::Instant::now() + PRESENCE_CHECK);
                    if expired && self.presence_settled() {
                        match self.converge_lost_cells().await {
                            Ok(report) => tracing::debug!(?report, "lost cells converged"),
                            Err(error) => tracing::warn!(%error, "converging lost cells failed"),
                        }
                    }
                }
                _ = self.inner.wake.notified(), if due.is_none() => {
                    due = Some(tokio::time::Instant::now() + pacing.pause());
                }
                _ = tokio::time::sleep_until(at), if due.is_some() => {
                    due = None;
                    self.auction_paced(&mut pacing).await;
                }
            }
        }
    }

    /// One auction round, its duration noted for the next pause.
    async fn auction_paced(&self, pacing: &mut AuctionPacing) {
        let round = Instant::now();
        let result = self.auction().await;
        pacing.last_round = round.elapsed();
        pacing.last_end = Some(Instant::now());
        match result {
            Ok(report) if report != AuctionReport::default() => {
                tracing::debug!(?report, "auction round")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "auction round failed"),
        }
    }

    /// After a convergence pass that changed nothing: the write-ahead log
    /// is folded back and truncated (it kept the size of the busiest
    /// burst otherwise). Under the write lock, so it waits for no write of
    /// ours and none waits long for it at a calm moment.
    async fn checkpoint_when_calm(&self) {
        let _write = self.inner.write.lock().await;
        if let Err(error) = store::checkpoint(&self.inner.pool).await {
            tracing::warn!(%error, "database checkpoint failed");
        }
    }

    /// Forgets the cells whose presence expired: whether any did, and the
    /// earliest moment another can (a cell that heartbeats meanwhile, or
    /// appears, expires later than that).
    fn forget_expired_cells(&self) -> (bool, Instant) {
        let ttl = self.inner.config.cell_ttl;
        let now = Instant::now();
        let mut next = now + ttl;
        let mut cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
        let before = cells.len();
        cells.retain(|cell_id, (_, seen)| {
            let live = now.saturating_duration_since(*seen) <= ttl;
            if live {
                next = next.min(*seen + ttl);
            } else {
                tracing::info!(%cell_id, "cell presence expired");
            }
            live
        });
        (cells.len() != before, next)
    }

    fn emit(&self, event: BbsEvent) {
        // No subscribers is fine: the store is the truth.
        let _ = self.inner.events.send(event);
    }

    /// A task's committed change: the mirror follows it (under the write
    /// lock, which every task write holds), then subscribers hear of it.
    fn task_written(&self, event: BbsEvent) {
        self.inner.mirror.apply(std::slice::from_ref(&event));
        self.emit(event);
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

    /// The ids of the live cells, without copying their presences (taken
    /// at every write batch of a pass).
    fn live_cell_ids(&self) -> HashSet<String> {
        let ttl = self.inner.config.cell_ttl;
        let cells = self.inner.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .iter()
            .filter(|(_, (_, seen))| seen.elapsed() <= ttl)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether a cell that is not present may be declared lost: only once a
    /// full TTL has passed since this BBS started.
    fn presence_settled(&self) -> bool {
        self.inner.started.elapsed() > self.inner.config.cell_ttl
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

/// Whether `a` passes `filter` (the store's conditions, for instances held
/// in memory).
fn filter_matches(filter: &ActualLrpFilter, a: &ActualLrp) -> bool {
    let cell_id = a.instance_key.as_ref().map(|ik| ik.cell_id.as_str());
    filter.domain.as_ref().is_none_or(|d| *d == a.key.domain)
        && filter
            .process_guid
            .as_ref()
            .is_none_or(|g| *g == a.key.process_guid)
        && filter
            .cell_id
            .as_ref()
            .is_none_or(|c| Some(c.as_str()) == cell_id)
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
        self.task_written(BbsEvent::TaskChanged { task });
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
        self.task_written(BbsEvent::TaskChanged { task });
        Ok(())
    }

    async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let _write = self.inner.write.lock().await;
        let t = self.task_by_guid(task_guid).await?;
        let task =
            store::set_task_state(&self.inner.pool, &t, TaskState::Resolving, now_nanos()).await?;
        self.task_written(BbsEvent::TaskChanged { task });
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
        self.task_written(BbsEvent::TaskRemoved {
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
        // The DesiredLrp and its UNCLAIMED instances in one transaction
        // with the desires that arrive meanwhile; the auction places them in
        // its next round (no convergence pass).
        self.desire_batched(desired_lrp).await
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
        // The new count's instances are created or retired with the update,
        // in one transaction; the auction places the new ones.
        let now = now_nanos();
        let mut tx = pool.begin().await.map_err(db)?;
        store::update_desired_lrp(&mut tx, &d, now).await?;
        let (created, removed) = if d.instances > before {
            let indices: Vec<u32> = (before..d.instances).collect();
            let created = store::insert_unclaimed(&mut tx, &d, &indices, now).await?;
            (created, Vec::new())
        } else if d.instances < before {
            let removed = store::delete_indices_from(&mut tx, &d.process_guid, d.instances).await?;
            (Vec::new(), removed)
        } else {
            (Vec::new(), Vec::new())
        };
        tx.commit().await.map_err(db)?;
        self.inner.mirror.put_desired(&d);
        self.inner.mirror.put(&created);
        self.inner.mirror.remove(&removed);
        self.emit(BbsEvent::DesiredLrpChanged {
            desired_lrp: d.clone(),
        });
        for key in removed {
            self.emit(BbsEvent::ActualLrpRemoved { key });
        }
        if !created.is_empty() {
            for actual_lrp in created {
                self.emit(BbsEvent::ActualLrpChanged { actual_lrp });
            }
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
        self.inner.mirror.remove_desired(process_guid);
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
        let mut listed = store::actual_lrps(&self.inner.pool, &filter).await?;
        // A suspect instance stands for its index until the replacement runs.
        let wanted = |a: &ActualLrp| filter_matches(&filter, a);
        self.inner.suspects.overlay(&mut listed, wanted);
        let extra = self.inner.suspects.missing_from(&listed, wanted);
        if !extra.is_empty() {
            listed.extend(extra);
            listed.sort_by(|a, b| {
                (&a.key.process_guid, a.key.index).cmp(&(&b.key.process_guid, b.key.index))
            });
        }
        Ok(listed)
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
            self.cell_back(&presence.cell_id).await?;
            self.wake_auction();
        }
        Ok(())
    }

    async fn cells(&self) -> Result<Vec<CellPresence>, BbsError> {
        Ok(self.live_cells())
    }

    async fn cell_work(&self, cell_id: &str) -> Result<CellWork, BbsError> {
        // The tasks table only for a cell the mirror says has tasks.
        let tasks = if self.inner.mirror.has_tasks(cell_id) {
            store::cell_tasks(&self.inner.pool, cell_id).await?
        } else {
            Vec::new()
        };
        // Each DesiredLrp once, however many of its instances run here.
        let (lrps, desired_lrps) = self.inner.mirror.cell_lrps(cell_id);
        Ok(CellWork {
            tasks,
            desired_lrps,
            lrps,
        })
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
                self.task_written(BbsEvent::TaskChanged { task });
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
        self.task_written(BbsEvent::TaskChanged { task });
        Ok(())
    }

    async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: ActualLrpNetInfo,
    ) -> Result<(), BbsError> {
        // A suspect instance's cell reports only on that instance; it is
        // already listed RUNNING.
        if self.inner.suspects.is_suspect(key, instance_key) {
            return Ok(());
        }
        // A compare-and-set: UNCLAIMED, or CLAIMED/RUNNING by this very
        // instance, becomes RUNNING (kiln-model allows each of these
        // transitions), batched with the reports that arrive meanwhile.
        let Some(a) = self.start_batched(key, instance_key, net_info).await? else {
            // Not allowed: say why (gone, or held by another instance).
            self.actual_for_update(key).await?;
            return Err(mismatch(key, instance_key));
        };
        tracing::info!(process_guid = %key.process_guid, index = key.index, instance_guid = %instance_key.instance_guid, "actual lrp running");
        // The replacement runs: the suspect instance it replaces went with
        // the batch (`reports.rs`); one still here is settled on its own.
        match self.inner.suspects.at(key) {
            Some(suspect) => {
                self.suspect_gone(key, &suspect, Some(a)).await?;
            }
            None => self.emit(BbsEvent::ActualLrpChanged { actual_lrp: a }),
        }
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
        // A suspect instance that crashed is simply gone; its record is the
        // replacement's.
        if self.inner.suspects.is_suspect(key, instance_key) {
            self.suspect_gone(key, instance_key, Some(a)).await?;
            return Ok(());
        }
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
        self.inner.mirror.put([&a]);
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

    async fn evacuate_cell(&self, cell_id: &str) -> Result<(), BbsError> {
        self.evacuate(cell_id).await
    }

    async fn evacuating_lrps(&self) -> Result<Vec<ActualLrp>, BbsError> {
        Ok(self.evacuating())
    }

    async fn remove_evacuating_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        self.remove_evacuating(key, instance_key).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_round_pauses_the_next_no_longer_than_the_cap() {
        // Measured from a round that has only just ended.
        let pause = |last_round| {
            let pacing = AuctionPacing {
                last_round,
                last_end: Some(Instant::now()),
            };
            pacing.pause()
        };
        let close = |got: Duration, want: Duration| {
            assert!(
                got <= want && want - got < Duration::from_millis(10),
                "{got:?} vs {want:?}"
            )
        };
        close(pause(Duration::ZERO), AUCTION_BATCH_WINDOW);
        close(
            pause(Duration::from_millis(100)),
            Duration::from_millis(100),
        );
        close(pause(Duration::from_secs(30)), AUCTION_MAX_PAUSE);
    }

    #[test]
    fn a_nudge_after_a_quiet_spell_is_auctioned_at_once() {
        let first = AuctionPacing::default();
        assert_eq!(first.pause(), Duration::ZERO);
        let long_ago = AuctionPacing {
            last_round: Duration::from_millis(100),
            last_end: Instant::now().checked_sub(Duration::from_secs(1)),
        };
        assert_eq!(long_ago.pause(), Duration::ZERO);
    }

    /// Writes grow SQLite's write-ahead log; the first calm convergence
    /// pass folds it back and truncates it (instances that fit nowhere,
    /// here for want of any cell, do not make a pass busy).
    #[tokio::test]
    async fn a_calm_pass_truncates_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = BbsConfig {
            convergence_interval: Duration::from_millis(100),
            cell_ttl: Duration::from_millis(100),
            ..Default::default()
        };
        let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), config)
            .await
            .unwrap();
        for p in 0..50 {
            bbs.desire_lrp(kiln_model::testing::desired_lrp(&format!("p-{p}"), 10))
                .await
                .unwrap();
        }
        let wal = dir.path().join("bbs.sqlite-wal");
        let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert!(wal_len() > 0, "the desires are in the log");
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn({
            let (bbs, shutdown) = (bbs.clone(), shutdown.clone());
            async move { bbs.run(shutdown).await }
        });
        let mut truncated = false;
        for _ in 0..200 {
            if wal_len() == 0 {
                truncated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        runner.await.unwrap().unwrap();
        assert!(truncated, "log still {} bytes", wal_len());
        let unclaimed = bbs.inner.mirror.unclaimed();
        assert_eq!(unclaimed.len(), 500);
        assert!(
            unclaimed
                .iter()
                .all(|u| u.placement_error == auction::NO_CELLS)
        );
    }
}
