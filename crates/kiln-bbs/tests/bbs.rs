//! The BBS against a real SQLite file: desire, place, start, crash, scale,
//! lose a cell, run tasks, reopen.

use futures_util::StreamExt;
use kiln_bbs::{ActualLrpFilter, Bbs, BbsClient, BbsConfig, BbsError};
use kiln_model::bbs::*;
use kiln_model::{ActualLrpState, TaskState};
use std::time::Duration;

const STACK: &str = "preloaded:test-stack";

fn run_action() -> RunAction {
    RunAction {
        path: "/bin/true".into(),
        args: vec![],
        env: vec![],
        dir: None,
        user: "vcap".into(),
    }
}

fn desired(process_guid: &str, instances: u32, memory_mb: u64) -> DesiredLrp {
    DesiredLrp {
        rootfs: STACK.parse().unwrap(),
        memory_mb,
        disk_mb: 1024,
        action: run_action(),
        routes: vec!["app.localhost".into()],
        log_guid: "app-guid".into(),
        ..kiln_model::testing::desired_lrp(process_guid, instances)
    }
}

fn cell(cell_id: &str, memory_mb: u64) -> CellPresence {
    CellPresence {
        cell_id: cell_id.into(),
        address: "127.0.0.1".into(),
        capacity: CellCapacity {
            memory_mb,
            disk_mb: 100_000,
            containers: 250,
        },
        rootfs_providers: vec![STACK.to_string().try_into().unwrap()],
    }
}

fn task_definition() -> TaskDefinition {
    TaskDefinition {
        rootfs: STACK.parse().unwrap(),
        resolve_image: None,
        image_username: String::new(),
        image_password: Default::default(),
        log_guid: "app-guid".into(),
        log_source: "STG".into(),
        memory_mb: 1024,
        disk_mb: 4096,
        env: vec![],
        downloads: vec![],
        run: run_action(),
        uploads: vec![],
        result_file: "/tmp/result.json".into(),
        timeout_ms: 900_000,
    }
}

/// This file is the root of two test binaries: `bbs` keeps the
/// BBS database in a SQLite file, `bbs_pg` (bbs_pg.rs) in a fresh database per test on
/// a real PostgreSQL server (SQLite after a loud skip when it is missing).
async fn open(dir: &tempfile::TempDir, config: BbsConfig) -> Bbs {
    let sqlite = kiln_store::Database::Sqlite(dir.path().join("bbs.sqlite"));
    let database = match env!("CARGO_CRATE_NAME") {
        "bbs_pg" => match kiln_store::testing::Postgres::shared().await {
            Some(pg) => pg
                .database_for(dir.path())
                .await
                .component("bbs.sqlite", "bbs"),
            None => sqlite,
        },
        _ => sqlite,
    };
    Bbs::open_on(&database, kiln_store::DEFAULT_MAX_CONNECTIONS, config)
        .await
        .unwrap()
}

async fn actuals(bbs: &Bbs, process_guid: &str) -> Vec<ActualLrp> {
    let filter = ActualLrpFilter {
        process_guid: Some(process_guid.into()),
        ..Default::default()
    };
    bbs.actual_lrps(filter).await.unwrap()
}

fn net_info() -> ActualLrpNetInfo {
    ActualLrpNetInfo {
        address: "127.0.0.1".into(),
        ports: vec![PortMapping {
            container_port: 61001,
            host_port: 61001,
        }],
        instance_address: "127.0.0.1".into(),
    }
}

