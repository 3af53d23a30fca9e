//! The BBS over real HTTP on 127.0.0.1: the HTTP client against the
//! server in front of a real SQLite BBS. Every call a remote cell or
//! router makes, the event stream (with `Lagged` after a reconnect),
//! refused credentials, a second cell under a live cell's id, and the log
//! ingress.

use futures_util::StreamExt;
use kiln_bbs::auth::BbsKey;
use kiln_bbs::{ActualLrpFilter, Bbs, BbsClient, BbsConfig, BbsError};
use kiln_bbs_client::{HttpBbsClient, HttpLogSink};
use kiln_logs::{LogSink, LogStore};
use kiln_model::ActualLrpState;
use kiln_model::bbs::*;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod common;

use common::{STACK, desired};

fn cell(cell_id: &str) -> CellPresence {
    CellPresence {
        cell_id: cell_id.into(),
        address: "127.0.0.2".into(),
        capacity: CellCapacity {
            memory_mb: 4096,
            disk_mb: 100_000,
            containers: 250,
        },
        rootfs_providers: vec![STACK.to_string().try_into().unwrap()],
    }
}

struct Server {
    bbs: Bbs,
    logs: Arc<LogStore>,
    url: String,
    key: BbsKey,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn server(config: BbsConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bbs = Bbs::open_with(&dir.path().join("bbs.sqlite"), config)
        .await
        .unwrap();
    let logs = Arc::new(LogStore::default());
    let key = BbsKey::generate();
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink: Arc<dyn LogSink> = logs.clone();
    tokio::spawn(kiln_bbs::server::serve(
        listener,
        bbs.clone(),
        sink,
        key.clone(),
        shutdown.clone(),
    ));
    Server {
        bbs,
        logs,
        url,
        key,
        shutdown,
        _dir: dir,
    }
}

impl Server {
    fn client(&self) -> HttpBbsClient {
        HttpBbsClient::new(&self.url, &self.key.issue(0)).unwrap()
    }
}

#[tokio::test]
async fn every_call_crosses_the_wire_and_errors_arrive_as_they_left() {
    let s = server(BbsConfig::default()).await;
    let c = s.client();

    c.desire_lrp(desired("p1", 2)).await.unwrap();
    assert!(matches!(
        c.desire_lrp(desired("p1", 2)).await,
        Err(BbsError::AlreadyExists {
            kind: "desired lrp",
            ..
        })
    ));
    assert!(matches!(
        c.desired_lrp_by_process_guid("nope").await,
        Err(BbsError::NotFound { .. })
    ));
    assert_eq!(c.desired_lrps(Some("cf-apps")).await.unwrap().len(), 1);
    assert!(c.desired_lrps(Some("other")).await.unwrap().is_empty());

    c.heartbeat_cell(cell("cell-a")).await.unwrap();
    assert_eq!(c.cells().await.unwrap(), vec![cell("cell-a")]);
    s.bbs.converge().await.unwrap();
    let work = c.cell_work("cell-a").await.unwrap();
    assert_eq!(work.lrps.len(), 2, "both instances placed on the only cell");

    let a = &work.lrps[0];
    let ik = a.instance_key.clone().unwrap();
    let net = ActualLrpNetInfo {
        address: "127.0.0.2".into(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port: 61001,
        }],
        instance_address: String::new(),
    };
    c.start_actual_lrp(&a.key, &ik, net.clone()).await.unwrap();
    let forged = ActualLrpInstanceKey {
        instance_guid: "not-mine".into(),
        cell_id: "cell-a".into(),
    };
    assert!(matches!(
        c.crash_actual_lrp(&a.key, &forged, "boom").await,
        Err(BbsError::InstanceMismatch { .. })
    ));
    let running = c
        .actual_lrps(ActualLrpFilter {
            process_guid: Some("p1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        running
            .iter()
            .filter(|a| a.state == ActualLrpState::Running)
            .count(),
        1
    );

    c.update_desired_lrp(
        "p1",
        DesiredLrpUpdate {
            instances: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.desired_lrp_by_process_guid("p1").await.unwrap().instances,
        3
    );

    // Tasks: desire, place, start, complete, resolve, delete.
    let definition = TaskDefinition {
        rootfs: STACK.parse().unwrap(),
        resolve_image: None,
        image_username: String::new(),
        image_password: Default::default(),
        log_guid: "app-guid".into(),
        log_source: "STG".into(),
        memory_mb: 256,
        disk_mb: 1024,
        env: vec![],
        downloads: vec![],
        run: desired("x", 1).action,
        uploads: vec![],
        result_file: String::new(),
        timeout_ms: 60_000,
    };
    c.desire_task("t1", "cf-app-staging", definition)
        .await
        .unwrap();
    s.bbs.converge().await.unwrap();
    assert_eq!(c.task_by_guid("t1").await.unwrap().cell_id, "cell-a");
    assert!(c.start_task("t1", "cell-a").await.unwrap());
    assert!(!c.start_task("t1", "cell-b").await.unwrap());
    c.complete_task("t1", "cell-a", false, "", "{}")
        .await
        .unwrap();
    c.resolving_task("t1").await.unwrap();
    assert!(matches!(
        c.resolving_task("t1").await,
        Err(BbsError::InvalidTransition { .. })
    ));
    c.delete_task("t1").await.unwrap();
    assert!(c.tasks(None).await.unwrap().is_empty());

    c.remove_desired_lrp("p1").await.unwrap();
    assert!(c.desired_lrps(None).await.unwrap().is_empty());
    s.shutdown.cancel();
}

#[tokio::test]
async fn missing_wrong_forged_and_expired_credentials_are_refused() {
    let s = server(BbsConfig::default()).await;
    let key = &s.key;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = key.issue(now - 10);
    let stretched = expired.replacen(&format!(".{}.", now - 10), ".0.", 1);
    let other_bbs = BbsKey::generate().issue(0);
    for (what, token) in [
        ("empty", String::new()),
        ("garbage", "letmein".to_string()),
        ("another bbs's", other_bbs),
        ("expired", expired),
        ("expiry removed", stretched),
    ] {
        let c = HttpBbsClient::new(&s.url, &token).unwrap();
        let err = c.desired_lrps(None).await.unwrap_err();
        assert!(
            matches!(err, BbsError::Unauthorized(_)),
            "{what} token: {err:?}"
        );
        let err = c.heartbeat_cell(cell("cell-x")).await.unwrap_err();
        assert!(
            matches!(err, BbsError::Unauthorized(_)),
            "{what} token: {err:?}"
        );
    }
    // A request without any Authorization header at all.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/desired_lrps/list", s.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let text = answer.text().await.unwrap();
    assert!(text.contains("no bbs credentials"), "{text}");
    // Nothing was changed by the refused calls.
    assert!(s.bbs.cells().await.unwrap().is_empty());
    let valid = HttpBbsClient::new(&s.url, &key.issue(now + 3600)).unwrap();
    valid.desired_lrps(None).await.unwrap();
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_second_cell_under_a_live_cells_id_is_refused() {
    let s = server(BbsConfig {
        cell_ttl: Duration::from_millis(1500),
        ..BbsConfig::default()
    })
    .await;
    let first = s.client();
    let second = s.client();
    first.heartbeat_cell(cell("cell-a")).await.unwrap();
    first.heartbeat_cell(cell("cell-a")).await.unwrap();
    let err = second.heartbeat_cell(cell("cell-a")).await.unwrap_err();
    assert_eq!(
        err,
        BbsError::CellIdInUse {
            cell_id: "cell-a".into()
        }
    );
    second.heartbeat_cell(cell("cell-b")).await.unwrap();
    // Nor may the second report on the first's work (two instances: one
    // on each cell, as the auction spreads them).
    first.desire_lrp(desired("p1", 2)).await.unwrap();
    s.bbs.converge().await.unwrap();
    let work = first.cell_work("cell-a").await.unwrap();
    let a = &work.lrps[0];
    let ik = a.instance_key.clone().unwrap();
    let net = ActualLrpNetInfo {
        address: "127.0.0.2".into(),
        ports: vec![],
        instance_address: String::new(),
    };
    let err = second
        .start_actual_lrp(&a.key, &ik, net.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, BbsError::Unauthorized(_)), "{err:?}");
    assert!(matches!(
        second.evacuate_cell("cell-a").await,
        Err(BbsError::Unauthorized(_))
    ));
    assert_eq!(
        s.bbs
            .actual_lrps(ActualLrpFilter::default())
            .await
            .unwrap()
            .iter()
            .filter(|a| a.state == ActualLrpState::Running)
            .count(),
        0,
        "the refused report changed nothing"
    );
    first.start_actual_lrp(&a.key, &ik, net).await.unwrap();
    // Once the first has been silent for the TTL (it died), a restarted
    // cell takes the id over.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    second.heartbeat_cell(cell("cell-a")).await.unwrap();
    assert!(first.heartbeat_cell(cell("cell-a")).await.is_err());
    s.shutdown.cancel();
}

#[tokio::test]
async fn events_stream_over_http_and_a_reconnect_says_lagged() {
    // The server runs on a port we can stop and restart on.
    let dir = tempfile::tempdir().unwrap();
    let bbs = Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap();
    let key = BbsKey::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let logs: Arc<dyn LogSink> = Arc::new(LogStore::default());
    let first = CancellationToken::new();
    let served = tokio::spawn(kiln_bbs::server::serve(
        listener,
        bbs.clone(),
        logs.clone(),
        key.clone(),
        first.clone(),
    ));
    let client = HttpBbsClient::new(&format!("http://{addr}"), &key.issue(0)).unwrap();
    let mut events = client.subscribe();
    // The subscription is live once an event made after it arrives.
    let mut seen = None;
    for i in 0..50 {
        client
            .desire_lrp(desired(&format!("e{i}"), 0))
            .await
            .unwrap();
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), events.next()).await
        {
            seen = Some(event);
            break;
        }
    }
    assert!(
        matches!(seen, Some(BbsEvent::DesiredLrpChanged { .. })),
        "{seen:?}"
    );
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {}

    // The server goes away and comes back on the same address.
    first.cancel();
    served.await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let second = CancellationToken::new();
    tokio::spawn(kiln_bbs::server::serve(
        listener,
        bbs.clone(),
        logs,
        key.clone(),
        second.clone(),
    ));
    assert_eq!(next(&mut events).await, BbsEvent::Lagged);
    client.remove_desired_lrp("e0").await.unwrap();
    let mut removed = false;
    for _ in 0..5 {
        if next(&mut events).await
            == (BbsEvent::DesiredLrpRemoved {
                process_guid: "e0".into(),
            })
        {
            removed = true;
            break;
        }
    }
    assert!(removed, "events flow again after the reconnect");
    second.cancel();
}

#[tokio::test]
async fn a_remote_log_sink_delivers_to_the_log_service() {
    let s = server(BbsConfig::default()).await;
    let sink = HttpLogSink::new(s.client());
    for i in 0..20 {
        sink.emit(kiln_model::logs::LogEnvelope {
            timestamp: 1_000 + i,
            source_id: "app-guid".into(),
            instance_id: "0".into(),
            source_type: "APP/PROC/WEB".into(),
            message_type: kiln_model::logs::MessageType::Out,
            message: format!("line {i}"),
        });
    }
    let query = kiln_logs::ReadQuery {
        start_time: 0,
        end_time: None,
        limit: 100,
        descending: false,
    };
    let mut got = Vec::new();
    for _ in 0..100 {
        got = s.logs.read("app-guid", &query);
        if got.len() == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.len(), 20);
    assert_eq!(got[19].message, "line 19");
    assert_eq!(sink.dropped(), 0);

    // A sink whose server is gone drops and counts instead of blocking.
    let orphan = HttpLogSink::new(HttpBbsClient::new("http://127.0.0.1:9", "x").unwrap());
    for _ in 0..5 {
        orphan.emit(got[0].clone());
    }
    for _ in 0..100 {
        if orphan.dropped() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(orphan.dropped(), 5);
    s.shutdown.cancel();
}

async fn next(events: &mut futures_util::stream::BoxStream<'static, BbsEvent>) -> BbsEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream stays open")
}

fn net(host_port: u16) -> ActualLrpNetInfo {
    ActualLrpNetInfo {
        address: "127.0.0.2".into(),
        ports: vec![PortMapping {
            container_port: 8080,
            host_port,
        }],
        instance_address: String::new(),
    }
}

/// Starts every instance the cell was given, as its rep would.
async fn run_work(c: &HttpBbsClient, cell_id: &str) -> Vec<ActualLrpInstanceKey> {
    let work = c.cell_work(cell_id).await.unwrap();
    let mut keys = Vec::new();
    for (i, l) in work.lrps.iter().enumerate() {
        let ik = l.instance_key.clone().unwrap();
        c.start_actual_lrp(&l.key, &ik, net(61000 + i as u16))
            .await
            .unwrap();
        keys.push(ik);
    }
    keys
}

#[tokio::test]
async fn an_evacuating_cell_keeps_its_instances_routable_until_replaced() {
    let s = server(BbsConfig::default()).await;
    let (a, b) = (s.client(), s.client());
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    a.desire_lrp(desired("p1", 2)).await.unwrap();
    s.bbs.converge().await.unwrap();
    let old = run_work(&a, "cell-a").await;
    assert_eq!(old.len(), 2);
    b.heartbeat_cell(cell("cell-b")).await.unwrap();

    a.evacuate_cell("cell-a").await.unwrap();
    let evacuating = a.evacuating_lrps().await.unwrap();
    assert_eq!(evacuating.len(), 2, "the old instances stay routable");
    assert!(
        evacuating
            .iter()
            .all(|e| e.state == ActualLrpState::Running && e.net_info.is_some())
    );
    assert!(a.cell_work("cell-a").await.unwrap().lrps.is_empty());

    // The replacements go to the other cell, never back to the evacuating one.
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    s.bbs.converge().await.unwrap();
    assert_eq!(b.cell_work("cell-b").await.unwrap().lrps.len(), 2);
    let new = run_work(&b, "cell-b").await;
    assert!(new.iter().all(|ik| !old.contains(ik)));

    // The evacuating cell stops each old instance once its replacement runs.
    for e in &evacuating {
        a.remove_evacuating_lrp(&e.key, e.instance_key.as_ref().unwrap())
            .await
            .unwrap();
    }
    assert!(a.evacuating_lrps().await.unwrap().is_empty());
    let records = a.actual_lrps(ActualLrpFilter::default()).await.unwrap();
    assert_eq!(records.len(), 2, "one record per index: no duplicates");
    assert!(
        records
            .iter()
            .all(|r| r.instance_key.as_ref().unwrap().cell_id == "cell-b")
    );
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_partition_shorter_than_the_ttl_changes_nothing_and_a_longer_one_no_duplicates() {
    let ttl = Duration::from_millis(1500);
    let s = server(BbsConfig {
        cell_ttl: ttl,
        ..BbsConfig::default()
    })
    .await;
    let (a, b) = (s.client(), s.client());
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    a.desire_lrp(desired("p1", 3)).await.unwrap();
    s.bbs.converge().await.unwrap();
    let held = run_work(&a, "cell-a").await;
    b.heartbeat_cell(cell("cell-b")).await.unwrap();

    // cell-a is silent for less than the TTL: convergence keeps its work.
    tokio::time::sleep(ttl / 2).await;
    b.heartbeat_cell(cell("cell-b")).await.unwrap();
    let report = s.bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 0);
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    assert_eq!(a.cell_work("cell-a").await.unwrap().lrps.len(), 3);
    assert!(b.cell_work("cell-b").await.unwrap().lrps.is_empty());

    // Silent for longer: its instances are placed on cell-b, and when
    // cell-a comes back its work no longer lists them (its rep stops
    // them) and its late reports are refused.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    b.heartbeat_cell(cell("cell-b")).await.unwrap();
    let report = s.bbs.converge().await.unwrap();
    assert_eq!(report.lost_cell_reclaimed, 3);
    run_work(&b, "cell-b").await;
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    assert!(a.cell_work("cell-a").await.unwrap().lrps.is_empty());
    let records = a.actual_lrps(ActualLrpFilter::default()).await.unwrap();
    assert_eq!(records.len(), 3, "one record per index: no duplicates");
    let r = &records[0];
    let stale = held
        .iter()
        .find(|ik| ik.cell_id == "cell-a")
        .unwrap()
        .clone();
    assert!(matches!(
        a.start_actual_lrp(&r.key, &stale, net(61000)).await,
        Err(BbsError::InstanceMismatch { .. })
    ));
    s.shutdown.cancel();
}

#[tokio::test]
async fn over_http_a_lost_cells_instances_are_suspect_and_its_return_leaves_one_per_index() {
    let ttl = Duration::from_millis(800);
    let s = server(BbsConfig {
        cell_ttl: ttl,
        ..BbsConfig::default()
    })
    .await;
    let (a, b) = (s.client(), s.client());
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    a.desire_lrp(desired("p1", 2)).await.unwrap();
    s.bbs.converge().await.unwrap();
    let held = run_work(&a, "cell-a").await;
    assert_eq!(held.len(), 2);

    // cell-a is cut off for longer than the TTL: still listed RUNNING
    // (routable) as SUSPECT, replacements placed on cell-b.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    b.heartbeat_cell(cell("cell-b")).await.unwrap();
    let report = s.bbs.converge().await.unwrap();
    assert_eq!(report.suspect, 2);
    let listed = b.actual_lrps(ActualLrpFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|l| l.state == ActualLrpState::Running
        && l.presence == ActualLrpPresence::Suspect
        && l.net_info.is_some()
        && held.contains(l.instance_key.as_ref().unwrap())));
    assert_eq!(b.cell_work("cell-b").await.unwrap().lrps.len(), 2);

    // cell-a heartbeats again with its session before the replacements
    // run: its instances are ordinary again, cell-b's work is empty.
    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    let listed = b.actual_lrps(ActualLrpFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 2, "one instance per index");
    assert!(listed.iter().all(|l| l.state == ActualLrpState::Running
        && l.presence == ActualLrpPresence::Ordinary
        && held.contains(l.instance_key.as_ref().unwrap())));
    assert!(b.cell_work("cell-b").await.unwrap().lrps.is_empty());
    assert_eq!(a.cell_work("cell-a").await.unwrap().lrps.len(), 2);
    s.shutdown.cancel();
}
