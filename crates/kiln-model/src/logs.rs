//! A log line as Loggregator carries it: one envelope per line, tagged with
//! the app it belongs to (`source_id`, the log guid), the source type (`STG`,
//! `APP/PROC/WEB`, `RTR`, …) and the instance.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageType {
    #[serde(rename = "OUT")]
    Out,
    #[serde(rename = "ERR")]
    Err,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEnvelope {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The app guid (Diego's log guid).
    pub source_id: String,
    /// Instance index, or empty for platform lines.
    pub instance_id: String,
    /// `STG`, `APP/PROC/WEB`, `RTR`, `API`, `CELL`.
    pub source_type: String,
    pub message_type: MessageType,
    pub message: String,
}

/// One instance's usage as the cell measured it: Loggregator's container
/// metric (a gauge envelope), emitted by the cell every
/// [`CONTAINER_METRICS_INTERVAL_MS`] and read by the API's process stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetric {
    /// Nanoseconds since the Unix epoch, when measured.
    pub timestamp: i64,
    /// The app guid (Diego's log guid), as for log lines.
    pub source_id: String,
    /// The DesiredLrp's process guid (tag `process_id`): one app's process
    /// types share the source id.
    pub process_id: String,
    /// The instance index.
    pub instance_id: String,
    /// The ActualLrp instance guid (tag `process_instance_id`).
    pub instance_guid: String,
    /// CPU used since the previous measurement, in percent of one core.
    pub cpu_percentage: f64,
    /// Memory counted against the limit (RSS and active page cache).
    pub memory_bytes: u64,
    /// Bytes written to the container's disk.
    pub disk_bytes: u64,
    pub memory_bytes_quota: u64,
    pub disk_bytes_quota: u64,
}

/// How often a cell measures each instance (Diego's rep: 15 s; CF's stats
/// are promised fresh within 15 s).
pub const CONTAINER_METRICS_INTERVAL_MS: u64 = 10_000;
