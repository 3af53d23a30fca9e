//! The router's proxy alone, in front of one instance at a fixed address:
//! for profiling the request path without a whole Kiln server.
//!
//!   cargo run --release -p kiln-router --example proxy -- LISTEN INSTANCE HOST
//!
//! serves `LISTEN` (e.g. 127.0.0.1:8081), routing `HOST` to `INSTANCE`
//! (e.g. 127.0.0.1:8082), until interrupted. `WORKERS=N` sets the number
//! of worker threads (default: one per CPU). `ROUTES=N` adds N other
//! routes (`app-<i>.<HOST>`, each to its own instance address) to the table,
//! to see what a large table costs a request.

use kiln_model::ActualLrpState;
use kiln_model::bbs::*;
use kiln_router::{RouteTable, RouterConfig, SharedTable};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// As the `kiln` binary: jemalloc, whose background thread hands memory
/// freed after a burst back to the system.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, instance, host] = args.as_slice() else {
        return Err("usage: proxy LISTEN INSTANCE HOST".into());
    };
    let (address, port) = instance
        .rsplit_once(':')
        .ok_or("INSTANCE is ADDRESS:PORT")?;
    let desired = DesiredLrp {
        routes: vec![host.as_str().into()],
        ..kiln_model::testing::desired_lrp("process", 1)
    };
    let actual = ActualLrp {
        key: ActualLrpKey {
            process_guid: "process".into(),
            index: 0,
            domain: "cf-apps".into(),
        },
        instance_key: Some(ActualLrpInstanceKey {
            instance_guid: "instance".into(),
            cell_id: "cell".into(),
        }),
        net_info: Some(ActualLrpNetInfo {
            address: address.into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: port.parse()?,
            }],
            instance_address: String::new(),
        }),
        state: ActualLrpState::Running,
        crash_count: 0,
        crash_reason: String::new(),
        placement_error: String::new(),
        since: 0,
        presence: Default::default(),
    };
    let others: usize = match std::env::var("ROUTES") {
        Ok(n) => n.parse()?,
        Err(_) => 0,
    };
    let mut desired_lrps = vec![desired];
    let mut actual_lrps = vec![actual.clone()];
    for i in 0..others {
        let guid = format!("process-{i}");
        desired_lrps.push(DesiredLrp {
            process_guid: guid.clone(),
            routes: vec![format!("app-{i}.{host}").as_str().into()],
            ..desired_lrps[0].clone()
        });
        let mut other = actual.clone();
        other.key.process_guid = guid;
        if let Some(net) = other.net_info.as_mut() {
            // Addresses in the test range nobody dials: only the one host is requested.
            net.address = format!("127.1.{}.{}", (i >> 8) & 0xff, i & 0xff);
        }
        actual_lrps.push(other);
    }
    let table = SharedTable::new(RouteTable::from_lrps(&desired_lrps, &actual_lrps));
    // What the router keeps is the table, not what it was built from.
    drop((desired_lrps, actual_lrps));
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    // `WORKERS=N` to compare worker counts; one per CPU otherwise.
    let workers = match std::env::var("WORKERS") {
        Ok(n) => n.parse()?,
        Err(_) => 0,
    };
    let config = RouterConfig {
        max_conns_per_backend: 0,
        workers,
        ..RouterConfig::default()
    };
    kiln_router::serve(
        config,
        listener,
        table,
        Arc::new(kiln_logs::LogStore::default()),
        shutdown,
    )
    .await?;
    Ok(())
}
