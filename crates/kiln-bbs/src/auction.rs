//! The auctioneer's placement decision, as a pure function over an
//! in-memory picture of the cells (`auction:auctionrunner/scheduler.go`).
//!
//! Work is ordered as Diego orders a batch (every app's instance 0 first,
//! then tasks, then the other instances), each item is placed on the
//! qualifying cell with the lowest score, and the cell's picture is updated
//! so later items in the batch see the reservation.

use kiln_model::rootfs::{RootFs, RootFsProvider};
use std::collections::HashMap;

/// What a cell has and what is placed on it, as the auction sees it.
#[derive(Debug, Clone)]
pub struct CellLoad {
    pub cell_id: String,
    pub rootfs_providers: Vec<RootFsProvider>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u32,
    pub used_memory_mb: u64,
    pub used_disk_mb: u64,
    pub used_containers: u32,
    /// Containers placed but not yet RUNNING.
    pub starting: u32,
    pub instances_by_process: HashMap<String, u32>,
    pub tasks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkKind {
    Lrp { process_guid: String, index: u32 },
    Task { task_guid: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub kind: WorkKind,
    pub rootfs: RootFs,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

const STARTING_CONTAINER_WEIGHT: f64 = 0.25;
const SAME_WORK_PENALTY: f64 = 1000.0;

/// Diego's batch order: LRP index 0 by memory (largest first), then tasks
/// by memory, then LRPs of higher index by index and memory.
pub fn sort_batch(batch: &mut [Work]) {
    batch.sort_by_key(|w| {
        let memory = std::cmp::Reverse(w.memory_mb);
        match &w.kind {
            WorkKind::Lrp { index: 0, .. } => (0, 0, memory),
            WorkKind::Task { .. } => (1, 0, memory),
            WorkKind::Lrp { index, .. } => (2, *index, memory),
        }
    });
}

/// Places one item: the index of the winning cell, or the placement error
/// Diego would report.
pub fn place(cells: &mut [CellLoad], work: &Work) -> Result<usize, String> {
    if cells.is_empty() {
        return Err("unable to communicate to compatible cells".into());
    }
    let compatible: Vec<usize> = (0..cells.len())
        .filter(|&i| work.rootfs.runs_on(&cells[i].rootfs_providers))
        .collect();
    if compatible.is_empty() {
        return Err("found no compatible cell for required rootfs".into());
    }
    let mut best: Option<(usize, f64)> = None;
    // Which resources were short on every compatible cell, for the error.
    let (mut short_memory, mut short_disk, mut short_containers) = (true, true, true);
    for &i in &compatible {
        let c = &cells[i];
        let memory_ok = c.used_memory_mb + work.memory_mb <= c.memory_mb;
        let disk_ok = c.used_disk_mb + work.disk_mb <= c.disk_mb;
        let containers_ok = c.used_containers < c.containers;
        short_memory &= !memory_ok;
        short_disk &= !disk_ok;
        short_containers &= !containers_ok;
        if !(memory_ok && disk_ok && containers_ok) {
            continue;
        }
        let frac = |used: u64, total: u64| {
            if total == 0 {
                1.0
            } else {
                used as f64 / total as f64
            }
        };
        let resource = (frac(c.used_memory_mb + work.memory_mb, c.memory_mb)
            + frac(c.used_disk_mb + work.disk_mb, c.disk_mb)
            + frac(u64::from(c.used_containers) + 1, u64::from(c.containers)))
            / 3.0;
        let same = match &work.kind {
            WorkKind::Lrp { process_guid, .. } => c
                .instances_by_process
                .get(process_guid)
                .copied()
                .unwrap_or(0),
            WorkKind::Task { .. } => c.tasks,
        };
        let score = resource
            + STARTING_CONTAINER_WEIGHT * f64::from(c.starting)
            + SAME_WORK_PENALTY * f64::from(same);
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((i, score));
        }
    }
    let Some((winner, _)) = best else {
        let mut problems = Vec::new();
        if short_containers {
            problems.push("containers");
        }
        if short_disk {
            problems.push("disk");
        }
        if short_memory {
            problems.push("memory");
        }
        return Err(if problems.is_empty() {
            "insufficient resources".into()
        } else {
            format!("insufficient resources: {}", problems.join(", "))
        });
    };
    let c = &mut cells[winner];
    c.used_memory_mb += work.memory_mb;
    c.used_disk_mb += work.disk_mb;
    c.used_containers += 1;
    c.starting += 1;
    match &work.kind {
        WorkKind::Lrp { process_guid, .. } => {
            *c.instances_by_process
                .entry(process_guid.clone())
                .or_default() += 1
        }
        WorkKind::Task { .. } => c.tasks += 1,
    }
    Ok(winner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(id: &str, memory_mb: u64) -> CellLoad {
        CellLoad {
            cell_id: id.into(),
            rootfs_providers: vec![RootFsProvider::preloaded("s")],
            memory_mb,
            disk_mb: 100_000,
            containers: 250,
            used_memory_mb: 0,
            used_disk_mb: 0,
            used_containers: 0,
            starting: 0,
            instances_by_process: HashMap::new(),
            tasks: 0,
        }
    }

    fn lrp(process_guid: &str, index: u32, memory_mb: u64) -> Work {
        Work {
            kind: WorkKind::Lrp {
                process_guid: process_guid.into(),
                index,
            },
            rootfs: RootFs::preloaded("s"),
            memory_mb,
            disk_mb: 1024,
        }
    }

    #[test]
    fn instances_of_one_process_spread_over_cells() {
        let mut cells = vec![cell("a", 4096), cell("b", 4096), cell("c", 4096)];
        let placed: Vec<_> = (0..3)
            .map(|i| {
                let winner = place(&mut cells, &lrp("p", i, 256)).unwrap();
                cells[winner].cell_id.clone()
            })
            .collect();
        let mut sorted = placed.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "one per cell, got {placed:?}");
    }

    #[test]
    fn the_emptier_cell_wins() {
        let mut cells = vec![cell("a", 4096), cell("b", 4096)];
        cells[0].used_memory_mb = 2048;
        cells[0].used_containers = 3;
        let winner = place(&mut cells, &lrp("p", 0, 256)).unwrap();
        assert_eq!(cells[winner].cell_id, "b");
    }

    #[test]
    fn placement_errors_say_why() {
        let check = |cells: &mut Vec<CellLoad>, work: Work, expected: &str| {
            assert_eq!(place(cells, &work).unwrap_err(), expected);
        };
        check(
            &mut vec![],
            lrp("p", 0, 256),
            "unable to communicate to compatible cells",
        );
        let mut small = vec![cell("a", 128)];
        check(
            &mut small,
            lrp("p", 0, 256),
            "insufficient resources: memory",
        );
        let mut other_stack = vec![cell("a", 4096)];
        other_stack[0].rootfs_providers = vec![RootFsProvider::preloaded("other")];
        check(
            &mut other_stack,
            lrp("p", 0, 256),
            "found no compatible cell for required rootfs",
        );
    }

    #[test]
    fn a_cell_fills_up_within_one_batch() {
        let mut cells = vec![cell("a", 512)];
        assert!(place(&mut cells, &lrp("p", 0, 256)).is_ok());
        assert!(place(&mut cells, &lrp("p", 1, 256)).is_ok());
        assert!(place(&mut cells, &lrp("p", 2, 256)).is_err());
    }

    #[test]
    fn batch_order_is_index_zero_then_tasks_then_the_rest() {
        let task = Work {
            kind: WorkKind::Task {
                task_guid: "t".into(),
            },
            rootfs: RootFs::preloaded("s"),
            memory_mb: 1024,
            disk_mb: 0,
        };
        let mut batch = vec![
            lrp("p", 1, 256),
            task.clone(),
            lrp("q", 0, 128),
            lrp("p", 0, 512),
        ];
        sort_batch(&mut batch);
        assert_eq!(
            batch,
            vec![lrp("p", 0, 512), lrp("q", 0, 128), task, lrp("p", 1, 256)]
        );
    }
}
