//! [`RuncRuntime`]: the [`ContainerRuntime`] that drives the `runc` binary,
//! as garden-runc does. One file per runc verb: `container_run`,
//! `container_kill`, `container_delete`, `container_list`.
//!
//! All containers of one cell live under one runc state root
//! (`<data_dir>/runc`), so `runc list` at start finds exactly what a
//! previous run of this cell left behind.

mod container_delete;
mod container_kill;
mod container_list;
mod container_run;

use super::cgroups::Cgroups;
use super::{
    ContainerRuntime, ContainerSpec, ContainerUsage, RunningProcess, RuntimeError, Signal,
};
use async_trait::async_trait;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct RuncRuntime {
    binary: PathBuf,
    root: PathBuf,
    cgroups: Cgroups,
}

impl RuncRuntime {
    /// `binary` is the runc executable, `root` its state directory.
    pub fn new(binary: PathBuf, root: PathBuf) -> RuncRuntime {
        RuncRuntime {
            binary,
            root,
            cgroups: Cgroups::detect(),
        }
    }

    /// This machine's cgroup layout, as the runtime reads it.
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// `runc --root <root> <args...>`, with no stdin.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root).stdin(Stdio::null());
        command
    }

    /// Runs a short runc verb to completion, returning stdout.
    async fn run_verb(
        &self,
        verb: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<String, RuntimeError> {
        let output = self
            .command()
            .arg(verb)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| RuntimeError::Spawn {
                command: verb,
                id: id.into(),
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(RuntimeError::Failed {
                command: verb,
                id: id.into(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}

/// runc's words for "there is no such container" (already exited and
/// cleaned up, or never created).
fn is_gone(error: &RuntimeError) -> bool {
    match error {
        RuntimeError::Failed { stderr, .. } => {
            stderr.contains("does not exist")
                || stderr.contains("not exist")
                || stderr.contains("container not running")
                || stderr.contains("process already finished")
        }
        _ => false,
    }
}

#[async_trait]
impl ContainerRuntime for RuncRuntime {
    async fn create_and_run(&self, spec: &ContainerSpec) -> Result<RunningProcess, RuntimeError> {
        container_run::run(self, spec).await
    }

    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        container_kill::kill(self, id, signal).await
    }

    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        container_delete::delete(self, id).await
    }

    async fn list(&self) -> Result<Vec<String>, RuntimeError> {
        container_list::list(self).await
    }

    async fn usage(&self, id: &str) -> Option<ContainerUsage> {
        let cgroups = self.cgroups.clone();
        let id = id.to_string();
        let usage = tokio::task::spawn_blocking(move || cgroups.usage(&id))
            .await
            .ok()?
            .ok()?;
        Some(ContainerUsage {
            cpu_nanos: usage.cpu_nanos,
            memory_bytes: usage.memory_bytes,
        })
    }

    async fn oom_killed(&self, id: &str) -> bool {
        self.cgroups.oom_kills(id).is_some_and(|n| n > 0)
    }

    async fn remove_leftovers(&self, id: &str) {
        if !self.cgroups.exists(id) {
            return;
        }
        match self.cgroups.remove(id) {
            Ok(n) => tracing::info!(container = id, cgroups = n, "removed leftover cgroups"),
            Err(error) => tracing::warn!(container = id, %error, "removing leftover cgroups"),
        }
    }
}
