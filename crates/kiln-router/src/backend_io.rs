//! Connections to instances: each worker thread's pool of kept-alive
//! connections ([`Backends`]), and one change to how hyper uses a
//! connection ([`WriteFirst`]).
//!
//! The pool is hyper's connection API with a list of idle connections per
//! instance address, and nothing more: a request takes the connection
//! returned last (so the hot ones stay warm and the cold ones age out at
//! the front), and its response body gives the connection back once its
//! last byte went to the client. The worker's sweep closes connections idle
//! too long, so that after a burst the memory they hold is freed.
//!
//! `WriteFirst`: a fresh connection is not read before the request has
//! started to go out. hyper's client treats bytes that arrive on a
//! connection with no request written yet as an error ("received unexpected
//! message from connection"). An app that answers as soon as a client
//! connects (an `nc -l` style app, as in Cloud Foundry's binary-buildpack
//! fixtures) races with that on every new connection. Holding reads back
//! until the first write makes the early answer the response to the
//! request, which it is.

use crate::proxy::ForwardBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections to an instance are closed after this (Go's transport
/// default, which Gorouter keeps).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per instance and worker for [`IDLE_TIMEOUT`]; those
/// beyond it were opened for a burst and are closed after [`BURST_IDLE`].
const WARM: usize = 32;
const BURST_IDLE: Duration = Duration::from_secs(5);
/// Idle connections kept per instance and worker, at most (more requests in
/// flight than this open and close connections of their own).
const MAX_IDLE: usize = 1024;

/// Why an instance did not answer.
#[derive(Debug)]
pub(crate) enum BackendError {
    /// The connection could not be made: nothing reached the instance.
    Connect(io::Error),
    Request(hyper::Error),
}

type Sender = SendRequest<ForwardBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// One worker's connections to instances, by instance address.
pub(crate) struct Backends {
    idle: Mutex<HashMap<String, VecDeque<Idle>>>,
    dial_timeout: Duration,
}

/// A connection in use by one request; [`Lease::give_back`] when its
/// response is complete, drop otherwise (the connection then closes).
pub(crate) struct Lease {
    backends: Arc<Backends>,
    sender: Sender,
}

impl Lease {
    pub fn give_back(self, addr: &str) {
        self.backends.give_back(addr, self.sender);
    }
}

impl Backends {
    pub fn new(dial_timeout: Duration) -> Arc<Backends> {
        Arc::new(Backends {
            idle: Mutex::default(),
            dial_timeout,
        })
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Idle>>> {
        // Only ever locked by one worker thread, for a few instructions.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` to the instance at `addr` on an idle connection, or
    /// a new one. A request that an idle connection turned out unable to
    /// take (the instance had closed it) goes on the next one unsent.
    pub async fn send(
        self: &Arc<Self>,
        addr: &str,
        mut request: Request<ForwardBody>,
    ) -> Result<(Response<Incoming>, Lease), BackendError> {
        while let Some(mut sender) = self.take_idle(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender))),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(BackendError::Request(error.into_error())),
                },
            }
        }
        let mut sender = self.dial(addr).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(BackendError::Request)?;
        Ok((response, self.lease(sender)))
    }

    fn lease(self: &Arc<Self>, sender: Sender) -> Lease {
        Lease {
            backends: self.clone(),
            sender,
        }
    }

    /// The connection to `addr` given back last that can take a request
    /// now. One still sending a request body its response did not wait
    /// for is left alone; closed ones met on the way are dropped.
    fn take_idle(&self, addr: &str) -> Option<Sender> {
        let mut idle = self.idle();
        let list = idle.get_mut(addr)?;
        while list.back().is_some_and(|entry| entry.sender.is_closed()) {
            list.pop_back();
        }
        let ready = list.iter().rposition(|entry| entry.sender.is_ready())?;
        list.remove(ready).map(|entry| entry.sender)
    }

    fn give_back(&self, addr: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let entry = Idle {
            sender,
            since: Instant::now(),
        };
        let mut idle = self.idle();
        match idle.get_mut(addr) {
            Some(list) if list.len() >= MAX_IDLE => {}
            Some(list) => list.push_back(entry),
            None => {
                idle.insert(addr.to_string(), VecDeque::from([entry]));
            }
        }
    }

    /// Closes the connections idle too long: any past [`IDLE_TIMEOUT`],
    /// those beyond the [`WARM`] ones past [`BURST_IDLE`]; and forgets
    /// instances left with none.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut idle = self.idle();
            idle.retain(|_, list| {
                while let Some(oldest) = list.front() {
                    let idle_for = now.saturating_duration_since(oldest.since);
                    let expired = idle_for >= IDLE_TIMEOUT
                        || (list.len() > WARM && idle_for >= BURST_IDLE)
                        || oldest.sender.is_closed();
                    if !expired {
                        break;
                    }
                    closed.extend(list.pop_front());
                }
                if list.capacity() > 2 * list.len().max(WARM) {
                    list.shrink_to_fit();
                }
                !list.is_empty()
            });
            if idle.capacity() > 2 * idle.len().max(16) {
                idle.shrink_to_fit();
            }
        }
        // Closed outside the lock.
        drop(closed);
    }

    /// A new connection to `addr`, its hyper task on this worker.
    async fn dial(&self, addr: &str) -> Result<Sender, BackendError> {
        let stream = match tokio::time::timeout(self.dial_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(BackendError::Connect(error)),
            Err(_) => {
                return Err(BackendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "i/o timeout",
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(WriteFirst::new(TokioIo::new(stream)))
            .await
            .map_err(BackendError::Request)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "router connection to an instance ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A connection that reports nothing to read until something was written.
pub(crate) struct WriteFirst {
    io: TokioIo<TcpStream>,
    wrote: bool,
    /// The read that waits for the first write.
    reader: Option<Waker>,
}

impl WriteFirst {
    pub fn new(io: TokioIo<TcpStream>) -> WriteFirst {
        WriteFirst {
            io,
            wrote: false,
            reader: None,
        }
    }

    fn note_written(&mut self, polled: &Poll<io::Result<usize>>) {
        if !self.wrote && matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.wrote = true;
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
        }
    }
}

impl Read for WriteFirst {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.wrote {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl Write for WriteFirst {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note_written(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
