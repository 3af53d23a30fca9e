//! A `LogSink` for a role outside the API's process: app logs and
//! container metrics go to the BBS server's log ingress, which hands them
//! to the log service (Loggregator's agent → doppler path, in one hop).
//!
//! The producer never waits: envelopes enter a bounded queue, and when it
//! is full (or the server cannot be reached) they are dropped and counted,
//! as the in-process log store does with its bounded window.

use crate::wire::{self, LogBatch};
use crate::{BbsError, HttpBbsClient};
use kiln_logs::LogSink;
use kiln_model::logs::{ContainerMetric, LogEnvelope};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Envelopes waiting to be sent, at most.
const QUEUE: usize = 10_000;
/// Envelopes per request, at most.
const BATCH: usize = 500;

enum Item {
    Log(LogEnvelope),
    Metric(ContainerMetric),
}

pub struct HttpLogSink {
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

impl HttpLogSink {
    /// Starts the sender task; it ends when the sink is dropped.
    pub fn new(client: HttpBbsClient) -> HttpLogSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(send_batches(client, rx, dropped.clone()));
        HttpLogSink { tx, dropped }
    }

    /// Envelopes lost so far: queue full or the server unreachable.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn push(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl LogSink for HttpLogSink {
    fn emit(&self, envelope: LogEnvelope) {
        self.push(Item::Log(envelope));
    }

    fn emit_metric(&self, metric: ContainerMetric) {
        self.push(Item::Metric(metric));
    }
}

async fn send_batches(
    client: HttpBbsClient,
    mut rx: mpsc::Receiver<Item>,
    dropped: Arc<AtomicU64>,
) {
    let mut warned_at = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = LogBatch::default();
        let mut add = |item| match item {
            Item::Log(e) => batch.envelopes.push(e),
            Item::Metric(m) => batch.metrics.push(m),
        };
        add(first);
        let mut n = 1;
        while n < BATCH {
            match rx.try_recv() {
                Ok(item) => add(item),
                Err(_) => break,
            }
            n += 1;
        }
        let count = (batch.envelopes.len() + batch.metrics.len()) as u64;
        let result: Result<(), BbsError> = async {
            let response = client
                .post(wire::LOGS)
                .json(&batch)
                .send()
                .await
                .map_err(|e| BbsError::Unavailable(e.to_string()))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body = response.bytes().await.unwrap_or_default();
            Err(crate::http::error_from_answer(status, &body))
        }
        .await;
        if let Err(error) = result {
            let total = dropped.fetch_add(count, Ordering::Relaxed) + count;
            // One warning per thousand lost, not one per batch.
            if total / 1000 >= warned_at {
                warned_at = total / 1000 + 1;
                tracing::warn!(%error, dropped = total, "log envelopes not delivered");
            }
        }
    }
}
