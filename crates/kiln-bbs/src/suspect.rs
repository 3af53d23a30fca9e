//! Diego's SUSPECT ActualLRPs: a cell whose presence expired may only be
//! cut off from the BBS, its instances still serving. Each RUNNING instance
//! on it stays listed RUNNING (presence SUSPECT, still routed) while its
//! record goes to a replacement (placed on another cell in the same write,
//! or back to the auction when none has room); the suspect instance
//! goes once the replacement is RUNNING, and becomes ordinary again (the
//! replacement retired) if its cell heartbeats first.
//!
//! Diego keeps the suspect row beside the ordinary one. Kiln keeps the
//! record for the replacement and the suspect instance beside it, in memory
//! for reads and in `kept_actual_lrps` (written in the transaction that
//! hands the record to the replacement), so a BBS restart before the
//! replacement runs still lists and routes it.

use crate::mirror::Mirror;
use crate::store::{self, db};
use crate::{Bbs, BbsError};
use kiln_model::ActualLrpState;
use kiln_model::bbs::{ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpPresence, BbsEvent};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A suspect instance that may go: its key, its instance, its record.
pub(crate) type Settled = (ActualLrpKey, ActualLrpInstanceKey, Option<Arc<ActualLrp>>);

#[derive(Default)]
pub(crate) struct Suspects {
    /// Suspect instances by process guid and index (one per index: the
    /// record holds the replacement).
    instances: Mutex<HashMap<(String, u32), ActualLrp>>,
}

fn slot(key: &ActualLrpKey) -> (String, u32) {
    (key.process_guid.clone(), key.index)
}

