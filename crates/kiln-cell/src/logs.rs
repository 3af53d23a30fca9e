//! Turning container output into log envelopes.
//!
//! Each stdout/stderr line of a container process becomes one
//! [`LogEnvelope`] tagged with the work's log guid, log source and instance
//! index; the cell's own lines about a container (creating, downloading,
//! health, stopping) use source type `CELL`, as Diego's executor does.
//! Overlong lines are split, as Loggregator caps a message's size.

use kiln_logs::LogSink;
use kiln_model::logs::{LogEnvelope, MessageType};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest message one envelope carries (Loggregator's cap is about 61 KB).
pub const MAX_LINE: usize = 60 * 1024;

/// Where one unit of work's lines go.
#[derive(Clone)]
pub struct LogTarget {
    pub sink: Arc<dyn LogSink>,
    pub source_id: String,
    pub source_type: String,
    pub instance_id: String,
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl LogTarget {
    pub fn emit(&self, message_type: MessageType, message: String) {
        self.sink.emit(LogEnvelope {
            timestamp: now_nanos(),
            source_id: self.source_id.clone(),
            instance_id: self.instance_id.clone(),
            source_type: self.source_type.clone(),
            message_type,
            message,
        });
    }

    pub fn out(&self, message: impl Into<String>) {
        self.emit(MessageType::Out, message.into());
    }

    pub fn err(&self, message: impl Into<String>) {
        self.emit(MessageType::Err, message.into());
    }

    /// The same app and instance, as the cell speaking (`CELL`).
    pub fn cell(&self) -> LogTarget {
        LogTarget {
            source_type: kiln_model::LOG_SOURCE_CELL.into(),
            ..self.clone()
        }
    }
}

/// Emits every line of `reader` until it ends.
pub async fn pump(reader: impl AsyncRead + Unpin, target: LogTarget, message_type: MessageType) {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(_) => break,
        };
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_LINE - line.len();
        let take = take.min(room);
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if (complete && line.ends_with(b"\n")) || line.len() >= MAX_LINE {
            emit_line(&target, message_type, &mut line);
        }
    }
    if !line.is_empty() {
        emit_line(&target, message_type, &mut line);
    }
}

fn emit_line(target: &LogTarget, message_type: MessageType, line: &mut Vec<u8>) {
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    target.emit(message_type, String::from_utf8_lossy(line).into_owned());
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<LogEnvelope>>);
    impl LogSink for Collect {
        fn emit(&self, envelope: LogEnvelope) {
            self.0.lock().unwrap().push(envelope);
        }
    }

    #[tokio::test]
    async fn splits_lines_and_caps_their_length() {
        let sink = Arc::new(Collect::default());
        let target = LogTarget {
            sink: sink.clone(),
            source_id: "app".into(),
            source_type: "STG".into(),
            instance_id: "0".into(),
        };
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\r\ntwo\n\n{long}\nlast");
        pump(input.as_bytes(), target, MessageType::Out).await;
        let got: Vec<String> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(got.len(), 6);
        assert_eq!(&got[..3], ["one", "two", ""]);
        assert_eq!(got[3].len(), MAX_LINE);
        assert_eq!(got[4], "x".repeat(10));
        assert_eq!(got[5], "last");
    }
}
