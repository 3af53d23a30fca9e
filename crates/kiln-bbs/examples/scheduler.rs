//! Scheduler benchmark: simulated cells drive a BBS the way the rep does
//! (heartbeat, read their work, report each instance placed on them as
//! RUNNING) through the `BbsClient` trait, and the run prints how long it
//! takes to place and run everything, one convergence pass, and the
//! re-placement after 10% of the cells vanish, with peak RSS and the
//! database's size.
//!
//!   scheduler INSTANCES CELLS [LABEL]
//!
//! A cell syncs (reads its work and reports what it has not) when work is
//! placed on it (an ActualLrp CLAIMED for it: what Diego's auctioneer
//! sends its rep), coalescing a burst into one sync, and every bulk-sync
//! interval besides (Diego's rep and kiln-cell's: 30 s, apart from the
//! heartbeat; `SCHED_BULK_SYNC_S` sets it).
//! (A cell does not re-sync on the RUNNING echo of its own report, as
//! neither Diego's rep nor kiln-cell's does: that made every placement
//! cost two syncs of the whole cell.) Each cell filtering
//! the whole event stream itself would make the simulation cost events ×
//! cells, which no real cell pays on this machine: one router hands each
//! event to the cell it concerns.
//!
//! The same source builds against `main` (bench/scheduler.sh runs both
//! side by side). The cells read their work as the in-process rep does,
//! typed: turning every cell's work into JSON and back cost more CPU than
//! the BBS itself, on the same two cores, and measured only serde.

use futures_util::{FutureExt, StreamExt};
use kiln_bbs::{Bbs, BbsClient, BbsConfig};
use kiln_model::ActualLrpState;
use kiln_model::bbs::{
    ActualLrpNetInfo, BbsEvent, CellCapacity, CellPresence, DesiredLrp, EnvVar, PortMapping,
    RunAction,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const STACK: &str = "preloaded:bench";
const INSTANCES_PER_APP: u32 = 10;
const MEMORY_MB: u64 = 128;
/// Desires in flight at once.
const DESIRERS: usize = 16;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The bulk sync's interval unless `SCHED_BULK_SYNC_S` says otherwise:
/// Diego's rep's.
const BULK_SYNC: Duration = Duration::from_secs(30);
const CELL_TTL: Duration = Duration::from_secs(3);
/// How often the counts are polled (each counts only what is still to
/// do, through an index). Figures are at most this late.
const POLL: Duration = Duration::from_millis(100);
/// No phase may take longer than this, counted from the end of desiring
/// (a slow desire under load must not leave the placement unmeasured) or
/// from the lost cells' expiry; the run then reports it as not done.
const PHASE_LIMIT: Duration = Duration::from_secs(900);

/// Cells' syncs (reads of their work) and lost stretches of the event
/// stream, counted for the figures: what the re-placement makes the cells
/// do.
static SYNCS: AtomicU64 = AtomicU64::new(0);
static LAGGED: AtomicU64 = AtomicU64::new(0);
/// What started the syncs: nudges handed to cells (one per cell per
/// burst of events), bulk-sync ticks, and syncs that found nothing new to
/// report (a nudge kept while the cell synced, or a tick).
static NUDGES: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);
static IDLE_SYNCS: AtomicU64 = AtomicU64::new(0);

fn desired(process_guid: String) -> DesiredLrp {
    DesiredLrp {
        rootfs: STACK.parse().expect("a rootfs"),
        memory_mb: MEMORY_MB,
        disk_mb: 256,
        env: vec![EnvVar {
            name: "PORT".into(),
            value: "8080".into(),
        }],
        action: RunAction {
            path: "/home/vcap/app/start".into(),
            args: vec!["--serve".into()],
            env: vec![],
            dir: Some("/home/vcap/app".into()),
            user: "vcap".into(),
        },
        routes: vec!["bench.localhost".into()],
        log_guid: "bench-app".into(),
        ..kiln_model::testing::desired_lrp(&process_guid, INSTANCES_PER_APP)
    }
}

fn bulk_sync() -> Duration {
    std::env::var("SCHED_BULK_SYNC_S")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(BULK_SYNC, Duration::from_secs_f64)
}

