//! Kiln's log service, in the role of Loggregator and log cache.
//!
//! Producers (the cell for `STG` and `APP/...` lines, the router for `RTR`,
//! the API for `API`) hand envelopes to a [`LogSink`]. The [`LogStore`] keeps
//! a bounded recent history per source id (app guid) and wakes readers that
//! follow a stream.
//!
//! Architecture invariant: a producer is never blocked. `emit` takes a
//! short lock, appends, and returns; when a source's history is full the
//! oldest envelope is dropped and counted.

use kiln_model::logs::{ContainerMetric, LogEnvelope};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Where producers send log lines. Implementations must not block.
pub trait LogSink: Send + Sync {
    fn emit(&self, envelope: LogEnvelope);

    /// Several envelopes at once, taken out of `envelopes` (the router's
    /// access log hands over what it gathered in one tick); sinks with a
    /// lock take it once. A sink may put envelopes it lets go of (a full
    /// history's oldest) into `spare`, for the producer to fill again
    /// rather than allocate new ones.
    fn emit_all(&self, envelopes: &mut Vec<LogEnvelope>, spare: &mut Vec<LogEnvelope>) {
        let _ = spare;
        for envelope in envelopes.drain(..) {
            self.emit(envelope);
        }
    }

    /// A container metric (gauge). Sinks that keep only logs drop it.
    fn emit_metric(&self, _metric: ContainerMetric) {}
}

/// How many envelopes one source id keeps (log cache keeps a bounded window too).
pub const DEFAULT_ENVELOPES_PER_SOURCE: usize = 10_000;

pub struct LogStore {
    per_source: usize,
    sources: Mutex<HashMap<String, VecDeque<LogEnvelope>>>,
    dropped: AtomicU64,
    /// The latest container metric per (source id, process id, instance
    /// index), as log cache serves the newest gauge.
    metrics: Mutex<HashMap<MetricKey, ContainerMetric>>,
    /// Bumped on every emit, so followers can wait for new lines.
    generation: watch::Sender<u64>,
}

impl Default for LogStore {
    fn default() -> Self {
        LogStore::new(DEFAULT_ENVELOPES_PER_SOURCE)
    }
}

/// A log-cache style read: envelopes of one source with
/// `start_time <= timestamp < end_time`, oldest first unless `descending`.
#[derive(Debug, Clone)]
pub struct ReadQuery {
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub limit: usize,
    pub descending: bool,
}

impl LogStore {
    pub fn new(per_source: usize) -> Self {
        LogStore {
            per_source,
            sources: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            metrics: Mutex::new(HashMap::new()),
            generation: watch::channel(0).0,
        }
    }

    pub fn read(&self, source_id: &str, query: &ReadQuery) -> Vec<LogEnvelope> {
        let sources = self.sources();
        let Some(buffer) = sources.get(source_id) else {
            return Vec::new();
        };
        let in_window = |e: &&LogEnvelope| {
            e.timestamp >= query.start_time && query.end_time.is_none_or(|end| e.timestamp < end)
        };
        if query.descending {
            buffer
                .iter()
                .rev()
                .filter(in_window)
                .take(query.limit)
                .cloned()
                .collect()
        } else {
            buffer
                .iter()
                .filter(in_window)
                .take(query.limit)
                .cloned()
                .collect()
        }
    }

    /// Envelopes dropped because a source's history was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The latest container metric of each instance of one process.
    pub fn container_metrics(&self, source_id: &str, process_id: &str) -> Vec<ContainerMetric> {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<ContainerMetric> = metrics
            .iter()
            .filter(|((s, p, _), _)| s == source_id && p == process_id)
            .map(|(_, m)| m.clone())
            .collect();
        found.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        found
    }

