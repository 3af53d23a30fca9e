//! The route table at 1,000, 10,000 and 100,000 routes: what a lookup costs
//! (it should not grow with the table), what a full rebuild costs, what a
//! patch for one changed process costs (what the router does on a BBS
//! event; it should not grow with the table either), and what lookups see
//! while the table is patched, or rebuilt, and swapped in over and over
//! (they should not stall). Run by `bench/router-table.sh`.
//!
//! A harness of its own (no bench framework): each figure is the median of
//! a few rounds, printed with the ratio to the smallest table.

use kiln_model::ActualLrpState;
use kiln_model::bbs::*;
use kiln_router::{RouteIndex, RouteTable, SharedTable};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const LOOKUPS: usize = 1_000_000;
const ROUNDS: usize = 5;

fn desired(i: usize) -> DesiredLrp {
    DesiredLrp {
        // Every tenth app also has a path route, as some do.
        routes: if i.is_multiple_of(10) {
            vec![
                host(i).as_str().into(),
                format!("{}/api", host(i)).as_str().into(),
            ]
        } else {
            vec![host(i).as_str().into()]
        },
        ..kiln_model::testing::desired_lrp(&format!("process-{i}"), 2)
    }
}

fn actual(i: usize, index: u32) -> ActualLrp {
    let port = 20_000 + (i % 40_000) as u16;
    ActualLrp {
        key: ActualLrpKey {
            process_guid: format!("process-{i}"),
            index,
            domain: "cf-apps".into(),
        },
        instance_key: Some(ActualLrpInstanceKey {
            instance_guid: format!("instance-{i}-{index}"),
            cell_id: "cell".into(),
        }),
        net_info: Some(ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: port,
            }],
            instance_address: String::new(),
        }),
        state: ActualLrpState::Running,
        crash_count: 0,
        crash_reason: String::new(),
        placement_error: String::new(),
        since: 0,
        presence: Default::default(),
    }
}

fn host(i: usize) -> String {
    format!("app-{i}.apps.example.com")
}

fn lrps(apps: usize) -> (Vec<DesiredLrp>, Vec<ActualLrp>) {
    let desired = (0..apps).map(desired).collect();
    let actual = (0..apps)
        .flat_map(|i| [actual(i, 0), actual(i, 1)])
        .collect();
    (desired, actual)
}

