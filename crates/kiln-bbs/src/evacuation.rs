//! Diego's evacuation: a cell that is going away asks the BBS to start its
//! instances elsewhere while it keeps running them.
//!
//! Diego keeps an EVACUATING ActualLrp beside the ordinary one. Kiln keeps
//! the ActualLrp record for the replacement (it goes back to UNCLAIMED and
//! is auctioned to another cell) and holds the old instance, RUNNING with
//! its old instance key and address, in memory here: the router routes to
//! both, and the evacuating cell stops the old one once the replacement is
//! RUNNING (`remove_evacuating_lrp`). The old instances and the evacuating
//! cells are also kept in the database (written in the transaction that
//! sends the records back to the auction) and reloaded on start, so a BBS
//! restart during an evacuation keeps them routed. Nothing new is placed on
//! an evacuating cell.

use crate::store::{self, db};
use crate::{Bbs, BbsError};
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

    /// Nothing evacuating: an auction round need not take the write lock
    /// to prune.
    fn is_empty(&self) -> bool {
        let state = self.state();
        state.cells.is_empty() && state.instances.is_empty()
    }

    pub(crate) fn is_evacuating(&self, cell_id: &str) -> bool {
        self.state().cells.contains(cell_id)
    }

    /// The live cells work may be placed on: not the evacuating ones.
    pub(crate) fn placeable(&self, live: &[CellPresence]) -> Vec<CellPresence> {
        let state = self.state();
        live.iter()
            .filter(|c| !state.cells.contains(&c.cell_id))
            .cloned()
            .collect()
    }

    /// Drops the cells that are no longer live, and their old instances,
    /// so that the same id coming back later is an ordinary cell again.
    /// What was dropped: (cell ids, instance guids).
    fn prune(&self, live: &HashSet<String>) -> (Vec<String>, Vec<String>) {
        let mut state = self.state();
        let cells: Vec<String> = state
            .cells
            .iter()
            .filter(|c| !live.contains(*c))
            .cloned()
            .collect();
        let instances: Vec<String> = state
            .instances
            .iter()
            .filter(|(_, a)| {
                a.instance_key
                    .as_ref()
                    .is_none_or(|ik| !live.contains(&ik.cell_id))
            })
            .map(|(guid, _)| guid.clone())
            .collect();
        for c in &cells {
            state.cells.remove(c);
        }
        for guid in &instances {
            state.instances.remove(guid);
        }
        (cells, instances)
    }

    /// What the database kept, on start.
    pub(crate) fn restore(&self, cells: Vec<String>, instances: Vec<ActualLrp>) {
        let mut state = self.state();
        state.cells.extend(cells);
        for a in instances {
            if let Some(ik) = a.instance_key.as_ref() {
                state.instances.insert(ik.instance_guid.clone(), a);
            }
        }
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
        let now = crate::now_nanos();
        let mut events = Vec::new();
        let mut kept = Vec::new();
        // The cell, its old instances and their records going back to the
        // auction, in one transaction; memory follows once committed.
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        store::add_evacuating_cell(&mut tx, cell_id).await?;
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
                store::keep_instance(&mut tx, store::Kept::Evacuating, &a).await?;
                kept.push(a.clone());
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
            store::update_actual_lrp(&mut *tx, &next).await?;
            events.push(BbsEvent::ActualLrpChanged { actual_lrp: next });
        }
        tx.commit().await.map_err(db)?;
        self.inner.mirror.apply(&events);
        self.inner
            .evacuation
            .restore(vec![cell_id.to_string()], kept);
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

    /// Forgets evacuating cells that are no longer live, and their old
    /// instances, in memory and in the database. Only once presence has
    /// settled after a start: until then no cell has heartbeated to us.
    pub(crate) async fn prune_evacuation(&self) -> Result<(), BbsError> {
        if !self.presence_settled() || self.inner.evacuation.is_empty() {
            return Ok(());
        }
        let _write = self.inner.write.lock().await;
        let live = self.live_cell_ids();
        let (cells, instances) = self.inner.evacuation.prune(&live);
        if cells.is_empty() && instances.is_empty() {
            return Ok(());
        }
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        let instances: Vec<&str> = instances.iter().map(String::as_str).collect();
        store::remove_evacuating_cells(&mut tx, &cells).await?;
        store::forget_kept(&mut tx, &instances).await?;
        tx.commit().await.map_err(db)?;
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
        let Some(removed) = removed else {
            return Ok(());
        };
        let mut conn = self.inner.pool.acquire().await.map_err(db)?;
        if let Err(error) =
            store::forget_kept(&mut conn, &[instance_key.instance_guid.as_str()]).await
        {
            // Still kept: memory and the database say the same.
            self.inner
                .evacuation
                .state()
                .instances
                .insert(instance_key.instance_guid.clone(), removed);
            return Err(error);
        }
        drop(conn);
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
