//! A cluster node's BBS: active while the node holds the BBS lock
//! ([`crate::lock`]), a forwarder to the active node otherwise.
//!
//! Every node's BBS server answers on its own address, so every role of
//! every node (and a cell joined from elsewhere with any node's URL) keeps
//! one URL across failovers: the node that holds the lock serves the
//! request itself, a standby forwards it (the event stream included) to
//! the holder named in the lock row. When the lease is taken, the BBS
//! opens afresh (its in-memory mirror rebuilt from the tables, as a BBS
//! restart does) and starts its auctioneer and converger; when it is lost,
//! they stop, and every request is refused or forwarded at once, even
//! before the lease task notices ([`Lease::is_held`] is checked on every
//! request). Event streams served by a BBS that goes standby end, so their
//! clients reconnect (and resubscribe) through the forwarder.

use crate::auth::Keys;
use crate::lock::{Lease, LockState};
use crate::{Bbs, BbsConfig, BbsError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_bbs_client::wire;
use kiln_logs::LogSink;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Marks a request a standby forwarded: a node that is not active either
/// refuses it rather than forward it again (no loops while the lock row
/// is stale).
const FORWARDED_HEADER: &str = "x-kiln-bbs-forwarded";
/// The largest request body forwarded (the BBS server's own limit).
const MAX_BODY: usize = 16 * 1024 * 1024;
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an opening that failed waits before the next try.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// What a cluster node's BBS is made of.
pub struct ClusterBbs {
    pub database: kiln_store::Database,
    pub max_connections: u32,
    pub config: BbsConfig,
    /// Where the logs cells and routers send to the active BBS go.
    pub logs: Arc<dyn LogSink>,
    /// `<data-dir>/bbs`: the keys tokens are checked with.
    pub keys_dir: PathBuf,
}

struct Front {
    lease: Lease,
    /// The active BBS's HTTP server, while this node holds the lock.
    active: RwLock<Option<Router>>,
    /// The holder's BBS URL, from the lock row, while this node does not.
    holder: RwLock<Option<String>>,
    http: reqwest::Client,
}

/// The BBS this node runs while it is active.
struct Active {
    stop: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

impl ClusterBbs {
    /// Serves `listener` and follows `lease` (see [`crate::lock::BbsLock::spawn`]) until
    /// `shutdown`.
    pub async fn run(
        self,
        mut lease: Lease,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), BbsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(FORWARD_CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| BbsError::Unavailable(format!("building the http client: {e}")))?;
        let front = Arc::new(Front {
            lease: lease.clone(),
            active: RwLock::new(None),
            holder: RwLock::new(None),
            http,
        });
        let server = {
            let app = Router::new()
                .fallback(handle)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
                .with_state(front.clone());
            let token = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await
            })
        };
        let mut active: Option<Active> = None;
        loop {
            match lease.state() {
                LockState::Active if active.is_none() => match self.activate(&front).await {
                    Ok(a) => active = Some(a),
                    Err(error) => {
                        tracing::warn!(%error, "opening the bbs after taking the lock; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(RETRY_OPEN) => continue,
                        }
                    }
                },
                LockState::Active => {}
                LockState::Standby { holder_url } => {
                    if let Some(a) = active.take() {
                        deactivate(&front, a).await;
                    }
                    *front.holder.write().unwrap_or_else(|e| e.into_inner()) = holder_url;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = lease.changed() => if changed.is_none() { break },
            }
        }
        if let Some(a) = active.take() {
            deactivate(&front, a).await;
        }
        match server.await {
            Ok(result) => result.map_err(|e| BbsError::Unavailable(e.to_string())),
            Err(e) => Err(BbsError::Unavailable(format!(
                "the bbs server panicked: {e}"
            ))),
        }
    }

    /// Opens the BBS from the tables and starts its loops and server.
    async fn activate(&self, front: &Front) -> Result<Active, BbsError> {
        let bbs = Bbs::open_fenced(
            &self.database,
            self.max_connections,
            self.config.clone(),
            front.lease.owner(),
        )
        .await?;
        let keys = Keys::from_dir(&self.keys_dir).map_err(|e| {
            BbsError::Unavailable(format!(
                "reading the bbs keys in {}: {e}",
                self.keys_dir.display()
            ))
        })?;
        let stop = CancellationToken::new();
        let router = crate::server::router(bbs.clone(), self.logs.clone(), keys, stop.clone());
        let run = {
            let (bbs, stop) = (bbs.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(error) = bbs.run(stop).await {
                    tracing::error!(%error, "the active bbs stopped");
                }
            })
        };
        *front.active.write().unwrap_or_else(|e| e.into_inner()) = Some(router);
        tracing::info!("bbs active on this node");
        Ok(Active { stop, run })
    }
}

/// Stops the active BBS's loops and drops its server: requests are
/// forwarded from now on.
async fn deactivate(front: &Front, active: Active) {
    front
        .active
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    active.stop.cancel();
    let _ = active.run.await;
    tracing::info!("bbs standing by: requests go to the node holding the lock");
}

async fn handle(State(front): State<Arc<Front>>, request: Request) -> Response {
    if front.lease.is_held() {
        let router = front
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(router) = router {
            return match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
    }
    if request.uri().path() == wire::PING {
        return "ok".into_response();
    }
    let holder = front
        .holder
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match holder {
        Some(url) if !request.headers().contains_key(FORWARDED_HEADER) => {
            forward(&front.http, &url, request).await
        }
        _ => refuse(BbsError::Unavailable(
            "no active bbs: the bbs lock is being taken over; retry".into(),
        )),
    }
}

fn refuse(error: BbsError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, axum::Json(error)).into_response()
}

/// The request to the holder, its answer streamed back (the event stream
/// is one long answer).
async fn forward(http: &reqwest::Client, holder: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => return refuse(BbsError::InvalidRequest(format!("request body: {e}"))),
    };
    let mut outgoing = http
        .request(parts.method.clone(), format!("{holder}{path}"))
        .header(FORWARDED_HEADER, "1")
        .body(body);
    for name in [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::HeaderName::from_static(wire::CELL_SESSION_HEADER),
    ] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name, value.clone());
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(holder, error = %e, "forwarding to the active bbs failed");
            return refuse(BbsError::Unavailable(format!(
                "the active bbs at {holder} did not answer: {e}"
            )));
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(value) = answer.headers().get(header::CONTENT_TYPE) {
        response = response.header(
            header::CONTENT_TYPE,
            HeaderValue::from_bytes(value.as_bytes())
                .unwrap_or(HeaderValue::from_static("application/json")),
        );
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
