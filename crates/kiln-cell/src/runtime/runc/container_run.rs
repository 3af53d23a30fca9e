//! `runc run`: write the bundle's `config.json` and start the container in
//! the foreground, so runc stays the parent that reaps the container's init
//! and reports its exit status, and the process's stdout and stderr are the
//! pipes runc was given.

use super::RuncRuntime;
use crate::runtime::{ContainerSpec, RunningProcess, RuntimeError, oci, valid_id};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

pub(super) async fn run(
    runtime: &RuncRuntime,
    spec: &ContainerSpec,
) -> Result<RunningProcess, RuntimeError> {
    if !valid_id(&spec.id) {
        return Err(RuntimeError::InvalidId(spec.id.clone()));
    }
    let bundle_err = |source| RuntimeError::Bundle {
        id: spec.id.clone(),
        source,
    };
    let config = serde_json::to_vec_pretty(&oci::config_json(spec))
        .map_err(|e| bundle_err(std::io::Error::other(e)))?;
    tokio::fs::create_dir_all(&spec.bundle)
        .await
        .map_err(bundle_err)?;
    tokio::fs::write(spec.bundle.join("config.json"), config)
        .await
        .map_err(bundle_err)?;

    let mut child = runtime
        .command()
        // runc's own diagnostics go to a file in the bundle, not into the
        // app's log stream (a fatal start error still reaches stderr).
        .arg("--log")
        .arg(spec.bundle.join("runc.log"))
        .arg("run")
        // Keep the stopped container (and its cgroup) until `runc delete`,
        // so the cell can still read its OOM count after the exit.
        .arg("--keep")
        .arg("--bundle")
        .arg(&spec.bundle)
        .arg(&spec.id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            command: "run",
            id: spec.id.clone(),
            source,
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::Spawn {
            command: "run",
            id: spec.id.clone(),
            source: std::io::Error::other("runc stdio was not piped"),
        });
    };
    let id = spec.id.clone();
    let exit = Box::pin(async move {
        let status = child.wait().await.map_err(|source| RuntimeError::Spawn {
            command: "run",
            id,
            source,
        })?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255))
    });
    Ok(RunningProcess {
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        exit,
    })
}
