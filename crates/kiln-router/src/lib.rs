//! Kiln's router, in the role of Cloud Foundry's Gorouter.
//!
//! - [`table`]: host name → RUNNING instances, built from the BBS's
//!   DesiredLrps (their `routes`) and ActualLrps (their `net_info`).
//! - [`proxy`]: the request path — look the host up, pick an instance
//!   round-robin, stream the request there and the response back, with
//!   Gorouter's headers, retries and error responses.
//! - [`run`]: serves the proxy and keeps the table current from BBS events
//!   and a periodic resync.
//!
//! Architecture invariant: the request path never queries the BBS or a
//! database; it reads an immutable snapshot of the table, swapped whole when
//! the table is rebuilt.

pub mod proxy;
pub mod table;

use futures_util::StreamExt;
use kiln_bbs::{ActualLrpFilter, BbsClient};
use kiln_logs::LogSink;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use table::RouteTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Instances tried per request, at most (Gorouter: 3).
    pub max_attempts: usize,
    /// How long a connection to an instance may take (Gorouter: 5 s).
    pub dial_timeout: Duration,
    /// How long a whole request may take (Gorouter: 900 s).
    pub request_timeout: Duration,
    /// Full re-read of the BBS, in case events were missed (Gorouter re-registers every 20 s).
    pub resync_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_attempts: 3,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(900),
            resync_interval: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// The current table, shared by the sync loop (writer) and requests (readers).
#[derive(Clone, Default)]
pub struct SharedTable(Arc<RwLock<Arc<RouteTable>>>);

impl SharedTable {
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, table: RouteTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// Reads every DesiredLrp and ActualLrp and builds a fresh table.
pub async fn load_table(bbs: &dyn BbsClient) -> Result<RouteTable, kiln_bbs::BbsError> {
    let desired = bbs.desired_lrps(None).await?;
    let actual = bbs.actual_lrps(ActualLrpFilter::default()).await?;
    Ok(RouteTable::from_lrps(&desired, &actual))
}

/// Keeps `table` current until `shutdown`: a rebuild after every burst of
/// LRP events (a burst is collected for a few milliseconds, so a scale to
/// many instances rebuilds once), and every `resync_interval` regardless.
pub async fn sync_table(
    table: SharedTable,
    bbs: Arc<dyn BbsClient>,
    resync_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut events = bbs.subscribe();
    let mut resync = tokio::time::interval(resync_interval);
    loop {
        match load_table(bbs.as_ref()).await {
            Ok(fresh) => table.replace(fresh),
            Err(error) => {
                tracing::warn!(%error, "router could not read routes; keeping the current table")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = resync.tick() => {}
            event = events.next() => {
                if event.is_none() {
                    // The BBS went away; fall back to periodic resyncs.
                    events = Box::pin(futures_util::stream::pending());
                }
                let burst_end = tokio::time::sleep(Duration::from_millis(20));
                tokio::pin!(burst_end);
                loop {
                    tokio::select! {
                        _ = &mut burst_end => break,
                        more = events.next() => if more.is_none() { break },
                    }
                }
            }
        }
    }
}

/// Serves the router on `listener` until `shutdown`, then lets requests in
/// flight finish (for at most 10 s).
pub async fn run(
    config: RouterConfig,
    listener: tokio::net::TcpListener,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let table = SharedTable::default();
    if let Ok(initial) = load_table(bbs.as_ref()).await {
        table.replace(initial);
    }
    let tracker = TaskTracker::new();
    tracker.spawn(sync_table(
        table.clone(),
        bbs,
        config.resync_interval,
        shutdown.clone(),
    ));
    let proxy = Arc::new(proxy::Proxy::new(config, table, logs));
    tracing::info!(addr = %listener.local_addr()?, "router listening");
    loop {
        let (stream, client_addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "router accept failed");
                    continue;
                }
            },
        };
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move { proxy.serve_connection(stream, client_addr, shutdown).await });
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("router stopped with requests still in flight");
    }
    Ok(())
}
