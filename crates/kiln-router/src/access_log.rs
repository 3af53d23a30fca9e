//! Access log lines: one `RTR` envelope per request that reached an app's
//! route, sent to the app's log stream (what `cf logs` shows), in the shape
//! of Gorouter's access log record.
//!
//! The request path writes the line into its worker's bounded queue once
//! the response is done (after the client has it); a writer task turns a
//! tick's lines into envelopes, each stamped when its response was done
//! (as Gorouter stamps its envelope), and emits them in that order. When
//! the writer falls behind, lines are dropped and counted rather than
//! slowing requests (Gorouter's access log writer drops too when its
//! buffer is full).
//!
//! On a busy router the log's work is a share of every request's CPU, so
//! it is kept small: the line is written without `core::fmt` (digits by
//! `itoa`, the date text once per second) on the thread that gathered the
//! record, which frees it there too — a record freed on the writer's
//! thread went back to the allocator across cores, costlier than the
//! writing; the envelopes the sink lets go of (a full history's oldest)
//! come back to be filled again rather than new ones allocated and old
//! ones freed.

use crate::h1::{InstanceBody, InstanceError};
use crate::proxy::RequestId;
use crate::table::{Counted, Endpoint};
use bytes::Bytes;
use http::{HeaderValue, Method, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use kiln_logs::LogSink;
use kiln_model::LOG_SOURCE_ROUTER;
use kiln_model::logs::{LogEnvelope, MessageType};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines waiting for the writer in one worker's queue, at most; more are
/// dropped.
const QUEUE: usize = 16 * 1024;
/// How often the writer drains the queues while lines come (an RTR line is
/// then at most this late).
const WRITER_TICK: Duration = Duration::from_millis(20);
/// The writer's longest sleep: each tick that finds no line doubles the
/// next wait up to this, so an idle router wakes twice a second rather than
/// fifty times (the writer was most of an idle server's CPU), and the first
/// line after a quiet spell is at most this late.
const WRITER_IDLE_TICK: Duration = Duration::from_millis(500);
/// Room for lines (and their envelopes) kept between ticks; what a burst
/// grew beyond it is given back.
const ROOM_KEPT: usize = 1024;
/// Room for their text, likewise (a line is ~400 bytes).
const TEXT_KEPT: usize = ROOM_KEPT * 512;
/// Envelopes kept for reuse between ticks, at most.
const SPARE_KEPT: usize = 1024;

/// What the access line says about one request, gathered as it is handled.
/// Every field is cheap to fill on the request path (header values and the
/// endpoint are shared, not copied); the text is made when the response is
/// done.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    /// The Host as the client sent it.
    pub host: HeaderValue,
    pub received_at: SystemTime,
    pub started: Instant,
    /// When the router began sending the request to an instance (its
    /// first attempt, the dial included); `None` while it has not.
    pub forwarded_at: Option<Instant>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub client_addr: SocketAddr,
    /// As forwarded to the instance (the client's list plus its address).
    pub x_forwarded_for: Option<HeaderValue>,
    pub x_forwarded_proto: Option<HeaderValue>,
    pub request_id: RequestId,
    /// Request body bytes read from the client (set when the response ends).
    pub request_bytes: u64,
    pub endpoint: Arc<Endpoint>,
    pub router_error: Option<String>,
}

/// A record with its outcome, as the line is written from it.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Boxed from the start: it moves from phase to phase until its line
    /// is written, and a pointer moves cheaper than its ~460 bytes.
    record: Box<AccessRecord>,
    status: u16,
    body_bytes_sent: u64,
    response_time: Duration,
    /// The part of `response_time` spent in the router: Gorouter's
    /// `gorouter_time`, the response time less the app's (from the first
    /// attempt to the response's end) — all of it if no attempt was made.
    gorouter_time: Duration,
}

impl Finished {
    /// When the response was done, in nanoseconds since the Unix epoch: the
    /// envelope's time, as Gorouter stamps its envelope when the response
    /// is done. From the record's clocks, not read again.
    fn done_at(&self) -> i64 {
        (self.record.received_at + self.response_time)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    }

