//! Desires written in batches (group commit), as cells' reports are
//! (`reports.rs`).
//!
//! Each desire was a transaction of its own under the write lock, then an
//! auction wake-up; a push storm of 25,000 apps was 25,000 commits, each
//! waiting its turn behind the auction's and the reports' batches. A desire
//! now joins a queue and waits for the write lock; whoever gets it writes
//! the whole queue in one transaction and answers each desire. Under no
//! load a batch is just the one desire.

use crate::store::{self, db};
use crate::{Bbs, BbsError, now_nanos};
use kiln_model::bbs::{BbsEvent, DesiredLrp};
use sqlx::Connection as _;
use std::sync::Mutex;
use tokio::sync::oneshot;

type Answer = Result<(), BbsError>;

struct Pending {
    desired: DesiredLrp,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
pub(crate) struct PendingDesires {
    queue: Mutex<Vec<Pending>>,
}

impl PendingDesires {
    fn push(&self, pending: Pending) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pending);
    }

    fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn dropped() -> BbsError {
    BbsError::Unavailable("the desire was dropped".into())
}

impl Bbs {
    /// Creates the DesiredLrp and its UNCLAIMED instances as part of a
    /// batch; `AlreadyExists` if its guid is taken.
    pub(crate) async fn desire_batched(&self, desired: DesiredLrp) -> Answer {
        let (answer, mut answered) = oneshot::channel();
        self.inner.desires.push(Pending { desired, answer });
        tokio::select! {
            // Written by another holder of the lock meanwhile.
            biased;
            answer = &mut answered => return answer.map_err(|_| dropped())?,
            write = self.inner.write.lock() => {
                let batch = self.inner.desires.take();
                if !batch.is_empty() {
                    self.write_desires(batch).await;
                }
                drop(write);
            }
        }
        answered.await.map_err(|_| dropped())?
    }

    /// The batch in one transaction; each desire answered with its own
    /// outcome (a taken guid fails only that desire).
    async fn write_desires(&self, batch: Vec<Pending>) {
        let now = now_nanos();
        let written = async {
            let mut conn = self.inner.writer.conn(&self.inner.pool).await?;
            let mut tx = conn.begin().await.map_err(db)?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for p in &batch {
                let d = &p.desired;
                if !store::insert_desired_lrp(&mut tx, d, now).await? {
                    outcomes.push(None);
                    continue;
                }
                let indices: Vec<u32> = (0..d.instances).collect();
                outcomes.push(Some(
                    store::insert_unclaimed(&mut tx, d, &indices, now).await?,
                ));
            }
            tx.commit().await.map_err(db)?;
            Ok::<_, BbsError>(outcomes)
        }
        .await;
        let outcomes = match written {
            Ok(outcomes) => outcomes,
            Err(error) => {
                for p in batch {
                    let _ = p.answer.send(Err(error.clone()));
                }
                return;
            }
        };
        // The mirror follows the commit (under the write lock still held);
        // events and the auction's wake-up go out before the answers, as
        // when each desire was written alone.
        let mut events = Vec::new();
        let mut answers = Vec::with_capacity(outcomes.len());
        for (p, created) in batch.into_iter().zip(outcomes) {
            let Some(created) = created else {
                let taken = BbsError::AlreadyExists {
                    kind: "desired lrp",
                    guid: p.desired.process_guid,
                };
                answers.push((p.answer, Err(taken)));
                continue;
            };
            self.inner.mirror.put_desired(&p.desired);
            self.inner.mirror.put(&created);
            tracing::info!(process_guid = %p.desired.process_guid, instances = p.desired.instances, "desired lrp created");
            events.push(BbsEvent::DesiredLrpChanged {
                desired_lrp: p.desired,
            });
            events.extend(
                created
                    .into_iter()
                    .map(|actual_lrp| BbsEvent::ActualLrpChanged { actual_lrp }),
            );
            answers.push((p.answer, Ok(())));
        }
        let any = !events.is_empty();
        events.into_iter().for_each(|e| self.emit(e));
        if any {
            self.wake_auction();
        }
        for (answer, outcome) in answers {
            let _ = answer.send(outcome);
        }
    }
}
