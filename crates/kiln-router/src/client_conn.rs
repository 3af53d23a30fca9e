//! A client connection's two read timeouts, as Go's `http.Server` (Gorouter's
//! base) keeps them apart:
//!
//! - the header read timeout bounds a request's head, from the connection's
//!   start or from the first byte of a later request (a slow-loris client is
//!   cut off after it);
//! - the idle timeout bounds a kept-alive connection with no request at all,
//!   from the end of the last response (Gorouter's `frontend_idle_timeout`:
//!   900 s).
//!
//! hyper's own `header_read_timeout` also runs while a connection is idle,
//! so it cannot tell the two apart. Here the socket ([`Timed`]) knows when
//! bytes arrive and the service ([`Activity`]) knows when a request starts
//! and when its response is done; a read that would wait gets the deadline
//! of the phase the connection is in, and fails with `TimedOut` past it,
//! which closes the connection.

use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the service tells the socket about a connection's requests.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted; `idle_since_ns` counts from it.
    base: Instant,
    started: AtomicU64,
    finished: AtomicU64,
    /// When the last response was done (the connection went idle).
    idle_since_ns: AtomicU64,
    /// The connection was handed to a tunnel (WebSocket): never idle.
    upgraded: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            idle_since_ns: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
        })
    }

    /// A request's head was read; it is in progress until the guard drops
    /// (with the response body, after its last byte or when abandoned).
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// The connection now carries a tunnel; idleness no longer applies.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        self.upgraded.load(Ordering::Relaxed)
            || self.started.load(Ordering::Relaxed) != self.finished.load(Ordering::Acquire)
    }

    fn idle_since(&self) -> Instant {
        self.base + Duration::from_nanos(self.idle_since_ns.load(Ordering::Relaxed))
    }
}

/// One request in progress on a connection.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = activity.base.elapsed().as_nanos() as u64;
        // Stored before `finished` moves, so that a socket that sees the
        // connection idle also sees since when.
        activity.idle_since_ns.store(elapsed, Ordering::Relaxed);
        activity.finished.fetch_add(1, Ordering::Release);
    }
}

/// The timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// A client socket that fails a read waiting past its phase's deadline.
pub(crate) struct Timed<S> {
    inner: S,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    /// A request head being read: the count of started requests when its
    /// first byte came, and when. Stale once a request has started since.
    head: Option<(u64, Instant)>,
    /// HTTP/2 multiplexes requests, so there is no head phase: only idle.
    h2: bool,
    /// One timer per connection, moved as the deadline changes.
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl<S> Timed<S> {
    /// A freshly accepted connection: its first request's head is due
    /// within the header read timeout (as in Go).
    pub fn new(inner: S, timeouts: Timeouts) -> Timed<S> {
        let activity = Activity::new();
        let start = activity.base;
        Timed {
            inner,
            head: Some((0, start)),
            activity,
            timeouts,
            h2: false,
            sleep: Box::pin(tokio::time::sleep_until(start + timeouts.header_read)),
            armed: None,
        }
    }

    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// The connection speaks HTTP/2 from now on.
    pub fn set_h2(&mut self) {
        self.h2 = true;
        self.head = None;
    }

    /// Bytes arrived: on an idle connection they start a request's head.
    fn note_bytes(&mut self) {
        if self.h2 || self.activity.busy() {
            return;
        }
        let started = self.activity.started.load(Ordering::Relaxed);
        if !matches!(self.head, Some((count, _)) if count == started) {
            self.head = Some((started, Instant::now()));
        }
    }

    /// When a read that waits now must give up, if ever, and why.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        if self.activity.busy() {
            return None;
        }
        let started = self.activity.started.load(Ordering::Relaxed);
        Some(match self.head {
            Some((count, since)) if count == started => (
                since + self.timeouts.header_read,
                "request headers not received within the header read timeout",
            ),
            _ => (
                self.activity.idle_since() + self.timeouts.idle,
                "kept-alive connection idle for the idle timeout",
            ),
        })
    }

    /// Why the wait for a read is over, if it is; arms the timer for the
    /// deadline.
    ///
    /// The timer is moved only to an earlier deadline. A later one (each
    /// request moves the idle deadline on) is left for when the timer
    /// fires early, so a kept-alive connection does not reset its timer at
    /// every request.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        let (deadline, why) = self.deadline()?;
        if self.armed.is_none_or(|armed| armed > deadline) {
            self.arm(deadline);
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Some(why);
            }
            self.arm(deadline);
        }
        None
    }

    fn arm(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.armed = Some(deadline);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.note_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.expired(cx) {
                Some(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body on its way to the client; the request counts as in
/// progress on its connection until the body is dropped.
pub(crate) struct ClientBody<B> {
    inner: B,
    _request: RequestGuard,
}

impl<B> ClientBody<B> {
    pub fn new(inner: B, request: RequestGuard) -> ClientBody<B> {
        ClientBody {
            inner,
            _request: request,
        }
    }
}

impl<B: Body + Unpin> Body for ClientBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