/// Hands each placement to the cell it was placed on, and every cell a
/// lost stretch of the stream. A burst of events (one write batch of the
/// auction) nudges each cell it concerns once, as kiln-cell's rep
/// coalesces a burst into one sync and Diego's auctioneer sends each rep
/// one request per batch. A nudge while a cell syncs is kept, once.
async fn route_events(
    client: Arc<dyn BbsClient>,
    nudges: HashMap<String, Arc<Notify>>,
    stop: CancellationToken,
) {
    let mut events = client.subscribe();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        let mut burst = vec![event];
        while let Some(Some(more)) = events.next().now_or_never() {
            burst.push(more);
        }
        let mut cells: HashSet<&str> = HashSet::new();
        for event in &burst {
            match event {
                BbsEvent::ActualLrpChanged { actual_lrp }
                    if actual_lrp.state == ActualLrpState::Claimed =>
                {
                    if let Some(ik) = &actual_lrp.instance_key {
                        cells.insert(&ik.cell_id);
                    }
                }
                BbsEvent::Lagged => {
                    LAGGED.fetch_add(1, Ordering::Relaxed);
                    cells.extend(nudges.keys().map(String::as_str));
                }
                _ => {}
            }
        }
        for cell in cells {
            if let Some(nudge) = nudges.get(cell) {
                NUDGES.fetch_add(1, Ordering::Relaxed);
                nudge.notify_one();
            }
        }
    }
}

/// One simulated rep: heartbeats, and reports every instance claimed for
/// it as RUNNING at its next sync, as a rep does once the container is up.
async fn cell(
    client: Arc<dyn BbsClient>,
    presence: CellPresence,
    stop: CancellationToken,
    nudge: Arc<Notify>,
    last_heartbeat_ms: Arc<AtomicU64>,
    epoch: Instant,
) {
    // The rep heartbeats from a loop of its own: a slow sync must not make
    // the cell look lost.
    tokio::spawn({
        let (client, presence, stop) = (client.clone(), presence.clone(), stop.clone());
        async move {
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = heartbeat.tick() => {
                        if client.heartbeat_cell(presence.clone()).await.is_ok() {
                            last_heartbeat_ms
                                .store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                        }
                    }
                }
            }
        }
    });
    // Spread the cells' bulk syncs over the interval, as independent reps
    // are.
    let every = bulk_sync();
    let offset = every.mul_f64(fastrand_fraction(&presence.cell_id));
    let mut sync = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    // As the rep: a late sync does not bring a burst of syncs after it.
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: HashSet<String> = HashSet::new();
    let net_info = ActualLrpNetInfo {
        address: presence.address.clone(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: 61000,
        }],
        instance_address: "10.255.0.2".into(),
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            () = nudge.notified() => {}
            _ = sync.tick() => {
                TICKS.fetch_add(1, Ordering::Relaxed);
            }
        }
        SYNCS.fetch_add(1, Ordering::Relaxed);
        let Ok(work) = client.cell_work(&presence.cell_id).await else {
            continue;
        };
        // The containers come up independently: their reports go at once,
        // not one after another.
        let starts = work.lrps.iter().filter_map(|a| {
            let ik = a.instance_key.as_ref()?;
            let new = ik.cell_id == presence.cell_id && !reported.contains(&ik.instance_guid);
            new.then(|| {
                let (client, net_info) = (&client, net_info.clone());
                async move {
                    let ok = client.start_actual_lrp(&a.key, ik, net_info).await.is_ok();
                    ok.then(|| ik.instance_guid.clone())
                }
            })
        });
        let started = futures_util::future::join_all(starts).await;
        if started.is_empty() {
            IDLE_SYNCS.fetch_add(1, Ordering::Relaxed);
        }
        reported.extend(started.into_iter().flatten());
    }
}

/// A stable fraction in [0, 1) from a name.
fn fastrand_fraction(name: &str) -> f64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % 10_000) as f64 / 10_000.0
}

/// Counts rows in the BBS's database through a connection of its own,
/// and notes the largest write-ahead log seen at its polls.
struct Counter {
    pool: sqlx::SqlitePool,
    dir: std::path::PathBuf,
    wal_peak: AtomicU64,
}

impl Counter {
    async fn count(&self, sql: &str) -> u64 {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .expect("count query");
        n as u64
    }