#[tokio::test]
async fn desired_instances_are_placed_claimed_started_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    let mut events = bbs.subscribe();

    bbs.desire_lrp(desired("p-1", 2, 256)).await.unwrap();
    let before = actuals(&bbs, "p-1").await;
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|a| a.state == ActualLrpState::Unclaimed));

    // No cell yet: the instances stay unclaimed and say why.
    bbs.converge().await.unwrap();
    assert!(
        actuals(&bbs, "p-1")
            .await
            .iter()
            .all(|a| a.placement_error == "unable to communicate to compatible cells")
    );

    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.placed, 2);
    let placed = actuals(&bbs, "p-1").await;
    assert!(
        placed
            .iter()
            .all(|a| a.state == ActualLrpState::Claimed && a.placement_error.is_empty())
    );

    let work = bbs.cell_work("cell-a").await.unwrap();
    assert_eq!(work.lrps.len(), 2);
    // The DesiredLrp comes once, not once per instance.
    assert_eq!(work.desired_lrps.len(), 1);
    assert_eq!(work.desired_lrps[0].process_guid, "p-1");
    assert!(work.lrps.iter().all(|a| a.key.process_guid == "p-1"));
    assert!(bbs.cell_work("cell-b").await.unwrap().lrps.is_empty());

    let a0 = &placed[0];
    let ik = a0.instance_key.clone().unwrap();
    bbs.start_actual_lrp(&a0.key, &ik, net_info())
        .await
        .unwrap();
    let running = &actuals(&bbs, "p-1").await[0];
    assert_eq!(running.state, ActualLrpState::Running);
    assert_eq!(running.net_info.as_ref().unwrap().ports[0].host_port, 61001);

    // Another instance guid may not report on it.
    let impostor = ActualLrpInstanceKey {
        instance_guid: "other".into(),
        cell_id: "cell-a".into(),
    };
    assert!(matches!(
        bbs.start_actual_lrp(&a0.key, &impostor, net_info()).await,
        Err(BbsError::InstanceMismatch { .. })
    ));

    // The stream saw the creation, the claims and the start.
    let mut saw_running = false;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), events.next()).await
    {
        if let BbsEvent::ActualLrpChanged { actual_lrp } = event {
            saw_running |= actual_lrp.state == ActualLrpState::Running;
        }
    }
    assert!(saw_running);
}

#[tokio::test]
async fn crashes_restart_twice_at_once_then_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 1, 256)).await.unwrap();

    for expected_count in 1..=3u32 {
        bbs.converge().await.unwrap();
        let a = actuals(&bbs, "p-1").await.remove(0);
        assert_eq!(
            a.state,
            ActualLrpState::Claimed,
            "placed again before crash {expected_count}"
        );
        let ik = a.instance_key.clone().unwrap();
        bbs.crash_actual_lrp(&a.key, &ik, "APP/PROC/WEB: Exited with status 3")
            .await
            .unwrap();
        let after = actuals(&bbs, "p-1").await.remove(0);
        assert_eq!(after.crash_count, expected_count);
        assert_eq!(after.crash_reason, "APP/PROC/WEB: Exited with status 3");
        let state = if expected_count < 3 {
            ActualLrpState::Unclaimed
        } else {
            ActualLrpState::Crashed
        };
        assert_eq!(after.state, state);
        assert!(after.instance_key.is_none());
    }
    // The third crash waits 30 s: convergence does not restart it yet.
    bbs.converge().await.unwrap();
    assert_eq!(actuals(&bbs, "p-1").await[0].state, ActualLrpState::Crashed);
}

#[tokio::test]
async fn a_crash_is_announced_with_who_ran_it_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 1, 256)).await.unwrap();
    bbs.converge().await.unwrap();
    let a = actuals(&bbs, "p-1").await.remove(0);
    let ik = a.instance_key.clone().unwrap();
    let mut events = bbs.subscribe();
    bbs.crash_actual_lrp(&a.key, &ik, "Exited with status 3")
        .await
        .unwrap();
    let after = actuals(&bbs, "p-1").await.remove(0);
    let crashed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(e @ BbsEvent::ActualLrpCrashed { .. }) = events.next().await {
                return e;
            }
        }
    })
    .await
    .expect("no crashed event");
    assert_eq!(
        crashed,
        BbsEvent::ActualLrpCrashed {
            key: a.key.clone(),
            instance_key: ik,
            crash_count: 1,
            crash_reason: "Exited with status 3".into(),
            since: after.since,
        }
    );
}

