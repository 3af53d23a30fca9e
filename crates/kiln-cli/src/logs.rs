//! Reading an app's logs from the log cache (`GET /api/v1/read/<app guid>`),
//! as the cf CLI does: repeated reads from the last timestamp seen, each
//! line printed once, in time order.

use crate::client::Client;
use anyhow::Context;
use base64::Engine;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: i64,
    pub source_type: String,
    pub instance_id: String,
    pub err: bool,
    pub message: String,
}

/// Decodes a log-cache read response; envelopes that are not logs are skipped.
pub fn decode(json: &Value) -> Vec<LogLine> {
    let batch = json["envelopes"]["batch"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut lines: Vec<LogLine> = batch
        .iter()
        .filter_map(|e| {
            let log = e.get("log")?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(log["payload"].as_str()?)
                .ok()?;
            let timestamp = match &e["timestamp"] {
                Value::String(s) => s.parse().ok()?,
                Value::Number(n) => n.as_i64()?,
                _ => return None,
            };
            Some(LogLine {
                timestamp,
                source_type: e["tags"]["source_type"].as_str().unwrap_or("").to_string(),
                instance_id: e["instance_id"].as_str().unwrap_or("").to_string(),
                err: log["type"].as_str() == Some("ERR"),
                message: String::from_utf8_lossy(&payload)
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            })
        })
        .collect();
    lines.sort_by_key(|l| l.timestamp);
    lines
}

/// Follows one app's logs: every `poll` returns the lines not seen yet.
pub struct Follower {
    app_guid: String,
    next_start: i64,
}

impl Follower {
    /// Starts at `start_time` (nanoseconds; 0 for everything kept).
    pub fn new(app_guid: &str, start_time: i64) -> Follower {
        Follower {
            app_guid: app_guid.to_string(),
            next_start: start_time,
        }
    }

    pub async fn poll(&mut self, client: &mut Client) -> anyhow::Result<Vec<LogLine>> {
        anyhow::ensure!(
            !client.config.log_cache.is_empty(),
            "the API advertises no log cache"
        );
        let url = format!(
            "{}/api/v1/read/{}?start_time={}&envelope_types=LOG&limit=1000",
            client.config.log_cache.trim_end_matches('/'),
            self.app_guid,
            self.next_start
        );
        let json = client.get(&url).await.context("reading logs")?;
        let lines = decode(&json);
        if let Some(last) = lines.last() {
            self.next_start = last.timestamp + 1;
        }
        Ok(lines)
    }
}

/// `2026-11-25T07:00:00.12+0000 [APP/PROC/WEB/0] OUT message`, like `cf logs`.
pub fn format_line(line: &LogLine) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(line.timestamp))
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:02}+0000",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond() / 10
            )
        })
        .unwrap_or_default();
    let source =
        if line.instance_id.is_empty() || line.source_type == "STG" && line.instance_id == "0" {
            line.source_type.clone()
        } else {
            format!("{}/{}", line.source_type, line.instance_id)
        };
    format!(
        "   {when} [{source}] {} {}",
        if line.err { "ERR" } else { "OUT" },
        line.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_log_cache_envelopes_in_time_order() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({"envelopes": {"batch": [
            {"timestamp": "20", "source_id": "a", "instance_id": "0", "tags": {"source_type": "APP/PROC/WEB"},
             "log": {"payload": b64("second\n"), "type": "ERR"}},
            {"timestamp": "10", "source_id": "a", "instance_id": "0", "tags": {"source_type": "STG"},
             "log": {"payload": b64("first"), "type": "OUT"}},
            {"timestamp": "15", "source_id": "a", "gauge": {}},
        ]}});
        let lines = decode(&json);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (
                lines[0].message.as_str(),
                lines[0].source_type.as_str(),
                lines[0].err
            ),
            ("first", "STG", false)
        );
        assert_eq!((lines[1].message.as_str(), lines[1].err), ("second", true));
        assert!(
            format_line(&lines[1]).ends_with("[APP/PROC/WEB/0] ERR second"),
            "{}",
            format_line(&lines[1])
        );
    }
}