/// The requests lookups answer: hosts drawn at random from the whole table
/// (not a hot few, so the big table is not flattered by a cache holding
/// all it is asked for), with the `:port` and paths requests carry. One
/// per app in the table, at least 4,096, in one buffer read front to back,
/// so the benchmark's own reads are the prefetcher's easy case and the
/// cache misses measured are the table's.
struct Queries {
    text: String,
    /// `(host start, host end, path)` in `text`.
    spans: Vec<(u32, u32, &'static str)>,
}

impl Queries {
    fn new(apps: usize) -> Queries {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::new();
        let spans = (0..apps.max(4096))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = state as usize % apps;
                let path = if i.is_multiple_of(10) {
                    "/api/v1/items"
                } else {
                    "/index.html"
                };
                let start = text.len() as u32;
                text.push_str(&host(i));
                text.push_str(":443");
                (start, text.len() as u32, path)
            })
            .collect();
        Queries { text, spans }
    }

    fn get(&self, n: usize) -> (&str, &'static str) {
        let (start, end, path) = self.spans[n % self.spans.len()];
        (&self.text[start as usize..end as usize], path)
    }
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`):
/// on a machine shared with other work, wall-clock time also counts the
/// time the thread waited for a core, and CPU time does not.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU nanoseconds per lookup (snapshot plus lookup, as a request does).
fn lookup_ns(table: &SharedTable, queries: &Queries) -> f64 {
    let started = cpu_ns();
    for n in 0..LOOKUPS {
        let (host, path) = queries.get(n);
        let snapshot = table.snapshot();
        black_box(snapshot.lookup(host, path).map(|pool| pool.endpoints.len()));
    }
    (cpu_ns() - started) as f64 / LOOKUPS as f64
}

/// Each lookup's own time, in nanoseconds, sorted.
fn lookup_latencies(table: &SharedTable, queries: &Queries) -> Vec<u64> {
    let mut times = Vec::with_capacity(LOOKUPS);
    for n in 0..LOOKUPS {
        let (host, path) = queries.get(n);
        let started = Instant::now();
        let snapshot = table.snapshot();
        black_box(snapshot.lookup(host, path).map(|pool| pool.endpoints.len()));
        drop(snapshot);
        times.push(started.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    times
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    println!(
        "route table: {LOOKUPS} lookups per round, median of {ROUNDS} rounds; CPU time, and wall-clock for rebuilds (load {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
    println!(
        "{:>8} {:>12} {:>10} {:>16} {:>17} {:>14} {:>10}",
        "routes",
        "lookup ns",
        "vs 1k",
        "rebuild cpu ms",
        "rebuild wall ms",
        "patch cpu us",
        "vs 1k"
    );
    let mut first = None;
    let mut first_patch = None;
    let mut biggest = None;
    for apps in SIZES {
        let (desired, actual) = lrps(apps);
        let (mut rebuilds, mut rebuilds_cpu) = (Vec::new(), Vec::new());
        let mut table = RouteTable::default();
        for _ in 0..ROUNDS {
            let (started, started_cpu) = (Instant::now(), cpu_ns());
            table = RouteTable::rebuild(&desired, &actual, &table);
            rebuilds.push(started.elapsed().as_secs_f64() * 1000.0);
            rebuilds_cpu.push((cpu_ns() - started_cpu) as f64 / 1e6);
        }
        let routes = table.len();
        let (mut index, table) = RouteIndex::build(&desired, &actual, &table);
        let patch = median(
            (0..ROUNDS)
                .map(|_| patch_us(&mut index, &table, &desired, &actual))
                .collect(),
        );
        let shared = SharedTable::new(table);
        let queries = Queries::new(apps);
        let ns = median((0..ROUNDS).map(|_| lookup_ns(&shared, &queries)).collect());
        let base = *first.get_or_insert(ns);
        let patch_base = *first_patch.get_or_insert(patch);
        println!(
            "{routes:>8} {ns:>12.1} {:>9.2}x {:>16.1} {:>17.1} {patch:>14.1} {:>9.2}x",
            ns / base,
            median(rebuilds_cpu),
            median(rebuilds),
            patch / patch_base,
        );
        biggest = Some((shared, desired, actual, queries, routes));
    }

    // Lookups on the biggest table, alone, while another thread patches
    // one process after another into it (what BBS events do), and while
    // it rebuilds it whole from the LRPs (the resync), back to back.
    let (shared, desired, actual, queries, routes) = biggest.expect("a table");
    let desired = Arc::new(desired);
    let actual = Arc::new(actual);
    let quiet = lookup_latencies(&shared, &queries);
    let (patching, patches) = while_updating(&shared, &queries, {
        let (desired, actual) = (desired.clone(), actual.clone());
        let (mut index, _) = RouteIndex::build(&desired, &actual, &shared.snapshot());
        let mut n = 0;
        move |shared: &SharedTable| {
            n = (n + 7919) % desired.len();
            let hosts = index.set_process(
                &desired[n].process_guid,
                Some(&desired[n]),
                &actual[2 * n..2 * n + 2],
            );
            shared.replace(index.apply(&shared.snapshot(), &hosts));
        }
    });
    let (rebuilding, rebuilds) = while_updating(&shared, &queries, move |shared: &SharedTable| {
        shared.replace(RouteTable::rebuild(&desired, &actual, &shared.snapshot()));
    });
    println!();
    println!(
        "{routes} routes, per-lookup latency in ns ({patches} patched tables swapped in during the second row, {rebuilds} rebuilt ones during the third)"
    );
    println!(
        "{:>18} {:>8} {:>8} {:>8} {:>10}",
        "", "p50", "p99", "p99.99", "max"
    );
    for (name, times) in [
        ("quiet", &quiet),
        ("while patching", &patching),
        ("while rebuilding", &rebuilding),
    ] {
        println!(
            "{name:>18} {:>8} {:>8} {:>8} {:>10}",
            percentile(times, 0.5),
            percentile(times, 0.99),
            percentile(times, 0.9999),
            times[times.len() - 1]
        );
    }
    for (name, times) in [("patching", &patching), ("rebuilding", &rebuilding)] {
        println!(
            "p99 while {name} / quiet: {:.2}x",
            percentile(times, 0.99) as f64 / percentile(&quiet, 0.99).max(1) as f64
        );
    }
}

/// CPU microseconds to patch one process (its DesiredLrp and two
/// instances, unchanged) into the table, as a BBS event does: re-record the
/// process, recompute its hosts, copy their shards.
fn patch_us(
    index: &mut RouteIndex,
    table: &RouteTable,
    desired: &[DesiredLrp],
    actual: &[ActualLrp],
) -> f64 {
    const PATCHES: usize = 1000;
    let started = cpu_ns();
    for n in 0..PATCHES {
        let i = (n * 7919) % desired.len();
        let hosts = index.set_process(
            &desired[i].process_guid,
            Some(&desired[i]),
            &actual[2 * i..2 * i + 2],
        );
        black_box(index.apply(table, &hosts));
    }
    (cpu_ns() - started) as f64 / PATCHES as f64 / 1000.0
}

/// Lookup latencies while another thread runs `update` back to back; and
/// how many updates it made meanwhile.
fn while_updating(
    shared: &SharedTable,
    queries: &Queries,
    mut update: impl FnMut(&SharedTable) + Send + 'static,
) -> (Vec<u64>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let updater = {
        let (shared, stop, swaps) = (shared.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                update(&shared);
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the first swap land before measuring.
    while swaps.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let times = lookup_latencies(shared, queries);
    stop.store(true, Ordering::Relaxed);
    updater.join().expect("the updater");
    (times, swaps.load(Ordering::Relaxed))
}