#[tokio::test]
async fn scaling_adds_and_retires_indices_and_instances_spread() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    for id in ["cell-a", "cell-b", "cell-c"] {
        bbs.heartbeat_cell(cell(id, 4096)).await.unwrap();
    }
    bbs.desire_lrp(desired("p-1", 1, 256)).await.unwrap();
    bbs.update_desired_lrp(
        "p-1",
        DesiredLrpUpdate {
            instances: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    bbs.converge().await.unwrap();
    let placed = actuals(&bbs, "p-1").await;
    assert_eq!(placed.len(), 3);
    let mut cells: Vec<_> = placed
        .iter()
        .map(|a| a.instance_key.clone().unwrap().cell_id)
        .collect();
    cells.sort();
    assert_eq!(cells, ["cell-a", "cell-b", "cell-c"]);

    bbs.update_desired_lrp(
        "p-1",
        DesiredLrpUpdate {
            instances: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Scaling down retires the extra indices with the update itself.
    assert_eq!(actuals(&bbs, "p-1").await.len(), 1);
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.extra_removed, 0);
    assert_eq!(actuals(&bbs, "p-1").await.len(), 1);

    bbs.remove_desired_lrp("p-1").await.unwrap();
    assert!(actuals(&bbs, "p-1").await.is_empty());
    assert!(matches!(
        bbs.remove_desired_lrp("p-1").await,
        Err(BbsError::NotFound { .. })
    ));
}

#[tokio::test]
async fn work_on_a_lost_cell_is_placed_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = BbsConfig {
        cell_ttl: Duration::from_millis(300),
        ..Default::default()
    };
    let bbs = open(&dir, config).await;
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 1, 256)).await.unwrap();
    bbs.converge().await.unwrap();
    assert_eq!(
        actuals(&bbs, "p-1").await[0]
            .instance_key
            .as_ref()
            .unwrap()
            .cell_id,
        "cell-a"
    );

    // cell-a stops heartbeating; cell-b keeps going.
    tokio::time::sleep(Duration::from_millis(400)).await;
    bbs.heartbeat_cell(cell("cell-b", 4096)).await.unwrap();
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 1);
    let a = actuals(&bbs, "p-1").await.remove(0);
    assert_eq!(a.state, ActualLrpState::Claimed);
    assert_eq!(a.instance_key.unwrap().cell_id, "cell-b");
}

/// A lost cell's instance that fits on no other cell goes back to
/// UNCLAIMED and says why (it is re-placed in the same write as it leaves
/// its cell only when the auction found it a cell), and is placed once a
/// cell with room joins.
#[tokio::test]
async fn a_lost_instance_that_fits_nowhere_else_waits_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = BbsConfig {
        cell_ttl: Duration::from_millis(300),
        ..Default::default()
    };
    let bbs = open(&dir, config).await;
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 1, 1024)).await.unwrap();
    bbs.converge().await.unwrap();

    // cell-a stops heartbeating; cell-b is too small for the instance.
    tokio::time::sleep(Duration::from_millis(400)).await;
    bbs.heartbeat_cell(cell("cell-b", 512)).await.unwrap();
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 1);
    assert_eq!((report.placed, report.unplaced), (0, 1));
    let a = actuals(&bbs, "p-1").await.remove(0);
    assert_eq!(a.state, ActualLrpState::Unclaimed);
    assert!(a.instance_key.is_none());
    assert_eq!(a.placement_error, "insufficient resources: memory");

    bbs.heartbeat_cell(cell("cell-c", 4096)).await.unwrap();
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.placed, 1);
    let a = actuals(&bbs, "p-1").await.remove(0);
    assert_eq!(a.state, ActualLrpState::Claimed);
    assert_eq!(a.instance_key.unwrap().cell_id, "cell-c");
}

#[tokio::test]
async fn an_instance_too_big_for_every_cell_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    bbs.heartbeat_cell(cell("cell-a", 512)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 1, 1024)).await.unwrap();
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.unplaced, 1);
    let a = actuals(&bbs, "p-1").await.remove(0);
    assert_eq!(a.state, ActualLrpState::Unclaimed);
    assert_eq!(a.placement_error, "insufficient resources: memory");
}

