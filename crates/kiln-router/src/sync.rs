//! Keeping the route table current: the router's route emitter.
//!
//! Diego's route emitter turns BBS events into NATS registrations and
//! re-emits everything every 20 s; Kiln's router reads the BBS directly. It
//! re-reads all LRPs after every burst of LRP events (or a `Lagged`), and
//! every `resync_interval` regardless, so a missed event costs at most one
//! interval. A re-read builds a whole new [`RouteTable`] and swaps it in;
//! requests keep the snapshot they started with.

use crate::table::RouteTable;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_bbs_client::{ActualLrpFilter, BbsClient, BbsError};
use kiln_model::bbs::BbsEvent;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events arriving this soon after the first are folded into one re-read
/// (a scale to 10 instances is 10 events at once).
const DEBOUNCE: Duration = Duration::from_millis(20);
/// After a failed read, try again this soon rather than a full interval later.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// How often replaced tables still held by requests are looked at again.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// The current table, shared by the sync loop (writer) and requests
/// (readers). A read is a lock-free load of the current `Arc`; a rebuild
/// happens aside and is swapped in whole, so requests never wait for it.
#[derive(Clone)]
pub struct SharedTable {
    current: Arc<ArcSwap<RouteTable>>,
    /// Replaced tables that requests still held when they were replaced.
    /// The writer frees them once the last request lets go, so that a
    /// request never pays for freeing a whole table (tens of milliseconds
    /// at 100,000 routes). Only the writer takes this lock.
    retired: Arc<Mutex<Vec<Arc<RouteTable>>>>,
}

impl Default for SharedTable {
    fn default() -> Self {
        SharedTable::new(RouteTable::default())
    }
}

impl SharedTable {
    pub fn new(table: RouteTable) -> SharedTable {
        SharedTable {
            current: Arc::new(ArcSwap::from_pointee(table)),
            retired: Arc::default(),
        }
    }

    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    pub fn replace(&self, table: RouteTable) {
        let old = self.current.swap(Arc::new(table));
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.push(old);
        free_unused(&mut retired);
    }

    /// Frees the replaced tables no request holds any more; whether some
    /// are still held.
    pub fn reap(&self) -> bool {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        free_unused(&mut retired);
        !retired.is_empty()
    }
}

/// Drops, here, each table that only `retired` holds. No request can take
/// a new hold on one: it is no longer the current table.
fn free_unused(retired: &mut Vec<Arc<RouteTable>>) {
    retired.retain(|table| Arc::strong_count(table) > 1);
}

/// Reads every DesiredLrp and ActualLrp and builds a fresh table, keeping
/// what `previous` learned about its routes and instances.
pub async fn load_table(
    bbs: &dyn BbsClient,
    previous: &RouteTable,
) -> Result<RouteTable, BbsError> {
    let desired = bbs.desired_lrps(None).await?;
    let mut actual = bbs.actual_lrps(ActualLrpFilter::default()).await?;
    // Instances on evacuating cells keep serving until their cell stops
    // them, beside their replacements (Diego's evacuating ActualLrps).
    actual.extend(bbs.evacuating_lrps().await?);
    Ok(RouteTable::rebuild(&desired, &actual, previous))
}

/// Reads the table now, then keeps it current until `shutdown`.
pub async fn sync_table(
    table: SharedTable,
    bbs: Arc<dyn BbsClient>,
    resync_interval: Duration,
    shutdown: CancellationToken,
) {
    // Subscribe before the first read, so that no change falls between them.
    let events = bbs.subscribe();
    let ok = reload(&table, bbs.as_ref()).await.is_ok();
    follow(table, bbs, events, resync_interval, ok, shutdown).await;
}

/// Whether an event can change the route table. Task events cannot.
fn affects_routes(event: &BbsEvent) -> bool {
    match event {
        // A crash also changes its ActualLrp, which that event carries.
        BbsEvent::TaskChanged { .. }
        | BbsEvent::TaskRemoved { .. }
        | BbsEvent::ActualLrpCrashed { .. } => false,
        BbsEvent::DesiredLrpChanged { .. }
        | BbsEvent::DesiredLrpRemoved { .. }
        | BbsEvent::ActualLrpChanged { .. }
        | BbsEvent::ActualLrpRemoved { .. }
        | BbsEvent::Lagged => true,
    }
}

async fn reload(table: &SharedTable, bbs: &dyn BbsClient) -> Result<(), BbsError> {
    match load_table(bbs, &table.snapshot()).await {
        Ok(fresh) => {
            tracing::debug!(routes = fresh.len(), "router table rebuilt");
            table.replace(fresh);
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "router could not read routes from the bbs; keeping the current table");
            Err(error)
        }
    }
}

/// The loop after the first read. `last_ok` says whether that read worked.
pub(crate) async fn follow(
    table: SharedTable,
    bbs: Arc<dyn BbsClient>,
    mut events: BoxStream<'static, BbsEvent>,
    resync_interval: Duration,
    mut last_ok: bool,
    shutdown: CancellationToken,
) {
    let mut last_took = Duration::ZERO;
    let mut held = false;
    loop {
        let wait = if last_ok {
            resync_interval
        } else {
            resync_interval.min(RETRY_AFTER_ERROR)
        };
        let resync_at = Instant::now() + wait;
        // Wait for a reason to re-read: a relevant event or the resync.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(resync_at) => break,
                _ = tokio::time::sleep(REAP_EVERY), if held => held = table.reap(),
                event = events.next() => match event {
                    Some(event) if affects_routes(&event) => {
                        // Fold the rest of the burst into this re-read. A slow
                        // re-read (a big table) widens the window, so the
                        // router never spends most of its time rebuilding.
                        let quiet_until = Instant::now() + DEBOUNCE.max(last_took * 2);
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep_until(quiet_until) => break,
                                more = events.next() => if more.is_none() {
                                    events = Box::pin(futures_util::stream::pending());
                                },
                            }
                        }
                        break;
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!("bbs event stream ended; the router falls back to periodic resyncs");
                        events = Box::pin(futures_util::stream::pending());
                    }
                },
            }
        }
        let started = Instant::now();
        last_ok = reload(&table, bbs.as_ref()).await.is_ok();
        last_took = started.elapsed();
        held = table.reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_table_a_request_holds_is_freed_by_the_writer() {
        let shared = SharedTable::default();
        let held = shared.snapshot();
        shared.replace(RouteTable::default());
        assert!(shared.reap(), "still held by the request");
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(
            weak.strong_count() > 0,
            "the request's drop does not free it"
        );
        assert!(!shared.reap());
        assert_eq!(weak.strong_count(), 0, "the writer freed it");
    }

    #[test]
    fn only_lrp_events_and_lag_trigger_a_reread() {
        assert!(affects_routes(&BbsEvent::Lagged));
        assert!(affects_routes(&BbsEvent::DesiredLrpRemoved {
            process_guid: "p".into()
        }));
        assert!(!affects_routes(&BbsEvent::TaskRemoved {
            task_guid: "t".into()
        }));
    }
}
