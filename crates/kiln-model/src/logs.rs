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