#[tokio::test]
async fn a_task_is_placed_run_completed_resolved_once_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_task("build-1", "cf-app-staging", task_definition())
        .await
        .unwrap();
    assert!(matches!(
        bbs.desire_task("build-1", "cf-app-staging", task_definition())
            .await,
        Err(BbsError::AlreadyExists { .. })
    ));
    bbs.converge().await.unwrap();
    assert_eq!(bbs.task_by_guid("build-1").await.unwrap().cell_id, "cell-a");
    assert_eq!(bbs.cell_work("cell-a").await.unwrap().tasks.len(), 1);

    assert!(
        !bbs.start_task("build-1", "cell-b").await.unwrap(),
        "not placed there"
    );
    assert!(bbs.start_task("build-1", "cell-a").await.unwrap());
    bbs.complete_task("build-1", "cell-a", false, "", "{\"ok\":true}")
        .await
        .unwrap();
    let t = bbs.task_by_guid("build-1").await.unwrap();
    assert_eq!(
        (t.state, t.failed, t.result.as_str()),
        (TaskState::Completed, false, "{\"ok\":true}")
    );
    assert!(bbs.cell_work("cell-a").await.unwrap().tasks.is_empty());

    bbs.resolving_task("build-1").await.unwrap();
    assert!(matches!(
        bbs.resolving_task("build-1").await,
        Err(BbsError::InvalidTransition { .. })
    ));
    bbs.delete_task("build-1").await.unwrap();
    assert!(matches!(
        bbs.task_by_guid("build-1").await,
        Err(BbsError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_cancelled_task_completes_failed_and_leaves_its_cell() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_task("t-1", "cf-tasks", task_definition())
        .await
        .unwrap();
    bbs.converge().await.unwrap();
    bbs.start_task("t-1", "cell-a").await.unwrap();
    bbs.cancel_task("t-1").await.unwrap();
    let t = bbs.task_by_guid("t-1").await.unwrap();
    assert_eq!(
        (t.state, t.failed, t.failure_reason.as_str()),
        (TaskState::Completed, true, "task was cancelled")
    );
    assert!(bbs.cell_work("cell-a").await.unwrap().tasks.is_empty());
    // The cell's late report does not overwrite the cancellation.
    bbs.complete_task("t-1", "cell-a", false, "", "late")
        .await
        .unwrap();
    assert_eq!(
        bbs.task_by_guid("t-1").await.unwrap().failure_reason,
        "task was cancelled"
    );
}

#[tokio::test]
async fn state_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bbs = open(&dir, BbsConfig::default()).await;
        bbs.desire_lrp(desired("p-1", 2, 256)).await.unwrap();
        bbs.desire_task("t-1", "cf-app-staging", task_definition())
            .await
            .unwrap();
    }
    let bbs = open(&dir, BbsConfig::default()).await;
    assert_eq!(
        bbs.desired_lrp_by_process_guid("p-1").await.unwrap(),
        desired("p-1", 2, 256)
    );
    assert_eq!(actuals(&bbs, "p-1").await.len(), 2);
    assert_eq!(
        bbs.task_by_guid("t-1").await.unwrap().definition,
        task_definition()
    );
}

#[tokio::test]
async fn bad_guids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    assert!(matches!(
        bbs.desire_lrp(desired("bad guid!", 1, 1)).await,
        Err(BbsError::InvalidRequest(_))
    ));
    assert!(matches!(
        bbs.desire_task("", "d", task_definition()).await,
        Err(BbsError::InvalidRequest(_))
    ));
}

/// The BBS's run loop (convergence, presence, the auction) in the
/// background, as the server runs it.
struct RunLoop {
    shutdown: tokio_util::sync::CancellationToken,
    runner: tokio::task::JoinHandle<Result<(), BbsError>>,
}

impl RunLoop {
    fn start(bbs: &Bbs) -> RunLoop {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let runner = tokio::spawn({
            let (bbs, shutdown) = (bbs.clone(), shutdown.clone());
            async move { bbs.run(shutdown).await }
        });
        RunLoop { shutdown, runner }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.runner.await.unwrap().unwrap();
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn desiring_many_lrps_is_placed_in_one_auction_round_spread_over_cells() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    for id in ["cell-a", "cell-b", "cell-c", "cell-d"] {
        bbs.heartbeat_cell(cell(id, 64 * 1024)).await.unwrap();
    }
    for p in 0..20 {
        bbs.desire_lrp(desired(&format!("p-{p}"), 4, 128))
            .await
            .unwrap();
    }
    // Desiring runs no convergence and places nothing by itself.
    let all = bbs.actual_lrps(ActualLrpFilter::default()).await.unwrap();
    assert_eq!(all.len(), 80);
    assert!(all.iter().all(|a| a.state == ActualLrpState::Unclaimed));

    let report = bbs.auction().await.unwrap();
    assert_eq!(report.placed, 80);
    assert_eq!(report.unplaced, 0);
    // Spread: every process has one instance on each of the four cells.
    for p in 0..20 {
        let mut cells: Vec<String> = actuals(&bbs, &format!("p-{p}"))
            .await
            .into_iter()
            .map(|a| a.instance_key.unwrap().cell_id)
            .collect();
        cells.sort();
        assert_eq!(cells, ["cell-a", "cell-b", "cell-c", "cell-d"], "p-{p}");
    }
    // A second round has nothing to do.
    assert_eq!(bbs.auction().await.unwrap().placed, 0);
}

#[tokio::test]
async fn a_staging_task_that_fits_nowhere_fails_at_once_with_diegos_words() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;

