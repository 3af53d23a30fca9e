//! `BbsClient` over HTTP, for every role that is not in the BBS's process.

use crate::wire;
use crate::{ActualLrpFilter, BbsClient, BbsError, Credentials};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_model::bbs::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, BbsEvent, CellPresence,
    CellWork, DesiredLrp, DesiredLrpUpdate, Task, TaskDefinition,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// One call may take this long before it counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect back-off of the event stream: from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Cheap to clone; clones share the connection pool and the session.
#[derive(Clone)]
pub struct HttpBbsClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The BBS nodes it may call, in order (`A,B`): any node serves (a
    /// standby forwards to the active one), so when the one in use cannot
    /// be reached the client moves to the next.
    urls: Arc<[String]>,
    /// Index into `urls` of the node in use; shared by clones.
    current: Arc<AtomicUsize>,
    /// Replaced when the credentials file holds a newer one (see
    /// [`HttpBbsClient::with_credentials_file`]).
    token: RwLock<String>,
    credentials_file: Option<PathBuf>,
    http: reqwest::Client,
    /// A random value per client: the BBS tells two cells heartbeating
    /// under one id apart by it.
    session: String,
}

impl HttpBbsClient {
    /// A client of the BBS at `base_url`: one URL, or several separated by
    /// commas (the nodes of a cluster), tried in turn when one cannot be
    /// reached.
    pub fn new(base_url: &str, token: &str) -> Result<HttpBbsClient, BbsError> {
        let urls: Arc<[String]> = base_url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(BbsError::Unavailable("no bbs url given".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The BBS is Kiln's own; a proxy from the environment would
            // only get in the way.
            .no_proxy()
            .build()
            .map_err(|e| BbsError::Unavailable(format!("building the http client: {e}")))?;
        Ok(HttpBbsClient {
            inner: Arc::new(Inner {
                urls,
                current: Arc::new(AtomicUsize::new(0)),
                token: RwLock::new(token.to_string()),
                credentials_file: None,
                http,
                session: uuid::Uuid::new_v4().to_string(),
            }),
        })
    }

    /// A client from a credentials file; `url` overrides its `bbs_url`.
    pub fn from_credentials(
        credentials: &Credentials,
        url: Option<&str>,
    ) -> Result<HttpBbsClient, BbsError> {
        HttpBbsClient::new(url.unwrap_or(&credentials.bbs_url), &credentials.token)
    }

    /// The URL of the BBS node in use.
    pub fn base_url(&self) -> &str {
        &self.inner.urls[self.current() % self.inner.urls.len()]
    }

    fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed)
    }

    /// After a connection to node `failed` failed: the next node, unless
    /// another call has moved on already.
    fn move_past(&self, failed: usize) {
        let next = (failed + 1) % self.inner.urls.len();
        if self
            .inner
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && next != failed
        {
            tracing::warn!(
                unreachable = %self.inner.urls[failed],
                next = %self.inner.urls[next],
                "bbs node unreachable; moving to the next"
            );
        }
    }

    /// The same client under a given cell session (see
    /// [`wire::CELL_SESSION_HEADER`]); a cell keeps its session across
    /// restarts so that it takes its own id back at once.
    pub fn with_session(self, session: String) -> HttpBbsClient {
        HttpBbsClient {
            inner: Arc::new(Inner {
                urls: self.inner.urls.clone(),
                current: self.inner.current.clone(),
                token: RwLock::new(self.token()),
                credentials_file: self.inner.credentials_file.clone(),
                http: self.inner.http.clone(),
                session,
            }),
        }
    }

    /// The same client, reading `path` again when the BBS refuses its
    /// token: an operator replaces an expiring token (or one signed by a
    /// rotated-out key) by writing new credentials there, and the node
    /// carries on without a restart.
    pub fn with_credentials_file(self, path: PathBuf) -> HttpBbsClient {
        HttpBbsClient {
            inner: Arc::new(Inner {
                urls: self.inner.urls.clone(),
                current: self.inner.current.clone(),
                token: RwLock::new(self.token()),
                credentials_file: Some(path),
                http: self.inner.http.clone(),
                session: self.inner.session.clone(),
            }),
        }
    }

    fn token(&self) -> String {
        self.inner
            .token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the token in the credentials file if it differs from the one
    /// refused; whether it did.
    fn reread_token(&self) -> bool {
        let Some(path) = &self.inner.credentials_file else {
            return false;
        };
        let fresh = match Credentials::read(path) {
            Ok(c) => c.token,
            Err(error) => {
                tracing::warn!(%error, "cannot read the bbs credentials again");
                return false;
            }
        };
        let mut token = self.inner.token.write().unwrap_or_else(|e| e.into_inner());
        if *token == fresh {
            return false;
        }
        *token = fresh;
        tracing::info!(path = %path.display(), "bbs credentials re-read: using the new token");
        true
    }

    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.post_to(self.current(), path)
    }

