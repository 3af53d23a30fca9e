//! Convergence (Diego's `ConvergeLRPs` and task convergence): compares
//! desired with actual state on one snapshot read without the write lock,
//! then writes its corrections in short batches, each a compare-and-set on
//! what the snapshot saw, and ends with an auction round.

use crate::desired_cache::DesiredSnapshot;
use crate::store::{self, ActualSummary, db};
use crate::{Bbs, BbsError, ConvergenceReport, crash, now_nanos};
use kiln_model::bbs::{BbsEvent, DesiredLrp, Nanos};
use kiln_model::{ActualLrpState, TaskState};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Writes per transaction (and per hold of the write lock), so a cell's
/// report waits for at most one batch.
const WRITE_BATCH: usize = 1000;

/// What a convergence pass will correct, computed from one snapshot.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Instances whose DesiredLrp is gone or no longer has their index.
    pub extra: Vec<(String, u32)>,
    /// Indices a DesiredLrp has no ActualLrp for.
    pub missing: Vec<(Arc<DesiredLrp>, Vec<u32>)>,
    /// CLAIMED or RUNNING on a cell that is not present.
    pub lost: Vec<ActualSummary>,
    /// CRASHED, with the back-off over.
    pub restart: Vec<ActualSummary>,
}

/// The pure part of a pass. `live` is `None` while presence is not yet
/// settled after a start: then no cell counts as lost.
pub(crate) fn plan(
    desired: &DesiredSnapshot,
    actuals: Vec<ActualSummary>,
    live: Option<&HashSet<String>>,
    now: Nanos,
) -> Plan {
    let mut plan = Plan::default();
    let mut present: HashMap<&str, Vec<bool>> = HashMap::new();
    for a in actuals {
        let Some(d) = desired.get(&a.process_guid) else {
            plan.extra.push((a.process_guid, a.index));
            continue;
        };
        if a.index >= d.instances {
            plan.extra.push((a.process_guid, a.index));
            continue;
        }
        present
            .entry(d.process_guid.as_str())
            .or_insert_with(|| vec![false; d.instances as usize])[a.index as usize] = true;
        let on_lost_cell = matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
            && live.is_some_and(|live| !live.contains(&a.cell_id));
        if on_lost_cell {
            plan.lost.push(a);
        } else if a.state == ActualLrpState::Crashed
            && crash::should_restart(a.crash_count, a.since, now)
        {
            plan.restart.push(a);
        }
    }
    for (guid, d) in desired {
        let have = present.get(guid.as_str());
        let missing: Vec<u32> = (0..d.instances)
            .filter(|&i| have.is_none_or(|v| !v[i as usize]))
            .collect();
        if !missing.is_empty() {
            plan.missing.push((d.clone(), missing));
        }
    }
    plan
}

impl Bbs {
    /// One convergence pass followed by an auction round (Diego's converger
    /// and auctioneer).
    pub async fn converge(&self) -> Result<ConvergenceReport, BbsError> {
        let _pass = self.inner.pass.lock().await;
        let mut report = self.converge_lrps().await?;
        report.tasks_failed = self.converge_tasks().await?;
        let auction = self.auction_round().await?;
        report.placed = auction.placed;
        report.unplaced = auction.unplaced;
        report.tasks_failed += auction.tasks_failed;
        Ok(report)
    }

