//! Kiln's log service, in the role of Loggregator and log cache.
//!
//! Producers (the cell for `STG` and `APP/...` lines, the router for `RTR`,
//! the API for `API`) hand envelopes to a [`LogSink`]. The [`LogStore`] keeps
//! a bounded recent history per source id (app guid) and wakes readers that
//! follow a stream.
//!
//! Architecture invariant: a producer is never blocked. `emit` takes a
//! short lock, appends, and returns; when a source's history is full the
//! oldest envelope is dropped and counted. All histories together are held
//! to a memory budget too (log cache's memory limit): past it the largest
//! histories lose their oldest envelopes, so memory an app's burst of
//! traffic took comes back, and a busy app never pushes a quiet one's
//! lines out.

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

/// The memory all histories together may take, by default: about ten busy
/// apps' full windows of router lines (~600 bytes an envelope).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

pub struct LogStore {
    per_source: usize,
    max_bytes: usize,
    histories: Mutex<Histories>,
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

/// Every source's history, and the memory they take together.
#[derive(Default)]
struct Histories {
    by_source: HashMap<String, History>,
    bytes: usize,
}

/// One source's envelopes in time order, and the memory they take.
#[derive(Default)]
struct History {
    envelopes: VecDeque<LogEnvelope>,
    bytes: usize,
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
    /// A store keeping `per_source` envelopes of each source, within
    /// [`DEFAULT_MAX_BYTES`] in all.
    pub fn new(per_source: usize) -> Self {
        LogStore::with_max_bytes(per_source, DEFAULT_MAX_BYTES)
    }

    /// A store keeping `per_source` envelopes of each source, within
    /// `max_bytes` in all.
    pub fn with_max_bytes(per_source: usize, max_bytes: usize) -> Self {
        LogStore {
            per_source,
            max_bytes,
            histories: Mutex::default(),
            dropped: AtomicU64::new(0),
            metrics: Mutex::new(HashMap::new()),
            generation: watch::channel(0).0,
        }
    }

    pub fn read(&self, source_id: &str, query: &ReadQuery) -> Vec<LogEnvelope> {
        let histories = self.histories();
        let Some(history) = histories.by_source.get(source_id) else {
            return Vec::new();
        };
        let in_window = |e: &&LogEnvelope| {
            e.timestamp >= query.start_time && query.end_time.is_none_or(|end| e.timestamp < end)
        };
        let envelopes = &history.envelopes;
        if query.descending {
            envelopes
                .iter()
                .rev()
                .filter(in_window)
                .take(query.limit)
                .cloned()
                .collect()
        } else {
            envelopes
                .iter()
                .filter(in_window)
                .take(query.limit)
                .cloned()
                .collect()
        }
    }

