//! **API Boundary.** The only way into the BBS (Diego's `bbs` client
//! package; the server and its database are the `kiln-bbs` crate, Diego's
//! `bbs/db`).
//!
//! Cloud Controller desires Tasks and DesiredLrps and reads ActualLrps
//! through it; cells heartbeat, read the work placed on them and report
//! state through it; the router follows routes through it. In the
//! all-in-one server the implementation is the in-process `kiln_bbs::Bbs`;
//! a role in another process uses [`HttpBbsClient`], which speaks the same
//! calls over HTTP ([`wire`] names the paths), so a caller never knows
//! which it has. Cells and routers depend on this crate only, never on the
//! BBS's storage.

mod credentials;
mod error;
mod http;
mod log_sink;
pub mod wire;

pub use credentials::{Credentials, CredentialsError};
pub use error::BbsError;
pub use http::HttpBbsClient;
pub use log_sink::HttpLogSink;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use kiln_model::bbs::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, BbsEvent, CellPresence,
    CellWork, DesiredLrp, DesiredLrpUpdate, Task, TaskDefinition,
};
use serde::{Deserialize, Serialize};

/// Which ActualLrps to read; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrpFilter {
    pub domain: Option<String>,
    pub process_guid: Option<String>,
    pub cell_id: Option<String>,
}

#[async_trait]
pub trait BbsClient: Send + Sync {
    // --- Tasks, as Cloud Controller uses them ---

    /// Creates a PENDING task; the auctioneer places it on a cell.
    async fn desire_task(
        &self,
        task_guid: &str,
        domain: &str,
        definition: TaskDefinition,
    ) -> Result<(), BbsError>;
    async fn task_by_guid(&self, task_guid: &str) -> Result<Task, BbsError>;
    async fn tasks(&self, domain: Option<&str>) -> Result<Vec<Task>, BbsError>;
    /// Completes the task as failed with reason "task was cancelled"; the
    /// cell running it stops its container.
    async fn cancel_task(&self, task_guid: &str) -> Result<(), BbsError>;
    /// COMPLETED → RESOLVING: the caller takes over the result. Exactly one
    /// caller wins; the others get `InvalidTransition`.
    async fn resolving_task(&self, task_guid: &str) -> Result<(), BbsError>;
    /// Deletes a RESOLVING task once its result has been recorded.
    async fn delete_task(&self, task_guid: &str) -> Result<(), BbsError>;

    // --- LRPs, as Cloud Controller and the router use them ---

    /// Creates the DesiredLrp and its ActualLrps (UNCLAIMED, one per index).
    async fn desire_lrp(&self, desired_lrp: DesiredLrp) -> Result<(), BbsError>;
    async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: DesiredLrpUpdate,
    ) -> Result<(), BbsError>;
    /// Removes the DesiredLrp; its instances are stopped by their cells.
    async fn remove_desired_lrp(&self, process_guid: &str) -> Result<(), BbsError>;
    async fn desired_lrps(&self, domain: Option<&str>) -> Result<Vec<DesiredLrp>, BbsError>;
    async fn desired_lrp_by_process_guid(&self, process_guid: &str)
    -> Result<DesiredLrp, BbsError>;
    async fn actual_lrps(&self, filter: ActualLrpFilter) -> Result<Vec<ActualLrp>, BbsError>;

    // --- Cells (Diego's rep) ---

    /// Announces the cell and refreshes its presence; a cell that stops
    /// heartbeating is considered lost and its work is re-placed.
    async fn heartbeat_cell(&self, presence: CellPresence) -> Result<(), BbsError>;
    async fn cells(&self) -> Result<Vec<CellPresence>, BbsError>;
    /// Everything placed on the cell: the cell starts what it does not run
    /// and stops what it runs that is not here (its bulk sync).
    async fn cell_work(&self, cell_id: &str) -> Result<CellWork, BbsError>;
    /// PENDING → RUNNING for a task placed on this cell. `Ok(false)` means
    /// the task must not run (cancelled, or placed elsewhere).
    async fn start_task(&self, task_guid: &str, cell_id: &str) -> Result<bool, BbsError>;
    /// RUNNING → COMPLETED, with the result file's content on success.
    async fn complete_task(
        &self,
        task_guid: &str,
        cell_id: &str,
        failed: bool,
        failure_reason: &str,
        result: &str,
    ) -> Result<(), BbsError>;
    /// CLAIMED → RUNNING: the instance passed its health check.
    async fn start_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        net_info: ActualLrpNetInfo,
    ) -> Result<(), BbsError>;
    /// The instance's process exited or failed its health check.
    async fn crash_actual_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<(), BbsError>;

    // --- Evacuation (Diego's evacuating rep) ---

    /// The cell is going away: the BBS places a replacement elsewhere for
    /// each of its instances and nothing new on it, while the old
    /// instances keep running and routed ([`Self::evacuating_lrps`]) until
    /// the cell stops them.
    async fn evacuate_cell(&self, cell_id: &str) -> Result<(), BbsError>;
    /// Instances still running on evacuating cells, RUNNING with their old
    /// instance key and address, beside the ActualLrps (whose record is
    /// their replacement's). The router routes to both.
    async fn evacuating_lrps(&self) -> Result<Vec<ActualLrp>, BbsError>;
    /// The evacuating cell stopped (or is about to stop) this instance.
    async fn remove_evacuating_lrp(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
    ) -> Result<(), BbsError>;

    // --- Everyone ---

    /// Changes as they happen. Best-effort: on `BbsEvent::Lagged` the
    /// subscriber re-reads what it follows.
    fn subscribe(&self) -> BoxStream<'static, BbsEvent>;
}
