//! The BBS's ActualLrps and DesiredLrps in memory, for the reads that run
//! all the time: every cell's work at every sync (1,000 cells every 2 s at
//! Diego's scale) and the auction's UNCLAIMED instances and cell loads at
//! every round, and every convergence pass. Read from SQL, those were a query and a decode of every
//! placed instance every two seconds plus a `GROUP BY` over all of them per
//! round, and they held the pool's connections that writes wait for.
//!
//! **Invariant:** the BBS is the only writer of its tables, and every write
//! of an ActualLrp or DesiredLrp is applied here under the write lock right
//! after its transaction commits, from the rows the statements returned. So
//! between writes the mirror equals the tables. It is loaded from them when
//! the BBS opens. Convergence plans from it too (a pass over 250,000
//! instances in SQL took seconds); rows changed behind the BBS's back
//! while it was down are in the mirror it loads, so the first pass finds
//! them, and each correction is still a compare-and-set on the table.
//! Which cells have open tasks is kept beside, from every task write.

use crate::BbsError;

#[cfg(test)]
use crate::store::CellProcessLoad;
use crate::store::{self, ActualSummary, Unclaimed};
use kiln_model::bbs::{ActualLrp, ActualLrpKey, BbsEvent, DesiredLrp, Task};
use kiln_model::{ActualLrpState, TaskState};
use kiln_store::Pool;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Every DesiredLrp by process guid, shared with the mirror.
pub(crate) type DesiredSnapshot = HashMap<String, Arc<DesiredLrp>>;

/// (process guid, index): an ActualLrp's slot, ordered as the tables list.
use crate::store::Slot;

#[derive(Default)]
pub(crate) struct Mirror {
    state: Mutex<State>,
}

/// Records are shared between the indexes and with the `CellWork` handed
/// to cells: a cell's work is read without a lookup per instance, and a
/// sync copies pointers, not records.
#[derive(Default)]
struct State {
    actuals: BTreeMap<Slot, Arc<ActualLrp>>,
    /// CLAIMED or RUNNING instances by cell.
    by_cell: HashMap<String, BTreeMap<Slot, Arc<ActualLrp>>>,
    unclaimed: BTreeSet<Slot>,
    desired: HashMap<String, Arc<DesiredLrp>>,
    /// The cell of each task placed on one and PENDING or RUNNING: a
    /// cell's sync asks the tasks table only when it has one (tasks are
    /// few; syncs are 500 a second at 1,000 cells).
    task_cells: HashMap<String, String>,
}

/// What the instances on one cell use (see [`Mirror::cell_usage`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CellUsage {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub instances: u32,
    /// Of them, CLAIMED (still starting).
    pub starting: u32,
}

/// What convergence corrects (see [`Mirror::convergence_plan`]).
#[derive(Debug, Default)]
pub(crate) struct MirrorPlan {
    pub extra: Vec<(String, u32)>,
    pub missing: Vec<(Arc<DesiredLrp>, Vec<u32>)>,
    pub lost: Vec<ActualSummary>,
    pub crashed: Vec<ActualSummary>,
}

fn summary(a: &ActualLrp) -> ActualSummary {
    let (instance_guid, cell_id) = a
        .instance_key
        .as_ref()
        .map_or((String::new(), String::new()), |ik| {
            (ik.instance_guid.clone(), ik.cell_id.clone())
        });
    ActualSummary {
        process_guid: a.key.process_guid.clone(),
        index: a.key.index,
        state: a.state,
        instance_guid,
        cell_id,
        crash_count: a.crash_count,
        since: a.since,
    }
}

fn slot(key: &ActualLrpKey) -> Slot {
    (key.process_guid.clone(), key.index)
}

/// The cell an ActualLrp occupies, if it occupies one.
fn placed_on(a: &ActualLrp) -> Option<&str> {
    matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
        .then_some(a.instance_key.as_ref())
        .flatten()
        .map(|ik| ik.cell_id.as_str())
}