    /// A receiver that changes whenever any envelope is emitted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Files one envelope into its source's history (the lock held);
    /// returns the oldest one if the history was full.
    fn file(
        &self,
        buffer: &mut VecDeque<LogEnvelope>,
        envelope: LogEnvelope,
    ) -> Option<LogEnvelope> {
        // Keep the buffer ordered by time even if producers race: insert
        // from the back, where nearly every envelope belongs.
        let at = buffer
            .iter()
            .rposition(|e| e.timestamp <= envelope.timestamp)
            .map_or(0, |i| i + 1);
        buffer.insert(at, envelope);
        (buffer.len() > self.per_source)
            .then(|| buffer.pop_front())
            .flatten()
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<LogEnvelope>>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogSink for LogStore {
    fn emit(&self, envelope: LogEnvelope) {
        let evicted = {
            let mut sources = self.sources();
            self.file(history(&mut sources, &envelope.source_id), envelope)
        };
        if evicted.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn emit_all(&self, envelopes: &mut Vec<LogEnvelope>, spare: &mut Vec<LogEnvelope>) {
        if envelopes.is_empty() {
            return;
        }
        let before = spare.len();
        {
            let mut sources = self.sources();
            let mut envelopes = envelopes.drain(..).peekable();
            while let Some(first) = envelopes.next() {
                let buffer = history(&mut sources, &first.source_id);
                spare.extend(self.file(buffer, first));
                // The envelopes after it of the same source (the router's
                // of a busy app, say) go to the same history, not looked
                // up again; every envelope in it has that source id.
                while let Some(next) =
                    envelopes.next_if(|e| buffer.back().is_some_and(|b| b.source_id == e.source_id))
                {
                    spare.extend(self.file(buffer, next));
                }
            }
        }
        self.dropped
            .fetch_add((spare.len() - before) as u64, Ordering::Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }

    fn emit_metric(&self, metric: ContainerMetric) {
        let key = (
            metric.source_id.clone(),
            metric.process_id.clone(),
            metric.instance_id.clone(),
        );
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        // Instances come and go (each process version has its own guid):
        // forget the ones not measured for a while, so the map stays small.
        if metrics.len() >= METRICS_PRUNE_AT {
            let cutoff = metric.timestamp - METRICS_KEPT_NANOS;
            metrics.retain(|_, m| m.timestamp >= cutoff);
        }
        // Keep the newer one if producers race (an old instance's last
        // measurement after its replacement's first).
        if metrics
            .get(&key)
            .is_none_or(|old| old.timestamp <= metric.timestamp)
        {
            metrics.insert(key, metric);
        }
    }
}

/// A source's history, made with its first envelope. Looked up by `&str`:
/// `entry` would want an owned key, a copy of the id per envelope.
fn history<'a>(
    sources: &'a mut HashMap<String, VecDeque<LogEnvelope>>,
    source_id: &str,
) -> &'a mut VecDeque<LogEnvelope> {
    if !sources.contains_key(source_id) {
        sources.insert(source_id.to_owned(), VecDeque::new());
    }
    sources
        .get_mut(source_id)
        .expect("the history was just made")
}

/// (source id, process id, instance index).
type MetricKey = (String, String, String);

/// When the metrics map is this large, entries older than
/// [`METRICS_KEPT_NANOS`] are dropped.
const METRICS_PRUNE_AT: usize = 4096;
const METRICS_KEPT_NANOS: i64 = 10 * 60 * 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::logs::MessageType;

    fn line(source: &str, t: i64, msg: &str) -> LogEnvelope {
        LogEnvelope {
            timestamp: t,
            source_id: source.into(),
            instance_id: "0".into(),
            source_type: "STG".into(),
            message_type: MessageType::Out,
            message: msg.into(),
        }
    }

    fn all() -> ReadQuery {
        ReadQuery {
            start_time: 0,
            end_time: None,
            limit: 100,
            descending: false,
        }
    }

    #[test]
    fn reads_one_source_in_time_order_within_the_window() {
        let store = LogStore::new(10);
        store.emit(line("a", 3, "three"));
        store.emit(line("a", 1, "one"));
        store.emit(line("b", 2, "other app"));
        store.emit(line("a", 2, "two"));
        let got: Vec<_> = store
            .read("a", &all())
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(got, ["one", "two", "three"]);
        let q = ReadQuery {
            start_time: 2,
            end_time: Some(3),
            ..all()
        };
        let got: Vec<_> = store.read("a", &q).into_iter().map(|e| e.message).collect();
        assert_eq!(got, ["two"]);
        let q = ReadQuery {
            descending: true,
            limit: 2,
            ..all()
        };
        let got: Vec<_> = store.read("a", &q).into_iter().map(|e| e.message).collect();
        assert_eq!(got, ["three", "two"]);
        assert!(store.read("nobody", &all()).is_empty());
    }

    fn metric(process: &str, index: &str, t: i64, memory: u64) -> ContainerMetric {
        ContainerMetric {
            timestamp: t,
            source_id: "app".into(),
            process_id: process.into(),
            instance_id: index.into(),
            instance_guid: format!("{process}-{index}"),
            cpu_percentage: 1.5,
            memory_bytes: memory,
            disk_bytes: 10,
            memory_bytes_quota: 100,
            disk_bytes_quota: 1000,
        }
    }

    #[test]
    fn keeps_the_latest_metric_per_instance_of_a_process() {
        let store = LogStore::new(10);
        store.emit_metric(metric("web", "0", 2, 20));
        store.emit_metric(metric("web", "0", 1, 10));
        store.emit_metric(metric("web", "1", 1, 11));
        store.emit_metric(metric("worker", "0", 3, 30));
        let got: Vec<(String, u64)> = store
            .container_metrics("app", "web")
            .into_iter()
            .map(|m| (m.instance_id, m.memory_bytes))
            .collect();
        assert_eq!(got, [("0".into(), 20), ("1".into(), 11)]);
        assert!(store.container_metrics("other", "web").is_empty());
        // Metrics are not log lines.
        assert!(store.read("app", &all()).is_empty());
    }

    #[test]
    fn forgets_instances_not_measured_for_ten_minutes_once_many() {
        let store = LogStore::new(10);
        for i in 0..METRICS_PRUNE_AT {
            store.emit_metric(metric("old", &i.to_string(), 1, 1));
        }
        let later = 1 + METRICS_KEPT_NANOS + 1;
        store.emit_metric(metric("web", "0", later, 5));
        assert!(store.container_metrics("app", "old").is_empty());
        assert_eq!(store.container_metrics("app", "web").len(), 1);
    }

    #[test]
    fn a_batch_is_filed_by_source_and_hands_back_what_it_pushed_out() {
        let store = LogStore::new(2);
        let mut spare = vec![line("old", 0, "kept spare")];
        let mut batch = vec![
            line("a", 1, "a1"),
            line("a", 2, "a2"),
            line("b", 1, "b1"),
            line("a", 3, "a3"),
            line("a", 0, "a0, late"),
            line("b", 2, "b2"),
            line("b", 3, "b3"),
        ];
        store.emit_all(&mut batch, &mut spare);
        assert!(batch.is_empty());
        let messages = |source| -> Vec<String> {
            store
                .read(source, &all())
                .into_iter()
                .map(|e| e.message)
                .collect()
        };
        assert_eq!(messages("a"), ["a2", "a3"]);
        assert_eq!(messages("b"), ["b2", "b3"]);
        let handed_back: Vec<_> = spare.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(handed_back, ["kept spare", "a1", "a0, late", "b1"]);
        assert_eq!(store.dropped(), 3);
    }

    #[test]
    fn a_full_source_drops_its_oldest_and_counts_it() {
        let store = LogStore::new(2);
        for t in 0..5 {
            store.emit(line("a", t, &t.to_string()));
        }
        let got: Vec<_> = store
            .read("a", &all())
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(got, ["3", "4"]);
        assert_eq!(store.dropped(), 3);
    }
}