    // No cell at all: the task waits for one.
    bbs.desire_task("t-wait", "cf-app-staging", task_definition())
        .await
        .unwrap();
    bbs.auction().await.unwrap();
    assert_eq!(
        bbs.task_by_guid("t-wait").await.unwrap().state,
        TaskState::Pending
    );

    bbs.heartbeat_cell(cell("cell-small", 512)).await.unwrap();
    let report = bbs.auction().await.unwrap();
    assert_eq!(report.tasks_failed, 1);
    let t = bbs.task_by_guid("t-wait").await.unwrap();
    assert_eq!(t.state, TaskState::Completed);
    assert!(t.failed);
    assert_eq!(t.failure_reason, "insufficient resources: memory");

    let mut other_stack = task_definition();
    other_stack.rootfs = "preloaded:other".parse().unwrap();
    other_stack.memory_mb = 64;
    bbs.desire_task("t-stack", "cf-app-staging", other_stack)
        .await
        .unwrap();
    bbs.auction().await.unwrap();
    let t = bbs.task_by_guid("t-stack").await.unwrap();
    assert!(t.failed);
    assert_eq!(
        t.failure_reason,
        "found no compatible cell for required rootfs"
    );
}

#[tokio::test]
async fn an_instance_that_fits_nowhere_is_placed_when_a_cell_with_room_appears() {
    let dir = tempfile::tempdir().unwrap();
    let config = BbsConfig {
        // Only the new cell's arrival can place it within this test.
        convergence_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let bbs = open(&dir, config).await;
    let run_loop = RunLoop::start(&bbs);
    bbs.heartbeat_cell(cell("cell-small", 512)).await.unwrap();
    bbs.desire_lrp(desired("p-big", 1, 1024)).await.unwrap();
    wait_until("the placement error", || async {
        actuals(&bbs, "p-big").await[0].placement_error == "insufficient resources: memory"
    })
    .await;

    bbs.heartbeat_cell(cell("cell-big", 4096)).await.unwrap();
    wait_until("placement on the new cell", || async {
        let a = actuals(&bbs, "p-big").await.remove(0);
        a.state == ActualLrpState::Claimed
            && a.placement_error.is_empty()
            && a.instance_key.is_some_and(|ik| ik.cell_id == "cell-big")
    })
    .await;
    run_loop.stop().await;
}

/// The run loop notices a cell that stopped heartbeating once its
/// presence expires (it sleeps until the first presence can), not at the
/// next convergence pass.
#[tokio::test]
async fn a_cell_that_stops_heartbeating_is_seen_lost_when_its_presence_expires() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_millis(300);
    let config = BbsConfig {
        cell_ttl: ttl,
        // Only the presence check can see the lost cell within this test.
        convergence_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let bbs = open(&dir, config).await;
    let run_loop = RunLoop::start(&bbs);
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    let heard_from_a = std::time::Instant::now();
    bbs.desire_lrp(desired("p-1", 1, 256)).await.unwrap();
    wait_until("placement on cell-a", || async {
        actuals(&bbs, "p-1").await[0].state == ActualLrpState::Claimed
    })
    .await;
    // cell-a goes quiet; cell-b joins and keeps heartbeating.
    let keep_b = tokio::spawn({
        let bbs = bbs.clone();
        async move {
            loop {
                bbs.heartbeat_cell(cell("cell-b", 4096)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    wait_until("the instance on cell-b", || async {
        let a = actuals(&bbs, "p-1").await.remove(0);
        a.instance_key.is_some_and(|ik| ik.cell_id == "cell-b")
    })
    .await;
    // Not before cell-a's presence expired (and long before the next
    // convergence pass).
    let moved_after = heard_from_a.elapsed();
    assert!(
        moved_after > ttl,
        "moved {moved_after:?} after cell-a's last heartbeat"
    );
    keep_b.abort();
    run_loop.stop().await;
}

#[tokio::test]
async fn a_restarted_bbs_reclaims_nothing_from_cells_that_report_within_a_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let config = BbsConfig {
        cell_ttl: Duration::from_millis(600),
        convergence_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let running = {
        let bbs = open(&dir, config.clone()).await;
        bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
        bbs.desire_lrp(desired("p-1", 2, 256)).await.unwrap();
        bbs.converge().await.unwrap();
        for a in actuals(&bbs, "p-1").await {
            bbs.start_actual_lrp(&a.key, a.instance_key.as_ref().unwrap(), net_info())
                .await
                .unwrap();
        }
        actuals(&bbs, "p-1").await
    };
    assert!(running.iter().all(|a| a.state == ActualLrpState::Running));

    // The BBS restarts: presence is empty until cell-a heartbeats again.
    let bbs = open(&dir, config).await;
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 0);
    assert_eq!(actuals(&bbs, "p-1").await, running);

    let run_loop = RunLoop::start(&bbs);
    // cell-a heartbeats a little late but within a TTL of the start, then
    // keeps going; convergence runs many times meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..12 {
        bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(actuals(&bbs, "p-1").await, running, "nothing re-placed");
    run_loop.stop().await;

    // A cell that never reports again is lost once a TTL has passed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 2);
}

/// Starts every instance placed on `cell_id`, as its rep would.
async fn start_work(bbs: &Bbs, cell_id: &str) -> Vec<ActualLrpInstanceKey> {
    let work = bbs.cell_work(cell_id).await.unwrap();
    let mut keys = Vec::new();
    for l in &work.lrps {
        let ik = l.instance_key.clone().unwrap();
        bbs.start_actual_lrp(&l.key, &ik, net_info()).await.unwrap();
        keys.push(ik);
    }
    keys
}

/// Two RUNNING instances on cell-a, whose presence then expires while
/// cell-b heartbeats; one convergence pass.
async fn lose_cell_a(bbs: &Bbs) -> Vec<ActualLrpInstanceKey> {
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 2, 256)).await.unwrap();
    bbs.converge().await.unwrap();
    let held = start_work(bbs, "cell-a").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    bbs.heartbeat_cell(cell("cell-b", 4096)).await.unwrap();
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 2);
    assert_eq!(report.suspect, 2);
    held
}

fn short_ttl() -> BbsConfig {
    BbsConfig {
        cell_ttl: Duration::from_millis(300),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_lost_cells_instances_stay_running_as_suspect_until_their_replacements_run() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, short_ttl()).await;
    let held = lose_cell_a(&bbs).await;

    // Still listed RUNNING on cell-a with its address (so routed), SUSPECT.
    let listed = actuals(&bbs, "p-1").await;
    assert_eq!(listed.len(), 2);
    for (a, ik) in listed.iter().zip(&held) {
        assert_eq!(a.state, ActualLrpState::Running);
        assert_eq!(a.presence, ActualLrpPresence::Suspect);
        assert_eq!(a.instance_key.as_ref(), Some(ik));
        assert!(a.net_info.is_some());
    }
    let on_a = ActualLrpFilter {
        cell_id: Some("cell-a".into()),
        ..Default::default()
    };
    assert_eq!(bbs.actual_lrps(on_a.clone()).await.unwrap().len(), 2);
    // Their replacements are placed on cell-b.
    let work_b = bbs.cell_work("cell-b").await.unwrap();
    assert_eq!(work_b.lrps.len(), 2);
    assert!(
        work_b
            .lrps
            .iter()
            .all(|l| l.state == ActualLrpState::Claimed)
    );

    // The first replacement runs: its suspect goes, the other stays.
    let first = &work_b.lrps[0];
    bbs.start_actual_lrp(&first.key, first.instance_key.as_ref().unwrap(), net_info())
        .await
        .unwrap();
    let listed = actuals(&bbs, "p-1").await;
    assert_eq!(listed.len(), 2, "one instance per index");
    let by_cell: Vec<(&str, ActualLrpPresence)> = listed
        .iter()
        .map(|a| {
            (
                a.instance_key.as_ref().unwrap().cell_id.as_str(),
                a.presence,
            )
        })
        .collect();
    assert!(by_cell.contains(&("cell-b", ActualLrpPresence::Ordinary)));
    assert!(by_cell.contains(&("cell-a", ActualLrpPresence::Suspect)));

    // The second runs too: nothing suspect is left, nothing on cell-a.
    start_work(&bbs, "cell-b").await;
    let listed = actuals(&bbs, "p-1").await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|a| a.state == ActualLrpState::Running
        && a.presence == ActualLrpPresence::Ordinary
        && a.instance_key.as_ref().unwrap().cell_id == "cell-b"));
    assert!(bbs.actual_lrps(on_a).await.unwrap().is_empty());
    // cell-a's late report on its old instance is refused.
    let old = &held[0];
    let key = listed
        .iter()
        .find(|a| a.key.index == 0)
        .map(|a| a.key.clone())
        .unwrap();
    assert!(matches!(
        bbs.start_actual_lrp(&key, old, net_info()).await,
        Err(BbsError::InstanceMismatch { .. })
    ));
}

