//! **API Boundary.** The container runtime seam: the only way the cell
//! reaches runc (Garden's role in Diego).
//!
//! The cell describes a container as a [`ContainerSpec`] (root filesystem,
//! bind mounts, one process, limits); the runtime turns it into an OCI
//! bundle and runs it. [`runc::RuncRuntime`] is the real implementation,
//! one file per container operation as in youki.

pub mod cgroups;
pub mod oci;
pub mod runc;
pub mod seccomp;

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
    /// Also cap memory+swap at `memory_mb` (no swap use, as Garden sets);
    /// only where the kernel accounts swap.
    pub limit_swap: bool,
    /// `cpu.shares` (v1; runc maps it to `cpu.weight` on v2).
    pub cpu_shares: u64,
    pub pids: i64,
}

/// Diego's CPU weight (1–100) for a memory limit, as Cloud Controller
/// computes it: proportional to memory between 128 MB and 8 GB.
pub fn cpu_weight(memory_mb: u64) -> u64 {
    const MIN_CPU_PROXY: u64 = 128;
    const MAX_CPU_PROXY: u64 = 8192;
    if memory_mb > MAX_CPU_PROXY {
        return 100;
    }
    100 * memory_mb.max(MIN_CPU_PROXY) / MAX_CPU_PROXY
}

/// The cgroup CPU shares for a weight, as Diego's executor gives Garden:
/// the weight's percentage of 1024.
pub fn cpu_shares(weight: u64) -> u64 {
    1024 * weight.min(100) / 100
}

/// What a container has used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerUsage {
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container handle: `[A-Za-z0-9_.-]+`.
    pub id: String,
    /// A directory owned by this container; the runtime writes its bundle
    /// (`config.json`) here.
    pub bundle: PathBuf,
    /// The stack directory, mounted read-only as `/`, or an image's
    /// overlay (writable, on the container's disk).
    pub rootfs: PathBuf,
    /// Whether `/` is writable (an image's root; a stack's never is).
    pub writable_root: bool,
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
    /// CPU and memory the container has used; `None` when the runtime
    /// cannot tell (or the container is gone).
    async fn usage(&self, _id: &str) -> Option<ContainerUsage> {
        None
    }
    /// Whether the OOM killer killed a process of the container. Asked
    /// after its process exited and before `destroy`.
    async fn oom_killed(&self, _id: &str) -> bool {
        false
    }
    /// Removes what the runtime may have left of a container it no longer
    /// lists (its cgroups after a `kill -9` of the cell).
    async fn remove_leftovers(&self, _id: &str) {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_weight_and_shares_follow_diego() {
        assert_eq!(cpu_weight(64), 1);
        assert_eq!(cpu_weight(256), 3);
        assert_eq!(cpu_weight(1024), 12);
        assert_eq!(cpu_weight(8192), 100);
        assert_eq!(cpu_weight(16384), 100);
        assert_eq!(cpu_shares(3), 30);
        assert_eq!(cpu_shares(100), 1024);
    }
}