    /// Gorouter's access line on its own.
    #[cfg(test)]
    fn line(&self) -> String {
        let mut out = String::new();
        self.write_line(&mut out, &mut DateText::default());
        out
    }

    /// Gorouter's access line, appended to `out`.
    fn write_line(&self, out: &mut String, date: &mut DateText) {
        let r = &self.record;
        let e = &r.endpoint;
        let mut digits = itoa::Buffer::new();
        push_text(out, &r.host);
        out.push_str(" - [");
        date.push(out, r.received_at);
        out.push_str("Z] \"");
        out.push_str(r.method.as_str());
        out.push(' ');
        // The origin form's text as it came; only an absolute form is
        // put together again.
        match r.uri.path_and_query() {
            Some(target) if r.uri.scheme().is_none() => push_escaped(out, target.as_str()),
            _ => push_escaped(out, &r.uri.to_string()),
        }
        out.push(' ');
        push_version(out, r.version);
        out.push_str("\" ");
        out.push_str(digits.format(self.status));
        out.push(' ');
        out.push_str(digits.format(r.request_bytes));
        out.push(' ');
        out.push_str(digits.format(self.body_bytes_sent));
        out.push(' ');
        push_quoted_or_dash(out, r.referer.as_ref());
        out.push(' ');
        push_quoted_or_dash(out, r.user_agent.as_ref());
        out.push_str(" \"");
        push_addr(out, &r.client_addr);
        out.push_str("\" ");
        out.push_str(&e.log_text.addr);
        out.push_str(" x_forwarded_for:");
        push_quoted_value(out, r.x_forwarded_for.as_ref());
        out.push_str(" x_forwarded_proto:");
        push_quoted_value(out, r.x_forwarded_proto.as_ref());
        out.push_str(" vcap_request_id:");
        // Hex digits and dashes: nothing to escape.
        out.push('"');
        out.push_str(r.request_id.as_str());
        out.push('"');
        out.push_str(" response_time:");
        push_seconds(out, self.response_time);
        out.push_str(" gorouter_time:");
        push_seconds(out, self.gorouter_time);
        out.push_str(&e.log_text.app);
        out.push_str(" x_cf_routererror:");
        match r.router_error.as_deref() {
            Some(error) if !error.is_empty() => push_quoted(out, error),
            _ => out.push_str("\"-\""),
        }
    }
}

/// An endpoint's parts of the access line, made with the endpoint (once
/// per table update) rather than escaped again for every request.
#[derive(Debug, Clone)]
pub(crate) struct EndpointText {
    /// `"ADDRESS:PORT"`.
    addr: Box<str>,
    /// ` app_id:"…" app_index:"…" instance_id:"…"`.
    app: Box<str>,
    /// The instance index, the envelope's `instance_id`.
    index: Box<str>,
}

impl EndpointText {
    pub fn new(addr: &str, app_guid: &str, index: u32, instance_guid: &str) -> EndpointText {
        let mut quoted_addr = String::new();
        push_quoted(&mut quoted_addr, addr);
        let index: Box<str> = itoa::Buffer::new().format(index).into();
        let mut app = String::from(" app_id:");
        push_quoted(&mut app, app_guid);
        app.push_str(" app_index:\"");
        app.push_str(&index);
        app.push_str("\" instance_id:");
        push_quoted(&mut app, instance_guid);
        EndpointText {
            addr: quoted_addr.into(),
            app: app.into(),
            index,
        }
    }
}

/// The date and time text (`YYYY-MM-DDTHH:MM:SS`, UTC) of the last whole
/// second seen: a worker's lines nearly all fall in the second of the line
/// before, and the calendar date is the costliest part of the timestamp to
/// work out.
#[derive(Debug, Default)]
struct DateText {
    second: Option<u64>,
    text: String,
}

impl DateText {
    /// `at` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`.
    fn push(&mut self, out: &mut String, at: SystemTime) {
        let Ok(since) = at.duration_since(UNIX_EPOCH) else {
            // Before 1970 (a clock set wrong): not worth keeping.
            let t = time::OffsetDateTime::from(at);
            push_date(out, t);
            out.push('.');
            push_padded(out, t.nanosecond(), 9);
            return;
        };
        if self.second != Some(since.as_secs()) {
            self.text.clear();
            push_date(&mut self.text, time::OffsetDateTime::from(at));
            self.second = Some(since.as_secs());
        }
        out.push_str(&self.text);
        out.push('.');
        push_padded(out, since.subsec_nanos(), 9);
    }
}

