//! Diego's evacuation: a cell that is going away asks the BBS to start its
//! instances elsewhere while it keeps running them.
//!
//! Diego keeps an EVACUATING ActualLrp beside the ordinary one. Kiln keeps
//! the ActualLrp record for the replacement (it goes back to UNCLAIMED and
//! is auctioned to another cell) and holds the old instance, RUNNING with
//! its old instance key and address, in memory here: the router routes to
//! both, and the evacuating cell stops the old one once the replacement is
//! RUNNING (`remove_evacuating_lrp`). Memory is enough: an evacuating
//! instance lives only as long as its cell heartbeats, and a BBS restart
//! during an evacuation costs at most the old instance's routes for the
//! rest of it. Nothing new is placed on an evacuating cell.

use crate::{Bbs, BbsError, store};
use kiln_model::ActualLrpState;
use kiln_model::bbs::{ActualLrp, ActualLrpInstanceKey, ActualLrpKey, BbsEvent, CellPresence};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct Evacuation {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cells: HashSet<String>,
    /// Old instances by instance guid.
    instances: HashMap<String, ActualLrp>,
}

impl Evacuation {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_evacuating(&self, cell_id: &str) -> bool {
        self.state().cells.contains(cell_id)
    }

    /// The live cells work may be placed on: not the evacuating ones. A
    /// cell that is no longer live is forgotten here, so that the same id
    /// coming back later is an ordinary cell again.
    pub(crate) fn placeable(&self, live: &[CellPresence]) -> Vec<CellPresence> {
        let mut state = self.state();
        let live_ids: HashSet<&str> = live.iter().map(|c| c.cell_id.as_str()).collect();
        state.cells.retain(|c| live_ids.contains(c.as_str()));
        state.instances.retain(|_, a| {
            a.instance_key
                .as_ref()
                .is_some_and(|ik| live_ids.contains(ik.cell_id.as_str()))
        });
        live.iter()
            .filter(|c| !state.cells.contains(&c.cell_id))
            .cloned()
            .collect()
    }
}

impl Bbs {
    /// Marks the cell evacuating, keeps its RUNNING instances as evacuating
    /// ones and sends every instance record on it back to the auction.
    pub(crate) async fn evacuate(&self, cell_id: &str) -> Result<(), BbsError> {
        if cell_id.is_empty() {
            return Err(BbsError::InvalidRequest("empty cell id".into()));
        }
        let _write = self.inner.write.lock().await;
        let filter = crate::ActualLrpFilter {
            cell_id: Some(cell_id.into()),
            ..Default::default()
        };
        let on_cell = store::actual_lrps(&self.inner.pool, &filter).await?;
        self.inner.evacuation.state().cells.insert(cell_id.into());
        let now = crate::now_nanos();
        let mut events = Vec::new();
        for a in on_cell {
            let Some(ik) = a.instance_key.clone() else {
                continue;
            };
            if ik.cell_id != cell_id
                || !matches!(a.state, ActualLrpState::Claimed | ActualLrpState::Running)
            {
                continue;
            }
            if a.state == ActualLrpState::Running {
                self.inner
                    .evacuation
                    .state()
                    .instances
                    .insert(ik.instance_guid.clone(), a.clone());
            }
            let mut next = a.clone();
            next.state = a
                .state
                .transition_to(ActualLrpState::Unclaimed)
                .map_err(|source| BbsError::InvalidTransition {
                    kind: "actual lrp",
                    guid: a.key.process_guid.clone(),
                    source,
                })?;
            next.instance_key = None;
            next.net_info = None;
            next.since = now;
            store::update_actual_lrp(&self.inner.pool, &next).await?;
            events.push(BbsEvent::ActualLrpChanged { actual_lrp: next });
        }
        tracing::info!(
            cell_id,
            instances = events.len(),
            "cell evacuating: its instances are being placed elsewhere"
        );
        for event in events {
            self.emit(event);
        }
        self.wake_auction();
        Ok(())
    }

    /// Old instances still running on evacuating cells.
    pub(crate) fn evacuating(&self) -> Vec<ActualLrp> {
        let mut all: Vec<ActualLrp> = self
            .inner
            .evacuation
            .state()
            .instances
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            (&a.key.process_guid, a.key.index).cmp(&(&b.key.process_guid, b.key.index))
        });
        all
    }

    /// Forgets an old instance; the router re-reads on the event.
    pub(crate) async fn remove_evacuating(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        let removed = {
            let mut state = self.inner.evacuation.state();
            match state.instances.get(&instance_key.instance_guid) {
                Some(a) if a.key == *key && a.instance_key.as_ref() == Some(instance_key) => {
                    state.instances.remove(&instance_key.instance_guid)
                }
                _ => None,
            }
        };
        if removed.is_none() {
            return Ok(());
        }
        // Subscribers re-read on any ActualLrp event; the record itself is
        // the replacement's and did not change.
        let event = match store::actual_lrp(&self.inner.pool, key).await? {
            Some(actual_lrp) => BbsEvent::ActualLrpChanged { actual_lrp },
            None => BbsEvent::ActualLrpRemoved { key: key.clone() },
        };
        self.emit(event);
        Ok(())
    }
}