    /// Envelopes dropped because a source's history was full or the
    /// store's memory budget was spent.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The memory the histories take (as [`footprint`] counts it).
    pub fn bytes(&self) -> usize {
        self.histories().bytes
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

    fn histories(&self) -> std::sync::MutexGuard<'_, Histories> {
        self.histories.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Past the budget, trims the histories to 7/8 of it (so that a
    /// trim is rare, not one per envelope); what it took, to be dropped
    /// once the lock is let go.
    fn trim(&self, histories: &mut Histories) -> Vec<LogEnvelope> {
        if histories.bytes <= self.max_bytes {
            return Vec::new();
        }
        let target = self.max_bytes - self.max_bytes / 8;
        let level = level(histories.by_source.values().map(|h| h.bytes), target);
        let mut trimmed = Vec::new();
        histories.by_source.retain(|_, history| {
            while history.bytes > level {
                let Some(oldest) = history.envelopes.pop_front() else {
                    break;
                };
                let size = footprint(&oldest);
                history.bytes -= size;
                histories.bytes -= size;
                trimmed.push(oldest);
            }
            !history.envelopes.is_empty()
        });
        self.dropped
            .fetch_add(trimmed.len() as u64, Ordering::Relaxed);
        trimmed
    }
}

impl History {
    /// Files one envelope (the lock held); returns the oldest one if the
    /// history was full. `total` is the store's memory count.
    fn file(
        &mut self,
        envelope: LogEnvelope,
        per_source: usize,
        total: &mut usize,
    ) -> Option<LogEnvelope> {
        // Keep the buffer ordered by time even if producers race: insert
        // from the back, where nearly every envelope belongs.
        let at = self
            .envelopes
            .iter()
            .rposition(|e| e.timestamp <= envelope.timestamp)
            .map_or(0, |i| i + 1);
        let size = footprint(&envelope);
        self.bytes += size;
        *total += size;
        self.envelopes.insert(at, envelope);
        if self.envelopes.len() <= per_source {
            return None;
        }
        let oldest = self.envelopes.pop_front()?;
        let size = footprint(&oldest);
        self.bytes -= size;
        *total -= size;
        Some(oldest)
    }
}

/// The memory an envelope holds: itself and its text (by capacity, what
/// the allocator gave it).
fn footprint(e: &LogEnvelope) -> usize {
    size_of::<LogEnvelope>()
        + e.source_id.capacity()
        + e.instance_id.capacity()
        + e.source_type.capacity()
        + e.message.capacity()
}

/// The water level: the most bytes each history may keep so that all
/// of them together (`sizes`, each cut down to the level) fit `target`.
/// Histories under it keep everything; only the largest are cut.
fn level(sizes: impl Iterator<Item = usize>, target: usize) -> usize {
    let mut sizes: Vec<usize> = sizes.collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let mut rest: usize = sizes.iter().sum();
    // Cut the `cut` largest to one level, keep the others whole: the level
    // is what the target leaves them, if that is no less than the largest
    // one kept whole.
    for cut in 1..=sizes.len() {
        rest -= sizes[cut - 1];
        let Some(room) = target.checked_sub(rest) else {
            continue;
        };
        let level = room / cut;
        if level >= sizes.get(cut).copied().unwrap_or(0) {
            return level;
        }
    }
    0
}

impl LogSink for LogStore {
    fn emit(&self, envelope: LogEnvelope) {
        let (evicted, trimmed) = {
            let mut histories = self.histories();
            let Histories { by_source, bytes } = &mut *histories;
            let evicted =
                history(by_source, &envelope.source_id).file(envelope, self.per_source, bytes);
            (evicted, self.trim(&mut histories))
        };
        if evicted.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(trimmed);
        self.generation.send_modify(|g| *g += 1);
    }

    fn emit_all(&self, envelopes: &mut Vec<LogEnvelope>, spare: &mut Vec<LogEnvelope>) {
        if envelopes.is_empty() {
            return;
        }
        let before = spare.len();
        let trimmed = {
            let mut histories = self.histories();
            let Histories { by_source, bytes } = &mut *histories;
            let mut envelopes = envelopes.drain(..).peekable();
            while let Some(first) = envelopes.next() {
                let history = history(by_source, &first.source_id);
                spare.extend(history.file(first, self.per_source, bytes));
                // The envelopes after it of the same source (the router's
                // of a busy app, say) go to the same history, not looked
                // up again; every envelope in it has that source id.
                while let Some(next) = envelopes.next_if(|e| {
                    history
                        .envelopes
                        .back()
                        .is_some_and(|b| b.source_id == e.source_id)
                }) {
                    spare.extend(history.file(next, self.per_source, bytes));
                }
            }
            self.trim(&mut histories)
        };
        self.dropped
            .fetch_add((spare.len() - before) as u64, Ordering::Relaxed);
        drop(trimmed);
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
fn history<'a>(by_source: &'a mut HashMap<String, History>, source_id: &str) -> &'a mut History {
    if !by_source.contains_key(source_id) {
        by_source.insert(source_id.to_owned(), History::default());
    }
    by_source
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

    fn messages(store: &LogStore, source: &str) -> Vec<String> {
        let query = ReadQuery {
            limit: usize::MAX,
            ..all()
        };
        store
            .read(source, &query)
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn past_its_memory_budget_the_largest_histories_lose_their_oldest() {
        let size = footprint(&line("busy", 0, "line 0000"));
        // Room for 100 such envelopes; each history keeps up to 1,000.
        let store = LogStore::with_max_bytes(1000, 100 * size);
        for t in 0..10 {
            store.emit(line("quiet", t, &format!("line {t:04}")));
        }
        for t in 10..510 {
            store.emit(line("busy", t, &format!("line {t:04}")));
        }
        assert!(
            store.bytes() <= 100 * size,
            "{} > {}",
            store.bytes(),
            100 * size
        );
        // The quiet app keeps every line; the busy one its newest, in order.
        assert_eq!(messages(&store, "quiet").len(), 10);
        let busy = messages(&store, "busy");
        assert!(busy.len() >= 70, "{}", busy.len());
        let newest: Vec<String> = (510 - busy.len()..510)
            .map(|t| format!("line {t:04}"))
            .collect();
        assert_eq!(busy, newest);
        assert_eq!(store.dropped(), 500 - busy.len() as u64);
        // What the histories hold is what the store counts.
        let counted: usize = store
            .histories()
            .by_source
            .values()
            .flat_map(|h| h.envelopes.iter())
            .map(footprint)
            .sum();
        assert_eq!(store.bytes(), counted);
    }

    #[test]
    fn a_batch_past_the_budget_is_trimmed_too_and_apps_share_what_is_left() {
        let size = footprint(&line("a", 0, "line 0000"));
        let store = LogStore::with_max_bytes(1000, 80 * size);
        let mut batch: Vec<LogEnvelope> = (0..300)
            .flat_map(|t| ["a", "b", "c"].map(|app| line(app, t, &format!("line {t:04}"))))
            .collect();
        store.emit_all(&mut batch, &mut Vec::new());
        assert!(store.bytes() <= 80 * size);
        let kept: Vec<usize> = ["a", "b", "c"]
            .map(|app| messages(&store, app).len())
            .into();
        // Cut to one level: within one envelope of each other, each its newest.
        assert!(
            kept.iter().max().unwrap() - kept.iter().min().unwrap() <= 1,
            "{kept:?}"
        );
        assert_eq!(
            messages(&store, "c").last().map(String::as_str),
            Some("line 0299")
        );
        assert_eq!(store.dropped(), 900 - kept.iter().sum::<usize>() as u64);
    }

    #[test]
    fn a_history_trimmed_to_nothing_is_forgotten() {
        let size = footprint(&line("a", 0, "line 0000"));
        // Room for two envelopes: the third trims all three histories to
        // the same level, under one envelope.
        let store = LogStore::with_max_bytes(1000, 2 * size);
        for (t, app) in ["a", "b", "c"].into_iter().enumerate() {
            store.emit(line(app, t as i64, "line 0000"));
        }
        assert!(store.histories().by_source.is_empty());
        assert_eq!((store.bytes(), store.dropped()), (0, 3));
        store.emit(line("a", 4, "line 0004"));
        assert_eq!(messages(&store, "a"), ["line 0004"]);
    }

    #[test]
    fn the_level_cuts_only_the_largest_sizes() {
        // 100 + 50 + 10 into 100: the two largest cut to 45 each.
        assert_eq!(level([100, 50, 10].into_iter(), 100), 45);
        // All fit: the level is at least the largest.
        assert!(level([10, 20].into_iter(), 100) >= 20);
        // One history: cut to the target.
        assert_eq!(level([500].into_iter(), 100), 100);
        assert_eq!(level([].into_iter(), 100), 0);
        // Even shares when all are large.
        assert_eq!(level([90, 90, 90].into_iter(), 60), 20);
    }
}