fn push_date(out: &mut String, t: time::OffsetDateTime) {
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    );
}

/// `value` in at least `width` digits, zeros in front.
fn push_padded(out: &mut String, value: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(value);
    for _ in text.len()..width {
        out.push('0');
    }
    out.push_str(text);
}

/// Seconds with six decimals, to the nearest microsecond, as Gorouter
/// writes its times (a float's six decimals); from the whole seconds and
/// microseconds: no float formatting, and no 128-bit division, which
/// `as_micros` would bring onto every request.
fn push_seconds(out: &mut String, time: Duration) {
    let time = time.saturating_add(Duration::from_nanos(500));
    out.push_str(itoa::Buffer::new().format(time.as_secs()));
    out.push('.');
    push_padded(out, time.subsec_micros(), 6);
}

/// The version as `Version`'s `Debug` writes it (`HTTP/1.1`), Gorouter's text.
fn push_version(out: &mut String, version: Version) {
    let text = match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        other => {
            let _ = write!(out, "{other:?}");
            return;
        }
    };
    out.push_str(text);
}

/// The address as `SocketAddr`'s `Display` writes it; IPv4 by hand, the
/// common case.
fn push_addr(out: &mut String, addr: &SocketAddr) {
    let SocketAddr::V4(v4) = addr else {
        let _ = write!(out, "{addr}");
        return;
    };
    let mut digits = itoa::Buffer::new();
    let [a, b, c, d] = v4.ip().octets();
    out.push_str(digits.format(a));
    for octet in [b, c, d] {
        out.push('.');
        out.push_str(digits.format(octet));
    }
    out.push(':');
    out.push_str(digits.format(v4.port()));
}

/// One worker's lines waiting for the writer.
struct Queue {
    lines: Mutex<Lines>,
    /// Lines refused because this queue was full.
    dropped: AtomicU64,
    shared: Arc<Shared>,
}

/// Lines end to end, and for each where it ends, its envelope's time and
/// whose it is.
#[derive(Default)]
struct Lines {
    text: String,
    ends: Vec<(usize, i64, Arc<Endpoint>)>,
    /// The worker's, kept with its queue (the writer swaps the rest out).
    date: DateText,
}

impl Queue {
    fn new(shared: Arc<Shared>) -> Arc<Queue> {
        let queue = Arc::new(Queue {
            lines: Mutex::default(),
            dropped: AtomicU64::new(0),
            shared,
        });
        queue
            .shared
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&queue));
        queue
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `finished`'s line at the queue's end; false when it is full.
    fn push(&self, finished: &Finished) -> bool {
        let mut lines = self.lock();
        let Lines { text, ends, date } = &mut *lines;
        if ends.len() >= QUEUE {
            return false;
        }
        finished.write_line(text, date);
        ends.push((
            text.len(),
            finished.done_at(),
            finished.record.endpoint.clone(),
        ));
        true
    }
}

impl Drop for Queue {
    /// Writes what is left: with its last `AccessLog` gone the writer can
    /// no longer reach it. It does not wait: a sink never blocks.
    fn drop(&mut self) {
        let mut writer = Writer::default();
        writer.take(self);
        writer.emit(&self.shared);
    }
}

/// What the queues of one writer share with it.
struct Shared {
    /// Every worker's queue, which the writer drains while it lives.
    queues: Mutex<Vec<Weak<Queue>>>,
    logs: Arc<dyn LogSink>,
    /// The time of the last envelope handed to `logs`, by the writer or
    /// by a queue that went.
    last: AtomicI64,
}

/// The request path's end of the access log: one `Arc` per worker, so a
/// request's copy of it (each response body holds one) touches only
/// memory its worker's core holds.
#[derive(Clone)]
pub(crate) struct AccessLog {
    queue: Arc<Queue>,
}

