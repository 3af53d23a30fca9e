//! Keeping the route table current: the router's route emitter.
//!
//! Diego's route emitter turns BBS events into NATS registrations and
//! re-emits everything every 20 s; Kiln's router reads the BBS directly.
//! On LRP events (those queued together folded into one) it re-reads at
//! once only the processes they name (one DesiredLrp and its ActualLrps
//! each) and patches the table: the hosts those processes map are
//! recomputed, every other part of the new table is shared with the old.
//! A `Lagged`, a burst naming more than [`MAX_PATCHED`] processes, a failed
//! read and every `resync_interval` re-read everything and rebuild the
//! table whole, so a missed event costs at most one interval. Either way the new table is swapped in whole;
//! requests keep the snapshot they started with.

use crate::table::{RouteIndex, RouteTable};
use arc_swap::ArcSwap;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use kiln_bbs_client::{ActualLrpFilter, BbsClient, BbsError};
use kiln_model::bbs::BbsEvent;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events arriving this soon after the first are folded into one full
/// re-read (a scale to 10 instances is 10 events at once); a patch takes
/// only what is queued and goes at once.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// More changed processes than this in one burst are re-read whole.
const MAX_PATCHED: usize = 1000;
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
    /// Bumped after each swap, so that a worker knows when to read again.
    generation: Arc<AtomicU64>,
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
            generation: Arc::default(),
            retired: Arc::default(),
        }
    }

    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    pub fn replace(&self, table: RouteTable) {
        let old = self.current.swap(Arc::new(table));
        self.generation.fetch_add(1, Ordering::Release);
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

/// One worker's hold on the current table. A request clones a reference
/// count only its own worker touches; the shared table's count, taken by
/// every worker at every request, would move its cache line between cores
/// each time. The table is read again when it was replaced: at the next
/// request, or at the worker's sweep, so an idle worker does not keep a
/// replaced table alive.
pub(crate) struct WorkerTable {
    shared: SharedTable,
    /// The generation read and its table. Only the worker's thread locks it.
    held: Mutex<(u64, Arc<Held>)>,
}

/// A worker's own reference to a table (see [`WorkerTable`]).
pub(crate) struct Held(Arc<RouteTable>);

impl std::ops::Deref for Held {
    type Target = RouteTable;

    fn deref(&self) -> &RouteTable {
        &self.0
    }
}

impl WorkerTable {
    pub fn new(shared: SharedTable) -> WorkerTable {
        let generation = shared.generation.load(Ordering::Acquire);
        let table = Arc::new(Held(shared.snapshot()));
        WorkerTable {
            shared,
            held: Mutex::new((generation, table)),
        }
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<Held> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 != generation {
            *held = (generation, Arc::new(Held(self.shared.snapshot())));
        }
        held.1.clone()
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
    Ok(load_index(bbs, previous).await?.1)
}

/// [`load_table`], with the index that later changes are applied to.
pub async fn load_index(
    bbs: &dyn BbsClient,
    previous: &RouteTable,
) -> Result<(RouteIndex, RouteTable), BbsError> {
    let desired = bbs.desired_lrps(None).await?;
    let mut actual = bbs.actual_lrps(ActualLrpFilter::default()).await?;
    // Instances on evacuating cells keep serving until their cell stops
    // them, beside their replacements (Diego's evacuating ActualLrps).
    actual.extend(bbs.evacuating_lrps().await?);
    Ok(RouteIndex::build(&desired, &actual, previous))
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
    let index = reload(&table, bbs.as_ref()).await;
    follow(table, bbs, events, resync_interval, index, shutdown).await;
}

/// What a burst of events asks to re-read.
#[derive(Debug, Default, PartialEq, Eq)]
enum Changes {
    #[default]
    None,
    /// These processes (their DesiredLrp, ActualLrps or both) changed.
    Processes(BTreeSet<String>),
    /// Everything: events were missed, or the periodic resync is due.
    All,
}

impl Changes {
    /// Notes what `event` changed; whether it can change the route table.
    fn note(&mut self, event: &BbsEvent) -> bool {
        let process_guid = match event {
            // A crash also changes its ActualLrp, which that event carries.
            BbsEvent::TaskChanged { .. }
            | BbsEvent::TaskRemoved { .. }
            | BbsEvent::ActualLrpCrashed { .. } => return false,
            BbsEvent::DesiredLrpChanged { desired_lrp } => &desired_lrp.process_guid,
            BbsEvent::DesiredLrpRemoved { process_guid } => process_guid,
            BbsEvent::ActualLrpChanged { actual_lrp } => &actual_lrp.key.process_guid,
            BbsEvent::ActualLrpRemoved { key } => &key.process_guid,
            BbsEvent::Lagged => {
                *self = Changes::All;
                return true;
            }
        };
        match self {
            Changes::All => {}
            Changes::Processes(processes) if processes.len() >= MAX_PATCHED => {
                *self = Changes::All;
            }
            Changes::Processes(processes) => {
                processes.insert(process_guid.clone());
            }
            Changes::None => {
                *self = Changes::Processes(BTreeSet::from([process_guid.clone()]));
            }
        }
        true
    }
}

/// A full re-read: the new table swapped in and its index, or `None` if
/// the BBS could not be read (the current table stays).
async fn reload(table: &SharedTable, bbs: &dyn BbsClient) -> Option<RouteIndex> {
    match load_index(bbs, &table.snapshot()).await {
        Ok((index, fresh)) => {
            tracing::debug!(routes = fresh.len(), "router table rebuilt");
            table.replace(fresh);
            Some(index)
        }
        Err(error) => {
            tracing::warn!(%error, "router could not read routes from the bbs; keeping the current table");
            None
        }
    }
}

/// Re-reads only `processes` (one DesiredLrp and its ActualLrps each, and
/// the evacuating instances once) and swaps in the table with the hosts
/// they map recomputed; every other part of the table is shared with the
/// current one. On an error `index` may be part-updated: the caller drops
/// it and re-reads everything.
async fn patch(
    table: &SharedTable,
    index: &mut RouteIndex,
    bbs: &dyn BbsClient,
    processes: &BTreeSet<String>,
) -> Result<(), BbsError> {
    let evacuating = bbs.evacuating_lrps().await?;
    let mut hosts = Vec::new();
    for process_guid in processes {
        let desired = match bbs.desired_lrp_by_process_guid(process_guid).await {
            Ok(desired) => Some(desired),
            Err(BbsError::NotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        let mut actual = match desired {
            Some(_) => {
                let filter = ActualLrpFilter {
                    process_guid: Some(process_guid.clone()),
                    ..ActualLrpFilter::default()
                };
                bbs.actual_lrps(filter).await?
            }
            None => Vec::new(),
        };
        actual.extend(
            evacuating
                .iter()
                .filter(|a| a.key.process_guid == *process_guid)
                .cloned(),
        );
        hosts.extend(index.set_process(process_guid, desired.as_ref(), &actual));
    }
    hosts.sort_unstable();
    hosts.dedup();
    let next = index.apply(&table.snapshot(), &hosts);
    tracing::debug!(
        processes = processes.len(),
        hosts = hosts.len(),
        routes = next.len(),
        "router table patched"
    );
    table.replace(next);
    Ok(())
}

/// Applies `changes`: a patch if there is an index and only some
/// processes changed, else a full re-read. The index to go on with, if the
/// table is known to match it.
async fn update(
    table: &SharedTable,
    bbs: &dyn BbsClient,
    index: Option<RouteIndex>,
    changes: Changes,
) -> Option<RouteIndex> {
    match (index, changes) {
        (Some(index), Changes::None) => Some(index),
        (Some(mut index), Changes::Processes(processes)) => {
            match patch(table, &mut index, bbs, &processes).await {
                Ok(()) => Some(index),
                Err(error) => {
                    tracing::warn!(%error, "router could not read changed routes from the bbs; re-reading all shortly");
                    None
                }
            }
        }
        _ => reload(table, bbs).await,
    }
}

/// Notes every event already queued, without waiting for more.
fn drain_ready(events: &mut BoxStream<'static, BbsEvent>, changes: &mut Changes) {
    while let Some(next) = events.next().now_or_never() {
        match next {
            Some(event) => {
                changes.note(&event);
            }
            None => {
                tracing::warn!("bbs event stream ended; the router falls back to periodic resyncs");
                *events = Box::pin(futures_util::stream::pending());
                return;
            }
        }
    }
}

/// The loop after the first read. `index` is that read's, if it worked.
pub(crate) async fn follow(
    table: SharedTable,
    bbs: Arc<dyn BbsClient>,
    mut events: BoxStream<'static, BbsEvent>,
    resync_interval: Duration,
    mut index: Option<RouteIndex>,
    shutdown: CancellationToken,
) {
    let mut last_full = Duration::ZERO;
    let mut held = false;
    loop {
        let wait = if index.is_some() {
            resync_interval
        } else {
            resync_interval.min(RETRY_AFTER_ERROR)
        };
        let resync_at = Instant::now() + wait;
        let mut changes = Changes::None;
        // Wait for a reason to re-read: a relevant event or the resync.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(resync_at) => {
                    changes = Changes::All;
                    break;
                }
                _ = tokio::time::sleep(REAP_EVERY), if held => held = table.reap(),
                event = events.next() => match event {
                    Some(event) if changes.note(&event) => {
                        // A patch goes at once with what is already queued:
                        // the API answers on this same event (a push
                        // returns when it sees RUNNING), so waiting here
                        // would let a client ask before its instance is
                        // routed. Events that come during the patch fold
                        // into the next one.
                        if index.is_some() {
                            drain_ready(&mut events, &mut changes);
                            break;
                        }
                        // Fold the rest of the burst into this re-read. A
                        // slow one (a big table) widens the window, so the
                        // router never spends most of its time rebuilding.
                        let window = DEBOUNCE.max(last_full * 2);
                        let quiet_until = Instant::now() + window;
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep_until(quiet_until) => break,
                                more = events.next() => match more {
                                    Some(more) => {
                                        changes.note(&more);
                                    }
                                    None => events = Box::pin(futures_util::stream::pending()),
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
        let full = index.is_none() || changes == Changes::All;
        let started = Instant::now();
        index = update(&table, bbs.as_ref(), index, changes).await;
        if full {
            last_full = started.elapsed();
        }
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
    fn lrp_events_name_their_process_and_lag_asks_for_everything() {
        let mut changes = Changes::None;
        assert!(!changes.note(&BbsEvent::TaskRemoved {
            task_guid: "t".into()
        }));
        assert_eq!(changes, Changes::None);
        for process_guid in ["p", "q", "p"] {
            assert!(changes.note(&BbsEvent::DesiredLrpRemoved {
                process_guid: process_guid.into()
            }));
        }
        assert_eq!(
            changes,
            Changes::Processes(BTreeSet::from(["p".into(), "q".into()]))
        );
        assert!(changes.note(&BbsEvent::Lagged));
        assert_eq!(changes, Changes::All);
        assert!(changes.note(&BbsEvent::DesiredLrpRemoved {
            process_guid: "r".into()
        }));
        assert_eq!(changes, Changes::All, "stays whole");
    }

    #[test]
    fn a_burst_of_too_many_processes_is_read_whole() {
        let mut changes = Changes::None;
        for i in 0..=MAX_PATCHED {
            changes.note(&BbsEvent::DesiredLrpRemoved {
                process_guid: format!("p{i}"),
            });
        }
        assert_eq!(changes, Changes::All);
    }
}
