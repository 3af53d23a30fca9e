//! Access log lines: one `RTR` envelope per request that reached an app's
//! route, sent to the app's log stream (what `cf logs` shows), in the shape
//! of Gorouter's access log record.
//!
//! The request path only hands a finished record to a bounded channel;
//! a writer task formats the line and emits it. When the writer falls
//! behind, records are dropped and counted rather than slowing requests
//! (Gorouter's access log writer drops too when its buffer is full).

use crate::backend_io::Lease;
use crate::table::{Endpoint, InFlight};
use bytes::Bytes;
use http::{HeaderValue, Method, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use kiln_logs::LogSink;
use kiln_model::LOG_SOURCE_ROUTER;
use kiln_model::logs::{LogEnvelope, MessageType};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Records waiting for the writer, at most; more are dropped.
const QUEUE: usize = 16 * 1024;
/// How often the writer drains the queue (an RTR line is at most this late).
const WRITER_TICK: Duration = Duration::from_millis(20);

/// What the access line says about one request, gathered as it is handled.
/// Every field is cheap to fill on the request path (header values and the
/// endpoint are shared, not copied); the text is made by the writer.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    /// The Host as the client sent it.
    pub host: HeaderValue,
    pub received_at: SystemTime,
    pub started: Instant,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub client_addr: SocketAddr,
    /// As forwarded to the instance (the client's list plus its address).
    pub x_forwarded_for: Option<HeaderValue>,
    pub x_forwarded_proto: Option<HeaderValue>,
    pub request_id: HeaderValue,
    /// Request body bytes read from the client, counted as they stream.
    pub request_bytes: Arc<AtomicU64>,
    pub endpoint: Arc<Endpoint>,
    pub router_error: Option<String>,
}

/// A record with its outcome, as the writer gets it.
#[derive(Debug)]
pub(crate) struct Finished {
    record: AccessRecord,
    status: u16,
    body_bytes_sent: u64,
    response_time: Duration,
}

impl Finished {
    pub fn line(&self) -> String {
        let r = &self.record;
        let t = time::OffsetDateTime::from(r.received_at);
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
        let e = &r.endpoint;
        format!(
            "{host} - [{received}] {request} {status} {req_bytes} {body_bytes_sent} {referer} {agent} {client} {backend} \
             x_forwarded_for:{xff} x_forwarded_proto:{xfp} vcap_request_id:{id} response_time:{rt:.6} \
             app_id:{app} app_index:{index} instance_id:{instance} x_cf_routererror:{router_error}",
            host = text(&r.host),
            request = quote(&format!("{} {} {:?}", r.method, r.uri, r.version)),
            status = self.status,
            req_bytes = r.request_bytes.load(Ordering::Relaxed),
            body_bytes_sent = self.body_bytes_sent,
            referer = quote_or_dash(r.referer.as_ref().map(text).as_deref()),
            agent = quote_or_dash(r.user_agent.as_ref().map(text).as_deref()),
            client = quote(&r.client_addr.to_string()),
            backend = quote(&e.addr),
            xff = quote(&r.x_forwarded_for.as_ref().map(text).unwrap_or_default()),
            xfp = quote(&r.x_forwarded_proto.as_ref().map(text).unwrap_or_default()),
            id = quote(&text(&r.request_id)),
            rt = self.response_time.as_secs_f64(),
            app = quote(&e.app_guid),
            index = quote(&e.index.to_string()),
            instance = quote(&e.instance_guid),
            router_error = quote_or_dash(r.router_error.as_deref()),
        )
    }

    fn envelope(&self) -> LogEnvelope {
        LogEnvelope {
            timestamp: unix_nanos(),
            source_id: self.record.endpoint.app_guid.clone(),
            instance_id: self.record.endpoint.index.to_string(),
            source_type: LOG_SOURCE_ROUTER.to_string(),
            message_type: MessageType::Out,
            message: self.line(),
        }
    }
}