impl AccessLog {
    /// Starts the writer task on the current runtime; it ends once every
    /// `AccessLog` is gone (each queue writes what it holds as it goes).
    ///
    /// The writer drains the queues on a short tick instead of being woken
    /// (a longer one while no line comes): a wake-up per line would be a
    /// cross-thread wake-up (a system call) per request on the workers. A
    /// queue is plain text under a lock only its worker and, once a tick,
    /// the writer take: cheaper to write to than a channel, and the writer
    /// takes a tick's lines at once.
    pub fn start(logs: Arc<dyn LogSink>) -> AccessLog {
        let shared = Arc::new(Shared {
            queues: Mutex::default(),
            logs,
            last: AtomicI64::new(0),
        });
        let queue = Queue::new(shared.clone());
        tokio::spawn(write(shared));
        AccessLog { queue }
    }

    /// A queue of its own for one worker thread to the same writer: each
    /// worker then writes only to memory its own core holds, where one
    /// shared queue would move between the cores at every request.
    pub fn for_worker(&self) -> AccessLog {
        AccessLog {
            queue: Queue::new(self.queue.shared.clone()),
        }
    }

    /// Writes the record's line for the writer; never waits (but for the
    /// writer swapping the queue's lines out, once a tick).
    pub fn emit(&self, record: Box<AccessRecord>, status: u16, body_bytes_sent: u64) {
        let response_time = record.started.elapsed();
        // The app's time runs from the first attempt to now, so the
        // router's is what came before the first attempt.
        let gorouter_time = record.forwarded_at.map_or(response_time, |at| {
            at.saturating_duration_since(record.started)
        });
        let finished = Finished {
            response_time,
            gorouter_time,
            record,
            status,
            body_bytes_sent,
        };
        if !self.queue.push(&finished) {
            let dropped = self.queue.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "router access log writer is behind; lines dropped");
            }
        }
    }
}

/// The writer task: every tick, each queue's lines become envelopes,
/// handed to the sink at once (so it locks once a tick).
async fn write(shared: Arc<Shared>) {
    let mut writer = Writer::default();
    let mut wait = WRITER_TICK;
    loop {
        tokio::time::sleep(wait).await;
        // Taken out of the list so that a new worker never waits on the
        // writer; a queue that is gone has written its lines itself.
        let queues: Vec<Arc<Queue>> = {
            let mut queues = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues.retain(|queue| queue.strong_count() > 0);
            queues.iter().filter_map(Weak::upgrade).collect()
        };
        // None left: no `AccessLog` is, so none can be made.
        if queues.is_empty() {
            return;
        }
        let mut lines = false;
        for queue in &queues {
            lines |= writer.take(queue);
        }
        writer.emit(&shared);
        wait = next_wait(wait, lines);
        // If a queue's last `AccessLog` went meanwhile, it writes what is
        // left as this drops it.
        drop(queues);
    }
}

/// The writer's next sleep after one of `wait` that found `lines` or not:
/// the short tick while lines come, doubling up to the idle tick while none
/// do.
fn next_wait(wait: Duration, lines: bool) -> Duration {
    if lines {
        WRITER_TICK
    } else {
        (wait * 2).min(WRITER_IDLE_TICK)
    }
}

/// What the writer keeps from tick to tick, so that a tick allocates
/// little: room for lines and envelopes, and envelopes to fill again.
#[derive(Default)]
struct Writer {
    text: String,
    ends: Vec<(usize, i64, Arc<Endpoint>)>,
    envelopes: Vec<LogEnvelope>,
    spare: Vec<LogEnvelope>,
}