impl State {
    /// The instances on cells not in `live`, through the index by cell
    /// instead of a walk of every instance.
    fn lost(&self, live: &HashSet<String>) -> Vec<ActualSummary> {
        self.by_cell
            .iter()
            .filter(|(cell, _)| !live.contains(*cell))
            .flat_map(|(_, on_cell)| on_cell.values().map(|a| summary(a)))
            .collect()
    }

    fn unindex(&mut self, slot: &Slot, a: &ActualLrp) {
        if let Some(cell) = placed_on(a)
            && let Some(set) = self.by_cell.get_mut(cell)
        {
            set.remove(slot);
            if set.is_empty() {
                self.by_cell.remove(cell);
            }
        }
        self.unclaimed.remove(slot);
    }

    fn index(&mut self, slot: &Slot, a: &Arc<ActualLrp>) {
        if let Some(cell) = placed_on(a) {
            // The cell's id is copied only for a cell not yet indexed.
            match self.by_cell.get_mut(cell) {
                Some(on_cell) => on_cell.insert(slot.clone(), a.clone()),
                None => self
                    .by_cell
                    .entry(cell.to_string())
                    .or_default()
                    .insert(slot.clone(), a.clone()),
            };
        }
        if a.state == ActualLrpState::Unclaimed {
            self.unclaimed.insert(slot.clone());
        }
    }

    /// A record in place of the one at its slot: one search of the
    /// 250,000 slots, not a removal and an insertion.
    fn put(&mut self, a: ActualLrp) {
        let a = Arc::new(a);
        let slot = slot(&a.key);
        let old = match self.actuals.get_mut(&slot) {
            Some(held) => Some(std::mem::replace(held, a.clone())),
            None => {
                self.actuals.insert(slot.clone(), a.clone());
                None
            }
        };
        if let Some(old) = old {
            self.unindex(&slot, &old);
        }
        self.index(&slot, &a);
    }

    fn put_task(&mut self, t: &Task) {
        let open = matches!(t.state, TaskState::Pending | TaskState::Running);
        if open && !t.cell_id.is_empty() {
            self.task_cells
                .insert(t.task_guid.clone(), t.cell_id.clone());
        } else {
            self.task_cells.remove(&t.task_guid);
        }
    }

    fn remove(&mut self, slot: &Slot) {
        if let Some(old) = self.actuals.remove(slot) {
            self.unindex(slot, &old);
        }
    }
}

impl Mirror {
    /// The tables as they are now (at open, before anything writes).
    pub(crate) async fn load(pool: &Pool) -> Result<Mirror, BbsError> {
        let mirror = Mirror::default();
        let actuals = store::actual_lrps(pool, &crate::ActualLrpFilter::default()).await?;
        let desired = store::desired_lrps(pool, None).await?;
        let tasks = store::open_tasks(pool).await?;
        {
            let mut state = mirror.lock();
            tasks.iter().for_each(|t| state.put_task(t));
            actuals.into_iter().for_each(|a| state.put(a));
            state.desired = desired
                .into_iter()
                .map(|d| (d.process_guid.clone(), Arc::new(d)))
                .collect();
        }
        Ok(mirror)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- writes: each right after its transaction commits ----

    /// ActualLrps as committed (inserted or changed).
    pub(crate) fn put<'a>(&self, actuals: impl IntoIterator<Item = &'a ActualLrp>) {
        let mut state = self.lock();
        actuals.into_iter().for_each(|a| state.put(a.clone()));
    }

    /// The ActualLrp and task changes and removals among committed writes'
    /// events.
    pub(crate) fn apply(&self, events: &[BbsEvent]) {
        let mut state = self.lock();
        for event in events {
            match event {
                BbsEvent::ActualLrpChanged { actual_lrp } => state.put(actual_lrp.clone()),
                BbsEvent::ActualLrpRemoved { key } => state.remove(&slot(key)),
                BbsEvent::TaskChanged { task } => state.put_task(task),
                BbsEvent::TaskRemoved { task_guid } => {
                    state.task_cells.remove(task_guid);
                }
                _ => {}
            }
        }
    }

