//! Cells' reports that instances run, written in batches (group commit).
//!
//! Every RUNNING report was its own statement and transaction under the
//! write lock; at 250,000 instances that is 250,000 round trips to SQLite's
//! worker thread. A report now joins a queue and waits for the write lock;
//! whoever gets the lock writes the whole queue in one transaction with
//! multi-row compare-and-set statements and answers each report. Under no
//! load a batch is just the one report.

use crate::store::{self, StartReport, db};
use crate::{Bbs, BbsError, now_nanos};
use kiln_model::bbs::{ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo};
use sqlx::Connection as _;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

type Answer = Result<Option<ActualLrp>, BbsError>;

/// Reports written per transaction at most (as the auction's batches).
const WRITE_BATCH: usize = 10_000;

struct Pending {
    key: ActualLrpKey,
    instance_key: ActualLrpInstanceKey,
    /// As stored (JSON) and as the record holds it.
    net_info: String,
    net: ActualLrpNetInfo,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
pub(crate) struct PendingStarts {
    queue: Mutex<Vec<Pending>>,
}

impl PendingStarts {
    fn push(&self, pending: Pending) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pending);
    }

    /// The oldest reports, at most a write batch of them: a batch's
    /// events must fit the event channel. The rest wait for the next
    /// holder of the write lock (each of their callers waits for it).
    fn take(&self) -> Vec<Pending> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() <= WRITE_BATCH {
            return std::mem::take(&mut *queue);
        }
        let rest = queue.split_off(WRITE_BATCH);
        std::mem::replace(&mut *queue, rest)
    }
}

impl Bbs {
    /// Starts one instance as part of a batch: the record as RUNNING, or
    /// `None` when it is gone or held by another instance.
    pub(crate) async fn start_batched(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: ActualLrpNetInfo,
    ) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.inner.reports.push(Pending {
            key: key.clone(),
            instance_key: instance_key.clone(),
            net_info: serde_json::to_string(&net_info)
                .map_err(|e| BbsError::InvalidRequest(format!("net info: {e}")))?,
            net: net_info,
            answer,
        });
        let mut answered = answered;
        tokio::select! {
            // Written by another holder of the lock meanwhile: done, without
            // waiting for the lock in turn.
            biased;
            answer = &mut answered => {
                return answer.map_err(|_| BbsError::Unavailable("the report was dropped".into()))?;
            }
            write = self.inner.write.lock() => {
                // The lock is fair: reports queued while a batch is written
                // go in the next holder's batch.
                let batch = self.inner.reports.take();
                if !batch.is_empty() {
                    self.write_starts(batch).await;
                }
                drop(write);
            }
        }
        answered
            .await
            .map_err(|_| BbsError::Unavailable("the report was dropped".into()))?
    }

    async fn write_starts(&self, batch: Vec<Pending>) {
        let reports: Vec<StartReport<'_>> = batch
            .iter()
            .map(|p| StartReport {
                key: &p.key,
                instance_key: &p.instance_key,
                net_info: p.net_info.clone(),
            })
            .collect();
        let written = async {
            let now = now_nanos();
            let mut conn = self.inner.writer.conn(&self.inner.pool).await?;
            let mut tx = conn.begin().await.map_err(db)?;
            let started = store::start_many(&mut tx, &reports, now).await?;
            let started = self.started_records(&batch, &started, now)?;
            let replaced = self.replaced_suspects(&started);
            let guids: Vec<&str> = replaced
                .iter()
                .map(|(_, ik)| ik.instance_guid.as_str())
                .collect();
            store::forget_kept(&mut tx, &guids).await?;
            tx.commit().await.map_err(db)?;
            self.inner.mirror.put(&started);
            self.forget_replaced(&replaced);
            Ok::<_, BbsError>(started)
        }
        .await;
        drop(reports);
        match written {
            Ok(started) => {
                let by_index: HashMap<(&str, u32), &ActualLrp> = started
                    .iter()
                    .map(|a| ((a.key.process_guid.as_str(), a.key.index), a))
                    .collect();
                for p in batch {
                    // Ours if the record now holds our instance (a repeated
                    // report gets the same answer).
                    let mine = by_index
                        .get(&(p.key.process_guid.as_str(), p.key.index))
                        .filter(|a| a.instance_key.as_ref() == Some(&p.instance_key))
                        .map(|a| (*a).clone());
                    let _ = p.answer.send(Ok(mine));
                }
            }
            Err(error) => {
                for p in batch {
                    let _ = p.answer.send(Err(error.clone()));
                }
            }
        }
    }

    /// The records `start_many` left at `started` (slot and the instance
    /// guid that now holds it), from the mirror's records before the batch
    /// (it equals the table under the write lock) and the winning reports.
    /// A slot reported twice in one batch builds on its first result.
    fn started_records(
        &self,
        batch: &[Pending],
        started: &[(store::Slot, String)],
        now: kiln_model::bbs::Nanos,
    ) -> Result<Vec<ActualLrp>, BbsError> {
        let reports: HashMap<(&str, u32, &str), &Pending> = batch
            .iter()
            .map(|p| {
                let slot = (p.key.process_guid.as_str(), p.key.index);
                ((slot.0, slot.1, p.instance_key.instance_guid.as_str()), p)
            })
            .collect();
        let before = self.inner.mirror.records(started.iter().map(|(s, _)| s))?;
        let mut latest: HashMap<&store::Slot, ActualLrp> = HashMap::new();
        for ((slot, instance_guid), record) in started.iter().zip(before) {
            let Some(p) = reports.get(&(slot.0.as_str(), slot.1, instance_guid.as_str())) else {
                continue;
            };
            let before = latest.get(slot).unwrap_or(&record);
            let after = store::started_from(before, p.instance_key.clone(), p.net.clone(), now);
            latest.insert(slot, after);
        }
        Ok(latest.into_values().collect())
    }

    /// The suspect instances whose replacement is among `started` (a
    /// record RUNNING under another instance): their kept rows go in the
    /// batch's transaction, not in a statement each after it (25,000 when
    /// a tenth of 1,000 cells is lost).
    fn replaced_suspects(
        &self,
        started: &[ActualLrp],
    ) -> Vec<(ActualLrpKey, ActualLrpInstanceKey)> {
        started
            .iter()
            .filter_map(|a| {
                let suspect = self.inner.suspects.at(&a.key)?;
                (a.instance_key.as_ref() != Some(&suspect)).then(|| (a.key.clone(), suspect))
            })
            .collect()
    }

    /// Forgets, once their kept rows are gone, the suspect instances whose
    /// replacement runs; the replacement's change event (sent by
    /// `start_actual_lrp`) tells the router.
    fn forget_replaced(&self, replaced: &[(ActualLrpKey, ActualLrpInstanceKey)]) {
        for (key, ik) in replaced {
            if self.inner.suspects.forget(key, ik) {
                tracing::info!(process_guid = %key.process_guid, index = key.index, instance_guid = %ik.instance_guid, "suspect actual lrp removed");
            }
        }
    }
}
