//! Connections to instances: each worker thread's pool of kept-alive
//! connections ([`Backends`]).
//!
//! A request takes the connection returned last (so the hot ones stay warm
//! and the cold ones age out at the front) and runs its exchange on it in
//! its own task ([`crate::h1`]); its response body gives the connection
//! back once its last byte was read. The worker's sweep closes connections
//! idle too long, so that after a burst the memory they hold is freed.

use crate::h1::{self, Conn, InstanceError, RequestBody, ResponseHead};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
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
    Request(InstanceError),
}

/// Idle connections by instance address (foldhash: a request hashes the
/// address twice, to take a connection and to give it back).
type IdleMap = HashMap<String, VecDeque<Idle>, foldhash::fast::RandomState>;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker's connections to instances, by instance address.
pub(crate) struct Backends {
    idle: Mutex<IdleMap>,
    dial_timeout: Duration,
}

/// One request for [`Backends::send`].
pub(crate) struct Outgoing<'r> {
    pub head: &'r [u8],
    pub body: &'r mut RequestBody,
    pub head_request: bool,
    /// It may be sent again when a kept-alive connection turns out closed.
    pub idempotent: bool,
}

impl Backends {
    pub fn new(dial_timeout: Duration) -> Arc<Backends> {
        Arc::new(Backends {
            idle: Mutex::default(),
            dial_timeout,
        })
    }

    fn idle(&self) -> MutexGuard<'_, IdleMap> {
        // Only ever locked by one worker thread, for a few instructions.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a request to the instance at `addr` on an idle connection, or
    /// a new one, and reads the response head. An idle connection the
    /// instance closed just as the request went out (no response, nothing
    /// of the body taken) gets an idempotent request sent again on the next.
    pub async fn send(
        &self,
        addr: &str,
        request: Outgoing<'_>,
    ) -> Result<(ResponseHead, Conn), BackendError> {
        let Outgoing {
            head,
            body,
            head_request,
            idempotent,
        } = request;
        while let Some(mut conn) = self.take_idle(addr) {
            match h1::exchange(&mut conn, head, body, head_request).await {
                Ok(response) => return Ok((response, conn)),
                Err(error) if error.closed_before_response() && idempotent && !body.started() => {
                    tracing::debug!(%error, addr, "kept-alive connection to an instance was closed; sending again");
                }
                Err(error) => return Err(BackendError::Request(error)),
            }
        }
        // Boxed: a rare path, kept out of every request's future.
        let mut conn = Box::pin(self.dial(addr)).await?;
        let response = h1::exchange(&mut conn, head, body, head_request)
            .await
            .map_err(BackendError::Request)?;
        Ok((response, conn))
    }

    /// The connection to `addr` given back last that is still open; closed
    /// ones met on the way are dropped.
    pub(crate) fn take_idle(&self, addr: &str) -> Option<Conn> {
        let mut idle = self.idle();
        let list = idle.get_mut(addr)?;
        while let Some(entry) = list.pop_back() {
            if entry.conn.still_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    pub(crate) fn give_back(&self, conn: Conn) {
        let entry = Idle {
            conn,
            since: Instant::now(),
        };
        let mut idle = self.idle();
        match idle.get_mut(entry.conn.addr()) {
            Some(list) if list.len() >= MAX_IDLE => {}
            Some(list) => list.push_back(entry),
            None => {
                let addr = entry.conn.addr().to_string();
                idle.insert(addr, VecDeque::from([entry]));
            }
        }
    }

    /// Closes the connections idle too long: any past [`IDLE_TIMEOUT`],
    /// those beyond the [`WARM`] ones past [`BURST_IDLE`], those the
    /// instance closed; and forgets instances left with none.
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
                        || !oldest.conn.still_open();
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

    /// A new connection to `addr`.
    pub(crate) async fn dial(&self, addr: &str) -> Result<Conn, BackendError> {
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
        Ok(Conn::new(stream, addr))
    }
}
