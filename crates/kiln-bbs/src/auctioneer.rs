//! The auctioneer's round: read what is to be placed and the cells' load
//! (indexed queries, no DesiredLrp decoded twice), decide with the pure
//! [`crate::auction::Auction`], then write the decisions in short
//! transactions, each a compare-and-set on the instance still being
//! UNCLAIMED (or the task still unplaced), onto cells still present.

use crate::auction::{self, Auction, CellLoad, Work, WorkKind};
use crate::mirror::CellUsage;
use crate::mirror::DesiredSnapshot;
use crate::store::{self, Claim, Unclaimed, db};
use crate::{AuctionReport, Bbs, BbsError, now_nanos};
use kiln_model::TaskState;
use kiln_model::bbs::{BbsEvent, CellPresence, Task};
use sqlx::Connection as _;
use std::collections::{HashMap, HashSet};

/// Writes per transaction (and per hold of the write lock): large, as
/// convergence's (see there); at most the event channel's capacity.
const WRITE_BATCH: usize = 10_000;

/// One item's outcome: the cell it goes to, or why it goes nowhere.
pub(crate) type Decision = (Work, Result<usize, String>);

/// The cells as the auction sees them: capacity from presence, load from
/// the instances and tasks already on them.
fn cell_loads(
    live: &[CellPresence],
    mut usage: HashMap<String, CellUsage>,
    tasks: &[Task],
) -> Vec<CellLoad> {
    let mut cells: Vec<CellLoad> = live
        .iter()
        .map(|p| {
            let mut c = CellLoad::new(
                &p.cell_id,
                p.rootfs_providers.clone(),
                p.capacity.memory_mb,
                p.capacity.disk_mb,
                p.capacity.containers,
            );
            if let Some(u) = usage.remove(&p.cell_id) {
                c.used_memory_mb = u.memory_mb;
                c.used_disk_mb = u.disk_mb;
                c.used_containers = u.instances;
                c.starting = u.starting;
            }
            c
        })
        .collect();
    let index_of: HashMap<&str, usize> = live
        .iter()
        .enumerate()
        .map(|(i, c)| (c.cell_id.as_str(), i))
        .collect();
    for t in tasks {
        let placed = matches!(t.state, TaskState::Pending | TaskState::Running);
        if let (true, Some(&i)) = (placed, index_of.get(t.cell_id.as_str())) {
            let c = &mut cells[i];
            c.used_memory_mb += t.definition.memory_mb;
            c.used_disk_mb += t.definition.disk_mb;
            c.used_containers += 1;
            c.tasks += 1;
        }
    }
    cells
}

/// The round's work in Diego's batch order.
fn batch(unclaimed: &[Unclaimed], desired: &DesiredSnapshot, tasks: &[Task]) -> Vec<Work> {
    let mut batch: Vec<Work> = unclaimed
        .iter()
        .filter_map(|u| {
            let d = desired.get(&u.process_guid)?;
            (u.index < d.instances).then(|| Work {
                kind: WorkKind::Lrp {
                    process_guid: u.process_guid.clone(),
                    index: u.index,
                },
                rootfs: d.rootfs.clone(),
                memory_mb: d.memory_mb,
                disk_mb: d.disk_mb,
            })
        })
        .collect();
    batch.extend(
        tasks
            .iter()
            .filter(|t| t.state == TaskState::Pending && t.cell_id.is_empty())
            .map(|t| Work {
                kind: WorkKind::Task {
                    task_guid: t.task_guid.clone(),
                },
                rootfs: t.definition.rootfs.clone(),
                memory_mb: t.definition.memory_mb,
                disk_mb: t.definition.disk_mb,
            }),
    );
    auction::sort_batch(&mut batch);
    batch
}

/// The decisions grouped by the cell they go to (unplaced ones last), in
/// the auction's order within a cell: a write batch then covers a few
/// whole cells, so each cell hears of its new work in one burst of events
/// and syncs once, as Diego's auctioneer sends each rep one request with
/// all of its work. In the auction's order a batch touched nearly every
/// cell, and every cell synced its whole work once per batch.
pub(crate) fn by_cell(decisions: &[Decision]) -> Vec<(&Work, &Result<usize, String>)> {
    let mut grouped: Vec<(&Work, &Result<usize, String>)> =
        decisions.iter().map(|(w, o)| (w, o)).collect();
    grouped.sort_by_key(|(_, outcome)| outcome.as_ref().map_or(usize::MAX, |&i| i));
    grouped
}

/// Whether a task that could not be placed fails now: it fits on none of
/// the cells there are (Diego fails it; Cloud Controller reports
/// `InsufficientResources` or `NoCompatibleCell`). With no cell at all it
/// waits for one.
fn task_fails_now(placement_error: &str) -> bool {
    placement_error.starts_with(auction::INSUFFICIENT_RESOURCES)
        || placement_error == auction::NO_COMPATIBLE_CELL
}

impl Bbs {
    /// One auction round: places every UNCLAIMED ActualLrp and unplaced
    /// PENDING task it can; what fits nowhere records why.
    pub async fn auction(&self) -> Result<AuctionReport, BbsError> {
        let _pass = self.inner.pass.lock().await;
        self.auction_round().await
    }