    /// ActualLrps deleted.
    pub(crate) fn remove<'a>(&self, keys: impl IntoIterator<Item = &'a ActualLrpKey>) {
        let mut state = self.lock();
        keys.into_iter().for_each(|k| state.remove(&slot(k)));
    }

    pub(crate) fn put_desired(&self, desired: &DesiredLrp) {
        self.lock()
            .desired
            .insert(desired.process_guid.clone(), Arc::new(desired.clone()));
    }

    /// A DesiredLrp deleted, with all its ActualLrps.
    pub(crate) fn remove_desired(&self, process_guid: &str) {
        let mut state = self.lock();
        state.desired.remove(process_guid);
        let slots: Vec<Slot> = state
            .actuals
            .range((process_guid.to_string(), 0)..=(process_guid.to_string(), u32::MAX))
            .map(|(s, _)| s.clone())
            .collect();
        slots.iter().for_each(|s| state.remove(s));
    }

    // ---- reads ----

    /// The ActualLrps CLAIMED by or RUNNING on a cell that have a
    /// DesiredLrp, in slot order, and those DesiredLrps once each: shared
    /// with the mirror, so a cell's sync copies no record.
    pub(crate) fn cell_lrps(&self, cell_id: &str) -> (Vec<Arc<ActualLrp>>, Vec<Arc<DesiredLrp>>) {
        let state = self.lock();
        let Some(on_cell) = state.by_cell.get(cell_id) else {
            return (Vec::new(), Vec::new());
        };
        let mut lrps = Vec::with_capacity(on_cell.len());
        let mut desired: Vec<Arc<DesiredLrp>> = Vec::new();
        for (slot, a) in on_cell {
            // Slots are ordered by process guid: a new guid is a new one.
            let same_guid = desired.last().is_some_and(|d| d.process_guid == slot.0);
            if !same_guid {
                let Some(d) = state.desired.get(&slot.0) else {
                    continue;
                };
                desired.push(d.clone());
            }
            lrps.push(a.clone());
        }
        (lrps, desired)
    }

    /// Whether a PENDING or RUNNING task is placed on the cell.
    pub(crate) fn has_tasks(&self, cell_id: &str) -> bool {
        self.lock().task_cells.values().any(|c| c == cell_id)
    }

    /// Every UNCLAIMED instance, with its last placement error.
    pub(crate) fn unclaimed(&self) -> Vec<Unclaimed> {
        let state = self.lock();
        state
            .unclaimed
            .iter()
            .filter_map(|slot| state.actuals.get(slot))
            .map(|a| Unclaimed {
                process_guid: a.key.process_guid.clone(),
                index: a.key.index,
                placement_error: a.placement_error.clone(),
            })
            .collect()
    }

    /// What the instances on each cell use (those with a DesiredLrp): the
    /// auction's picture of the cells' load.
    pub(crate) fn cell_usage(&self) -> HashMap<String, CellUsage> {
        let state = self.lock();
        let mut usage = HashMap::with_capacity(state.by_cell.len());
        for (cell_id, slots) in &state.by_cell {
            let mut u = CellUsage::default();
            // Slots are ordered by process guid: one lookup per run.
            let mut current: Option<(&str, Option<&Arc<DesiredLrp>>)> = None;
            for (slot, a) in slots {
                let d = match current {
                    Some((g, d)) if g == slot.0 => d,
                    _ => {
                        let d = state.desired.get(&slot.0);
                        current = Some((&slot.0, d));
                        d
                    }
                };
                let Some(d) = d else { continue };
                u.memory_mb += d.memory_mb;
                u.disk_mb += d.disk_mb;
                u.instances += 1;
                u.starting += u32::from(a.state == ActualLrpState::Claimed);
            }
            usage.insert(cell_id.clone(), u);
        }
        usage
    }

    /// How many instances of each of `processes` (with a DesiredLrp) each
    /// cell holds, CLAIMED or RUNNING, by the cell's position from
    /// `position` (cells it has none for are left out): the auction's
    /// "fewest of the same process" picture, read from each process's own
    /// slots. Counted per cell instead, every (cell, process) pair was a
    /// string and a map entry: 225,000 of them when 25,000 lost instances
    /// of as many processes are placed again.
    pub(crate) fn process_cells(
        &self,
        processes: &HashSet<&str>,
        position: impl Fn(&str) -> Option<usize>,
    ) -> HashMap<String, HashMap<usize, u32>> {
        let state = self.lock();
        let mut same = HashMap::with_capacity(processes.len());
        for &guid in processes {
            if !state.desired.contains_key(guid) {
                continue;
            }
            let range = (guid.to_string(), 0)..=(guid.to_string(), u32::MAX);
            let mut on: HashMap<usize, u32> = HashMap::new();
            for a in state.actuals.range(range).map(|(_, a)| a) {
                if let Some(i) = placed_on(a).and_then(&position) {
                    *on.entry(i).or_default() += 1;
                }
            }
            if !on.is_empty() {
                same.insert(guid.to_string(), on);
            }
        }
        same
    }

    /// How many instances of each process each cell holds, and how many
    /// of them are still starting (CLAIMED).
    #[cfg(test)]
    pub(crate) fn cell_process_loads(&self) -> Vec<CellProcessLoad> {
        let state = self.lock();
        let mut loads = Vec::new();
        for (cell_id, slots) in &state.by_cell {
            // Slots are ordered by process guid: count runs of one guid.
            let mut current: Option<CellProcessLoad> = None;
            for (slot, a) in slots {
                let starting = a.state == ActualLrpState::Claimed;
                match current.as_mut() {
                    Some(load) if load.process_guid == slot.0 => {
                        load.instances += 1;
                        load.starting += u32::from(starting);
                    }
                    _ => {
                        loads.extend(current.take());
                        current = Some(CellProcessLoad {
                            cell_id: cell_id.clone(),
                            process_guid: slot.0.clone(),
                            instances: 1,
                            starting: u32::from(starting),
                        });
                    }
                }
            }
            loads.extend(current);
        }
        loads
    }

    /// What a convergence pass corrects, from one walk of the mirror:
    /// instances beyond their DesiredLrp (or without one), indices without
    /// an instance, instances on cells not in `live` (none when `None`),
    /// and CRASHED instances. The same rows as the convergence queries of
    /// the tables (`agrees_with_the_tables` checks it), without reading and
    /// decoding every instance under SQL at each pass.
    pub(crate) fn convergence_plan(&self, live: Option<&HashSet<String>>) -> MirrorPlan {
        let state = self.lock();
        let mut plan = MirrorPlan::default();
        let mut current: Option<(&str, Option<&Arc<DesiredLrp>>)> = None;
        for ((guid, index), a) in &state.actuals {
            // Slots are ordered by guid: one DesiredLrp lookup per process.
            let d = match current {
                Some((g, d)) if g == guid => d,
                _ => {
                    let d = state.desired.get(guid);
                    current = Some((guid, d));
                    d
                }
            };
            if d.is_none_or(|d| *index >= d.instances) {
                plan.extra.push((guid.clone(), *index));
            }
            if a.state == ActualLrpState::Crashed {
                plan.crashed.push(summary(a));
            }
        }
        for (guid, d) in &state.desired {
            let range = (guid.clone(), 0)..(guid.clone(), d.instances);
            let present: Vec<u32> = state.actuals.range(range).map(|(s, _)| s.1).collect();
            if present.len() < d.instances as usize {
                let missing = (0..d.instances)
                    .filter(|i| present.binary_search(i).is_err())
                    .collect();
                plan.missing.push((d.clone(), missing));
            }
        }
        if let Some(live) = live {
            plan.lost = state.lost(live);
        }
        plan
    }

    /// The instances on cells not in `live`: [`Mirror::convergence_plan`]'s
    /// `lost` alone, for the pass run when cells' presence expires.
    pub(crate) fn lost(&self, live: &HashSet<String>) -> Vec<ActualSummary> {
        self.lock().lost(live)
    }

    /// The ActualLrps at these slots as the tables have them, in one hold
    /// of the lock: under the write lock, what a batch's statements
    /// change, so their rows need not be read back. A slot the mirror
    /// does not hold is an error (the invariant is broken; the batch's
    /// transaction is dropped).
    pub(crate) fn records<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a Slot>,
    ) -> Result<Vec<Arc<ActualLrp>>, BbsError> {
        let state = self.lock();
        slots
            .into_iter()
            .map(|slot| {
                state.actuals.get(slot).cloned().ok_or_else(|| {
                    BbsError::Store(format!(
                        "actual lrp {}/{} is in the table but not in memory",
                        slot.0, slot.1
                    ))
                })
            })
            .collect()
    }

    /// The ActualLrp at a slot, shared.
    pub(crate) fn record_at(&self, slot: &Slot) -> Option<Arc<ActualLrp>> {
        self.lock().actuals.get(slot).cloned()
    }

    /// Every DesiredLrp.
    pub(crate) fn desired(&self) -> DesiredSnapshot {
        self.lock().desired.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::bbs::ActualLrpInstanceKey;

    fn actual(process_guid: &str, index: u32, state: ActualLrpState, cell: &str) -> ActualLrp {
        ActualLrp {
            key: ActualLrpKey {
                process_guid: process_guid.into(),
                index,
                domain: "d".into(),
            },
            instance_key: (!cell.is_empty()).then(|| ActualLrpInstanceKey {
                instance_guid: format!("{process_guid}-{index}"),
                cell_id: cell.into(),
            }),
            net_info: None,
            state,
            crash_count: 0,
            crash_reason: String::new(),
            placement_error: String::new(),
            since: 0,
            presence: Default::default(),
        }
    }

    #[test]
    fn indexes_follow_each_change() {
        let mirror = Mirror::default();
        let a0 = actual("a", 0, ActualLrpState::Unclaimed, "");
        let b0 = actual("b", 0, ActualLrpState::Running, "c1");
        mirror.put([&a0, &b0]);
        assert_eq!(mirror.unclaimed().len(), 1);
        let a0 = actual("a", 0, ActualLrpState::Claimed, "c1");
        let a1 = actual("a", 1, ActualLrpState::Running, "c1");
        mirror.put([&a0, &a1]);
        assert!(mirror.unclaimed().is_empty());
        let mut loads: Vec<_> = mirror
            .cell_process_loads()
            .into_iter()
            .map(|l| (l.cell_id, l.process_guid, l.instances, l.starting))
            .collect();
        loads.sort();
        assert_eq!(
            loads,
            [
                ("c1".into(), "a".into(), 2, 1),
                ("c1".into(), "b".into(), 1, 0)
            ]
        );
        // Moved to another cell, then the process goes: nothing is left.
        mirror.put([&actual("a", 1, ActualLrpState::Claimed, "c2")]);
        assert_eq!(mirror.lock().by_cell["c1"].len(), 2);
        mirror.remove_desired("a");
        mirror.remove([&b0.key]);
        let state = mirror.lock();
        assert!(state.actuals.is_empty() && state.by_cell.is_empty());
    }
}

