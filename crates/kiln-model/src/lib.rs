//! Kiln's shared vocabulary.
//!
//! Every other crate may depend on this one and on nothing else of Kiln's
//! below it. It does no IO: it names things (in Cloud Foundry's and Diego's
//! words), says which state changes are legal, and defines the plain data
//! that crosses boundaries (API ↔ BBS ↔ cell ↔ lifecycle).

pub mod bbs;
pub mod logs;
pub mod rootfs;
pub mod staging;
pub mod state;
pub mod testing;

pub use state::{
    ActualLrpState, AppState, AppTaskState, BuildState, DeploymentState, DropletState,
    PackageState, TaskState, TransitionError,
};

/// Domain of the Tasks that stage apps (Diego's `cf-app-staging`).
pub const STAGING_DOMAIN: &str = "cf-app-staging";
/// Domain of the DesiredLrps that run app processes (Diego's `cf-apps`).
pub const APPS_DOMAIN: &str = "cf-apps";
/// Domain of the Tasks users run with `run-task` (Diego's `cf-tasks`).
pub const TASKS_DOMAIN: &str = "cf-tasks";

/// Log source type of staging output.
pub const LOG_SOURCE_STAGING: &str = "STG";
/// Log source type of router access lines.
pub const LOG_SOURCE_ROUTER: &str = "RTR";
/// Log source type of platform events emitted by the API.
pub const LOG_SOURCE_API: &str = "API";
/// Log source type of platform events emitted by a cell.
pub const LOG_SOURCE_CELL: &str = "CELL";

/// Where the Kiln binary is bind-mounted (read-only) inside every container,
/// the way Diego places its lifecycle bundle at `/tmp/lifecycle`.
pub const LIFECYCLE_BINARY_PATH: &str = "/tmp/lifecycle/kiln";

/// The user every container process runs as, and its ids in the stack's
/// generated `/etc/passwd`.
pub const CONTAINER_USER: &str = "vcap";
pub const CONTAINER_UID: u32 = 2000;
pub const CONTAINER_GID: u32 = 2000;

/// Staging is given 15 minutes, as in Cloud Foundry (`staging_timeout_in_seconds`).
pub const DEFAULT_STAGING_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// An instance must pass its health check within 60 s of starting (CC's default).
pub const DEFAULT_START_TIMEOUT_MS: u64 = 60 * 1000;