    pub(crate) async fn auction_round(&self) -> Result<AuctionReport, BbsError> {
        let pool = &self.inner.pool;
        let unclaimed = self.inner.mirror.unclaimed();
        let tasks = store::open_tasks(pool).await?;
        let nothing_to_place = unclaimed.is_empty()
            && !tasks
                .iter()
                .any(|t| t.state == TaskState::Pending && t.cell_id.is_empty());
        if nothing_to_place {
            return Ok(AuctionReport::default());
        }
        // Nothing new goes to an evacuating cell.
        self.prune_evacuation().await?;
        let desired = self.inner.mirror.desired();
        let (decisions, auction) = self.decide(batch(&unclaimed, &desired, &tasks), &tasks);
        let errors_before: HashMap<(&str, u32), &str> = unclaimed
            .iter()
            .map(|u| {
                (
                    (u.process_guid.as_str(), u.index),
                    u.placement_error.as_str(),
                )
            })
            .collect();
        self.write_decisions(&decisions, auction.cells(), &errors_before)
            .await
    }

    /// Diego's auction over `batch` (in its order) on the live cells that
    /// take new work, loaded as the mirror has them now plus `tasks`: each
    /// item with the position of its cell, or why it goes nowhere.
    pub(crate) fn decide(&self, batch: Vec<Work>, tasks: &[Task]) -> (Vec<Decision>, Auction) {
        let live = self.inner.evacuation.placeable(&self.live_cells());
        let processes: HashSet<&str> = batch
            .iter()
            .filter_map(|w| match &w.kind {
                WorkKind::Lrp { process_guid, .. } => Some(process_guid.as_str()),
                WorkKind::Task { .. } => None,
            })
            .collect();
        let usage = self.inner.mirror.cell_usage();
        let position: HashMap<&str, usize> = live
            .iter()
            .enumerate()
            .map(|(i, c)| (c.cell_id.as_str(), i))
            .collect();
        let same = self
            .inner
            .mirror
            .process_cells(&processes, |c| position.get(c).copied());
        let mut auction = Auction::new(cell_loads(&live, usage, tasks), same);
        let decisions = batch
            .into_iter()
            .map(|work| {
                let outcome = auction.place(&work);
                (work, outcome)
            })
            .collect();
        (decisions, auction)
    }