    fn post_to(&self, node: usize, path: &str) -> reqwest::RequestBuilder {
        let base = &self.inner.urls[node % self.inner.urls.len()];
        self.inner
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(self.token())
            .header(wire::CELL_SESSION_HEADER, &self.inner.session)
            .timeout(CALL_TIMEOUT)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, BbsError> {
        match self.send(path, body).await {
            Err(BbsError::Unauthorized(_)) if self.reread_token() => self.send(path, body).await,
            Err(BbsError::Unauthorized(reason)) => {
                // Said loudly: nothing will work until the node gets new
                // credentials.
                tracing::error!(%reason, "the bbs refused this node's credentials");
                Err(BbsError::Unauthorized(reason))
            }
            other => other,
        }
    }

    /// One call, on the node in use or, when it cannot be connected to,
    /// on the next ones (nothing was sent to a node not connected to, so
    /// the call is safe to make again).
    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, BbsError> {
        let mut tries = self.inner.urls.len();
        let response = loop {
            let node = self.current();
            match self.post_to(node, path).json(body).send().await {
                Err(e) if e.is_connect() && tries > 1 => {
                    tries -= 1;
                    self.move_past(node);
                }
                other => break other.map_err(unavailable)?,
            }
        };
        let status = response.status();
        let body = response.bytes().await.map_err(unavailable)?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| BbsError::Unavailable(format!("undecodable answer: {e}")));
        }
        Err(error_from_answer(status, &body))
    }

    /// One connection of the event stream, forwarding events to `tx` until
    /// it breaks. Returns whether it got as far as connecting.
    async fn follow_events(&self, tx: &mpsc::Sender<BbsEvent>, lagged: bool) -> bool {
        let node = self.current();
        let request = self
            .inner
            .http
            .get(format!(
                "{}{}",
                self.inner.urls[node % self.inner.urls.len()],
                wire::EVENTS
            ))
            .bearer_auth(self.token());
        let response = match request.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let body = r.bytes().await.unwrap_or_default();
                let error = error_from_answer(status, &body);
                tracing::warn!(%error, "bbs event stream refused");
                return false;
            }
            Err(e) => {
                if e.is_connect() {
                    self.move_past(node);
                }
                tracing::debug!(error = %unavailable(e), "bbs event stream unreachable");
                return false;
            }
        };
        // Whatever happened while disconnected is lost: the subscriber
        // re-reads what it follows.
        if lagged && tx.send(BbsEvent::Lagged).await.is_err() {
            return true;
        }
        let idle = Duration::from_secs(3 * wire::EVENT_KEEPALIVE_SECS);
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(error))) => {
                    tracing::info!(error = %unavailable(error), "bbs event stream broke");
                    return true;
                }
                Ok(None) => return true,
                Err(_) => {
                    tracing::info!("bbs event stream silent; reconnecting");
                    return true;
                }
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue; // keep-alive
                }
                match serde_json::from_slice::<BbsEvent>(line) {
                    Ok(event) => {
                        if tx.send(event).await.is_err() {
                            return true;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "undecodable bbs event");
                        if tx.send(BbsEvent::Lagged).await.is_err() {
                            return true;
                        }
                    }
                }
            }
        }
    }
}

fn unavailable(error: reqwest::Error) -> BbsError {
    // reqwest's top-level message says little; the cause says why.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    BbsError::Unavailable(message)
}

