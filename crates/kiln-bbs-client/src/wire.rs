//! What crosses the wire between a remote role and the BBS server: one
//! `POST` per `BbsClient` call with a JSON body (Diego's paths, e.g.
//! `/v1/desired_lrps/list`; Diego sends protobuf, Kiln sends the
//! `kiln-model` types as JSON), the event stream as JSON lines, and log
//! envelopes. Every request carries `Authorization: Bearer <token>`.
//!
//! An answer is `200` with the call's result as JSON, or an error status
//! with a [`BbsError`](crate::BbsError) as JSON.

use crate::ActualLrpFilter;
use kiln_model::bbs::{
    ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, CellPresence, DesiredLrp,
    DesiredLrpUpdate, TaskDefinition,
};
use kiln_model::logs::{ContainerMetric, LogEnvelope};
use serde::{Deserialize, Serialize};

pub const DESIRE_TASK: &str = "/v1/tasks/desire";
pub const TASK_BY_GUID: &str = "/v1/tasks/get_by_task_guid";
pub const TASKS: &str = "/v1/tasks/list";
pub const CANCEL_TASK: &str = "/v1/tasks/cancel";
pub const RESOLVING_TASK: &str = "/v1/tasks/resolving";
pub const DELETE_TASK: &str = "/v1/tasks/delete";
pub const START_TASK: &str = "/v1/tasks/start";
pub const COMPLETE_TASK: &str = "/v1/tasks/complete";
pub const DESIRE_LRP: &str = "/v1/desired_lrp/desire";
pub const UPDATE_DESIRED_LRP: &str = "/v1/desired_lrp/update";
pub const REMOVE_DESIRED_LRP: &str = "/v1/desired_lrp/remove";
pub const DESIRED_LRPS: &str = "/v1/desired_lrps/list";
pub const DESIRED_LRP_BY_PROCESS_GUID: &str = "/v1/desired_lrps/get_by_process_guid";
pub const ACTUAL_LRPS: &str = "/v1/actual_lrps/list";
pub const START_ACTUAL_LRP: &str = "/v1/actual_lrps/start";
pub const CRASH_ACTUAL_LRP: &str = "/v1/actual_lrps/crash";
pub const HEARTBEAT_CELL: &str = "/v1/cells/heartbeat";
pub const CELLS: &str = "/v1/cells/list";
pub const CELL_WORK: &str = "/v1/cells/work";
pub const EVACUATE_CELL: &str = "/v1/cells/evacuate";
pub const EVACUATING_LRPS: &str = "/v1/actual_lrps/evacuating/list";
pub const REMOVE_EVACUATING_LRP: &str = "/v1/actual_lrps/evacuating/remove";
/// `GET`: one JSON [`BbsEvent`](kiln_model::bbs::BbsEvent) per line; an
/// empty line every [`EVENT_KEEPALIVE_SECS`] while nothing happens.
pub const EVENTS: &str = "/v1/events";
pub const LOGS: &str = "/v1/logs";
/// `GET`, unauthenticated: `ok` when the server answers.
pub const PING: &str = "/ping";

/// The server writes an empty line this often on an idle event stream; a
/// client that hears nothing for three times as long reconnects.
pub const EVENT_KEEPALIVE_SECS: u64 = 10;

/// The header every request names the client's session in: a random value
/// per cell process, so a second process under a live cell's id is told
/// apart from the same cell heartbeating again, and a cell's reports are
/// taken only from the session that holds its id.
pub const CELL_SESSION_HEADER: &str = "x-kiln-cell-session";

#[derive(Debug, Serialize, Deserialize)]
pub struct DesireTask {
    pub task_guid: String,
    pub domain: String,
    pub definition: TaskDefinition,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TaskGuid {
    pub task_guid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Domain {
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StartTask {
    pub task_guid: String,
    pub cell_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CompleteTask {
    pub task_guid: String,
    pub cell_id: String,
    pub failed: bool,
    #[serde(default)]
    pub failure_reason: String,
    #[serde(default)]
    pub result: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DesireLrp {
    pub desired_lrp: DesiredLrp,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateDesiredLrp {
    pub process_guid: String,
    pub update: DesiredLrpUpdate,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessGuid {
    pub process_guid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ActualLrps {
    pub filter: ActualLrpFilter,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StartActualLrp {
    pub key: ActualLrpKey,
    pub instance_key: ActualLrpInstanceKey,
    pub net_info: ActualLrpNetInfo,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CrashActualLrp {
    pub key: ActualLrpKey,
    pub instance_key: ActualLrpInstanceKey,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveEvacuatingLrp {
    pub key: ActualLrpKey,
    pub instance_key: ActualLrpInstanceKey,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatCell {
    pub presence: CellPresence,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CellId {
    pub cell_id: String,
}

/// A batch of what a remote cell or router produced for the log service.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LogBatch {
    #[serde(default)]
    pub envelopes: Vec<LogEnvelope>,
    #[serde(default)]
    pub metrics: Vec<ContainerMetric>,
}