    /// Seconds from `from` until `sql` counts no rows, or None once
    /// [`PHASE_LIMIT`] has passed since `limit_from`. The
    /// counts are of what is still to do (UNCLAIMED, CLAIMED, on a lost
    /// cell), through indexes: counting the 250,000 rows done at every poll
    /// took much of the CPU the BBS was being measured on.
    async fn wait_for(&self, sql: &str, from: Instant, limit_from: Instant) -> Option<f64> {
        let mut report = Instant::now();
        loop {
            let have = self.count(sql).await;
            self.wal_peak
                .fetch_max(wal_bytes(&self.dir), Ordering::Relaxed);
            if report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  {have} to go after {:.0} s: {sql}",
                    from.elapsed().as_secs_f64()
                );
                report = Instant::now();
            }
            if have == 0 {
                return Some(from.elapsed().as_secs_f64());
            }
            if limit_from.elapsed() > PHASE_LIMIT {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// CPU seconds this process (BBS and simulated cells) has used: on a
/// shared machine the wall-clock figures depend on the load, this much
/// less.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 12th and 13th of them, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    ticks(11)
        .zip(ticks(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("bbs.sqlite-wal")).map_or(0, |m| m.len())
}

/// Waits (at most three convergence intervals) for the BBS to fold its
/// write-ahead log back at a calm convergence pass.
async fn wait_for_checkpoint(dir: &std::path::Path) {
    let limit = Instant::now() + BbsConfig::default().convergence_interval * 3;
    while wal_bytes(dir) > 1_000_000 && Instant::now() < limit {
        tokio::time::sleep(POLL).await;
    }
}

fn db_size_mb(dir: &std::path::Path) -> f64 {
    ["bbs.sqlite", "bbs.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / 1e6
}

fn secs(v: Option<f64>) -> String {
    v.map_or("not-done".into(), |s| format!("{s:.2}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let instances: u64 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(25_000);
    let cells: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    let label = args.get(3).cloned().unwrap_or_else(|| "kiln".into());
    let apps = instances / u64::from(INSTANCES_PER_APP);
    let instances = apps * u64::from(INSTANCES_PER_APP);
    let per_cell = instances / cells as u64 + 1;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = BbsConfig {
        cell_ttl: CELL_TTL,
        ..Default::default()
    };
    let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), config)
        .await
        .expect("open bbs");
    let counter = Counter {
        pool: sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("bbs.sqlite"))
                    .read_only(true),
            )
            .await
            .expect("open counter"),
        dir: dir.path().to_path_buf(),
        wal_peak: AtomicU64::new(0),
    };
    let shutdown = CancellationToken::new();
    let runner = {
        let (bbs, shutdown) = (bbs.clone(), shutdown.clone());
        tokio::spawn(async move { bbs.run(shutdown).await })
    };

    // The cells: room for twice their share, so 90% of them hold it all.
    let client: Arc<dyn BbsClient> = Arc::new(bbs.clone());
    let epoch = Instant::now();
    let mut stops = Vec::new();
    let mut beats = Vec::new();
    let mut nudges = HashMap::new();
    for i in 0..cells {
        let presence = CellPresence {
            cell_id: format!("cell-{i:04}"),
            address: "127.0.0.1".into(),
            capacity: CellCapacity {
                memory_mb: per_cell * MEMORY_MB * 2,
                disk_mb: per_cell * 256 * 2,
                containers: (per_cell * 2) as u32,
            },
            rootfs_providers: vec![STACK.to_string().try_into().expect("a provider")],
        };
        let stop = shutdown.child_token();
        let beat = Arc::new(AtomicU64::new(0));
        let nudge = Arc::new(Notify::new());
        nudges.insert(presence.cell_id.clone(), nudge.clone());
        tokio::spawn(cell(
            client.clone(),
            presence,
            stop.clone(),
            nudge,
            beat.clone(),
            epoch,
        ));
        stops.push(stop);
        beats.push(beat);
    }
    tokio::spawn(route_events(client.clone(), nudges, shutdown.child_token()));
    tokio::time::sleep(HEARTBEAT + Duration::from_millis(500)).await;

    // Desire everything, DESIRERS at a time (Cloud Controller's workers
    // and users pushing at once), then wait for placement and RUNNING.
    let cpu_start = cpu_s();
    let start = Instant::now();
    let done = AtomicU64::new(0);
    futures_util::stream::iter(0..apps)
        .for_each_concurrent(DESIRERS, |a| {
            let (client, done) = (&client, &done);
            async move {
                client
                    .desire_lrp(desired(format!("app-{a:06}")))
                    .await
                    .expect("desire");
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 2500 == 0 {
                    eprintln!(
                        "  desired {n} apps after {:.1} s",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        })
        .await;
    let desire = start.elapsed().as_secs_f64();
    eprintln!("  desired {instances} instances in {desire:.1} s");
    let desired_at = Instant::now();
    // Every instance is desired by now: placed once none is UNCLAIMED,
    // running once none is CLAIMED either.
    // UNCLAIMED rows have no cell: counted through the (cell_id, state)
    // index; CLAIMED ones by a scan of that index alone.
    const UNCLAIMED: &str =
        "(SELECT COUNT(*) FROM actual_lrps WHERE cell_id = '' AND state = 'UNCLAIMED')";
    const CLAIMED: &str = "(SELECT COUNT(*) FROM actual_lrps WHERE state = 'CLAIMED')";
    let placed = counter
        .wait_for(&format!("SELECT {UNCLAIMED}"), start, desired_at)
        .await;
    let placed_after_desire = placed.map(|_| desired_at.elapsed().as_secs_f64());
    let running = counter
        .wait_for(
            &format!("SELECT {UNCLAIMED} + {CLAIMED}"),
            start,
            desired_at,
        )
        .await;

    // One convergence pass with everything in place.
    let running_cpu = cpu_s() - cpu_start;
    let pass = Instant::now();
    let report = bbs.converge().await;
    let converge = pass.elapsed().as_secs_f64();
    if let Err(error) = report {
        eprintln!("convergence pass failed: {error}");
    }

    // A steady state before the loss, as a platform is when a cell dies:
    // the BBS's calm pass has folded its log back (else the checkpoint of
    // the whole placement's log lands in the re-placement's figures).
    wait_for_checkpoint(dir.path()).await;

    // Lose every tenth cell; time from their presence expiring.
    let lost: Vec<usize> = (0..cells).step_by(10).collect();
    for &i in &lost {
        stops[i].cancel();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last_beat_ms = lost
        .iter()
        .map(|&i| beats[i].load(Ordering::SeqCst))
        .max()
        .unwrap_or(0);
    let expiry = epoch + Duration::from_millis(last_beat_ms) + CELL_TTL;
    let lost_list = lost
        .iter()
        .map(|i| format!("'cell-{i:04}'"))
        .collect::<Vec<_>>()
        .join(",");
    eprintln!(
        "  lost {} cells; their presence expires in {:.1} s",
        lost.len(),
        expiry
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    );
    tokio::time::sleep_until(tokio::time::Instant::from_std(expiry)).await;
    let cpu_expiry = cpu_s();
    let (syncs_expiry, lagged_expiry) = (
        SYNCS.load(Ordering::Relaxed),
        LAGGED.load(Ordering::Relaxed),
    );
    let (nudges_expiry, ticks_expiry, idle_expiry) = (
        NUDGES.load(Ordering::Relaxed),
        TICKS.load(Ordering::Relaxed),
        IDLE_SYNCS.load(Ordering::Relaxed),
    );
    // Re-placed once no instance is UNCLAIMED or placed on a lost cell.
    let on_lost = format!(
        "(SELECT COUNT(*) FROM actual_lrps WHERE cell_id IN ({lost_list}) AND state IN ('CLAIMED', 'RUNNING'))"
    );
    let replaced = counter
        .wait_for(&format!("SELECT {UNCLAIMED} + {on_lost}"), expiry, expiry)
        .await;
    let replaced_cpu = cpu_s() - cpu_expiry;
    let rerunning = counter
        .wait_for(
            &format!("SELECT {UNCLAIMED} + {CLAIMED} + {on_lost}"),
            expiry,
            expiry,
        )
        .await;

    let replaced_syncs = SYNCS.load(Ordering::Relaxed) - syncs_expiry;
    let replaced_lagged = LAGGED.load(Ordering::Relaxed) - lagged_expiry;
    let replaced_nudges = NUDGES.load(Ordering::Relaxed) - nudges_expiry;
    let replaced_ticks = TICKS.load(Ordering::Relaxed) - ticks_expiry;
    let replaced_idle = IDLE_SYNCS.load(Ordering::Relaxed) - idle_expiry;
    let settle = Instant::now();
    wait_for_checkpoint(dir.path()).await;
    let checkpointed_after = settle.elapsed().as_secs_f64();

    println!(
        "{label} instances={instances} cells={cells} desire_s={desire:.2} placed_s={} placed_after_desire_s={} running_s={} \
         converge_s={converge:.3} replaced_after_expiry_s={} rerunning_after_expiry_s={} \
         peak_rss_mb={:.0} db_mb={:.1} wal_peak_mb={:.1} wal_settled_after_s={checkpointed_after:.1} running_cpu_s={running_cpu:.1} replaced_cpu_s={replaced_cpu:.1} cpu_s={:.1} \
         replaced_syncs={replaced_syncs} replaced_lagged={replaced_lagged} replaced_nudges={replaced_nudges} \
         replaced_ticks={replaced_ticks} replaced_idle_syncs={replaced_idle}",
        secs(placed),
        secs(placed_after_desire),
        secs(running),
        secs(replaced),
        secs(rerunning),
        peak_rss_mb(),
        db_size_mb(dir.path()),
        counter.wal_peak.load(Ordering::Relaxed) as f64 / 1e6,
        cpu_s(),
    );
    shutdown.cancel();
    let _ = runner.await;
}
