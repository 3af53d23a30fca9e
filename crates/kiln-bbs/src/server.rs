//! The BBS over HTTP (`kiln server --bbs-listen`): every `BbsClient` call
//! as a `POST` of JSON at the paths in `kiln_bbs_client::wire`, the event
//! stream as JSON lines, and the log ingress for remote cells and routers.
//! Every request but `/ping` must carry a token signed by the BBS's key
//! ([`crate::auth`]); anything else is answered 401 with the reason.

use crate::auth::{Keys, Refusal, Verified};
use crate::presence::CellSessions;
use crate::{Bbs, BbsClient, BbsError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use kiln_bbs_client::wire;
use kiln_logs::LogSink;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A log batch larger than this is refused (a cell sends at most 500
/// envelopes of at most a few KB).
const MAX_BODY: usize = 16 * 1024 * 1024;

struct ServerState {
    bbs: Bbs,
    logs: Arc<dyn LogSink>,
    keys: Keys,
    sessions: CellSessions,
    shutdown: CancellationToken,
}

/// Serves the BBS on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    bbs: Bbs,
    logs: Arc<dyn LogSink>,
    keys: impl Into<Keys>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(bbs, logs, keys, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

pub fn router(
    bbs: Bbs,
    logs: Arc<dyn LogSink>,
    keys: impl Into<Keys>,
    shutdown: CancellationToken,
) -> Router {
    let state = Arc::new(ServerState {
        bbs,
        logs,
        keys: keys.into(),
        sessions: CellSessions::default(),
        shutdown,
    });
    Router::new()
        .route(wire::DESIRE_TASK, post(desire_task))
        .route(wire::TASK_BY_GUID, post(task_by_guid))
        .route(wire::TASKS, post(tasks))
        .route(wire::CANCEL_TASK, post(cancel_task))
        .route(wire::RESOLVING_TASK, post(resolving_task))
        .route(wire::DELETE_TASK, post(delete_task))
        .route(wire::START_TASK, post(start_task))
        .route(wire::COMPLETE_TASK, post(complete_task))
        .route(wire::DESIRE_LRP, post(desire_lrp))
        .route(wire::UPDATE_DESIRED_LRP, post(update_desired_lrp))
        .route(wire::REMOVE_DESIRED_LRP, post(remove_desired_lrp))
        .route(wire::DESIRED_LRPS, post(desired_lrps))
        .route(
            wire::DESIRED_LRP_BY_PROCESS_GUID,
            post(desired_lrp_by_process_guid),
        )
        .route(wire::ACTUAL_LRPS, post(actual_lrps))
        .route(wire::START_ACTUAL_LRP, post(start_actual_lrp))
        .route(wire::CRASH_ACTUAL_LRP, post(crash_actual_lrp))
        .route(wire::HEARTBEAT_CELL, post(heartbeat_cell))
        .route(wire::CELLS, post(cells))
        .route(wire::CELL_WORK, post(cell_work))
        .route(wire::EVACUATE_CELL, post(evacuate_cell))
        .route(wire::EVACUATING_LRPS, post(evacuating_lrps))
        .route(wire::REMOVE_EVACUATING_LRP, post(remove_evacuating_lrp))
        .route(wire::EVENTS, get(events))
        .route(wire::LOGS, post(logs_ingress))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route(wire::PING, get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn authenticate(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    match check_token(&state.keys, request.headers()) {
        Ok(_) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(path = %request.uri().path(), %refusal, "bbs request refused");
            answer::<()>(Err(BbsError::Unauthorized(refusal.to_string())))
        }
    }
}

fn check_token(keys: &Keys, headers: &HeaderMap) -> Result<Verified, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::Missing)?
        .to_str()
        .map_err(|_| Refusal::Malformed)?;
    let token = value.strip_prefix("Bearer ").ok_or(Refusal::Malformed)?;
    keys.verify(token, crate::auth::unix_now())
}

fn answer<T: Serialize>(result: Result<T, BbsError>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => {
            let status =
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(error)).into_response()
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BbsError> {
    serde_json::from_slice(body).map_err(|e| BbsError::InvalidRequest(format!("request body: {e}")))
}

type S = State<Arc<ServerState>>;

/// Refuses a cell's heartbeat or report made with a token issued for
/// another cell (a token for any node may act for any cell). The token was
/// verified by [`authenticate`]; only its subject is read here.
fn token_names(headers: &HeaderMap, cell_id: &str) -> Result<(), BbsError> {
    let subject = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(crate::auth::token_subject);
    match subject {
        Some(subject) if subject != cell_id => {
            tracing::warn!(cell_id, token_for = subject, "cell request refused");
            Err(BbsError::Unauthorized(format!(
                "{}: it names {subject}, not {cell_id}",
                Refusal::WrongCell
            )))
        }
        _ => Ok(()),
    }
}

/// Refuses a cell's report (or evacuation) sent by a process other than
/// the one that holds the cell's id.
fn acting_for(s: &ServerState, headers: &HeaderMap, cell_id: &str) -> Result<(), BbsError> {
    token_names(headers, cell_id)?;
    let session = headers
        .get(wire::CELL_SESSION_HEADER)
        .and_then(|v| v.to_str().ok());
    let checked = s.sessions.check(cell_id, session);
    if let Err(error) = &checked {
        tracing::warn!(cell_id, %error, "cell report refused");
    }
    checked
}

async fn desire_task(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::DesireTask = parse(&body)?;
            s.bbs
                .desire_task(&r.task_guid, &r.domain, r.definition)
                .await
        }
        .await,
    )
}

async fn task_by_guid(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::TaskGuid = parse(&body)?;
            s.bbs.task_by_guid(&r.task_guid).await
        }
        .await,
    )
}