/// The mirror against the tables after the BBS's writes of every kind.
#[cfg(test)]
mod agrees_with_the_tables {
    use super::CellUsage;
    use crate::{ActualLrpFilter, Bbs, BbsClient, BbsConfig, store};
    use kiln_model::bbs::{
        ActualLrpNetInfo, CellCapacity, CellPresence, DesiredLrpUpdate, RunAction, TaskDefinition,
    };
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use kiln_model::testing::desired_lrp as desired;

    fn task() -> TaskDefinition {
        TaskDefinition {
            rootfs: "preloaded:s".parse().unwrap(),
            resolve_image: None,
            image_username: String::new(),
            image_password: Default::default(),
            log_guid: "l".into(),
            log_source: "STG".into(),
            memory_mb: 64,
            disk_mb: 64,
            env: vec![],
            downloads: vec![],
            run: RunAction {
                path: "/bin/true".into(),
                args: vec![],
                env: vec![],
                dir: None,
                user: "vcap".into(),
            },
            uploads: vec![],
            result_file: "/tmp/result.json".into(),
            timeout_ms: 1000,
        }
    }

    fn cell(cell_id: &str) -> CellPresence {
        CellPresence {
            cell_id: cell_id.into(),
            address: "127.0.0.1".into(),
            capacity: CellCapacity {
                memory_mb: 4096,
                disk_mb: 4096,
                containers: 50,
            },
            rootfs_providers: vec!["preloaded:s".to_string().try_into().unwrap()],
        }
    }