/// The BBS answers errors as a JSON `BbsError`; anything else in front of
/// it (a proxy, a wrong port) is only known by its status.
pub(crate) fn error_from_answer(status: reqwest::StatusCode, body: &[u8]) -> BbsError {
    if let Ok(error) = serde_json::from_slice::<BbsError>(body) {
        return error;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    match status.as_u16() {
        401 | 403 => BbsError::Unauthorized(format!("{status}: {text}")),
        400..=499 => BbsError::InvalidRequest(format!("{status}: {text}")),
        _ => BbsError::Unavailable(format!("{status}: {text}")),
    }
}

#[async_trait]
impl BbsClient for HttpBbsClient {
    async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        definition: TaskDefinition,
    ) -> Result<(), BbsError> {
        let body = wire::DesireTask {
            task_guid: task_guid.into(),
            domain: domain.into(),
            definition,
        };
        self.call(wire::DESIRE_TASK, &body).await
    }

    async fn task_by_guid(&self, task_guid: &str) -> Result<Task, BbsError> {
        let body = wire::TaskGuid {
            task_guid: task_guid.into(),
        };
        self.call(wire::TASK_BY_GUID, &body).await
    }

    async fn tasks(&self, domain: Option<&str>) -> Result<Vec<Task>, BbsError> {
        let body = wire::Domain {
            domain: domain.map(Into::into),
        };
        self.call(wire::TASKS, &body).await
    }

    async fn cancel_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let body = wire::TaskGuid {
            task_guid: task_guid.into(),
        };
        self.call(wire::CANCEL_TASK, &body).await
    }

    async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let body = wire::TaskGuid {
            task_guid: task_guid.into(),
        };
        self.call(wire::RESOLVING_TASK, &body).await
    }

    async fn delete_task(&self, task_guid: &str) -> Result<(), BbsError> {
        let body = wire::TaskGuid {
            task_guid: task_guid.into(),
        };
        self.call(wire::DELETE_TASK, &body).await
    }

    async fn desire_lrp(&self, desired_lrp: DesiredLrp) -> Result<(), BbsError> {
        self.call(wire::DESIRE_LRP, &wire::DesireLrp { desired_lrp })
            .await
    }

    async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: DesiredLrpUpdate,
    ) -> Result<(), BbsError> {
        let body = wire::UpdateDesiredLrp {
            process_guid: process_guid.into(),
            update,
        };
        self.call(wire::UPDATE_DESIRED_LRP, &body).await
    }

    async fn remove_desired_lrp(&self, process_guid: &str) -> Result<(), BbsError> {
        let body = wire::ProcessGuid {
            process_guid: process_guid.into(),
        };
        self.call(wire::REMOVE_DESIRED_LRP, &body).await
    }

    async fn desired_lrps(&self, domain: Option<&str>) -> Result<Vec<DesiredLrp>, BbsError> {
        let body = wire::Domain {
            domain: domain.map(Into::into),
        };
        self.call(wire::DESIRED_LRPS, &body).await
    }

    async fn desired_lrp_by_process_guid(
        &self,
        process_guid: &str,
    ) -> Result<DesiredLrp, BbsError> {
        let body = wire::ProcessGuid {
            process_guid: process_guid.into(),
        };
        self.call(wire::DESIRED_LRP_BY_PROCESS_GUID, &body).await
    }

    async fn actual_lrps(&self, filter: ActualLrpFilter) -> Result<Vec<ActualLrp>, BbsError> {
        self.call(wire::ACTUAL_LRPS, &wire::ActualLrps { filter })
            .await
    }

    async fn heartbeat_cell(&self, presence: CellPresence) -> Result<(), BbsError> {
        self.call(wire::HEARTBEAT_CELL, &wire::HeartbeatCell { presence })
            .await
    }

    async fn cells(&self) -> Result<Vec<CellPresence>, BbsError> {
        self.call(wire::CELLS, &()).await
    }

    async fn cell_work(&self, cell_id: &str) -> Result<CellWork, BbsError> {
        let body = wire::CellId {
            cell_id: cell_id.into(),
        };
        self.call(wire::CELL_WORK, &body).await
    }

    async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool, BbsError> {
        let body = wire::StartTask {
            task_guid: task_guid.into(),
            cell_id: cell_id.into(),
        };
        self.call(wire::START_TASK, &body).await
    }

    async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<(), BbsError> {
        let body = wire::CompleteTask {
            task_guid: task_guid.into(),
            cell_id: cell_id.into(),
            failed,
            failure_reason: failure_reason.into(),
            result: result.into(),
        };
        self.call(wire::COMPLETE_TASK, &body).await
    }

    async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: ActualLrpNetInfo,
    ) -> Result<(), BbsError> {
        let body = wire::StartActualLrp {
            key: key.clone(),
            instance_key: instance_key.clone(),
            net_info,
        };
        self.call(wire::START_ACTUAL_LRP, &body).await
    }

    async fn crash_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<(), BbsError> {
        let body = wire::CrashActualLrp {
            key: key.clone(),
            instance_key: instance_key.clone(),
            reason: reason.into(),
        };
        self.call(wire::CRASH_ACTUAL_LRP, &body).await
    }

    async fn evacuate_cell(&self, cell_id: &str) -> Result<(), BbsError> {
        let body = wire::CellId {
            cell_id: cell_id.into(),
        };
        self.call(wire::EVACUATE_CELL, &body).await
    }

    async fn evacuating_lrps(&self) -> Result<Vec<ActualLrp>, BbsError> {
        self.call(wire::EVACUATING_LRPS, &()).await
    }

    async fn remove_evacuating_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError> {
        let body = wire::RemoveEvacuatingLrp {
            key: key.clone(),
            instance_key: instance_key.clone(),
        };
        self.call(wire::REMOVE_EVACUATING_LRP, &body).await
    }

    /// Follows the server's event stream, reconnecting with back-off for as
    /// long as the subscriber holds the stream; after every reconnect the
    /// subscriber gets `Lagged`, since events in between are lost.
    fn subscribe(&self) -> BoxStream<'static, BbsEvent> {
        let (tx, mut rx) = mpsc::channel::<BbsEvent>(1024);
        let client = self.clone();
        tokio::spawn(async move {
            let mut delay = RECONNECT_FIRST;
            let mut lagged = false;
            while !tx.is_closed() {
                let connected = tokio::select! {
                    connected = client.follow_events(&tx, lagged) => connected,
                    _ = tx.closed() => return,
                };
                lagged = true;
                if connected {
                    delay = RECONNECT_FIRST;
                } else {
                    delay = (delay * 2).min(RECONNECT_MAX);
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
