//! **API Boundary.** The container runtime seam: the only way the cell
//! reaches runc (Garden's role in Diego).
//!
//! The cell describes a container as a [`ContainerSpec`] (root filesystem,
//! bind mounts, one process, limits); the runtime turns it into an OCI
//! bundle and runs it. [`runc::RuncRuntime`] is the real implementation,
//! one file per container operation as in youki.

pub mod oci;
pub mod runc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use tokio::io::AsyncRead;

/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// The one process a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// `RLIMIT_NOFILE`, soft and hard.
    pub nofile: u64,
}

/// Resource limits; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub memory_mb: u64,
    pub pids: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container handle: `[A-Za-z0-9_.-]+`.
    pub id: String,
    /// A directory owned by this container; the runtime writes its bundle
    /// (`config.json`) here.
    pub bundle: PathBuf,
    /// The stack directory, mounted read-only as `/`.
    pub rootfs: PathBuf,
    pub hostname: String,
    pub process: ProcessSpec,
    /// Applied in order, after the standard kernel filesystems.
    pub mounts: Vec<BindMount>,
    pub limits: Limits,
    /// The network namespace to join (a file under `/run/netns`); `None`
    /// shares the host's network.
    pub network: Option<PathBuf>,
}

/// A started container process. `stdout` and `stderr` end when the
/// process (and everything in its pid namespace) is gone.
pub struct RunningProcess {
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
    /// Resolves to the exit status (128 + n when killed by signal n).
    pub exit: BoxFuture<'static, Result<i32, RuntimeError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    #[error("writing bundle for container {id}: {source}")]
    Bundle {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("running {command} for container {id}: {source}")]
    Spawn {
        command: &'static str,
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runc {command} {id} failed: {stderr}")]
    Failed {
        command: &'static str,
        id: String,
        stderr: String,
    },
    #[error("runc list: {0}")]
    List(String),
}

#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Creates the container and starts its process.
    async fn create_and_run(&self, spec: &ContainerSpec) -> Result<RunningProcess, RuntimeError>;
    /// Signals the container's init process. A container that is already
    /// gone is not an error.
    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError>;
    /// Kills whatever still runs and removes the runtime's state. A
    /// container that is already gone is not an error.
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container the runtime knows, running or not.
    async fn list(&self) -> Result<Vec<String>, RuntimeError>;
}

/// Container ids are file names and command-line arguments: keep them tame.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