impl Writer {
    /// Turns what `queue` holds into envelopes; whether it held any line.
    fn take(&mut self, queue: &Queue) -> bool {
        // Swapped rather than copied out: the queue gets the empty room
        // the previous tick's lines left.
        {
            let mut lines = queue.lock();
            std::mem::swap(&mut lines.text, &mut self.text);
            std::mem::swap(&mut lines.ends, &mut self.ends);
        }
        let any = !self.ends.is_empty();
        let mut start = 0;
        for (end, timestamp, endpoint) in self.ends.drain(..) {
            let line = &self.text[start..end];
            start = end;
            let index = &endpoint.log_text.index;
            let envelope = match self.spare.pop() {
                Some(mut envelope) => {
                    envelope.timestamp = timestamp;
                    refill(&mut envelope.source_id, &endpoint.app_guid);
                    refill(&mut envelope.instance_id, index);
                    refill(&mut envelope.source_type, LOG_SOURCE_ROUTER);
                    envelope.message_type = MessageType::Out;
                    refill(&mut envelope.message, line);
                    envelope
                }
                None => LogEnvelope {
                    timestamp,
                    source_id: endpoint.app_guid.clone(),
                    instance_id: index.as_ref().to_owned(),
                    source_type: LOG_SOURCE_ROUTER.to_owned(),
                    message_type: MessageType::Out,
                    message: line.to_owned(),
                },
            };
            self.envelopes.push(envelope);
        }
        self.text.clear();
        self.text.shrink_to(TEXT_KEPT);
        self.ends.shrink_to(ROOM_KEPT);
        any
    }

    /// Hands the envelopes made this tick to the sink, in the order their
    /// responses were done.
    fn emit(&mut self, shared: &Shared) {
        if self.envelopes.is_empty() {
            return;
        }
        // Each queue's lines are in that order already (a worker writes a
        // line as its response is done): this merges the workers' runs,
        // so that the store files each line at its history's end.
        self.envelopes.sort_by_key(|e| e.timestamp);
        // Never before one already handed over: a line done just as the
        // writer took its queue comes a tick later than lines done after
        // it on another worker, and a reader that follows the log from the
        // last time it saw would miss it. It is moved to just after them.
        let mut last = shared.last.load(Ordering::Relaxed);
        for envelope in &mut self.envelopes {
            envelope.timestamp = envelope.timestamp.max(last + 1);
            last = envelope.timestamp;
        }
        shared.last.fetch_max(last, Ordering::Relaxed);
        shared.logs.emit_all(&mut self.envelopes, &mut self.spare);
        self.envelopes.clear();
        self.envelopes.shrink_to(ROOM_KEPT);
        self.spare.truncate(SPARE_KEPT);
    }
}