#[tokio::test]
async fn a_lost_cell_back_before_its_replacements_run_keeps_its_instances() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, short_ttl()).await;
    let held = lose_cell_a(&bbs).await;
    let work_b = bbs.cell_work("cell-b").await.unwrap();
    assert_eq!(work_b.lrps.len(), 2);

    // cell-a heartbeats again: its instances are ordinary again and the
    // replacements are retired from cell-b's work.
    bbs.heartbeat_cell(cell("cell-a", 4096)).await.unwrap();
    let listed = actuals(&bbs, "p-1").await;
    assert_eq!(listed.len(), 2, "one instance per index");
    for (a, ik) in listed.iter().zip(&held) {
        assert_eq!(a.state, ActualLrpState::Running);
        assert_eq!(a.presence, ActualLrpPresence::Ordinary);
        assert_eq!(a.instance_key.as_ref(), Some(ik));
    }
    assert_eq!(bbs.cell_work("cell-a").await.unwrap().lrps.len(), 2);
    assert!(bbs.cell_work("cell-b").await.unwrap().lrps.is_empty());
    // A replacement that was about to start is refused.
    let late = &work_b.lrps[0];
    assert!(matches!(
        bbs.start_actual_lrp(&late.key, late.instance_key.as_ref().unwrap(), net_info())
            .await,
        Err(BbsError::InstanceMismatch { .. })
    ));
    // Further passes change nothing.
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 0);
    assert_eq!(actuals(&bbs, "p-1").await, listed);
}

