//! Reading an app's logs from the log cache
//! (`GET {log_cache}/api/v1/read/<app guid>`), as the cf CLI does: no
//! stream, but repeated reads from just after the last timestamp seen, so
//! each line is printed once and in time order.
//!
//! A follower reads only lines that have settled: older than
//! [`SETTLE`] by the client's clock (the cf CLI's walk delay). Lines come
//! from several producers (the router, each cell) stamped by their own
//! clocks and reach the log cache a little after their time; reading up to
//! the moment would move past a cell's line that arrives after a later
//! router line was read, and it would never be printed.

use crate::client::{Body, Client};
use anyhow::Context;
use base64::Engine;
use kiln_model::logs::{LogEnvelope, MessageType};
use reqwest::Method;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most envelopes one read returns (log cache's own maximum).
const READ_LIMIT: u32 = 1000;

/// How old a line must be before a follower reads it: the cf CLI's walk
/// delay, which it raised from log cache's one second after losing lines
/// on foundations with several log cache nodes.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Decodes a log-cache read answer (`{"envelopes":{"batch":[…]}}`, payloads
/// base64, timestamps decimal strings) into log lines, oldest first;
/// envelopes that are not logs are skipped.
pub fn decode(json: &Value) -> Vec<LogEnvelope> {
    let empty = Vec::new();
    let batch = json["envelopes"]["batch"].as_array().unwrap_or(&empty);
    let mut lines: Vec<LogEnvelope> = batch
        .iter()
        .filter_map(|e| {
            let log = e.get("log")?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(log["payload"].as_str().unwrap_or_default())
                .ok()?;
            let timestamp = match &e["timestamp"] {
                Value::String(s) => s.parse().ok()?,
                Value::Number(n) => n.as_i64()?,
                _ => return None,
            };
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_string();
            Some(LogEnvelope {
                timestamp,
                source_id: e["source_id"]
                    .as_str()
                    .or(e["sourceId"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                instance_id: text("instance_id"),
                source_type: e["tags"]["source_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                message_type: if log["type"] == "ERR" {
                    MessageType::Err
                } else {
                    MessageType::Out
                },
                message: String::from_utf8_lossy(&payload)
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            })
        })
        .collect();
    lines.sort_by_key(|l| l.timestamp);
    lines
}

/// One read of an app's log lines.
async fn read(
    client: &mut Client,
    app_guid: &str,
    start_time: i64,
    end_time: Option<i64>,
    limit: u32,
    descending: bool,
) -> anyhow::Result<Vec<LogEnvelope>> {
    anyhow::ensure!(
        !client.config.log_cache.is_empty(),
        "the API advertises no log cache; log in again with 'kiln login' to refresh its links"
    );
    let mut url = format!(
        "{}/api/v1/read/{app_guid}?start_time={start_time}&envelope_types=LOG&limit={limit}",
        client.config.log_cache.trim_end_matches('/'),
    );
    if let Some(end_time) = end_time {
        url.push_str(&format!("&end_time={end_time}"));
    }
    if descending {
        url.push_str("&descending=true");
    }
    let reply = client
        .call(Method::GET, &url, Body::Empty)
        .await
        .context("reading logs from the log cache")?;
    Ok(decode(&reply.json()?))
}

/// The newest lines kept (up to 1000), oldest first: `kiln logs --recent`.
pub async fn recent(client: &mut Client, app_guid: &str) -> anyhow::Result<Vec<LogEnvelope>> {
    read(client, app_guid, 0, None, READ_LIMIT, true).await
}

/// Lines stamped before this have settled ([`SETTLE`]), by the client's
/// clock (nanoseconds since the epoch).
pub fn settled_before() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    now - SETTLE.as_nanos() as i64
}

/// Follows one app's logs: every `poll` returns the lines not seen yet,
/// oldest first, each once.
pub struct Follower {
    app_guid: String,
    next_start: i64,
}

impl Follower {
    /// Starts at `start_time` (nanoseconds since the epoch).
    pub fn starting_at(app_guid: &str, start_time: i64) -> Follower {
        Follower {
            app_guid: app_guid.to_string(),
            next_start: start_time.max(0),
        }
    }

    /// Starts after the newest line the log cache holds now, so only what
    /// is written from here on is returned (the server's clock decides, not
    /// ours).
    pub async fn from_now(client: &mut Client, app_guid: &str) -> anyhow::Result<Follower> {
        let newest = read(client, app_guid, 0, None, 1, true).await?;
        Ok(Follower::starting_at(
            app_guid,
            newest.iter().map(|l| l.timestamp + 1).max().unwrap_or(0),
        ))
    }

    /// Never returns lines older than `start_time` (e.g. a build's start).
    pub fn not_before(&mut self, start_time: i64) {
        self.next_start = self.next_start.max(start_time);
    }

    /// The lines written since the last poll that have settled (older
    /// than [`SETTLE`]), oldest first.
    pub async fn poll(&mut self, client: &mut Client) -> anyhow::Result<Vec<LogEnvelope>> {
        self.read_until(client, Some(settled_before())).await
    }

    /// Every line written since the last poll, settled or not: the last
    /// read once what was followed is over (a build that finished).
    pub async fn flush(&mut self, client: &mut Client) -> anyhow::Result<Vec<LogEnvelope>> {
        self.read_until(client, None).await
    }

    async fn read_until(
        &mut self,
        client: &mut Client,
        end_time: Option<i64>,
    ) -> anyhow::Result<Vec<LogEnvelope>> {
        let mut all = Vec::new();
        loop {
            let lines = read(
                client,
                &self.app_guid,
                self.next_start,
                end_time,
                READ_LIMIT,
                false,
            )
            .await?;
            let full = lines.len() >= READ_LIMIT as usize;
            all.extend(self.take_new(lines, end_time));
            // A full batch means more are waiting.
            if !full {
                return Ok(all);
            }
        }
    }

    /// The lines of one read that were not returned before and are older
    /// than `end_time`, in time order; moves the start past them. Filtering
    /// here too keeps each line once, and a line that has not settled for
    /// a later read, even against a server that ignores the bounds.
    pub fn take_new(
        &mut self,
        mut lines: Vec<LogEnvelope>,
        end_time: Option<i64>,
    ) -> Vec<LogEnvelope> {
        lines.sort_by_key(|l| l.timestamp);
        lines.retain(|l| {
            l.timestamp >= self.next_start && end_time.is_none_or(|end| l.timestamp < end)
        });
        if let Some(last) = lines.last() {
            self.next_start = last.timestamp + 1;
        }
        lines
    }
}

/// An RFC 3339 time (a resource's `created_at`) in nanoseconds since the
/// epoch, the log cache's unit.
pub fn rfc3339_nanos(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// A time as the cf CLI shows it in logs and events, in UTC
/// (`2026-11-25T07:00:00.12+0000`).
pub fn cf_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
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
}

/// `   2026-11-25T07:00:00.12+0000 [APP/PROC/WEB/0] OUT message`, the cf
/// CLI's layout (in UTC).
pub fn format_line(line: &LogEnvelope) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(line.timestamp))
        .map(cf_time)
        .unwrap_or_default();
    let source = if line.instance_id.is_empty() {
        line.source_type.clone()
    } else {
        format!("{}/{}", line.source_type, line.instance_id)
    };
    let stream = match line.message_type {
        MessageType::Out => "OUT",
        MessageType::Err => "ERR",
    };
    format!("   {when} [{source}] {stream} {}", line.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_log_cache_envelopes_in_time_order() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({"envelopes": {"batch": [
            {"timestamp": "1767225600123456789", "source_id": "a", "instance_id": "0",
             "deprecated_tags": {}, "tags": {"source_type": "APP/PROC/WEB"},
             "log": {"payload": b64("second\n"), "type": "ERR"}},
            {"timestamp": "1767225600000000000", "source_id": "a", "instance_id": "0",
             "tags": {"source_type": "STG"}, "log": {"payload": b64("first"), "type": "OUT"}},
            {"timestamp": "15", "source_id": "a", "gauge": {"metrics": {}}},
            {"timestamp": 16, "sourceId": "b", "log": {"payload": b64("numeric"), "type": "OUT"}},
        ]}});
        let lines = decode(&json);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].message, "numeric");
        assert_eq!(lines[0].source_id, "b");
        assert_eq!(
            lines[1],
            LogEnvelope {
                timestamp: 1_767_225_600_000_000_000,
                source_id: "a".into(),
                instance_id: "0".into(),
                source_type: "STG".into(),
                message_type: MessageType::Out,
                message: "first".into(),
            }
        );
        assert_eq!(lines[2].message_type, MessageType::Err);
        assert_eq!(lines[2].message, "second");
        assert_eq!(
            format_line(&lines[2]),
            "   2026-01-01T00:00:00.12+0000 [APP/PROC/WEB/0] ERR second"
        );
        assert!(decode(&serde_json::json!({})).is_empty());
    }

    fn line(timestamp: i64, message: &str) -> LogEnvelope {
        LogEnvelope {
            timestamp,
            source_id: "a".into(),
            instance_id: "0".into(),
            source_type: "STG".into(),
            message_type: MessageType::Out,
            message: message.into(),
        }
    }

    #[test]
    fn followers_return_each_line_once_in_order() {
        let mut follower = Follower::starting_at("a", 0);
        follower.not_before(10);
        let first = follower.take_new(vec![line(30, "c"), line(5, "old"), line(20, "b")], None);
        let texts: Vec<_> = first.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["b", "c"]);
        // A server that ignores start_time sends everything again.
        let second = follower.take_new(vec![line(20, "b"), line(30, "c"), line(31, "d")], None);
        assert_eq!(second, [line(31, "d")]);
        assert!(follower.take_new(vec![line(31, "d")], None).is_empty());
        follower.not_before(0);
        assert!(follower.take_new(vec![line(25, "late")], None).is_empty());
    }

    #[test]
    fn a_line_that_arrives_late_but_before_it_settles_is_still_returned() {
        let mut follower = Follower::starting_at("a", 0);
        // A router line at 50 is in the cache; reading up to 40 leaves it.
        let first = follower.take_new(vec![line(10, "app"), line(50, "rtr")], Some(40));
        assert_eq!(first, [line(10, "app")]);
        // A cell's line at 30 arrives after the router's: not skipped.
        let second = follower.take_new(
            vec![line(10, "app"), line(30, "late app"), line(50, "rtr")],
            Some(60),
        );
        assert_eq!(second, [line(30, "late app"), line(50, "rtr")]);
    }

    #[test]
    fn created_at_in_nanoseconds() {
        assert_eq!(
            rfc3339_nanos("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000_000_000)
        );
        assert_eq!(
            rfc3339_nanos("2026-01-01T00:00:00.5Z"),
            Some(1_767_225_600_500_000_000)
        );
        assert_eq!(rfc3339_nanos(""), None);
    }
}
