//! Kiln's router, in the role of Cloud Foundry's Gorouter.
//!
//! - [`table`]: route (host and optional path) → RUNNING instances, built
//!   from the BBS's DesiredLrps (their `routes`) and ActualLrps (their
//!   `net_info`).
//! - `sync`: keeps the table current from BBS events (after each burst of
//!   LRP events, re-reads the processes they name and patches the hosts
//!   those map) and a periodic full resync.
//! - `proxy`: the request path — look the route up, pick an instance
//!   round-robin, stream the request there and the response back, with
//!   Gorouter's headers, retries and error responses.
//! - `front`: the plain listener's HTTP/1.1 server side (hyper's serves
//!   HTTPS and `/health`); both hand requests to `proxy`.
//! - `access_log`: one `RTR` line per request into the app's log stream,
//!   written by a task of its own.
//! - `workers`: the threads connections are served on.
//! - [`tls`]: the HTTPS listener's certificates (chosen by SNI, reloadable)
//!   and HSTS.
//! - [`run`] wires them: the `kiln` binary's router role. [`serve`] is the
//!   proxy alone over a table the caller fills.
//!
//! Architecture invariant: the request path never queries the BBS or a
//! database and never waits on a lock; it reads an immutable snapshot of
//! the table, swapped whole (`arc-swap`) when it changes; a change makes a
//! new table that shares what did not change with the old one.

mod access_log;
mod backend_io;
mod client_conn;
mod fast;
mod front;
mod h1;
mod head;
mod health;
mod proxy;
mod sticky;
mod sync;
pub mod table;
pub mod tls;
mod workers;

use access_log::AccessLog;
pub use proxy::RequestId;
pub use sync::{SharedTable, load_index, load_table, sync_table};
pub use table::{Endpoint, Pool, RouteIndex, RouteTable, normalize_host};
pub use tls::{CertKeyPair, CertStore, Hsts, TlsError};

use kiln_bbs_client::BbsClient;
use kiln_logs::LogSink;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use workers::Workers;

