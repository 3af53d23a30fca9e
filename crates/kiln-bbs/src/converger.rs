//! Convergence (Diego's `ConvergeLRPs` and task convergence): compares
//! desired with actual state on one snapshot of the mirror (one walk, no
//! query over every instance), then writes its corrections in short batches, each a compare-and-set on
//! what the snapshot saw, and ends with an auction round. The instances of
//! lost cells are auctioned before they are written, so each goes from its
//! lost cell to its new one in one write (`place_lost`, `write_lost`).

use crate::auction::{self, Work, WorkKind};
use crate::auctioneer::by_cell;
use crate::store::{self, ActualSummary, Move, db};
use crate::{Bbs, BbsError, ConvergenceReport, crash, now_nanos};
use kiln_model::bbs::{
    ActualLrpInstanceKey, ActualLrpKey, ActualLrpPresence, BbsEvent, DesiredLrp, Nanos,
};
use kiln_model::{ActualLrpState, TaskState};
use sqlx::Connection as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Writes per transaction (and per hold of the write lock), so a cell's
/// report waits for at most one batch. Large: each commit writes every
/// page it touched into the log, and a lost cell's instances are spread
/// over the whole table, so small batches wrote the same pages again and
/// again (re-placing 25,000 instances: 5.9 -> 4.6 CPU-s with 10,000, the
/// auction's too). At most the event channel's capacity.
const WRITE_BATCH: usize = 10_000;

/// How many times a lost-cells pass looks again for cells that expired
/// while it wrote, before its auction round.
const LOST_ROUNDS: usize = 4;

/// A lost instance and the live cell the auction chose for it, if any.
type LostPlaced = (ActualSummary, Option<String>);

/// What a convergence pass will correct, read from one pass over the
/// store. `live` is `None` while presence is not yet settled after a start:
/// then no cell counts as lost.
#[derive(Debug, Default)]
struct Plan {
    /// Instances whose DesiredLrp is gone or no longer has their index.
    extra: Vec<(String, u32)>,
    /// Indices a DesiredLrp has no ActualLrp for.
    missing: Vec<(Arc<DesiredLrp>, Vec<u32>)>,
    /// CLAIMED or RUNNING on a cell that is not present.
    lost: Vec<ActualSummary>,
    /// CRASHED, with the back-off over.
    restart: Vec<ActualSummary>,
}

impl Bbs {
    /// The plan from the mirror, which equals the tables between writes
    /// (and was loaded from them at open, so rows an older version or a
    /// crash left are found at the first pass).
    fn read_plan(&self, live: Option<&HashSet<String>>, now: Nanos) -> Plan {
        let plan = self.inner.mirror.convergence_plan(live);
        let restart = plan
            .crashed
            .into_iter()
            .filter(|a| crash::should_restart(a.crash_count, a.since, now))
            .collect();
        Plan {
            extra: plan.extra,
            missing: plan.missing,
            lost: plan.lost,
            restart,
        }
    }
}

impl Bbs {
    /// One convergence pass followed by an auction round (Diego's converger
    /// and auctioneer).
    pub async fn converge(&self) -> Result<ConvergenceReport, BbsError> {
        let _pass = self.inner.pass.lock().await;
        let mut report = self.converge_lrps().await?;
        report.suspect_removed = self.settle_suspects().await?;
        self.finish_pass(&mut report).await?;
        Ok(report)
    }

    /// The pass run when cells' presence expires (Diego's BBS converges on
    /// a cell-disappeared event): only the instances on cells that are not
    /// present, found through the mirror's index by cell instead of a walk
    /// of every instance, and tasks, then an auction round. The periodic
    /// full pass corrects everything else.
    pub(crate) async fn converge_lost_cells(&self) -> Result<ConvergenceReport, BbsError> {
        let _pass = self.inner.pass.lock().await;
        let mut report = ConvergenceReport::default();
        let lost = self.inner.mirror.lost(&self.live_cell_ids());
        if !lost.is_empty() {
            let placed = self.place_lost(&lost).await?;
            let _write = self.inner.write.lock().await;
            self.write_lost(&placed, now_nanos(), &mut report).await?;
            // Cells lost together (a rack, a zone) expire over one
            // heartbeat interval, not at once: those that expired while the
            // first ones' instances were written are re-placed under the
            // same hold of the write lock (decided under it: they are few),
            // not after the cells' reports on the first ones' new work,
            // queued meanwhile (25,000 at 100 of 1,000 cells). Bounded: an
            // instance whose write found it changed is seen again, not
            // forever.
            for _ in 1..LOST_ROUNDS {
                let lost = self.inner.mirror.lost(&self.live_cell_ids());
                if lost.is_empty() {
                    break;
                }
                let placed = self.place_lost(&lost).await?;
                self.write_lost(&placed, now_nanos(), &mut report).await?;
            }
        }
        self.finish_pass(&mut report).await?;
        Ok(report)
    }