/// `text` in place of what `to` held, in `to`'s room when it is enough
/// (and never in more room than `text` needs when it is not).
fn refill(to: &mut String, text: &str) {
    to.clear();
    to.reserve_exact(text.len());
    to.push_str(text);
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

/// Bytes a quoted field holds as they are: visible ASCII but the quote
/// and the backslash.
static PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

/// Text inside a quoted field: quotes and backslashes escaped, control
/// characters spelled out.
fn push_escaped(out: &mut String, value: &str) {
    // Nearly every value is plain ASCII, copied whole after one pass over
    // a table; the rest (from the first other byte, a character boundary
    // since all before it are ASCII) goes character by character.
    let plain = value
        .bytes()
        .position(|b| !PLAIN[usize::from(b)])
        .unwrap_or(value.len());
    out.push_str(&value[..plain]);
    let value = &value[plain..];
    // Runs of plain text are copied whole here too.
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

/// The instance's response body on its way to the client: counts the
/// bytes and hands the access record over when it is dropped — after the
/// last byte, or when the client went away. (The body itself gives its
/// connection back to the pool when read whole.)
pub(crate) struct LoggedBody {
    inner: InstanceBody,
    sent: u64,
    status: u16,
    record: Option<Box<AccessRecord>>,
    log: AccessLog,
    /// The request counts against the instance's limit (the record's
    /// endpoint's) until its response is done.
    in_flight: Option<Counted>,
}

impl LoggedBody {
    pub fn new(
        inner: InstanceBody,
        status: u16,
        record: Box<AccessRecord>,
        log: AccessLog,
        in_flight: Counted,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            sent: 0,
            status,
            record: Some(record),
            log,
            in_flight: Some(in_flight),
        }
    }

    /// See [`InstanceBody::take_whole`]; counts what it took as sent.
    pub fn take_whole(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        let Some(taken) = self.inner.take_whole(out, max) else {
            return false;
        };
        self.sent += taken;
        true
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
        if let Some(mut record) = self.record.take() {
            if let Some(in_flight) = self.in_flight.take() {
                in_flight.end(&record.endpoint.state);
            }
            record.request_bytes += self.inner.request_bytes();
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
        let record = Box::new(AccessRecord {
            host: HeaderValue::from_static("app.test:8080"),
            received_at,
            started: Instant::now(),
            forwarded_at: None,
            method: Method::POST,
            uri: Uri::from_static("/a?b=c"),
            version: Version::HTTP_11,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
            client_addr: "127.0.0.1:5000".parse().unwrap(),
            x_forwarded_for: Some(HeaderValue::from_static("10.0.0.1, 127.0.0.1")),
            x_forwarded_proto: Some(HeaderValue::from_static("http")),
            request_id: crate::proxy::tests::RID,
            request_bytes: 12,
            endpoint: Arc::new(Endpoint::new(
                "127.0.0.1:61000".into(),
                "app-guid".into(),
                "p".into(),
                1,
                "ig".into(),
            )),
            router_error: None,
        });
        let line = Finished {
            record,
            status: 201,
            body_bytes_sent: 34,
            response_time: Duration::from_micros(1500),
            gorouter_time: Duration::from_micros(250),
        }
        .line();
        let expected = "app.test:8080 - [2024-03-05T06:07:08.000000009Z] \"POST /a?b=c HTTP/1.1\" 201 12 34 \"-\" \"curl/8 \\\"x\\\"\" \"127.0.0.1:5000\" \"127.0.0.1:61000\" x_forwarded_for:\"10.0.0.1, 127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"0e7c1f5a-3b2d-4c8e-9f10-a1b2c3d4e5f6\" response_time:0.001500 gorouter_time:0.000250 app_id:\"app-guid\" app_index:\"1\" instance_id:\"ig\" x_cf_routererror:\"-\"";
        assert_eq!(line, expected);
    }

    fn record(received_at: SystemTime) -> Finished {
        Finished {
            record: Box::new(AccessRecord {
                host: HeaderValue::from_static("app.test"),
                received_at,
                started: Instant::now(),
                forwarded_at: None,
                method: Method::GET,
                uri: Uri::from_static("/"),
                version: Version::HTTP_11,
                referer: None,
                user_agent: None,
                client_addr: "127.0.0.1:5000".parse().unwrap(),
                x_forwarded_for: None,
                x_forwarded_proto: None,
                request_id: crate::proxy::tests::RID,
                request_bytes: 0,
                endpoint: Arc::new(Endpoint::new(
                    "127.0.0.1:61000".into(),
                    "app-guid".into(),
                    "p".into(),
                    12,
                    "ig".into(),
                )),
                router_error: None,
            }),
            status: 200,
            body_bytes_sent: 0,
            response_time: Duration::ZERO,
            gorouter_time: Duration::ZERO,
        }
    }

    #[test]
    fn the_date_text_is_made_again_when_the_second_changes() {
        let mut date = DateText::default();
        let by_time = |at: SystemTime| {
            let t = time::OffsetDateTime::from(at);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.nanosecond()
            )
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_709_618_828);
        for at in [
            start,
            start + Duration::from_nanos(999_999_999),
            start + Duration::from_secs(1),
            start + Duration::from_secs(86_400 * 400) + Duration::from_nanos(5),
            start,
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_nanos(1_500_000_000),
        ] {
            let mut out = String::new();
            date.push(&mut out, at);
            assert_eq!(out, by_time(at), "{at:?}");
        }
    }

    #[test]
    fn times_read_as_seconds_rounded_to_six_decimals() {
        for (time, text) in [
            (Duration::ZERO, "0.000000"),
            (Duration::from_nanos(499), "0.000000"),
            (Duration::from_nanos(501), "0.000001"),
            (Duration::from_nanos(1_999), "0.000002"),
            (Duration::from_micros(999_999), "0.999999"),
            (Duration::from_nanos(999_999_600), "1.000000"),
            (Duration::new(62, 42_000), "62.000042"),
            (Duration::new(86_400 * 365, 500_000_000), "31536000.500000"),
            (Duration::MAX, "18446744073709551615.999999"),
        ] {
            let mut out = String::new();
            push_seconds(&mut out, time);
            assert_eq!(out, text);
            // Gorouter's text: the seconds as a float, six decimals (no
            // tie among these, where a float's binary value would decide).
            if time < Duration::from_secs(1 << 40) {
                assert_eq!(text, format!("{:.6}", time.as_secs_f64()));
            }
        }
    }

    #[test]
    fn versions_and_addresses_read_as_their_std_text() {
        for version in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            let mut out = String::new();
            push_version(&mut out, version);
            assert_eq!(out, format!("{version:?}"));
        }
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:5000",
            "255.255.255.255:65535",
            "[::1]:80",
            "[fe80::1%2]:443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = String::new();
            push_addr(&mut out, &addr);
            assert_eq!(out, addr.to_string());
        }
    }

    #[test]
    fn an_envelope_filled_again_is_as_a_new_one() {
        let finished = record(SystemTime::now());
        let mut fresh = Writer::default();
        let mut reused = Writer::default();
        reused.spare.push(LogEnvelope {
            timestamp: 1,
            source_id: "another app's guid, longer than this one's".into(),
            instance_id: "123".into(),
            source_type: "APP/PROC/WEB".into(),
            message_type: MessageType::Err,
            message: "short".into(),
        });
        let log = AccessLog {
            queue: Queue::new(Arc::new(Shared {
                queues: Mutex::default(),
                logs: Arc::new(kiln_logs::LogStore::default()),
                last: AtomicI64::new(0),
            })),
        };
        let queue = &log.queue;
        for writer in [&mut fresh, &mut reused] {
            // Two lines in one take: each envelope gets its own.
            for _ in 0..2 {
                assert!(queue.push(&record(finished.record.received_at)));
            }
            writer.take(queue);
            assert!(queue.lock().ends.is_empty());
            assert!(queue.lock().text.is_empty());
        }
        assert!(reused.spare.is_empty());
        assert_eq!(fresh.envelopes, reused.envelopes);
        let envelope = &fresh.envelopes[0];
        assert_eq!(envelope.timestamp, finished.done_at());
        assert_eq!(envelope.source_id, "app-guid");
        assert_eq!(envelope.instance_id, "12");
        assert_eq!(envelope.source_type, "RTR");
        assert_eq!(envelope.message_type, MessageType::Out);
        assert_eq!(envelope.message, finished.line());
        assert_eq!(fresh.envelopes.len(), 2);
        assert_eq!(fresh.envelopes[1], fresh.envelopes[0]);
        // Grown to the room the line needs, not by doubling.
        assert_eq!(
            reused.envelopes[0].message.capacity(),
            envelope.message.len()
        );
    }

    #[test]
    fn an_idle_writer_backs_off_and_ticks_fast_again_when_lines_come() {
        let mut wait = WRITER_TICK;
        let (mut slept, mut wakeups) = (Duration::ZERO, 0);
        while slept < Duration::from_secs(10) {
            slept += wait;
            wakeups += 1;
            wait = next_wait(wait, false);
        }
        assert_eq!(wait, WRITER_IDLE_TICK);
        // Fifty a second at the short tick.
        assert!(wakeups <= 25, "{wakeups} wake-ups in 10 idle seconds");
        assert_eq!(next_wait(wait, true), WRITER_TICK);
    }

    /// Every line the store holds, oldest first.
    fn whole_history() -> kiln_logs::ReadQuery {
        kiln_logs::ReadQuery {
            start_time: 0,
            end_time: None,
            limit: usize::MAX,
            descending: false,
        }
    }

    /// On the paused clock: how long a line emitted now waits for the
    /// writer (the `count`th line of the store).
    async fn line_waits(log: &AccessLog, store: &kiln_logs::LogStore, count: usize) -> Duration {
        let mut changed = store.subscribe();
        let query = whole_history();
        let start = tokio::time::Instant::now();
        log.emit(record(SystemTime::now()).record, 200, 0);
        while store.read("app-guid", &query).len() < count {
            changed.changed().await.unwrap();
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_waits_a_short_tick_while_lines_come_and_at_most_the_idle_tick_after_a_quiet_spell()
     {
        let store = Arc::new(kiln_logs::LogStore::default());
        let log = AccessLog::start(store.clone());
        assert!(line_waits(&log, &store, 1).await <= WRITER_TICK);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let after_quiet = line_waits(&log, &store, 2).await;
        assert!(after_quiet <= WRITER_IDLE_TICK, "{after_quiet:?}");
        // The tick that found it makes the next one short again.
        assert!(line_waits(&log, &store, 3).await <= WRITER_TICK);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_the_rest_is_written_on_a_tick_or_when_the_queue_goes() {
        let store = Arc::new(kiln_logs::LogStore::new(QUEUE + 10));
        let mut changed = store.subscribe();
        let log = AccessLog::start(store.clone());
        let other = log.for_worker();
        let at = SystemTime::now();
        // The writer cannot run before this test's task yields.
        for _ in 0..QUEUE + 3 {
            log.emit(record(at).record, 200, 0);
        }
        other.emit(record(at).record, 200, 0);
        assert_eq!(log.queue.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(other.queue.dropped.load(Ordering::Relaxed), 0);
        let query = whole_history();
        let written = || store.read("app-guid", &query).len();
        while written() < QUEUE + 1 {
            changed.changed().await.unwrap();
        }
        assert_eq!(written(), QUEUE + 1);
        // What a queue holds when its last `AccessLog` goes is written
        // then, not lost with it.
        other.emit(record(at).record, 200, 0);
        let queue = Arc::downgrade(&other.queue);
        drop(other);
        assert!(queue.upgrade().is_none());
        assert_eq!(written(), QUEUE + 2);
        // The writer ends once no `AccessLog` is left.
        let shared = Arc::downgrade(&log.queue.shared);
        drop(log);
        assert_eq!(written(), QUEUE + 2);
        while shared.upgrade().is_some() {
            tokio::time::sleep(WRITER_TICK).await;
        }
    }

    #[tokio::test]
    async fn lines_reach_the_store_in_the_order_their_responses_were_done_each_stamped_then() {
        let store = Arc::new(kiln_logs::LogStore::default());
        let mut changed = store.subscribe();
        let log = AccessLog::start(store.clone());
        let other = log.for_worker();
        let start = UNIX_EPOCH + Duration::from_secs(1_709_618_828);
        // Two workers' lines (received `seconds` after `start`, taking
        // `took_ms`; the request bytes name each), each worker's in the
        // order its responses were done, the second's between the first's.
        for (log, lines) in [(&log, [(1, 500), (3, 0)]), (&other, [(2, 0), (3, 200)])] {
            for (seconds, took_ms) in lines {
                let mut finished = record(start + Duration::from_secs(seconds));
                finished.record.request_bytes = seconds;
                finished.record.started = Instant::now() - Duration::from_millis(took_ms);
                log.emit(finished.record, 200, 0);
            }
        }
        let query = whole_history();
        while store.read("app-guid", &query).len() < 4 {
            changed.changed().await.unwrap();
        }
        let got: Vec<(i64, u64)> = store
            .read("app-guid", &query)
            .iter()
            .map(|e| {
                // The request bytes name the line: `"GET / HTTP/1.1" 200 <bytes> 0`.
                let bytes = e.message.split(' ').nth(7).unwrap().parse().unwrap();
                (e.timestamp, bytes)
            })
            .collect();
        let order: Vec<u64> = got.iter().map(|(_, bytes)| *bytes).collect();
        assert_eq!(order, [1, 2, 3, 3], "{got:?}");
        // Stamped when the response was done: received, plus its time.
        let start_nanos = start.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
        for ((t, bytes), took_ms) in got.iter().zip([500, 0, 0, 200]) {
            let expected = start_nanos + *bytes as i64 * 1_000_000_000 + took_ms * 1_000_000;
            assert!((t - expected).abs() < 50_000_000, "{got:?}");
        }
        // A line done before the last one written (its worker's queue was
        // taken just before it came) is stamped just after it: one that
        // follows the log from there still reads it.
        let mut late = record(start);
        late.record.request_bytes = 9;
        log.emit(late.record, 200, 0);
        while store.read("app-guid", &query).len() < 5 {
            changed.changed().await.unwrap();
        }
        let lines = store.read("app-guid", &query);
        assert!(lines[4].message.contains(" 200 9 0 "), "{lines:?}");
        assert_eq!(lines[4].timestamp, lines[3].timestamp + 1);
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
            "plain, then \u{7f} and \u{80}\u{a0}é\"",
            "~ \u{1f}",
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