async fn tasks(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::Domain = parse(&body)?;
            s.bbs.tasks(r.domain.as_deref()).await
        }
        .await,
    )
}

async fn cancel_task(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::TaskGuid = parse(&body)?;
            s.bbs.cancel_task(&r.task_guid).await
        }
        .await,
    )
}

async fn resolving_task(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::TaskGuid = parse(&body)?;
            s.bbs.resolving_task(&r.task_guid).await
        }
        .await,
    )
}

async fn delete_task(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::TaskGuid = parse(&body)?;
            s.bbs.delete_task(&r.task_guid).await
        }
        .await,
    )
}

async fn start_task(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::StartTask = parse(&body)?;
            acting_for(&s, &headers, &r.cell_id)?;
            s.bbs.start_task(&r.task_guid, &r.cell_id).await
        }
        .await,
    )
}

async fn complete_task(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::CompleteTask = parse(&body)?;
            acting_for(&s, &headers, &r.cell_id)?;
            s.bbs
                .complete_task(
                    &r.task_guid,
                    &r.cell_id,
                    r.failed,
                    &r.failure_reason,
                    &r.result,
                )
                .await
        }
        .await,
    )
}

async fn desire_lrp(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::DesireLrp = parse(&body)?;
            s.bbs.desire_lrp(r.desired_lrp).await
        }
        .await,
    )
}

async fn update_desired_lrp(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::UpdateDesiredLrp = parse(&body)?;
            s.bbs.update_desired_lrp(&r.process_guid, r.update).await
        }
        .await,
    )
}

async fn remove_desired_lrp(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::ProcessGuid = parse(&body)?;
            s.bbs.remove_desired_lrp(&r.process_guid).await
        }
        .await,
    )
}

async fn desired_lrps(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::Domain = parse(&body)?;
            s.bbs.desired_lrps(r.domain.as_deref()).await
        }
        .await,
    )
}

async fn desired_lrp_by_process_guid(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::ProcessGuid = parse(&body)?;
            s.bbs.desired_lrp_by_process_guid(&r.process_guid).await
        }
        .await,
    )
}

async fn actual_lrps(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::ActualLrps = parse(&body)?;
            s.bbs.actual_lrps(r.filter).await
        }
        .await,
    )
}

async fn start_actual_lrp(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::StartActualLrp = parse(&body)?;
            acting_for(&s, &headers, &r.instance_key.cell_id)?;
            s.bbs
                .start_actual_lrp(&r.key, &r.instance_key, r.net_info)
                .await
        }
        .await,
    )
}

async fn crash_actual_lrp(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::CrashActualLrp = parse(&body)?;
            acting_for(&s, &headers, &r.instance_key.cell_id)?;
            s.bbs
                .crash_actual_lrp(&r.key, &r.instance_key, &r.reason)
                .await
        }
        .await,
    )
}

async fn heartbeat_cell(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::HeartbeatCell = parse(&body)?;
            let session = headers
                .get(wire::CELL_SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    BbsError::InvalidRequest(format!(
                        "a heartbeat needs the {} header",
                        wire::CELL_SESSION_HEADER
                    ))
                })?;
            if r.presence.cell_id.is_empty() {
                return Err(BbsError::InvalidRequest("empty cell id".into()));
            }
            token_names(&headers, &r.presence.cell_id)?;
            if let Err(error) = s
                .sessions
                .claim(&r.presence.cell_id, session, s.bbs.cell_ttl())
            {
                tracing::warn!(cell_id = %r.presence.cell_id, "heartbeat refused: the cell id is held by a live cell");
                return Err(error);
            }
            s.bbs.heartbeat_cell(r.presence).await
        }
        .await,
    )
}

async fn cells(State(s): S) -> Response {
    answer(s.bbs.cells().await)
}

async fn cell_work(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::CellId = parse(&body)?;
            s.bbs.cell_work(&r.cell_id).await
        }
        .await,
    )
}

async fn evacuate_cell(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::CellId = parse(&body)?;
            acting_for(&s, &headers, &r.cell_id)?;
            s.bbs.evacuate_cell(&r.cell_id).await
        }
        .await,
    )
}

async fn evacuating_lrps(State(s): S) -> Response {
    answer(s.bbs.evacuating_lrps().await)
}

async fn remove_evacuating_lrp(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let r: wire::RemoveEvacuatingLrp = parse(&body)?;
            acting_for(&s, &headers, &r.instance_key.cell_id)?;
            s.bbs.remove_evacuating_lrp(&r.key, &r.instance_key).await
        }
        .await,
    )
}

async fn logs_ingress(State(s): S, body: Bytes) -> Response {
    answer(
        async {
            let batch: wire::LogBatch = parse(&body)?;
            for envelope in batch.envelopes {
                s.logs.emit(envelope);
            }
            for metric in batch.metrics {
                s.logs.emit_metric(metric);
            }
            Ok(())
        }
        .await,
    )
}

/// JSON lines, an empty line when idle, until the client goes away or the
/// server stops. A subscriber that falls behind gets `lagged` in the
/// stream, as in process.
async fn events(State(s): S) -> Response {
    let keepalive = Duration::from_secs(wire::EVENT_KEEPALIVE_SECS);
    let shutdown = s.shutdown.clone();
    let events = s.bbs.subscribe();
    let lines = futures_util::stream::unfold(events, move |mut events| {
        let shutdown = shutdown.clone();
        async move {
            let line = tokio::select! {
                event = events.next() => {
                    let mut line = serde_json::to_vec(&event?).ok()?;
                    line.push(b'\n');
                    line
                }
                _ = tokio::time::sleep(keepalive) => b"\n".to_vec(),
                _ = shutdown.cancelled() => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), events))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
