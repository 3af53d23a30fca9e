//! Access log lines: one `RTR` envelope per request that reached an app's
//! route, sent to the app's log stream (what `cf logs` shows), in the shape
//! of Gorouter's access log record.
//!
//! The request path only hands a finished record to a bounded channel;
//! a writer task formats the line and emits it. When the writer falls
//! behind, records are dropped and counted rather than slowing requests
//! (Gorouter's access log writer drops too when its buffer is full).

use crate::h1::{InstanceBody, InstanceError};
use crate::table::{Endpoint, InFlight};
use bytes::Bytes;
use http::{HeaderValue, Method, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use kiln_logs::LogSink;
use kiln_model::LOG_SOURCE_ROUTER;
use kiln_model::logs::{LogEnvelope, MessageType};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Gorouter's access line, written into one string.
    pub fn line(&self) -> String {
        let r = &self.record;
        let e = &r.endpoint;
        let mut out = String::with_capacity(512);
        let t = time::OffsetDateTime::from(r.received_at);
        push_text(&mut out, &r.host);
        let _ = write!(
            out,
            " - [{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z] \"{} ",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond(),
            r.method,
        );
        // The origin form's text as it came; only an absolute form is
        // put together again.
        match r.uri.path_and_query() {
            Some(target) if r.uri.scheme().is_none() => push_escaped(&mut out, target.as_str()),
            _ => push_escaped(&mut out, &r.uri.to_string()),
        }
        let _ = write!(
            out,
            " {:?}\" {} {} {} ",
            r.version,
            self.status,
            r.request_bytes.load(Ordering::Relaxed),
            self.body_bytes_sent
        );
        push_quoted_or_dash(&mut out, r.referer.as_ref());
        out.push(' ');
        push_quoted_or_dash(&mut out, r.user_agent.as_ref());
        let _ = write!(out, " \"{}\" ", r.client_addr);
        push_quoted(&mut out, &e.addr);
        out.push_str(" x_forwarded_for:");
        push_quoted_value(&mut out, r.x_forwarded_for.as_ref());
        out.push_str(" x_forwarded_proto:");
        push_quoted_value(&mut out, r.x_forwarded_proto.as_ref());
        out.push_str(" vcap_request_id:");
        push_quoted_value(&mut out, Some(&r.request_id));
        // Seconds with six decimals, as Gorouter writes them; from the
        // integer microseconds (no float formatting).
        let micros = self.response_time.as_micros();
        let _ = write!(
            out,
            " response_time:{}.{:06} app_id:",
            micros / 1_000_000,
            micros % 1_000_000
        );
        push_quoted(&mut out, &e.app_guid);
        let _ = write!(out, " app_index:\"{}\" instance_id:", e.index);
        push_quoted(&mut out, &e.instance_guid);
        out.push_str(" x_cf_routererror:");
        match r.router_error.as_deref() {
            Some(error) if !error.is_empty() => push_quoted(&mut out, error),
            _ => out.push_str("\"-\""),
        }
        out
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
    /// Every queue's receiving end, which the writer drains.
    queues: Arc<Mutex<Vec<mpsc::Receiver<Finished>>>>,
}

impl AccessLog {
    /// Starts the writer task on the current runtime; it ends when every
    /// `AccessLog` is gone and the queues are empty.
    ///
    /// The writer drains the queues on a short tick instead of waiting on
    /// them: a receiver that waits must be woken by every send, which is a
    /// cross-thread wake-up (a system call) per request on the workers.
    pub fn start(logs: Arc<dyn LogSink>) -> AccessLog {
        let (queue, receiver) = mpsc::channel::<Finished>(QUEUE);
        let queues = Arc::new(Mutex::new(vec![receiver]));
        let drained = queues.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WRITER_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let mut finished = Vec::new();
                let open = {
                    let mut queues = drained.lock().unwrap_or_else(|e| e.into_inner());
                    queues.retain_mut(|queue| drain(queue, &mut finished));
                    !queues.is_empty()
                };
                // Written outside the lock, so a new worker never waits on
                // it; handed over at once, so the sink locks once a tick.
                logs.emit_all(finished.iter().map(Finished::envelope).collect());
                if !open {
                    return;
                }
            }
        });
        AccessLog {
            queue,
            dropped: Arc::default(),
            queues,
        }
    }

    /// A queue of its own for one worker thread to the same writer: each
    /// worker then writes only to memory its own core holds, where one
    /// shared queue would move between the cores at every request.
    pub fn for_worker(&self) -> AccessLog {
        let (queue, receiver) = mpsc::channel::<Finished>(QUEUE);
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(receiver);
        AccessLog {
            queue,
            dropped: self.dropped.clone(),
            queues: self.queues.clone(),
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

/// Moves what `queue` holds into `into`; false once the queue is closed
/// and empty.
fn drain(queue: &mut mpsc::Receiver<Finished>, into: &mut Vec<Finished>) -> bool {
    loop {
        match queue.try_recv() {
            Ok(finished) => into.push(finished),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Header text for the log; bytes that are not visible ASCII are escaped.
fn push_text(out: &mut String, value: &HeaderValue) {
    match value.to_str() {
        Ok(s) => out.push_str(s),
        Err(_) => {
            let _ = write!(out, "{}", value.as_bytes().escape_ascii());
        }
    }
}

/// Text inside a quoted field: quotes and backslashes escaped, control
/// characters spelled out.
fn push_escaped(out: &mut String, value: &str) {
    // Runs of plain text are copied whole; nearly every value is one run.
    let mut plain = 0;
    for (at, c) in value.char_indices() {
        if c != '"' && c != '\\' && !c.is_control() {
            continue;
        }
        out.push_str(&value[plain..at]);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.extend(c.escape_default()),
        }
        plain = at + c.len_utf8();
    }
    out.push_str(&value[plain..]);
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    push_escaped(out, value);
    out.push('"');
}

/// A header's text quoted; nothing between the quotes without it.
fn push_quoted_value(out: &mut String, value: Option<&HeaderValue>) {
    out.push('"');
    if let Some(value) = value {
        match value.to_str() {
            Ok(s) => push_escaped(out, s),
            Err(_) => push_escaped(out, &value.as_bytes().escape_ascii().to_string()),
        }
    }
    out.push('"');
}

/// A header's text quoted, or `"-"` without it (or when it is empty).
fn push_quoted_or_dash(out: &mut String, value: Option<&HeaderValue>) {
    match value {
        Some(value) if !value.is_empty() => push_quoted_value(out, Some(value)),
        _ => out.push_str("\"-\""),
    }
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The instance's response body on its way to the client: counts the
/// bytes and hands the access record over when it is dropped — after the
/// last byte, or when the client went away. (The body itself gives its
/// connection back to the pool when read whole.)
pub(crate) struct LoggedBody {
    inner: InstanceBody,
    sent: u64,
    status: u16,
    record: Option<AccessRecord>,
    log: AccessLog,
    /// The request counts against the instance's limit until its response is done.
    _in_flight: InFlight,
}

impl LoggedBody {
    pub fn new(
        inner: InstanceBody,
        status: u16,
        record: AccessRecord,
        log: AccessLog,
        in_flight: InFlight,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            sent: 0,
            status,
            record: Some(record),
            log,
            _in_flight: in_flight,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = InstanceError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InstanceError>>> {
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

    #[test]
    fn escaping_copies_plain_runs_and_spells_out_the_rest() {
        // What escaping char by char gives, the rule in its plainest form.
        let reference = |value: &str| {
            let mut out = String::new();
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.extend(c.escape_default()),
                    c => out.push(c),
                }
            }
            out
        };
        for value in [
            "",
            "/plain/path?q=1",
            "\"",
            "a\"b\\c",
            "\u{7}bell\ttab\r\n",
            "ünïcødé \u{85} next-line \u{9f}",
            "ends with quote\"",
            "\\",
        ] {
            let mut out = String::new();
            push_escaped(&mut out, value);
            assert_eq!(out, reference(value), "{value:?}");
        }
        let mut out = String::new();
        push_escaped(&mut out, "a\"b");
        assert_eq!(out, "a\\\"b");
    }
}