    /// The records the claims of `slots` left, from the mirror's records
    /// before them (it equals the table under the write lock).
    fn claimed_records(
        &self,
        claims: &[Claim<'_>],
        slots: &[store::Slot],
        now: kiln_model::bbs::Nanos,
    ) -> Result<Vec<kiln_model::bbs::ActualLrp>, BbsError> {
        let by_slot: HashMap<(&str, u32), &Claim<'_>> = claims
            .iter()
            .map(|c| ((c.process_guid, c.index), c))
            .collect();
        let before = self.inner.mirror.records(slots)?;
        Ok(before
            .iter()
            .filter_map(|b| {
                let c = by_slot.get(&(b.key.process_guid.as_str(), b.key.index))?;
                let instance_key = kiln_model::bbs::ActualLrpInstanceKey {
                    instance_guid: c.instance_guid.clone(),
                    cell_id: c.cell_id.to_string(),
                };
                Some(store::claimed_from(b, instance_key, now))
            })
            .collect())
    }

    async fn write_decisions(
        &self,
        decisions: &[Decision],
        cells: &[CellLoad],
        errors_before: &HashMap<(&str, u32), &str>,
    ) -> Result<AuctionReport, BbsError> {
        let mut report = AuctionReport::default();
        let mut retry = false;
        // One hold of the write lock for the round's batches: cells'
        // reports of the first batch's work would otherwise get the lock
        // between batches (it is fair) and hold back the placement of
        // the rest (re-placing 25,000 instances: a report batch of ~10,000
        // went in before the last claims). They wait for the round and go
        // in batches as large as the round's.
        let _write = self.inner.write.lock().await;
        for chunk in by_cell(decisions).chunks(WRITE_BATCH) {
            let now = now_nanos();
            let mut events = Vec::new();
            {
                // Presence at write time: work meant for a cell that vanished
                // since the round began stays unplaced for the next round.
                let live_now = self.live_cell_ids();
                let mut claims = Vec::new();
                let mut conn = self.inner.writer.conn(&self.inner.pool).await?;
                let mut tx = conn.begin().await.map_err(db)?;
                for &(work, outcome) in chunk {
                    let cell = outcome.as_ref().map(|&i| cells[i].cell_id.as_str());
                    if let Ok(cell_id) = cell
                        && (!live_now.contains(cell_id)
                            || self.inner.evacuation.is_evacuating(cell_id))
                    {
                        retry = true;
                        continue;
                    }
                    match (&work.kind, cell) {
                        (
                            WorkKind::Lrp {
                                process_guid,
                                index,
                            },
                            Ok(cell_id),
                        ) => claims.push(Claim {
                            process_guid,
                            index: *index,
                            instance_guid: uuid::Uuid::new_v4().to_string(),
                            cell_id,
                        }),
                        (
                            WorkKind::Lrp {
                                process_guid,
                                index,
                            },
                            Err(placement_error),
                        ) => {
                            report.unplaced += 1;
                            let before = errors_before.get(&(process_guid.as_str(), *index));
                            if before != Some(&placement_error.as_str())
                                && let Some(actual_lrp) = store::set_placement_error(
                                    &mut tx,
                                    process_guid,
                                    *index,
                                    placement_error,
                                )
                                .await?
                            {
                                events.push(BbsEvent::ActualLrpChanged { actual_lrp });
                            }
                        }
                        (WorkKind::Task { task_guid }, Ok(cell_id)) => {
                            if let Some(task) =
                                store::place_task_if_pending(&mut tx, task_guid, cell_id, now)
                                    .await?
                            {
                                report.placed += 1;
                                events.push(BbsEvent::TaskChanged { task });
                            }
                        }
                        (WorkKind::Task { task_guid }, Err(placement_error)) => {
                            if !task_fails_now(placement_error) {
                                report.unplaced += 1;
                                continue;
                            }
                            if let Some(task) = store::fail_task_if_unplaced(
                                &mut tx,
                                task_guid,
                                placement_error,
                                now,
                            )
                            .await?
                            {
                                tracing::info!(%task_guid, %placement_error, "task fits on no cell");
                                report.tasks_failed += 1;
                                events.push(BbsEvent::TaskChanged { task });
                            }
                        }
                    }
                }
                let claimed = store::claim_unclaimed(&mut tx, &claims, now).await?;
                let claimed = self.claimed_records(&claims, &claimed, now)?;
                tx.commit().await.map_err(db)?;
                report.placed += claimed.len();
                events.extend(
                    claimed
                        .into_iter()
                        .map(|actual_lrp| BbsEvent::ActualLrpChanged { actual_lrp }),
                );
                self.inner.mirror.apply(&events);
            }
            events.into_iter().for_each(|e| self.emit(e));
        }
        if retry {
            self.wake_auction();
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BbsClient, BbsConfig};
    use kiln_model::bbs::{CellCapacity, DesiredLrp};

    fn desired(process_guid: &str) -> DesiredLrp {
        DesiredLrp {
            memory_mb: 256,
            disk_mb: 256,
            ..kiln_model::testing::desired_lrp(process_guid, 2)
        }
    }

    fn lrp_work(index: u32) -> Work {
        Work {
            kind: WorkKind::Lrp {
                process_guid: "p".into(),
                index,
            },
            rootfs: "preloaded:s".parse().unwrap(),
            memory_mb: 256,
            disk_mb: 256,
        }
    }

    /// Decisions made for a cell that vanished before they are written are
    /// not written: the instances stay UNCLAIMED for the next round. And an
    /// instance claimed meanwhile (here by a cell's report) is not claimed
    /// again.
    #[tokio::test]
    async fn decisions_for_a_cell_gone_at_write_time_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), BbsConfig::default())
            .await
            .unwrap();
        bbs.heartbeat_cell(CellPresence {
            cell_id: "cell-live".into(),
            address: "127.0.0.1".into(),
            capacity: CellCapacity {
                memory_mb: 4096,
                disk_mb: 4096,
                containers: 10,
            },
            rootfs_providers: vec!["preloaded:s".to_string().try_into().unwrap()],
        })
        .await
        .unwrap();
        bbs.desire_lrp(desired("p")).await.unwrap();
        // Index 1 is started by a cell's report before the round writes.
        let key = kiln_model::bbs::ActualLrpKey {
            process_guid: "p".into(),
            index: 1,
            domain: "cf-apps".into(),
        };
        let ik = kiln_model::bbs::ActualLrpInstanceKey {
            instance_guid: "reported".into(),
            cell_id: "cell-live".into(),
        };
        let net_info = kiln_model::bbs::ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![],
            instance_address: String::new(),
        };
        bbs.start_actual_lrp(&key, &ik, net_info).await.unwrap();

        let cells = vec![
            CellLoad::new(
                "cell-gone",
                vec!["preloaded:s".to_string().try_into().unwrap()],
                4096,
                4096,
                10,
            ),
            CellLoad::new(
                "cell-live",
                vec!["preloaded:s".to_string().try_into().unwrap()],
                4096,
                4096,
                10,
            ),
        ];
        let decisions = vec![(lrp_work(0), Ok(0)), (lrp_work(1), Ok(1))];
        let report = bbs
            .write_decisions(&decisions, &cells, &HashMap::new())
            .await
            .unwrap();
        assert_eq!(report.placed, 0);
        let actuals = bbs
            .actual_lrps(crate::ActualLrpFilter::default())
            .await
            .unwrap();
        assert_eq!(actuals[0].state, kiln_model::ActualLrpState::Unclaimed);
        assert_eq!(actuals[1].state, kiln_model::ActualLrpState::Running);
        assert_eq!(actuals[1].instance_key.as_ref(), Some(&ik));
    }
}
