//! The auctioneer's placement decision, as a pure function over an
//! in-memory picture of the cells (`auction:auctionrunner/scheduler.go`).
//!
//! Work is ordered as Diego orders a batch (every app's instance 0 first,
//! then tasks, then the other instances), each item is placed on the
//! qualifying cell with the lowest score, and the cell's picture is updated
//! so later items in the batch see the reservation.
//!
//! The score is Diego's: fewest instances of the same process (or tasks)
//! first, then the best fit (resource use after placing, plus a weight per
//! container still starting). An [`Auction`] keeps its cells ordered by
//! their score without the item's own share, so finding the winner reads
//! cells from the emptiest and stops at the first cell without the process
//! that no later cell can beat, instead of scoring every cell per item.

use kiln_model::rootfs::{RootFs, RootFsProvider};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

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
    pub tasks: u32,
}

impl CellLoad {
    /// An empty cell with this capacity.
    pub fn new(
        cell_id: &str,
        rootfs_providers: Vec<RootFsProvider>,
        memory_mb: u64,
        disk_mb: u64,
        containers: u32,
    ) -> CellLoad {
        CellLoad {
            cell_id: cell_id.into(),
            rootfs_providers,
            memory_mb,
            disk_mb,
            containers,
            used_memory_mb: 0,
            used_disk_mb: 0,
            used_containers: 0,
            starting: 0,
            tasks: 0,
        }
    }

    /// The fit part of the score with nothing more placed.
    fn base_score(&self) -> f64 {
        (frac(self.used_memory_mb, self.memory_mb)
            + frac(self.used_disk_mb, self.disk_mb)
            + frac(u64::from(self.used_containers), u64::from(self.containers)))
            / 3.0
            + STARTING_CONTAINER_WEIGHT * f64::from(self.starting)
    }

    /// The fit part of the score once `work` is placed here; never below
    /// [`CellLoad::base_score`].
    fn score_with(&self, work: &Work) -> f64 {
        (frac(self.used_memory_mb + work.memory_mb, self.memory_mb)
            + frac(self.used_disk_mb + work.disk_mb, self.disk_mb)
            + frac(
                u64::from(self.used_containers) + 1,
                u64::from(self.containers),
            ))
            / 3.0
            + STARTING_CONTAINER_WEIGHT * f64::from(self.starting)
    }
}

fn frac(used: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        used as f64 / total as f64
    }
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

/// Diego's placement errors, in its words.
pub const NO_CELLS: &str = "unable to communicate to compatible cells";
pub const NO_COMPATIBLE_CELL: &str = "found no compatible cell for required rootfs";
pub const INSUFFICIENT_RESOURCES: &str = "insufficient resources";

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

/// A score as a totally ordered key (scores are finite and non-negative).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One auction round's picture of the cells, updated as items are placed.
#[derive(Debug)]
pub struct Auction {
    cells: Vec<CellLoad>,
    /// Every cell by (base score, position): the emptiest first.
    order: BTreeSet<(Score, usize)>,
    /// Instances of each process per cell position (sparse).
    same: HashMap<String, HashMap<usize, u32>>,
    /// What any cell of the round can run.
    rootfs: Vec<RootFsProvider>,
    /// Shapes that fitted nowhere this round, with their error: the cells
    /// only fill up within a round, so anything at least as big fails too.
    failed: Vec<(RootFs, u64, u64, String)>,
}

/// How a candidate cell ranks for one item: fewer of the same work first.
type Rank = (u32, f64);