    async fn converge_lrps(&self) -> Result<ConvergenceReport, BbsError> {
        let pool = &self.inner.pool;
        let now = now_nanos();
        // Snapshot: one read of each table, decoded DesiredLrps from cache.
        let desired = self.inner.desired.all(pool).await?;
        let actuals = store::actual_summaries(pool).await?;
        let live = self.presence_settled().then(|| self.live_cell_ids());
        let plan = plan(&desired, actuals, live.as_ref(), now);
        drop(desired);

        let mut report = ConvergenceReport::default();
        for chunk in plan.extra.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                let mut tx = pool.begin().await.map_err(db)?;
                for (guid, index) in chunk {
                    if let Some(key) = store::delete_if_extra(&mut tx, guid, *index).await? {
                        events.push(BbsEvent::ActualLrpRemoved { key });
                    }
                }
                tx.commit().await.map_err(db)?;
            }
            report.extra_removed += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        for chunk in plan.missing.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                let mut tx = pool.begin().await.map_err(db)?;
                for (d, indices) in chunk {
                    for actual_lrp in store::insert_unclaimed(&mut tx, d, indices, now).await? {
                        events.push(BbsEvent::ActualLrpChanged { actual_lrp });
                    }
                }
                tx.commit().await.map_err(db)?;
            }
            report.missing_created += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        for chunk in plan.lost.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                // Presence again at write time: a cell that heartbeated since
                // the snapshot keeps its instances.
                let live_now = self.live_cell_ids();
                let mut tx = pool.begin().await.map_err(db)?;
                for seen in chunk.iter().filter(|a| !live_now.contains(&a.cell_id)) {
                    if let Some(actual_lrp) =
                        store::unclaim_if_unchanged(&mut tx, seen, now).await?
                    {
                        events.push(BbsEvent::ActualLrpChanged { actual_lrp });
                    }
                }
                tx.commit().await.map_err(db)?;
            }
            report.lost_cell_reclaimed += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        for chunk in plan.restart.chunks(WRITE_BATCH) {
            let mut events = Vec::new();
            {
                let _write = self.inner.write.lock().await;
                let mut tx = pool.begin().await.map_err(db)?;
                for seen in chunk {
                    if let Some(actual_lrp) =
                        store::unclaim_if_unchanged(&mut tx, seen, now).await?
                    {
                        events.push(BbsEvent::ActualLrpChanged { actual_lrp });
                    }
                }
                tx.commit().await.map_err(db)?;
            }
            report.crashed_restarted += events.len();
            events.into_iter().for_each(|e| self.emit(e));
        }
        Ok(report)
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
            self.emit(BbsEvent::TaskChanged { task });
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(guid: &str, index: u32, state: ActualLrpState, cell_id: &str) -> ActualSummary {
        ActualSummary {
            process_guid: guid.into(),
            index,
            state,
            instance_guid: format!("{guid}-{index}"),
            cell_id: cell_id.into(),
            crash_count: 0,
            since: 0,
        }
    }

    fn snapshot(instances: u32) -> DesiredSnapshot {
        let d = DesiredLrp {
            process_guid: "p".into(),
            domain: "cf-apps".into(),
            instances,
            rootfs: "preloaded:s".into(),
            memory_mb: 1,
            disk_mb: 1,
            env: vec![],
            setup: vec![],
            action: kiln_model::bbs::RunAction {
                path: "/bin/true".into(),
                args: vec![],
                env: vec![],
                dir: None,
                user: "vcap".into(),
            },
            health_check: kiln_model::bbs::HealthCheck::Port,
            start_timeout_ms: 1,
            routes: vec![],
            log_guid: "l".into(),
            log_source: "s".into(),
            annotation: String::new(),
        };
        HashMap::from([("p".to_string(), Arc::new(d))])
    }

    #[test]
    fn a_pass_finds_extra_missing_and_lost_instances() {
        let live = HashSet::from(["cell-a".to_string()]);
        let actuals = vec![
            summary("p", 0, ActualLrpState::Running, "cell-a"),
            summary("p", 2, ActualLrpState::Claimed, "cell-gone"),
            summary("p", 5, ActualLrpState::Running, "cell-a"),
            summary("orphan", 0, ActualLrpState::Running, "cell-a"),
        ];
        let plan = plan(&snapshot(3), actuals, Some(&live), 0);
        assert_eq!(
            plan.extra,
            vec![("p".to_string(), 5), ("orphan".to_string(), 0)]
        );
        assert_eq!(plan.missing.len(), 1);
        assert_eq!(plan.missing[0].1, vec![1]);
        assert_eq!(plan.lost.len(), 1);
        assert_eq!(plan.lost[0].index, 2);
    }

    #[test]
    fn before_presence_settles_no_cell_is_lost() {
        let actuals = vec![summary(
            "p",
            0,
            ActualLrpState::Running,
            "cell-not-yet-seen",
        )];
        let plan = plan(&snapshot(1), actuals, None, 0);
        assert!(plan.lost.is_empty());
        assert!(plan.missing.is_empty() && plan.extra.is_empty());
    }
}
