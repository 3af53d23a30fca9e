//! Two cluster nodes' BBS on one PostgreSQL database, over real HTTP on
//! loopback: a client of the standby's URL is served by the active node
//! (calls and the event stream forwarded), and when the active node stops,
//! the standby takes over and the same client, on the same URL, carries
//! on: its calls succeed, and its event stream says `Lagged` and goes on
//! with the new holder's events. A client given both nodes' URLs (a cell
//! joined with `--bbs-url A,B`) keeps working when the node it used dies.

mod common;

use futures_util::StreamExt;
use kiln_bbs::lock::{BbsLock, Lease, LockState};
use kiln_bbs::standby::ClusterBbs;
use kiln_bbs::{BbsClient, BbsConfig};
use kiln_bbs_client::HttpBbsClient;
use kiln_logs::LogStore;
use kiln_model::bbs::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(2);

struct Node {
    url: String,
    lease: Lease,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A node's BBS on `database`, its keys in `dir` (the cluster's key copied
/// from `key_from` when given, as the shared secret would be).
async fn node(database: &kiln_store::Database, dir: &Path, key_from: Option<&Path>) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::fs::create_dir_all(dir).unwrap();
    if let Some(from) = key_from {
        std::fs::copy(from.join("key"), dir.join("key")).unwrap();
    }
    kiln_bbs::auth::ensure_credentials(dir, &url).unwrap();
    let lock = BbsLock::open(database, &url, TTL).await.unwrap();
    let stop = CancellationToken::new();
    let lease_stop = CancellationToken::new();
    let (lease, lease_task) = lock.spawn(lease_stop.clone());
    let bbs = ClusterBbs {
        database: database.clone(),
        max_connections: 4,
        config: BbsConfig::default(),
        logs: Arc::new(LogStore::default()),
        keys_dir: dir.to_path_buf(),
    };
    let (run_lease, run_stop) = (lease.clone(), stop.clone());
    let task = tokio::spawn(async move {
        bbs.run(run_lease, listener, run_stop).await.unwrap();
        lease_stop.cancel();
        lease_task.await.unwrap();
    });
    Node {
        url,
        lease,
        stop,
        task,
    }
}

async fn wait_held(lease: &Lease, within: Duration) {
    let deadline = Instant::now() + within;
    while !lease.is_held() {
        assert!(Instant::now() < deadline, "the lock was not taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two cluster nodes on a fresh database sharing one key: `a` holds the
/// lock, `b` stands by; `token` is the cluster's (both nodes accept it).
struct TwoNodes {
    _scratch: tempfile::TempDir,
    a: Node,
    b: Node,
    token: String,
}

async fn two_nodes(pg: &kiln_store::testing::Postgres) -> TwoNodes {
    let database = pg.fresh_database().await.component("bbs.sqlite", "bbs");
    let scratch = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (scratch.path().join("a"), scratch.path().join("b"));
    let a = node(&database, &dir_a, None).await;
    wait_held(&a.lease, Duration::from_secs(10)).await;
    let b = node(&database, &dir_b, Some(&dir_a)).await;
    let token = kiln_bbs_client::Credentials::read(&dir_b.join("credentials"))
        .unwrap()
        .token;
    TwoNodes {
        _scratch: scratch,
        a,
        b,
        token,
    }
}

/// Desires "after" until the cluster serves it again, within 15 s of `from`.
async fn desire_after_the_failover(client: &HttpBbsClient, from: Instant) {
    let deadline = from + Duration::from_secs(15);
    loop {
        match client.desire_lrp(common::desired("after", 1)).await {
            Ok(()) => break,
            Err(error) => assert!(Instant::now() < deadline, "never served again: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a failover: both LRPs desired before it are listed, and the event
/// stream, once reconnected, says Lagged (what happened meanwhile is lost)
/// and then carries the new holder's events.
async fn nothing_lost_and_events_follow(
    client: &HttpBbsClient,
    events: &mut futures_util::stream::BoxStream<'static, BbsEvent>,
) {
    let mut listed: Vec<String> = client
        .desired_lrps(None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.process_guid)
        .collect();
    listed.sort();
    assert_eq!(listed, ["after", "before"], "nothing lost");
    while !matches!(next_desired_or_lagged(events).await, BbsEvent::Lagged) {}
    client
        .desire_lrp(common::desired("third", 1))
        .await
        .unwrap();
    loop {
        if let BbsEvent::DesiredLrpChanged { desired_lrp } = next_desired_or_lagged(events).await
            && desired_lrp.process_guid == "third"
        {
            break;
        }
    }
}

/// The next event that is not about ActualLrps (the auction's work).
async fn next_desired_or_lagged(
    events: &mut futures_util::stream::BoxStream<'static, BbsEvent>,
) -> BbsEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("an event within 15 s")
            .expect("the stream stays open");
        if matches!(event, BbsEvent::DesiredLrpChanged { .. } | BbsEvent::Lagged) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_url_serves_the_cluster_across_a_failover() {
    let Some(pg) = kiln_store::testing::Postgres::shared().await else {
        return;
    };
    let TwoNodes {
        _scratch,
        a,
        b,
        token,
    } = two_nodes(pg).await;
    let client = HttpBbsClient::new(&b.url, &token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        b.lease.state(),
        LockState::Standby {
            holder_url: Some(_)
        }
    ) {
        assert!(Instant::now() < deadline, "b never saw a's lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Through the standby: a write, a read and the event stream.
    let mut events = client.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .desire_lrp(common::desired("before", 1))
        .await
        .unwrap();
    match next_desired_or_lagged(&mut events).await {
        BbsEvent::DesiredLrpChanged { desired_lrp } => {
            assert_eq!(desired_lrp.process_guid, "before")
        }
        other => panic!("expected the desire's event, got {other:?}"),
    }
    assert!(!b.lease.is_held(), "b took the lock from a live holder");

    // The active node stops; b takes over; the same client carries on.
    a.stop.cancel();
    a.task.await.unwrap();
    let stopped = Instant::now();
    wait_held(&b.lease, TTL * 3).await;
    println!("b active {:?} after a stopped", stopped.elapsed());
    desire_after_the_failover(&client, Instant::now()).await;
    nothing_lost_and_events_follow(&client, &mut events).await;
    b.stop.cancel();
    b.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_both_nodes_moves_on_when_the_one_it_uses_dies() {
    let Some(pg) = kiln_store::testing::Postgres::shared().await else {
        return;
    };
    let TwoNodes {
        _scratch,
        a,
        b,
        token,
    } = two_nodes(pg).await;
    let client = HttpBbsClient::new(&format!("{},{}", a.url, b.url), &token).unwrap();
    assert_eq!(client.base_url(), a.url, "the first url is used first");
    let mut events = client.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .desire_lrp(common::desired("before", 1))
        .await
        .unwrap();

    // a dies (its port refuses connections); b takes over; the client,
    // which named a first, carries on through b.
    a.stop.cancel();
    a.task.await.unwrap();
    let stopped = Instant::now();
    desire_after_the_failover(&client, stopped).await;
    println!("served through b {:?} after a stopped", stopped.elapsed());
    assert_eq!(client.base_url(), b.url, "the client moved to b");
    nothing_lost_and_events_follow(&client, &mut events).await;
    b.stop.cancel();
    b.task.await.unwrap();
}