impl Auction {
    /// A round over `cells`, with `same` the instances of each process
    /// already on them, by cell position (sparse; the BBS counts them from
    /// each process's slots).
    pub fn new(cells: Vec<CellLoad>, same: HashMap<String, HashMap<usize, u32>>) -> Auction {
        let order = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (Score(c.base_score()), i))
            .collect();
        let mut rootfs: Vec<RootFsProvider> = cells
            .iter()
            .flat_map(|c| c.rootfs_providers.iter().cloned())
            .collect();
        rootfs.sort_by_key(|p| p.to_string());
        rootfs.dedup();
        Auction {
            cells,
            order,
            same,
            rootfs,
            failed: Vec::new(),
        }
    }

    pub fn cells(&self) -> &[CellLoad] {
        &self.cells
    }

    /// How many instances of `process_guid` the cell at `i` has.
    pub fn instances_of(&self, i: usize, process_guid: &str) -> u32 {
        self.same
            .get(process_guid)
            .and_then(|m| m.get(&i))
            .copied()
            .unwrap_or(0)
    }

    /// Places one item: the position of the winning cell, or the placement
    /// error Diego would report.
    pub fn place(&mut self, work: &Work) -> Result<usize, String> {
        if self.cells.is_empty() {
            return Err(NO_CELLS.into());
        }
        if !work.rootfs.runs_on(&self.rootfs) {
            return Err(NO_COMPATIBLE_CELL.into());
        }
        if let Some((.., error)) = self.failed.iter().find(|(rootfs, memory, disk, _)| {
            *rootfs == work.rootfs && work.memory_mb >= *memory && work.disk_mb >= *disk
        }) {
            return Err(error.clone());
        }
        match self.find_winner(work) {
            Ok(winner) => {
                self.reserve(winner, work);
                Ok(winner)
            }
            Err(error) => {
                self.failed.push((
                    work.rootfs.clone(),
                    work.memory_mb,
                    work.disk_mb,
                    error.clone(),
                ));
                Err(error)
            }
        }
    }

    fn find_winner(&self, work: &Work) -> Result<usize, String> {
        // The item's process looked up once, not at every cell: with cells
        // of equal load many tie, and an item reads hundreds of them.
        let same_process = match &work.kind {
            WorkKind::Lrp { process_guid, .. } => Some(self.same.get(process_guid)),
            WorkKind::Task { .. } => None,
        };
        let same_work = |i: usize| match same_process {
            Some(on) => on.and_then(|m| m.get(&i)).copied().unwrap_or(0),
            None => self.cells[i].tasks,
        };
        let mut best: Option<(usize, Rank)> = None;
        // Which resources were short on every compatible cell, for the error.
        let (mut short_memory, mut short_disk, mut short_containers) = (true, true, true);
        for &(Score(base), i) in &self.order {
            // A cell's score with the item is never below its base, so once
            // the best has none of this work, no later cell can win.
            if best.is_some_and(|(_, (same, score))| same == 0 && base >= score) {
                break;
            }
            let c = &self.cells[i];
            if !work.rootfs.runs_on(&c.rootfs_providers) {
                continue;
            }
            let memory_ok = c.used_memory_mb + work.memory_mb <= c.memory_mb;
            let disk_ok = c.used_disk_mb + work.disk_mb <= c.disk_mb;
            let containers_ok = c.used_containers < c.containers;
            short_memory &= !memory_ok;
            short_disk &= !disk_ok;
            short_containers &= !containers_ok;
            if !(memory_ok && disk_ok && containers_ok) {
                continue;
            }
            let rank = (same_work(i), c.score_with(work));
            let better = best.is_none_or(|(j, (same, score))| {
                rank.0 < same || (rank.0 == same && (rank.1 < score || (rank.1 == score && i < j)))
            });
            if better {
                best = Some((i, rank));
            }
        }
        if let Some((winner, _)) = best {
            return Ok(winner);
        }
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
        Err(if problems.is_empty() {
            INSUFFICIENT_RESOURCES.into()
        } else {
            format!("{INSUFFICIENT_RESOURCES}: {}", problems.join(", "))
        })
    }

    fn reserve(&mut self, i: usize, work: &Work) {
        let c = &mut self.cells[i];
        self.order.remove(&(Score(c.base_score()), i));
        c.used_memory_mb += work.memory_mb;
        c.used_disk_mb += work.disk_mb;
        c.used_containers += 1;
        c.starting += 1;
        match &work.kind {
            WorkKind::Lrp { process_guid, .. } => {
                *self
                    .same
                    .entry(process_guid.clone())
                    .or_default()
                    .entry(i)
                    .or_default() += 1
            }
            WorkKind::Task { .. } => c.tasks += 1,
        }
        self.order.insert((Score(c.base_score()), i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(id: &str, memory_mb: u64) -> CellLoad {
        CellLoad::new(
            id,
            vec![RootFsProvider::preloaded("s")],
            memory_mb,
            100_000,
            250,
        )
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

    fn winner_id(auction: &mut Auction, work: &Work) -> String {
        let i = auction.place(work).unwrap();
        auction.cells()[i].cell_id.clone()
    }

    #[test]
    fn instances_of_one_process_spread_over_cells() {
        let mut auction = Auction::new(
            vec![cell("a", 4096), cell("b", 4096), cell("c", 4096)],
            HashMap::new(),
        );
        let placed: Vec<_> = (0..3)
            .map(|i| winner_id(&mut auction, &lrp("p", i, 256)))
            .collect();
        let mut sorted = placed.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "one per cell, got {placed:?}");
    }

    #[test]
    fn spread_beats_fit() {
        // "a" is emptier but already has an instance of p: p goes to "b".
        let mut b = cell("b", 4096);
        b.used_memory_mb = 3072;
        b.used_containers = 10;
        let same = HashMap::from([("p".to_string(), HashMap::from([(0, 1)]))]);
        let mut auction = Auction::new(vec![cell("a", 4096), b], same);
        assert_eq!(winner_id(&mut auction, &lrp("p", 1, 256)), "b");
        assert_eq!(winner_id(&mut auction, &lrp("q", 0, 256)), "a");
        assert_eq!(auction.instances_of(1, "p"), 1);
    }

    #[test]
    fn the_emptier_cell_wins() {
        let mut cells = vec![cell("a", 4096), cell("b", 4096)];
        cells[0].used_memory_mb = 2048;
        cells[0].used_containers = 3;
        let mut auction = Auction::new(cells, HashMap::new());
        assert_eq!(winner_id(&mut auction, &lrp("p", 0, 256)), "b");
    }

    #[test]
    fn placement_errors_say_why() {
        let check = |cells: Vec<CellLoad>, work: Work, expected: &str| {
            let mut auction = Auction::new(cells, HashMap::new());
            assert_eq!(auction.place(&work).unwrap_err(), expected);
        };
        check(vec![], lrp("p", 0, 256), NO_CELLS);
        check(
            vec![cell("a", 128)],
            lrp("p", 0, 256),
            "insufficient resources: memory",
        );
        let mut other_stack = cell("a", 4096);
        other_stack.rootfs_providers = vec![RootFsProvider::preloaded("other")];
        check(vec![other_stack], lrp("p", 0, 256), NO_COMPATIBLE_CELL);
        let mut full = cell("a", 4096);
        full.used_containers = 250;
        check(
            vec![full],
            lrp("p", 0, 256),
            "insufficient resources: containers",
        );
    }

    #[test]
    fn a_cell_fills_up_within_one_batch() {
        let mut auction = Auction::new(vec![cell("a", 512)], HashMap::new());
        assert!(auction.place(&lrp("p", 0, 256)).is_ok());
        assert!(auction.place(&lrp("p", 1, 256)).is_ok());
        assert!(auction.place(&lrp("p", 2, 256)).is_err());
        // A smaller item still fits where a bigger one did not.
        let mut auction = Auction::new(vec![cell("a", 512)], HashMap::new());
        assert!(auction.place(&lrp("p", 0, 1024)).is_err());
        assert!(auction.place(&lrp("p", 1, 2048)).is_err());
        assert!(auction.place(&lrp("p", 2, 256)).is_ok());
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

    /// Diego's scoring as a plain scan of every cell, the reference the
    /// indexed auction must agree with; `same` counts each cell's
    /// instances by (position, process).
    fn place_by_scanning(
        cells: &mut [CellLoad],
        same: &mut HashMap<(usize, String), u32>,
        work: &Work,
    ) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in cells.iter().enumerate() {
            let fits = work.rootfs.runs_on(&c.rootfs_providers)
                && c.used_memory_mb + work.memory_mb <= c.memory_mb
                && c.used_disk_mb + work.disk_mb <= c.disk_mb
                && c.used_containers < c.containers;
            if !fits {
                continue;
            }
            let same_work = match &work.kind {
                WorkKind::Lrp { process_guid, .. } => {
                    same.get(&(i, process_guid.clone())).copied().unwrap_or(0)
                }
                WorkKind::Task { .. } => c.tasks,
            };
            let score = c.score_with(work) + 1000.0 * f64::from(same_work);
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((i, score));
            }
        }
        let (i, _) = best?;
        let c = &mut cells[i];
        c.used_memory_mb += work.memory_mb;
        c.used_disk_mb += work.disk_mb;
        c.used_containers += 1;
        c.starting += 1;
        match &work.kind {
            WorkKind::Lrp { process_guid, .. } => {
                *same.entry((i, process_guid.clone())).or_default() += 1
            }
            WorkKind::Task { .. } => c.tasks += 1,
        }
        Some(i)
    }

    #[test]
    fn the_index_agrees_with_scoring_every_cell() {
        // Cells of three sizes, some with a second stack; processes of
        // different sizes and instance counts, more instances than cells
        // for some; placed until the cells are full.
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let cells: Vec<CellLoad> = (0..40)
            .map(|i| {
                let mut c = cell(&format!("c{i}"), [2048, 4096, 8192][i % 3]);
                c.containers = 8 + (i as u32 % 5);
                if i % 4 == 0 {
                    c.rootfs_providers.push(RootFsProvider::preloaded("other"));
                }
                c
            })
            .collect();
        let mut batch = Vec::new();
        for p in 0..60 {
            let instances = 1 + next(70) as u32;
            let memory_mb = [64, 128, 256, 1024][next(4) as usize];
            for index in 0..instances {
                let mut work = lrp(&format!("p{p}"), index, memory_mb);
                if p % 7 == 0 {
                    work.rootfs = RootFs::preloaded("other");
                }
                batch.push(work);
            }
        }
        sort_batch(&mut batch);
        let (mut reference, mut reference_same) = (cells.clone(), HashMap::new());
        let mut auction = Auction::new(cells, HashMap::new());
        let (mut placed, mut unplaced) = (0, 0);
        for work in &batch {
            let expected = place_by_scanning(&mut reference, &mut reference_same, work);
            let got = auction.place(work).ok();
            assert_eq!(got, expected, "placing {work:?}");
            if got.is_some() {
                placed += 1;
            } else {
                unplaced += 1;
            }
        }
        assert!(
            placed > 100 && unplaced > 100,
            "{placed} placed, {unplaced} not"
        );
    }
}
