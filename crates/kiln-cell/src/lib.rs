//! Kiln's cell: Diego's rep, executor and Garden for one machine.
//!
//! [`run`] announces the cell to the BBS, reads the work placed on it, and
//! runs each Task and ActualLrp instance in its own runc container on the
//! host-derived [`stack`]: downloads into the container's writable
//! directories, one process whose output becomes log lines, health checks
//! from the host side, uploads, and the report back to the BBS.
//!
//! **Architecture invariants.** The cell never touches a database or the
//! blobstore: it talks to the scheduler only through
//! [`kiln_bbs_client::BbsClient`], writes logs only through
//! [`kiln_logs::LogSink`], moves artifacts only over plain HTTP, and reaches
//! runc only through [`runtime::ContainerRuntime`].
//!
//! Code map: `rep` is the loop (heartbeat, bulk sync, reconcile); `executor`
//! runs one unit of work (`task`, `lrp`); `container` owns the per-container
//! directory and `disk` its file system (the disk quota); `download`,
//! `extract` and `upload` move artifacts; `health` probes instances;
//! `network` gives containers their namespace, bridge port, host port
//! mapping and DNS; `runtime` is the runc seam; `stack` builds the root
//! filesystem.

mod container;
mod disk;
mod download;
mod envs;
mod executor;
mod extract;
mod health;
pub mod image;
mod logs;
pub mod network;
mod ports;
mod rep;
pub mod runtime;
pub mod stack;
mod upload;

use kiln_bbs_client::{BbsClient, BbsError};
use kiln_logs::LogSink;
use kiln_model::bbs::CellCapacity;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use runtime::ContainerRuntime;
pub use runtime::runc::RuncRuntime;

/// Everything a cell needs to know about itself.
#[derive(Debug, Clone)]
pub struct CellConfig {
    /// Unique among the cells of one BBS.
    pub cell_id: String,
    /// Owned by this cell alone: the stack, the runc state, the container
    /// directories and the download cache live here.
    pub data_dir: PathBuf,
    /// Where the router and health checks reach instances (`CF_INSTANCE_IP`).
    pub address: String,
    pub capacity: CellCapacity,
    /// The stack this cell offers (`preloaded:<stack_name>`).
    pub stack_name: String,
    /// The Kiln binary, bind-mounted read-only at
    /// [`kiln_model::LIFECYCLE_BINARY_PATH`] in every container.
    pub lifecycle_binary: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// Host ports handed to instances as `$PORT`.
    pub port_range: Range<u16>,
    /// How often the cell heartbeats its presence (and, when a report
    /// is waiting or the cell evacuates, retries them).
    pub heartbeat_interval: Duration,
    /// How often the cell re-reads its whole work (the bulk sync, Diego's
    /// rep: 30 s). New work is picked up at once from the BBS's events;
    /// this is the backstop for anything an event did not say.
    pub bulk_sync_interval: Duration,
    /// The containers' network (a namespace per container on the cell's
    /// bridge); `None` runs containers in the host's network namespace,
    /// with `$PORT` a host port and no isolation (development only).
    pub network: Option<network::NetworkConfig>,
    /// How long an evacuating cell waits for its instances' replacements
    /// to run elsewhere before it stops them anyway (Diego: 10 minutes).
    pub evacuation_timeout: Duration,
    /// Docker images: registries, the layer cache's size, limits.
    pub images: image::ImageSettings,
}

impl CellConfig {
    /// Defaults for everything but the identity and the binaries.
    pub fn new(cell_id: impl Into<String>, data_dir: impl Into<PathBuf>) -> CellConfig {
        CellConfig {
            cell_id: cell_id.into(),
            data_dir: data_dir.into(),
            address: "127.0.0.1".into(),
            capacity: CellCapacity {
                memory_mb: 8192,
                disk_mb: 32768,
                containers: 256,
            },
            stack_name: stack::host_stack_name(),
            lifecycle_binary: std::env::current_exe().unwrap_or_default(),
            runc: PathBuf::from("/usr/sbin/runc"),
            port_range: DEFAULT_PORT_RANGE,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            bulk_sync_interval: DEFAULT_BULK_SYNC_INTERVAL,
            network: Some(network::NetworkConfig {
                subnet: network::DEFAULT_SUBNET
                    .parse()
                    .expect("the default subnet parses"),
                dns_servers: Vec::new(),
            }),
            evacuation_timeout: DEFAULT_EVACUATION_TIMEOUT,
            images: image::ImageSettings::default(),
        }
    }
}

/// How often a cell heartbeats unless configured otherwise: well within
/// the BBS's cell TTL.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// How often a cell re-reads its whole work unless configured otherwise
/// (Diego's rep's bulk sync).
pub const DEFAULT_BULK_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Diego's rep waits this long for evacuated instances to run elsewhere.
pub const DEFAULT_EVACUATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Host ports for instances unless configured otherwise.
pub const DEFAULT_PORT_RANGE: Range<u16> = 61000..62000;

#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("cell stack: {0}")]
    Stack(#[from] stack::StackError),
    #[error("cell runtime: {0}")]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cell bbs: {0}")]
    Bbs(#[from] BbsError),
    #[error("cell data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cell network: {0}")]
    Network(#[from] network::NetworkError),
    #[error("cell config: {0}")]
    Config(String),
    #[error("cell image cache: {0}")]
    Images(#[from] kiln_image::ImageError),
}

/// Runs the cell until `shutdown`, with runc as the container runtime.
///
/// At start it builds (or verifies) the stack, destroys every container a
/// previous run left behind, and heartbeats. Then it reconciles the work
/// the BBS placed on it on every BBS event that concerns it and every
/// `bulk_sync_interval`. On
/// shutdown it stops every container and returns.
pub async fn run(
    config: CellConfig,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), CellError> {
    run_evacuating(config, bbs, logs, CancellationToken::new(), shutdown).await
}

/// [`run`], and when `evacuate` is cancelled the cell evacuates (Diego's
/// evacuating rep): it asks the BBS to place its instances elsewhere,
/// keeps running each until its replacement is RUNNING (or
/// `evacuation_timeout` has passed), stops it, and returns once nothing
/// runs. `shutdown` still stops everything at once.
pub async fn run_evacuating(
    config: CellConfig,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    evacuate: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), CellError> {
    let runtime = Arc::new(RuncRuntime::new(
        config.runc.clone(),
        config.data_dir.join("runc"),
    ));
    rep::run(config, runtime, bbs, logs, evacuate, shutdown).await
}

/// [`run`] with another [`ContainerRuntime`] (a fake in tests of the loop).
pub async fn run_with_runtime(
    config: CellConfig,
    runtime: Arc<dyn ContainerRuntime>,
    bbs: Arc<dyn BbsClient>,
    logs: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> Result<(), CellError> {
    rep::run(
        config,
        runtime,
        bbs,
        logs,
        CancellationToken::new(),
        shutdown,
    )
    .await
}
