//! Access log lines: one `RTR` envelope per request that reached an app's
//! route, sent to the app's log stream (what `cf logs` shows), in the shape
//! of Gorouter's access log record.
//!
//! The line is written when the response body is finished (or abandoned),
//! so it carries the bytes really sent and the whole response time.

use crate::table::Endpoint;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use kiln_logs::LogSink;
use kiln_model::LOG_SOURCE_ROUTER;
use kiln_model::logs::{LogEnvelope, MessageType};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the access line says about one request, gathered as it is handled.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    /// The Host as the client sent it.
    pub host: String,
    pub received_at: time::OffsetDateTime,
    pub started: Instant,
    pub method: String,
    pub uri: String,
    pub proto: String,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    pub client_addr: SocketAddr,
    /// As forwarded to the instance (the client's list plus its address).
    pub x_forwarded_for: String,
    pub x_forwarded_proto: String,
    pub request_id: String,
    /// Request body bytes read from the client, counted as they stream.
    pub request_bytes: Arc<AtomicU64>,
    pub endpoint: Endpoint,
    pub router_error: Option<String>,
}

impl AccessRecord {
    pub fn line(&self, status: u16, body_bytes_sent: u64) -> String {
        let t = self.received_at;
        let received = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        );
        let e = &self.endpoint;
        format!(
            "{host} - [{received}] {request} {status} {req_bytes} {body_bytes_sent} {referer} {agent} {client} {backend} \
             x_forwarded_for:{xff} x_forwarded_proto:{xfp} vcap_request_id:{id} response_time:{rt:.6} \
             app_id:{app} app_index:{index} instance_id:{instance} x_cf_routererror:{router_error}",
            host = self.host,
            request = quote(&format!("{} {} {}", self.method, self.uri, self.proto)),
            req_bytes = self.request_bytes.load(Ordering::Relaxed),
            referer = quote_or_dash(self.referer.as_deref()),
            agent = quote_or_dash(self.user_agent.as_deref()),
            client = quote(&self.client_addr.to_string()),
            backend = quote(&e.addr),
            xff = quote(&self.x_forwarded_for),
            xfp = quote(&self.x_forwarded_proto),
            id = quote(&self.request_id),
            rt = self.started.elapsed().as_secs_f64(),
            app = quote(&e.app_guid),
            index = quote(&e.index.to_string()),
            instance = quote(&e.instance_guid),
            router_error = quote_or_dash(self.router_error.as_deref()),
        )
    }

    /// Sends the line to the app's log stream, as instance `index`'s `RTR` line.
    pub fn emit(&self, logs: &dyn LogSink, status: u16, body_bytes_sent: u64) {
        logs.emit(LogEnvelope {
            timestamp: unix_nanos(),
            source_id: self.endpoint.app_guid.clone(),
            instance_id: self.endpoint.index.to_string(),
            source_type: LOG_SOURCE_ROUTER.to_string(),
            message_type: MessageType::Out,
            message: self.line(status, body_bytes_sent),
        });
    }
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => quote(v),
        _ => "\"-\"".to_string(),
    }
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The instance's response body on its way to the client: counts the
/// bytes and writes the access line when it is dropped — after the last
/// byte, or when the client went away.
pub(crate) struct LoggedBody {
    inner: Incoming,
    sent: u64,
    status: u16,
    record: Option<AccessRecord>,
    logs: Arc<dyn LogSink>,
}

impl LoggedBody {
    pub fn new(
        inner: Incoming,
        status: u16,
        record: AccessRecord,
        logs: Arc<dyn LogSink>,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            sent: 0,
            status,
            record: Some(record),
            logs,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.emit(self.logs.as_ref(), self.status, self.sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_gorouters_fields_in_order() {
        let record = AccessRecord {
            host: "app.test:8080".into(),
            received_at: time::Date::from_calendar_date(2024, time::Month::March, 5)
                .unwrap()
                .with_hms_nano(6, 7, 8, 9)
                .unwrap()
                .assume_utc(),
            started: Instant::now(),
            method: "POST".into(),
            uri: "/a?b=c".into(),
            proto: "HTTP/1.1".into(),
            referer: None,
            user_agent: Some("curl/8 \"x\"".into()),
            client_addr: "127.0.0.1:5000".parse().unwrap(),
            x_forwarded_for: "10.0.0.1, 127.0.0.1".into(),
            x_forwarded_proto: "http".into(),
            request_id: "rid".into(),
            request_bytes: Arc::new(AtomicU64::new(12)),
            endpoint: Endpoint {
                addr: "127.0.0.1:61000".into(),
                app_guid: "app-guid".into(),
                process_guid: "p".into(),
                index: 1,
                instance_guid: "ig".into(),
            },
            router_error: None,
        };
        let line = record.line(201, 34);
        let expected_start = "app.test:8080 - [2024-03-05T06:07:08.000000009Z] \"POST /a?b=c HTTP/1.1\" 201 12 34 \"-\" \"curl/8 \\\"x\\\"\" \"127.0.0.1:5000\" \"127.0.0.1:61000\" x_forwarded_for:\"10.0.0.1, 127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"rid\" response_time:";
        assert!(line.starts_with(expected_start), "{line}");
        assert!(
            line.ends_with(
                " app_id:\"app-guid\" app_index:\"1\" instance_id:\"ig\" x_cf_routererror:\"-\""
            ),
            "{line}"
        );
    }
}