#[tokio::test]
async fn a_suspect_instance_that_crashes_is_gone_and_its_replacement_stays() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, short_ttl()).await;
    let held = lose_cell_a(&bbs).await;
    let key = actuals(&bbs, "p-1").await[0].key.clone();

    bbs.crash_actual_lrp(&key, &held[0], "killed")
        .await
        .unwrap();
    let a = actuals(&bbs, "p-1").await.remove(0);
    assert_eq!(a.state, ActualLrpState::Claimed);
    assert_eq!(a.instance_key.unwrap().cell_id, "cell-b");
    assert_eq!(a.crash_count, 0, "the replacement does not inherit a crash");
}

/// Reports arriving together are written in one batch; each still gets
/// its own answer: the holder's (repeated) reports succeed, reports by an
/// instance that does not hold the index are refused, and reports for
/// other indices in the same batch are unaffected.
#[tokio::test]
async fn concurrent_reports_are_batched_and_each_answered_as_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = open(&dir, BbsConfig::default()).await;
    bbs.heartbeat_cell(cell("cell-a", 100_000)).await.unwrap();
    bbs.desire_lrp(desired("p-1", 40, 256)).await.unwrap();
    bbs.converge().await.unwrap();
    let work = bbs.cell_work("cell-a").await.unwrap();
    assert_eq!(work.lrps.len(), 40);
    let mut reports = Vec::new();
    for l in &work.lrps {
        let held = l.instance_key.clone().unwrap();
        let intruder = ActualLrpInstanceKey {
            instance_guid: format!("intruder-{}", l.key.index),
            cell_id: "cell-b".into(),
        };
        for ik in [held.clone(), intruder, held] {
            let (bbs, key) = (bbs.clone(), l.key.clone());
            let holder = ik.cell_id == "cell-a";
            reports.push(tokio::spawn(async move {
                (holder, bbs.start_actual_lrp(&key, &ik, net_info()).await)
            }));
        }
    }
    for report in reports {
        match report.await.unwrap() {
            (true, result) => result.unwrap(),
            (false, result) => assert!(
                matches!(result, Err(BbsError::InstanceMismatch { .. })),
                "{result:?}"
            ),
        }
    }
    let all = actuals(&bbs, "p-1").await;
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|a| a.state == ActualLrpState::Running
        && a.instance_key.as_ref().unwrap().cell_id == "cell-a"));
}
