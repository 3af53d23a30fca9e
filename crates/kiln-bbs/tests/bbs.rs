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
        process_guid: process_guid.into(),
        domain: "cf-apps".into(),
        instances,
        rootfs: STACK.parse().unwrap(),
        image_username: String::new(),
        image_password: Default::default(),
        ports: vec![],
        memory_mb,
        disk_mb: 1024,
        env: vec![],
        setup: vec![],
        action: run_action(),
        health_check: HealthCheck::Port,
        start_timeout_ms: 60_000,
        routes: vec!["app.localhost".into()],
        log_guid: "app-guid".into(),
        log_source: "APP/PROC/WEB".into(),
        annotation: String::new(),
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

async fn open(dir: &tempfile::TempDir, config: BbsConfig) -> Bbs {
    Bbs::open_with(&dir.path().join("bbs.sqlite"), config)
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
    assert_eq!(work.lrps[0].desired.process_guid, "p-1");
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
    let report = bbs.converge().await.unwrap();
    assert_eq!(report.extra_removed, 2);
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