/// How long requests in flight may take to finish after shutdown is asked.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Instances tried per request, at most (Gorouter: 3); never more than
    /// the route has.
    pub max_attempts: usize,
    /// How long a connection to an instance may take (Gorouter: 5 s).
    pub dial_timeout: Duration,
    /// How long an instance may take to answer a request with its response
    /// headers (Gorouter: 900 s).
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers, from the
    /// connection's start or a later request's first byte (a slow-loris
    /// client is cut off after it; nginx: 60 s).
    pub header_read_timeout: Duration,
    /// How long a kept-alive client connection may wait for its next
    /// request before it is closed (Gorouter's `frontend_idle_timeout`:
    /// 900 s).
    pub client_idle_timeout: Duration,
    /// Full re-read of the BBS, in case events were missed (Gorouter's
    /// routes are re-registered every 20 s).
    pub resync_interval: Duration,
    /// Threads serving connections; 0 means one per CPU.
    pub workers: usize,
    /// An instance that could not be dialled is skipped this long while
    /// others take the traffic (Gorouter: 30 s).
    pub retry_after_failure: Duration,
    /// Requests in flight per instance, at most; 0 means no limit
    /// (Gorouter's `backends.max_conns`: 500).
    pub max_conns_per_backend: usize,
    /// Response cookies that start a sticky session (Gorouter's
    /// `sticky_session_cookie_names`: `JSESSIONID`).
    pub sticky_session_cookies: Vec<String>,
    /// `Strict-Transport-Security` added to responses over HTTPS that lack
    /// one (Gorouter: `http_rewrite.responses.add_headers_if_not_present`).
    pub hsts: Option<Hsts>,
    /// Replace a client's `X-Forwarded-Proto` with the scheme the request
    /// came in by (Gorouter's `sanitize_forwarded_proto`, default off: a
    /// client's value is kept, as a load balancer in front sets it).
    pub sanitize_forwarded_proto: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_attempts: 3,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(900),
            header_read_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::from_secs(900),
            resync_interval: Duration::from_secs(20),
            workers: 0,
            retry_after_failure: Duration::from_secs(30),
            max_conns_per_backend: 500,
            sticky_session_cookies: vec!["JSESSIONID".to_string()],
            hsts: None,
            sanitize_forwarded_proto: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("router listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("router TLS: {0}")]
    Tls(#[from] TlsError),
}

/// The router's HTTPS listener and its certificates. Plain HTTP keeps a
/// listener of its own.
pub struct TlsListener {
    pub listener: tokio::net::TcpListener,
    pub certs: Arc<CertStore>,
}

/// The router role: reads the routes from `bbs`, then serves on `listener`
/// until `shutdown`, keeping the table current meanwhile. On shutdown it
/// stops accepting, lets requests in flight finish (for at most
/// [`DRAIN_TIMEOUT`]) and returns. `status`, if given, serves
/// `GET /health`: 200 until shutdown, 503 while draining.
pub async fn run(
    config: RouterConfig,
    listener: tokio::net::TcpListener,
    status: Option<tokio::net::TcpListener>,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    run_with_tls(config, listener, None, status, bbs, logs, shutdown).await
}

/// [`run`], also serving HTTPS on `tls` if given.
pub async fn run_with_tls(
    config: RouterConfig,
    listener: tokio::net::TcpListener,
    tls: Option<TlsListener>,
    status: Option<tokio::net::TcpListener>,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    // Subscribe before the first read, so that no change falls between them.
    let events = bbs.subscribe();
    let table = SharedTable::default();
    // The table is filled before the first request is answered (Gorouter
    // waits for its table at start too); connections queue meanwhile.
    let index = match load_index(bbs.as_ref(), &RouteTable::default()).await {
        Ok((index, initial)) => {
            tracing::info!(routes = initial.len(), "router table loaded");
            table.replace(initial);
            Some(index)
        }
        Err(error) => {
            tracing::warn!(%error, "router could not read routes at start; retrying shortly");
            None
        }
    };
    let stop_sync = shutdown.child_token();
    let sync = tokio::spawn(sync::follow(
        table.clone(),
        bbs,
        events,
        config.resync_interval,
        index,
        stop_sync.clone(),
    ));
    let stop_health = CancellationToken::new();
    let health = status
        .map(|status| tokio::spawn(health::serve(status, shutdown.clone(), stop_health.clone())));
    // Watched from here, before the first connection is served, so that a
    // SIGHUP never meets the default action (which ends the process).
    // Without TLS, SIGHUP is left alone.
    let reload = match tls.as_ref().map(|tls| (tls, signal(SignalKind::hangup()))) {
        None => None,
        Some((tls, Ok(hangups))) => Some(tokio::spawn(reload_on_hangup(
            tls.certs.clone(),
            hangups,
            stop_sync.clone(),
        ))),
        Some((_, Err(error))) => {
            tracing::warn!(%error, "router cannot watch SIGHUP; certificates will not be reloaded");
            None
        }
    };
    let result = serve_with_tls(config, listener, tls, table, logs, shutdown).await;
    stop_sync.cancel();
    stop_health.cancel();
    let _ = sync.await;
    if let Some(reload) = reload {
        let _ = reload.await;
    }
    if let Some(health) = health {
        let _ = health.await;
    }
    result
}

/// Serves the proxy on `listener` over `table` until `shutdown`, then
/// drains as [`run`] does. The caller keeps `table` current.
///
/// Connections are accepted here and handed round-robin to worker threads,
/// each with a single-threaded runtime and its own pool of connections to
/// instances: a request, its instance connection and their wake-ups stay
/// on one thread, as in nginx's worker model.
pub async fn serve(
    config: RouterConfig,
    listener: tokio::net::TcpListener,
    table: SharedTable,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    serve_with_tls(config, listener, None, table, logs, shutdown).await
}

/// [`serve`], also serving HTTPS on `tls` if given: the TLS handshake and
/// the connection (HTTP/1.1 or HTTP/2, as ALPN agreed) run on the worker
/// the connection is given to, like plain ones.
pub async fn serve_with_tls(
    config: RouterConfig,
    listener: tokio::net::TcpListener,
    tls: Option<TlsListener>,
    table: SharedTable,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), RouterError> {
    let addr = listener.local_addr()?;
    let tls = match tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.certs.server_config()?);
            tracing::info!(addr = %tls.listener.local_addr()?, "router listening for HTTPS");
            Some((tls.listener, acceptor))
        }
        None => None,
    };
    let hard_stop = CancellationToken::new();
    let workers = Workers::start(&config, &table, &AccessLog::start(logs), &hard_stop)?;
    let connections = TaskTracker::new();
    tracing::info!(%addr, workers = workers.len(), "router listening");
    loop {
        let (accepted, acceptor) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => (accepted, None),
            (accepted, acceptor) = accept_tls(tls.as_ref()) => (accepted, Some(acceptor)),
        };
        match accepted {
            Ok((stream, client_addr)) => {
                let (proxy, runtime) = workers.next();
                let stream = stream.into_std()?;
                let shutdown = shutdown.clone();
                connections.spawn_on(
                    async move {
                        // Registered with the worker's reactor, on its thread.
                        let stream = match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => stream,
                            Err(error) => {
                                tracing::warn!(%error, "router could not adopt a connection");
                                return;
                            }
                        };
                        match acceptor {
                            None => front::serve(proxy, stream, client_addr, shutdown).await,
                            Some(acceptor) => {
                                proxy
                                    .serve_tls_connection(stream, client_addr, acceptor, shutdown)
                                    .await
                            }
                        }
                    },
                    runtime,
                );
            }
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "router accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    // New connections are refused from here on.
    drop(listener);
    drop(tls);
    workers.drain();
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "router drain timed out; closing the connections still open"
        );
    }
    // Also ends upgraded (WebSocket) tunnels, which are not drained.
    hard_stop.cancel();
    // Ending the workers' runtimes drops the plain connections still open.
    workers.stop().await;
    connections.wait().await;
    tracing::info!(%addr, "router stopped");
    Ok(())
}

/// The next connection on the HTTPS listener; never, without one.
async fn accept_tls(
    tls: Option<&(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
) -> (
    std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
    tokio_rustls::TlsAcceptor,
) {
    match tls {
        Some((listener, acceptor)) => (listener.accept().await, acceptor.clone()),
        None => std::future::pending().await,
    }
}

/// Reads the certificate files again on each SIGHUP until `stop`; a set
/// that does not load is logged and the old one kept.
async fn reload_on_hangup(certs: Arc<CertStore>, mut hangups: Signal, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        match certs.reload() {
            Ok(()) => tracing::info!("router certificates reloaded"),
            Err(error) => {
                tracing::warn!(%error, "router certificates not reloaded; the previous ones stay in use")
            }
        }
    }
}