/// The request path's end of the access log.
#[derive(Clone)]
pub(crate) struct AccessLog {
    queue: mpsc::Sender<Finished>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer task on the current runtime; it ends when every
    /// `AccessLog` is gone and the queue is empty.
    ///
    /// The writer drains the queue on a short tick instead of waiting on
    /// it: a receiver that waits must be woken by every send, which is a
    /// cross-thread wake-up (a system call) per request on the workers.
    pub fn start(logs: Arc<dyn LogSink>) -> AccessLog {
        let (queue, mut receiver) = mpsc::channel::<Finished>(QUEUE);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WRITER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                loop {
                    match receiver.try_recv() {
                        Ok(finished) => logs.emit(finished.envelope()),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
            }
        });
        AccessLog {
            queue,
            dropped: Arc::default(),
        }
    }

    /// Hands the record to the writer; never waits.
    pub fn emit(&self, record: AccessRecord, status: u16, body_bytes_sent: u64) {
        let finished = Finished {
            response_time: record.started.elapsed(),
            record,
            status,
            body_bytes_sent,
        };
        if self.queue.try_send(finished).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "router access log writer is behind; lines dropped");
            }
        }
    }
}

/// Header text for the log; bytes that are not visible ASCII are escaped.
fn text(value: &HeaderValue) -> String {
    match value.to_str() {
        Ok(s) => s.to_string(),
        Err(_) => value.as_bytes().escape_ascii().to_string(),
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
/// bytes and hands the access record over when it is dropped — after the
/// last byte, or when the client went away.
pub(crate) struct LoggedBody {
    inner: Incoming,
    sent: u64,
    status: u16,
    record: Option<AccessRecord>,
    log: AccessLog,
    /// The request counts against the instance's limit until its response is done.
    _in_flight: InFlight,
    /// The connection the response came on, given back to the pool once
    /// the whole body went through.
    lease: Option<Lease>,
}

impl LoggedBody {
    pub fn new(
        inner: Incoming,
        status: u16,
        record: AccessRecord,
        log: AccessLog,
        in_flight: InFlight,
        lease: Option<Lease>,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            sent: 0,
            status,
            record: Some(record),
            log,
            _in_flight: in_flight,
            lease,
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
        // A body dropped before its end leaves its connection mid-response:
        // that one is closed, not reused.
        if let (Some(lease), Some(record)) = (self.lease.take(), &self.record)
            && self.inner.is_end_stream()
        {
            lease.give_back(&record.endpoint.addr);
        }
        if let Some(record) = self.record.take() {
            self.log.emit(record, self.status, self.sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_gorouters_fields_in_order() {
        let received_at: SystemTime = time::Date::from_calendar_date(2024, time::Month::March, 5)
            .unwrap()
            .with_hms_nano(6, 7, 8, 9)
            .unwrap()
            .assume_utc()
            .into();
        let record = AccessRecord {
            host: HeaderValue::from_static("app.test:8080"),
            received_at,
            started: Instant::now(),
            method: Method::POST,
            uri: Uri::from_static("/a?b=c"),
            version: Version::HTTP_11,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
            client_addr: "127.0.0.1:5000".parse().unwrap(),
            x_forwarded_for: Some(HeaderValue::from_static("10.0.0.1, 127.0.0.1")),
            x_forwarded_proto: Some(HeaderValue::from_static("http")),
            request_id: HeaderValue::from_static("rid"),
            request_bytes: Arc::new(AtomicU64::new(12)),
            endpoint: Arc::new(Endpoint::new(
                "127.0.0.1:61000".into(),
                "app-guid".into(),
                "p".into(),
                1,
                "ig".into(),
            )),
            router_error: None,
        };
        let line = Finished {
            record,
            status: 201,
            body_bytes_sent: 34,
            response_time: Duration::from_micros(1500),
        }
        .line();
        let expected = "app.test:8080 - [2024-03-05T06:07:08.000000009Z] \"POST /a?b=c HTTP/1.1\" 201 12 34 \"-\" \"curl/8 \\\"x\\\"\" \"127.0.0.1:5000\" \"127.0.0.1:61000\" x_forwarded_for:\"10.0.0.1, 127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"rid\" response_time:0.001500 app_id:\"app-guid\" app_index:\"1\" instance_id:\"ig\" x_cf_routererror:\"-\"";
        assert_eq!(line, expected);
    }
}
