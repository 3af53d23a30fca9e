//! Suspect and evacuating instances across a BBS restart: the BBS server is
//! stopped and started again in-process on the same database file while an
//! instance is SUSPECT or evacuating, and its route is still in the routing
//! table the router reads over HTTP afterwards.

use kiln_bbs::auth::BbsKey;
use kiln_bbs::{Bbs, BbsClient, BbsConfig};
use kiln_bbs_client::HttpBbsClient;
use kiln_logs::{LogSink, LogStore};
use kiln_model::bbs::*;
use kiln_router::table::RouteTable;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod common;

use common::STACK;
const ROUTE: &str = "kept.localhost";

fn desired(process_guid: &str, instances: u32) -> DesiredLrp {
    DesiredLrp {
        ports: vec![8080],
        disk_mb: 256,
        routes: vec![ROUTE.into()],
        ..common::desired(process_guid, instances)
    }
}

fn cell(cell_id: &str, address: &str) -> CellPresence {
    CellPresence {
        cell_id: cell_id.into(),
        address: address.into(),
        capacity: CellCapacity {
            memory_mb: 4096,
            disk_mb: 100_000,
            containers: 250,
        },
        rootfs_providers: vec![STACK.to_string().try_into().unwrap()],
    }
}

/// One run of the BBS server on the database in `dir`.
struct Running {
    bbs: Bbs,
    client: HttpBbsClient,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(dir: &Path, key: &BbsKey, config: BbsConfig) -> Running {
    let bbs = Bbs::open_with(&dir.join("bbs.sqlite"), config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let logs: Arc<dyn LogSink> = Arc::new(LogStore::default());
    let stop = CancellationToken::new();
    let served = tokio::spawn(kiln_bbs::server::serve(
        listener,
        bbs.clone(),
        logs,
        key.clone(),
        stop.clone(),
    ));
    Running {
        bbs,
        client: HttpBbsClient::new(&url, &key.issue(0)).unwrap(),
        stop,
        served,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.served.await.unwrap().unwrap();
    }
}

/// The addresses the router would send requests for ROUTE to.
async fn routed(client: &HttpBbsClient) -> Vec<String> {
    let table = kiln_router::load_table(client, &RouteTable::default())
        .await
        .unwrap();
    let mut addrs: Vec<String> = table
        .lookup(ROUTE, "/")
        .map(|pool| pool.endpoints.iter().map(|e| e.addr.clone()).collect())
        .unwrap_or_default();
    addrs.sort();
    addrs
}

/// Starts every instance the cell was given, as its rep would, each on a
/// port of its own at `address`.
async fn run_work(c: &HttpBbsClient, cell_id: &str, address: &str) {
    let work = c.cell_work(cell_id).await.unwrap();
    for (i, l) in work.lrps.iter().enumerate() {
        let net = ActualLrpNetInfo {
            address: address.into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61000 + i as u16,
            }],
            instance_address: String::new(),
        };
        c.start_actual_lrp(&l.key, l.instance_key.as_ref().unwrap(), net)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn suspect_instances_stay_routed_across_a_bbs_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = BbsKey::generate();
    let config = BbsConfig {
        cell_ttl: Duration::from_millis(300),
        ..Default::default()
    };
    let first = start(dir.path(), &key, config.clone()).await;
    let c = &first.client;
    c.heartbeat_cell(cell("cell-a", "127.0.0.2")).await.unwrap();
    c.desire_lrp(desired("p1", 2)).await.unwrap();
    first.bbs.converge().await.unwrap();
    run_work(c, "cell-a", "127.0.0.2").await;
    let before = routed(c).await;
    assert_eq!(before, ["127.0.0.2:61000", "127.0.0.2:61001"]);

    // cell-a falls silent; its instances become SUSPECT, replacements are
    // placed on cell-b but do not run yet.
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.heartbeat_cell(cell("cell-b", "127.0.0.3")).await.unwrap();
    let report = first.bbs.converge().await.unwrap();
    assert_eq!(report.suspect, 2);
    assert_eq!(routed(c).await, before, "suspect instances stay routed");
    first.stop().await;

    // A new BBS process on the same database: still listed and routed,
    // before and after presence settles (cell-b heartbeats, cell-a not).
    let second = start(dir.path(), &key, config).await;
    let c = &second.client;
    let listed = c.actual_lrps(Default::default()).await.unwrap();
    assert!(
        listed
            .iter()
            .all(|a| a.presence == ActualLrpPresence::Suspect
                && a.instance_key.as_ref().unwrap().cell_id == "cell-a"),
        "{listed:?}"
    );
    assert_eq!(routed(c).await, before, "routes survive the restart");
    c.heartbeat_cell(cell("cell-b", "127.0.0.3")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.heartbeat_cell(cell("cell-b", "127.0.0.3")).await.unwrap();
    second.bbs.converge().await.unwrap();
    assert_eq!(routed(c).await, before, "kept until the replacements run");

    // The replacements run: the suspect instances go, for good.
    run_work(c, "cell-b", "127.0.0.3").await;
    assert_eq!(routed(c).await, ["127.0.0.3:61000", "127.0.0.3:61001"]);
    second.stop().await;
    let third = start(dir.path(), &key, BbsConfig::default()).await;
    assert_eq!(
        routed(&third.client).await,
        ["127.0.0.3:61000", "127.0.0.3:61001"],
        "nothing suspect comes back"
    );
    third.stop().await;
}

#[tokio::test]
async fn evacuating_instances_stay_routed_across_a_bbs_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = BbsKey::generate();
    let config = BbsConfig {
        cell_ttl: Duration::from_millis(300),
        ..Default::default()
    };
    let first = start(dir.path(), &key, config.clone()).await;
    let c = &first.client;
    c.heartbeat_cell(cell("cell-a", "127.0.0.2")).await.unwrap();
    c.desire_lrp(desired("p1", 2)).await.unwrap();
    first.bbs.converge().await.unwrap();
    run_work(c, "cell-a", "127.0.0.2").await;
    let before = routed(c).await;
    assert_eq!(before.len(), 2);
    c.evacuate_cell("cell-a").await.unwrap();
    assert_eq!(routed(c).await, before);
    first.stop().await;

    let second = start(dir.path(), &key, config).await;
    let c = &second.client;
    assert_eq!(c.evacuating_lrps().await.unwrap().len(), 2);
    assert_eq!(routed(c).await, before, "routes survive the restart");
    // Both cells heartbeat; once presence settles, the replacements still go
    // to cell-b, never back to the evacuating cell-a.
    for _ in 0..3 {
        c.heartbeat_cell(cell("cell-a", "127.0.0.2")).await.unwrap();
        c.heartbeat_cell(cell("cell-b", "127.0.0.3")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    second.bbs.converge().await.unwrap();
    assert!(c.cell_work("cell-a").await.unwrap().lrps.is_empty());
    assert_eq!(c.cell_work("cell-b").await.unwrap().lrps.len(), 2);
    assert_eq!(routed(c).await, before, "kept until the cell stops them");
    run_work(c, "cell-b", "127.0.0.3").await;
    for e in c.evacuating_lrps().await.unwrap() {
        c.remove_evacuating_lrp(&e.key, e.instance_key.as_ref().unwrap())
            .await
            .unwrap();
    }
    assert_eq!(routed(c).await, ["127.0.0.3:61000", "127.0.0.3:61001"]);
    second.stop().await;
    let third = start(dir.path(), &key, BbsConfig::default()).await;
    assert!(third.client.evacuating_lrps().await.unwrap().is_empty());
    third.stop().await;
}