impl Suspects {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), ActualLrp>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a RUNNING instance whose cell was lost. Called under the
    /// write lock, before its record is sent back to the auction.
    pub(crate) fn keep(&self, mut actual: ActualLrp) {
        actual.presence = ActualLrpPresence::Suspect;
        self.lock().insert(slot(&actual.key), actual);
    }

    /// Shows the suspect instance in place of a record that is not RUNNING
    /// (Diego's resolution of an ActualLRP group): one instance per index.
    pub(crate) fn overlay(&self, listed: &mut [ActualLrp], wanted: impl Fn(&ActualLrp) -> bool) {
        let suspects = self.lock();
        if suspects.is_empty() {
            return;
        }
        for a in listed.iter_mut() {
            if a.state == ActualLrpState::Running {
                continue;
            }
            if let Some(s) = suspects.get(&slot(&a.key))
                && wanted(s)
            {
                *a = s.clone();
            }
        }
    }

    /// Suspect instances matching `wanted` whose record is not in `listed`
    /// (a filter by the lost cell's id does not find the record).
    pub(crate) fn missing_from(
        &self,
        listed: &[ActualLrp],
        wanted: impl Fn(&ActualLrp) -> bool,
    ) -> Vec<ActualLrp> {
        let suspects = self.lock();
        if suspects.is_empty() {
            return Vec::new();
        }
        let listed: std::collections::HashSet<&ActualLrpKey> =
            listed.iter().map(|a| &a.key).collect();
        suspects
            .values()
            .filter(|s| wanted(s) && !listed.contains(&s.key))
            .cloned()
            .collect()
    }

    fn on_cell(&self, cell_id: &str) -> Vec<ActualLrp> {
        self.lock()
            .values()
            .filter(|s| cell_of(s) == Some(cell_id))
            .cloned()
            .collect()
    }

    /// The suspect instances whose record (in `mirror`) is RUNNING (the
    /// replacement is up) or gone, with that record: read in place, not
    /// copied out first (25,000 suspect instances at every pass while a
    /// tenth of 1,000 cells is re-placed).
    pub(crate) fn settled(&self, mirror: &Mirror) -> Vec<Settled> {
        self.lock()
            .iter()
            .filter_map(|(slot, s)| {
                let instance_key = s.instance_key.as_ref()?;
                let record = mirror.record_at(slot);
                if record
                    .as_ref()
                    .is_some_and(|r| r.state != ActualLrpState::Running)
                {
                    return None;
                }
                Some((s.key.clone(), instance_key.clone(), record))
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn all(&self) -> Vec<ActualLrp> {
        self.lock().values().cloned().collect()
    }

    /// Forgets the suspect instance at `key` if it is still `instance_key`.
    pub(crate) fn forget(&self, key: &ActualLrpKey, instance_key: &ActualLrpInstanceKey) -> bool {
        let mut suspects = self.lock();
        let k = slot(key);
        match suspects.get(&k) {
            Some(s) if s.instance_key.as_ref() == Some(instance_key) => {
                suspects.remove(&k);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn is_suspect(&self, key: &ActualLrpKey, ik: &ActualLrpInstanceKey) -> bool {
        self.lock()
            .get(&slot(key))
            .is_some_and(|s| s.instance_key.as_ref() == Some(ik))
    }

    /// The instance key of the suspect instance at `key`, if any.
    pub(crate) fn at(&self, key: &ActualLrpKey) -> Option<ActualLrpInstanceKey> {
        self.lock()
            .get(&slot(key))
            .and_then(|s| s.instance_key.clone())
    }
}

fn cell_of(a: &ActualLrp) -> Option<&str> {
    a.instance_key.as_ref().map(|ik| ik.cell_id.as_str())
}

impl Bbs {
    /// The cell heartbeats again before its suspect instances were
    /// replaced: each becomes ordinary again and takes its record back from
    /// the replacement (not yet RUNNING); the replacement's cell no longer
    /// finds it in its work and stops it.
    pub(crate) async fn cell_back(&self, cell_id: &str) -> Result<(), BbsError> {
        let suspects = self.inner.suspects.on_cell(cell_id);
        if suspects.is_empty() {
            return Ok(());
        }
        let mut events = Vec::new();
        {
            let _write = self.inner.write.lock().await;
            // The kept rows go in the transaction that restores the records;
            // memory follows once it is committed.
            let mut tx = self.inner.pool.begin().await.map_err(db)?;
            let mut forgotten = Vec::new();
            for s in suspects {
                let Some(ik) = s.instance_key.clone() else {
                    continue;
                };
                if !self.inner.suspects.is_suspect(&s.key, &ik) {
                    continue;
                }
                store::forget_kept(&mut tx, &[ik.instance_guid.as_str()]).await?;
                forgotten.push((s.key.clone(), ik));
                let record =
                    store::actual_lrp_in(&mut tx, &s.key.process_guid, s.key.index).await?;
                // Gone (scaled down) or already replaced: nothing to restore.
                if record
                    .as_ref()
                    .is_none_or(|r| r.state == ActualLrpState::Running)
                {
                    continue;
                }
                let mut restored = s;
                restored.presence = ActualLrpPresence::Ordinary;
                store::update_actual_lrp(&mut *tx, &restored).await?;
                events.push(BbsEvent::ActualLrpChanged {
                    actual_lrp: restored,
                });
            }
            tx.commit().await.map_err(db)?;
            self.inner.mirror.apply(&events);
            for (key, ik) in forgotten {
                self.inner.suspects.forget(&key, &ik);
            }
        }
        tracing::info!(
            cell_id,
            instances = events.len(),
            "cell back: its suspect instances are ordinary again"
        );
        events.into_iter().for_each(|e| self.emit(e));
        Ok(())
    }

    /// Forgets suspect instances whose replacement is RUNNING or whose
    /// record is gone; the router re-reads on the event.
    pub(crate) async fn settle_suspects(&self) -> Result<usize, BbsError> {
        let mut removed = 0;
        // The mirror equals the table: no query per suspect instance
        // (25,000 of them when a tenth of 1,000 cells is lost).
        for (key, ik, record) in self.inner.suspects.settled(&self.inner.mirror) {
            let record = record.map(|r| (*r).clone());
            if self.suspect_gone(&key, &ik, record).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Forgets one suspect instance (its replacement runs, its record is
    /// gone, or its cell reported it crashed) and tells subscribers.
    /// Its kept row goes with it (a row left by a crash in between is
    /// settled again after the next start).
    pub(crate) async fn suspect_gone(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        record: Option<ActualLrp>,
    ) -> Result<bool, BbsError> {
        if !self.inner.suspects.is_suspect(key, instance_key) {
            return Ok(false);
        }
        let mut conn = self.inner.pool.acquire().await.map_err(db)?;
        store::forget_kept(&mut conn, &[instance_key.instance_guid.as_str()]).await?;
        drop(conn);
        if !self.inner.suspects.forget(key, instance_key) {
            return Ok(false);
        }
        tracing::info!(process_guid = %key.process_guid, index = key.index, instance_guid = %instance_key.instance_guid, "suspect actual lrp removed");
        self.emit(match record {
            Some(actual_lrp) => BbsEvent::ActualLrpChanged { actual_lrp },
            None => BbsEvent::ActualLrpRemoved { key: key.clone() },
        });
        Ok(true)
    }
}
