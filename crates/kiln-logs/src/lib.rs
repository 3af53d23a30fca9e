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

use kiln_model::logs::LogEnvelope;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Where producers send log lines. Implementations must not block.
pub trait LogSink: Send + Sync {
    fn emit(&self, envelope: LogEnvelope);
}

/// How many envelopes one source id keeps (log cache keeps a bounded window too).
pub const DEFAULT_ENVELOPES_PER_SOURCE: usize = 10_000;

pub struct LogStore {
    per_source: usize,
    sources: Mutex<HashMap<String, VecDeque<LogEnvelope>>>,
    dropped: AtomicU64,
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
            generation: watch::channel(0).0,
        }
    }

    pub fn read(&self, source_id: &str, query: &ReadQuery) -> Vec<LogEnvelope> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
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

    /// A receiver that changes whenever any envelope is emitted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

impl LogSink for LogStore {
    fn emit(&self, envelope: LogEnvelope) {
        {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            let buffer = sources.entry(envelope.source_id.clone()).or_default();
            // Keep the buffer ordered by time even if producers race: insert
            // from the back, where nearly every envelope belongs.
            let at = buffer
                .iter()
                .rposition(|e| e.timestamp <= envelope.timestamp)
                .map_or(0, |i| i + 1);
            buffer.insert(at, envelope);
            if buffer.len() > self.per_source {
                buffer.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

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