    async fn assert_agrees(bbs: &Bbs, cells: &[&str]) {
        let pool = &bbs.inner.pool;
        let mirror = &bbs.inner.mirror;
        let key =
            |u: &store::Unclaimed| (u.process_guid.clone(), u.index, u.placement_error.clone());
        let mut want: Vec<_> = store::unclaimed(pool)
            .await
            .unwrap()
            .iter()
            .map(key)
            .collect();
        let mut got: Vec<_> = mirror.unclaimed().iter().map(key).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "unclaimed");
        let load = |l: store::CellProcessLoad| (l.cell_id, l.process_guid, l.instances, l.starting);
        let mut want: Vec<_> = store::cell_process_loads(pool)
            .await
            .unwrap()
            .into_iter()
            .map(load)
            .collect();
        let mut got: Vec<_> = mirror.cell_process_loads().into_iter().map(load).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "loads");
        // The auction's picture, summed from the same rows.
        let desired = mirror.desired();
        let mut sums: HashMap<String, CellUsage> = HashMap::new();
        for (cell_id, guid, instances, starting) in &want {
            let d = &desired[guid];
            let u = sums.entry(cell_id.clone()).or_default();
            u.memory_mb += d.memory_mb * u64::from(*instances);
            u.disk_mb += d.disk_mb * u64::from(*instances);
            u.instances += instances;
            u.starting += starting;
        }
        assert_eq!(mirror.cell_usage(), sums, "usage");
        let positions: HashMap<&str, usize> = want
            .iter()
            .enumerate()
            .map(|(i, (cell_id, ..))| (cell_id.as_str(), i))
            .collect();
        let mut same: HashMap<String, HashMap<usize, u32>> = HashMap::new();
        for (cell_id, guid, instances, _) in &want {
            same.entry(guid.clone())
                .or_default()
                .insert(positions[cell_id.as_str()], *instances);
        }
        let all: HashSet<&str> = desired.keys().map(String::as_str).collect();
        let got = mirror.process_cells(&all, |c| positions.get(c).copied());
        assert_eq!(got, same, "instances of each process by cell");
        for c in cells {
            let with_tasks = !store::cell_tasks(pool, c).await.unwrap().is_empty();
            assert_eq!(mirror.has_tasks(c), with_tasks, "tasks on {c}");
            let want = store::cell_actuals(pool, c).await.unwrap();
            let got: Vec<kiln_model::bbs::ActualLrp> = mirror
                .cell_lrps(c)
                .0
                .iter()
                .map(|a| (**a).clone())
                .collect();
            assert_eq!(got, want, "work of {c}");
        }
        let all = store::actual_lrps(pool, &ActualLrpFilter::default())
            .await
            .unwrap();
        let got: Vec<_> = mirror
            .lock()
            .actuals
            .values()
            .map(|a| (**a).clone())
            .collect();
        assert_eq!(got, all, "every ActualLrp");
        assert_plan_agrees(bbs).await;
    }

    /// The suspect instances in memory against their kept rows.
    async fn assert_kept_agree(bbs: &Bbs) {
        let mut want: Vec<_> = store::kept_instances(&bbs.inner.pool)
            .await
            .unwrap()
            .into_iter()
            .filter(|(kept, _)| *kept == store::Kept::Suspect)
            .map(|(_, a)| a.instance_key)
            .collect();
        let mut got: Vec<_> = bbs
            .inner
            .suspects
            .all()
            .into_iter()
            .map(|a| a.instance_key)
            .collect();
        want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(got, want, "suspect instances and their kept rows");
    }

    /// Convergence's plan from the mirror against the same questions asked
    /// of the tables.
    async fn assert_plan_agrees(bbs: &Bbs) {
        let pool = &bbs.inner.pool;
        let live = bbs.live_cell_ids();
        let plan = bbs.inner.mirror.convergence_plan(Some(&live));
        fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
            v.sort();
            v
        }
        let summary = |a: &store::ActualSummary| {
            let state = a.state.as_str();
            let (guid, cell) = (a.instance_guid.clone(), a.cell_id.clone());
            (
                a.process_guid.clone(),
                a.index,
                state,
                guid,
                cell,
                a.since,
                a.crash_count,
            )
        };
        let want = sorted(store::extra_instances(pool).await.unwrap());
        assert_eq!(sorted(plan.extra.clone()), want, "extra");
        let want = sorted(store::missing_instances(pool).await.unwrap());
        let got = plan
            .missing
            .iter()
            .map(|(d, i)| (d.process_guid.clone(), i.clone()));
        assert_eq!(sorted(got.collect()), want, "missing");
        let want = store::on_cells_other_than(pool, &live).await.unwrap();
        let want = sorted(want.iter().map(summary).collect());
        assert_eq!(
            sorted(plan.lost.iter().map(summary).collect()),
            want,
            "lost"
        );
        let want = sorted(
            store::crashed(pool)
                .await
                .unwrap()
                .iter()
                .map(summary)
                .collect(),
        );
        assert_eq!(
            sorted(plan.crashed.iter().map(summary).collect()),
            want,
            "crashed"
        );
    }

    #[tokio::test]
    async fn after_desires_placements_reports_crashes_scaling_loss_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let config = BbsConfig {
            cell_ttl: Duration::from_millis(200),
            ..Default::default()
        };
        let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), config)
            .await
            .unwrap();
        let cells = ["c1", "c2", "c3"];
        for c in cells {
            bbs.heartbeat_cell(cell(c)).await.unwrap();
        }
        bbs.desire_lrp(desired("p", 4)).await.unwrap();
        bbs.desire_lrp(desired("q", 3)).await.unwrap();
        bbs.desire_lrp(desired("r", 2)).await.unwrap();
        for t in ["t1", "t2", "t3"] {
            bbs.desire_task(t, "d", task()).await.unwrap();
        }
        // Fresh presence for every cell, however slow the steps above were
        // on a loaded machine: the TTL is short for the loss below.
        for c in cells {
            bbs.heartbeat_cell(cell(c)).await.unwrap();
        }
        bbs.auction().await.unwrap();
        assert_agrees(&bbs, &cells).await;
        // Tasks started, completed (and deleted), cancelled.
        let on_cell = bbs.task_by_guid("t1").await.unwrap().cell_id;
        assert!(bbs.start_task("t1", &on_cell).await.unwrap());
        let on_cell = bbs.task_by_guid("t2").await.unwrap().cell_id;
        bbs.complete_task("t2", &on_cell, false, "", "")
            .await
            .unwrap();
        bbs.resolving_task("t2").await.unwrap();
        bbs.delete_task("t2").await.unwrap();
        bbs.cancel_task("t3").await.unwrap();
        assert_agrees(&bbs, &cells).await;

        // Reports: some instances RUNNING; one crashes.
        let net_info = ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![],
            instance_address: String::new(),
        };
        let placed = bbs.actual_lrps(ActualLrpFilter::default()).await.unwrap();
        // Every other instance runs, and the first on each cell, so the
        // lost cell below surely had RUNNING ones.
        let first_on_cell = |i: usize| {
            !placed[..i]
                .iter()
                .any(|b| crate::mirror::placed_on(b) == crate::mirror::placed_on(&placed[i]))
        };
        let running: Vec<_> = (0..placed.len())
            .filter(|&i| i % 2 == 0 || first_on_cell(i))
            .map(|i| &placed[i])
            .collect();
        for a in running {
            let ik = a.instance_key.as_ref().unwrap();
            bbs.start_actual_lrp(&a.key, ik, net_info.clone())
                .await
                .unwrap();
        }
        let crashed = &placed[2];
        bbs.crash_actual_lrp(&crashed.key, crashed.instance_key.as_ref().unwrap(), "boom")
            .await
            .unwrap();
        assert_agrees(&bbs, &cells).await;

        // Scaling both ways, a removal, an evacuation.
        let scale = |n| DesiredLrpUpdate {
            instances: Some(n),
            ..Default::default()
        };
        bbs.update_desired_lrp("p", scale(6)).await.unwrap();
        bbs.update_desired_lrp("q", scale(1)).await.unwrap();
        bbs.remove_desired_lrp("r").await.unwrap();
        bbs.evacuate_cell("c3").await.unwrap();
        for c in cells {
            bbs.heartbeat_cell(cell(c)).await.unwrap();
        }
        bbs.auction().await.unwrap();
        assert_agrees(&bbs, &cells).await;

        // c2's instances run (where the scaling left them depends on the
        // placement), then c2 is lost (only c1 heartbeats on): its work goes
        // back to the auction (RUNNING ones kept as suspect) and is placed
        // on c1.
        let on_c2 = ActualLrpFilter {
            cell_id: Some("c2".into()),
            ..Default::default()
        };
        for a in bbs.actual_lrps(on_c2).await.unwrap() {
            if a.state == kiln_model::ActualLrpState::Claimed {
                let ik = a.instance_key.as_ref().unwrap();
                bbs.start_actual_lrp(&a.key, ik, net_info.clone())
                    .await
                    .unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        bbs.heartbeat_cell(cell("c1")).await.unwrap();
        assert!(
            !bbs.inner
                .mirror
                .convergence_plan(Some(&bbs.live_cell_ids()))
                .lost
                .is_empty(),
            "c2's instances are lost before the pass"
        );
        assert_agrees(&bbs, &cells).await;
        let report = bbs.converge().await.unwrap();
        assert_agrees(&bbs, &cells).await;
        let suspects = bbs.inner.suspects.all();
        let all = bbs.actual_lrps(ActualLrpFilter::default()).await.unwrap();
        assert!(
            !suspects.is_empty(),
            "c2's RUNNING instances are suspect: {report:?} {:?}",
            all.iter()
                .map(|a| (
                    &a.key.process_guid,
                    a.key.index,
                    a.state,
                    a.instance_key.as_ref().map(|k| &k.cell_id)
                ))
                .collect::<Vec<_>>()
        );
        assert_kept_agree(&bbs).await;
        // Their replacements run (reported in one batch): the suspect
        // instances go, in memory and in their kept rows alike.
        let replacements: Vec<_> = bbs
            .actual_lrps(ActualLrpFilter {
                cell_id: Some("c1".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|a| suspects.iter().any(|s| s.key == a.key))
            .collect();
        assert_eq!(replacements.len(), suspects.len(), "{replacements:?}");
        // Each reported twice at once: a repeated report in one batch gets
        // the same answer, and the record built for it equals the row.
        let reports = replacements.iter().chain(&replacements).map(|a| {
            bbs.start_actual_lrp(&a.key, a.instance_key.as_ref().unwrap(), net_info.clone())
        });
        for started in futures_util::future::join_all(reports).await {
            started.unwrap();
        }
        assert!(bbs.inner.suspects.all().is_empty());
        assert_kept_agree(&bbs).await;
        assert_agrees(&bbs, &cells).await;

        // Reopened, the mirror is loaded from the tables, here changed
        // behind the BBS's back: an index gone, one beyond its process's
        // count, one of no process, one CRASHED.
        drop(bbs);
        let bbs = Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap();
        assert_agrees(&bbs, &cells).await;
        let pool = &bbs.inner.pool;
        for sql in [
            "DELETE FROM actual_lrps WHERE process_guid = 'p' AND instance_index = 1",
            "INSERT INTO actual_lrps (process_guid, instance_index, domain, state, since) \
             VALUES ('q', 5, 'cf-apps', 'UNCLAIMED', 0), ('gone', 0, 'cf-apps', 'UNCLAIMED', 0)",
            "UPDATE actual_lrps SET state = 'CRASHED', instance_guid = '', cell_id = '', \
             crash_count = 4 WHERE process_guid = 'p' AND instance_index = 0",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        drop(bbs);
        let bbs = Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap();
        let plan = bbs.inner.mirror.convergence_plan(None);
        assert_eq!(
            (plan.extra.len(), plan.missing.len(), plan.crashed.len()),
            (2, 1, 1),
            "{plan:?}"
        );
        assert_agrees(&bbs, &cells).await;
    }
}