    /// How every pass ends: tasks converged, then an auction round for
    /// whatever is unclaimed now.
    async fn finish_pass(&self, report: &mut ConvergenceReport) -> Result<(), BbsError> {
        report.tasks_failed = self.converge_tasks().await?;
        let auction = self.auction_round().await?;
        report.placed += auction.placed;
        report.unplaced += auction.unplaced;
        report.tasks_failed += auction.tasks_failed;
        Ok(())
    }

    async fn converge_lrps(&self) -> Result<ConvergenceReport, BbsError> {
        let pool = &self.inner.pool;
        let now = now_nanos();
        let live = self.presence_settled().then(|| self.live_cell_ids());
        let plan = self.read_plan(live.as_ref(), now);

        let mut report = ConvergenceReport::default();
        for chunk in plan.extra.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                let mut conn = self.inner.writer.conn(pool).await?;
                let mut tx = conn.begin().await.map_err(db)?;
                for (guid, index) in chunk {
                    if let Some(key) = store::delete_if_extra(&mut tx, guid, *index).await? {
                        events.push(BbsEvent::ActualLrpRemoved { key });
                    }
                }
                tx.commit().await.map_err(db)?;
                self.inner.mirror.apply(&events);
            }
            report.extra_removed += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        for chunk in plan.missing.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                let mut conn = self.inner.writer.conn(pool).await?;
                let mut tx = conn.begin().await.map_err(db)?;
                for (d, indices) in chunk {
                    for actual_lrp in store::insert_unclaimed(&mut tx, d, indices, now).await? {
                        events.push(BbsEvent::ActualLrpChanged { actual_lrp });
                    }
                }
                tx.commit().await.map_err(db)?;
                self.inner.mirror.apply(&events);
            }
            report.missing_created += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        if !plan.lost.is_empty() {
            let placed = self.place_lost(&plan.lost).await?;
            let _write = self.inner.write.lock().await;
            self.write_lost(&placed, now, &mut report).await?;
        }
        for chunk in plan.restart.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                let mut conn = self.inner.writer.conn(pool).await?;
                let mut tx = conn.begin().await.map_err(db)?;
                for seen in chunk {
                    if let Some(actual_lrp) =
                        store::unclaim_if_unchanged(&mut tx, seen, now).await?
                    {
                        events.push(BbsEvent::ActualLrpChanged { actual_lrp });
                    }
                }
                tx.commit().await.map_err(db)?;
                self.inner.mirror.apply(&events);
            }
            report.crashed_restarted += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        Ok(report)
    }

    /// Re-places the instances on lost cells. The auction decides first
    /// where each goes (the lost cells are not live, so their load does
    /// not count), then each is written once, from its state on the lost
    /// cell straight to CLAIMED on its new cell: sent back to UNCLAIMED
    /// and claimed in a later round, each row and its page in the log was
    /// written twice, in two series of transactions, and the cells heard
    /// of their new work only after both (re-placing 25,000 of 250,000
    /// instances on a loaded 2-core machine: 3.0-5.0 -> 1.9-3.3 s). One
    /// that fits nowhere, or whose new cell vanished meanwhile, goes back
    /// to UNCLAIMED for the pass's auction round, which says why. Each write only if the instance is
    /// still as seen and its cell still absent at write time; RUNNING ones
    /// are kept as suspects in the same transaction. This decides,
    /// without the write lock; [`Bbs::write_lost`] writes, under it.
    async fn place_lost(&self, lost: &[ActualSummary]) -> Result<Vec<LostPlaced>, BbsError> {
        let pool = &self.inner.pool;
        let desired = self.inner.mirror.desired();
        let tasks = store::open_tasks(pool).await?;
        let by_slot: HashMap<(&str, u32), &ActualSummary> = lost
            .iter()
            .map(|a| ((a.process_guid.as_str(), a.index), a))
            .collect();
        // Instances beyond their DesiredLrp go back too; the full pass
        // removes them.
        let mut work = Vec::with_capacity(lost.len());
        let mut nowhere = Vec::new();
        for a in lost {
            match desired
                .get(&a.process_guid)
                .filter(|d| a.index < d.instances)
            {
                Some(d) => work.push(Work {
                    kind: WorkKind::Lrp {
                        process_guid: a.process_guid.clone(),
                        index: a.index,
                    },
                    rootfs: d.rootfs.clone(),
                    memory_mb: d.memory_mb,
                    disk_mb: d.disk_mb,
                }),
                None => nowhere.push((a.clone(), None)),
            }
        }
        auction::sort_batch(&mut work);
        let (decisions, auction) = self.decide(work, &tasks);
        let cells = auction.cells();
        // Grouped by new cell, as an auction round writes (each cell hears
        // of its new work in one burst), then what goes nowhere.
        let mut items: Vec<LostPlaced> = by_cell(&decisions)
            .into_iter()
            .filter_map(|(w, outcome)| {
                let WorkKind::Lrp {
                    process_guid,
                    index,
                } = &w.kind
                else {
                    return None;
                };
                let a = by_slot.get(&(process_guid.as_str(), *index))?;
                let cell = outcome.as_ref().ok().map(|&i| cells[i].cell_id.clone());
                Some(((*a).clone(), cell))
            })
            .collect();
        items.extend(nowhere);
        Ok(items)
    }

    /// Writes what [`Bbs::place_lost`] decided, in batches; the caller
    /// holds the write lock across them, as an auction round does (see
    /// `write_decisions`): cells' reports on the first batch's work wait
    /// for the rest to be placed.
    async fn write_lost(
        &self,
        items: &[LostPlaced],
        now: Nanos,
        report: &mut ConvergenceReport,
    ) -> Result<(), BbsError> {
        let pool = &self.inner.pool;
        for chunk in items.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            // Presence again at write time: a cell that heartbeated since
            // the snapshot keeps its instances, and nothing goes to a cell
            // that vanished.
            let live_now = self.live_cell_ids();
            let mut moves = Vec::new();
            let mut back = Vec::new();
            for (a, cell) in chunk {
                if live_now.contains(&a.cell_id) {
                    continue;
                }
                match cell.as_deref() {
                    Some(cell_id)
                        if live_now.contains(cell_id)
                            && !self.inner.evacuation.is_evacuating(cell_id) =>
                    {
                        moves.push(Move {
                            seen: a,
                            instance_guid: uuid::Uuid::new_v4().to_string(),
                            cell_id,
                        })
                    }
                    _ => back.push(a),
                }
            }
            let mut conn = self.inner.writer.conn(pool).await?;
            let mut tx = conn.begin().await.map_err(db)?;
            let moved = store::move_many_if_unchanged(&mut tx, &moves, now).await?;
            let unclaimed = store::unclaim_many_if_unchanged(&mut tx, &back, now).await?;
            let new_keys: HashMap<(&str, u32), &Move<'_>> = moves
                .iter()
                .map(|m| ((m.seen.process_guid.as_str(), m.seen.index), m))
                .collect();
            // Under the write lock the mirror holds the records as they
            // were before the statements.
            let mut suspects = Vec::new();
            let before = self.inner.mirror.records(moved.iter().chain(&unclaimed))?;
            for before in before {
                let new_key = new_keys.get(&(before.key.process_guid.as_str(), before.key.index));
                let actual_lrp = match new_key {
                    Some(m) => {
                        let instance_key = ActualLrpInstanceKey {
                            instance_guid: m.instance_guid.clone(),
                            cell_id: m.cell_id.to_string(),
                        };
                        report.placed += 1;
                        store::moved_from(&before, instance_key, now)
                    }
                    None => store::unclaimed_from(&before, now),
                };
                // A RUNNING instance on a lost cell may still serve (the
                // cell may only be cut off from the BBS): it stays listed
                // and routed as SUSPECT until its replacement runs, and is
                // kept in the same transaction, so a restart meanwhile
                // still lists and routes it.
                if before.state == ActualLrpState::Running {
                    let mut suspect = (*before).clone();
                    suspect.presence = ActualLrpPresence::Suspect;
                    suspects.push(suspect);
                }
                events.push(BbsEvent::ActualLrpChanged { actual_lrp });
            }
            // Under the write lock the kept rows equal the suspects in
            // memory.
            let replacing: Vec<&ActualLrpKey> = suspects
                .iter()
                .filter(|s| self.inner.suspects.at(&s.key).is_some())
                .map(|s| &s.key)
                .collect();
            store::keep_suspects(&mut tx, &suspects, &replacing).await?;
            tx.commit().await.map_err(db)?;
            drop(conn);
            self.inner.mirror.apply(&events);
            report.suspect += suspects.len();
            suspects
                .into_iter()
                .for_each(|s| self.inner.suspects.keep(s));
            report.lost_cell_reclaimed += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        Ok(())
    }

    /// Tasks: fail unplaced ones that expired and running ones whose cell
    /// was lost, and hand back RESOLVING ones whose resolver went away.
    /// Tasks are few; each candidate is re-read under the write lock.
    async fn converge_tasks(&self) -> Result<usize, BbsError> {
        let pool = &self.inner.pool;
        let now = now_nanos();
        let expiry = self.inner.config.pending_task_expiry.as_nanos() as Nanos;
        let resolving_timeout = self.inner.config.resolving_timeout.as_nanos() as Nanos;
        let settled = self.presence_settled();
        let candidates: Vec<String> = store::tasks(pool, None)
            .await?
            .into_iter()
            .filter(|t| {
                matches!(
                    t.state,
                    TaskState::Pending | TaskState::Running | TaskState::Resolving
                )
            })
            .map(|t| t.task_guid)
            .collect();
        let mut failed = 0;
        for task_guid in candidates {
            let _write = self.inner.write.lock().await;
            let Some(t) = store::task(pool, &task_guid).await? else {
                continue;
            };
            let cell_lost = settled && !self.live_cell_ids().contains(&t.cell_id);
            let failure = match t.state {
                TaskState::Pending if now - t.created_at > expiry => {
                    Some("not started within time limit")
                }
                TaskState::Running if cell_lost => Some("cell disappeared before completion"),
                _ => None,
            };
            let task = if let Some(reason) = failure {
                failed += 1;
                store::complete_task(pool, &t, true, reason, "", now).await?
            } else if t.state == TaskState::Resolving && now - t.updated_at > resolving_timeout {
                store::set_task_state(pool, &t, TaskState::Completed, now).await?
            } else {
                continue;
            };
            self.task_written(BbsEvent::TaskChanged { task });
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Bbs, BbsClient, BbsConfig};
    use kiln_model::ActualLrpState;
    use kiln_model::bbs::{ActualLrpPresence, CellCapacity, CellPresence, DesiredLrp};
    use std::time::Duration;

    fn desired(instances: u32) -> DesiredLrp {
        DesiredLrp {
            memory_mb: 1,
            disk_mb: 1,
            start_timeout_ms: 1,
            log_source: "s".into(),
            ..kiln_model::testing::desired_lrp("p", instances)
        }
    }

    /// Rows changed behind the BBS's back (as an old version or a hand
    /// could leave them) are found by the first pass after the BBS opens
    /// on them.
    #[tokio::test]
    async fn a_pass_restores_missing_removes_extra_and_reclaims_lost() {
        let dir = tempfile::tempdir().unwrap();
        // A TTL the heartbeat below outlives on a loaded machine; the pass
        // reclaims only once a TTL has passed since the open.
        let config = BbsConfig {
            cell_ttl: Duration::from_millis(1000),
            ..Default::default()
        };
        let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), config.clone())
            .await
            .unwrap();
        bbs.desire_lrp(desired(3)).await.unwrap();
        let pool = &bbs.inner.pool;
        sqlx::query("DELETE FROM actual_lrps WHERE instance_index = 1")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO actual_lrps (process_guid, instance_index, domain, state, since) \
             VALUES ('p', 7, 'cf-apps', 'UNCLAIMED', 0), ('orphan', 0, 'cf-apps', 'UNCLAIMED', 0)",
        )
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE actual_lrps SET state = 'RUNNING', instance_guid = 'i', cell_id = 'cell-gone' \
             WHERE instance_index = 2",
        )
        .execute(pool)
        .await
        .unwrap();
        drop(bbs);
        let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), config)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        bbs.heartbeat_cell(CellPresence {
            cell_id: "cell-a".into(),
            address: "127.0.0.1".into(),
            capacity: CellCapacity {
                memory_mb: 100,
                disk_mb: 100,
                containers: 10,
            },
            rootfs_providers: vec!["preloaded:s".to_string().try_into().unwrap()],
        })
        .await
        .unwrap();

        let report = bbs.converge().await.unwrap();
        assert_eq!(report.missing_created, 1);
        assert_eq!(report.extra_removed, 2);
        assert_eq!(report.lost_cell_reclaimed, 1);
        assert_eq!(report.placed, 3);
        let all = bbs
            .actual_lrps(crate::ActualLrpFilter::default())
            .await
            .unwrap();
        let indices: Vec<u32> = all.iter().map(|a| a.key.index).collect();
        assert_eq!(indices, [0, 1, 2]);
        assert!(all[..2].iter().all(|a| a.state == ActualLrpState::Claimed
            && a.instance_key.as_ref().unwrap().cell_id == "cell-a"));
        // The lost RUNNING instance is still listed, SUSPECT, until its
        // replacement (CLAIMED on cell-a) runs.
        assert_eq!(report.suspect, 1);
        assert_eq!(all[2].state, ActualLrpState::Running);
        assert_eq!(all[2].presence, ActualLrpPresence::Suspect);
        assert_eq!(all[2].instance_key.as_ref().unwrap().cell_id, "cell-gone");
        let work = bbs.cell_work("cell-a").await.unwrap();
        assert_eq!(work.lrps.len(), 3);
    }
}
