//! Diego's executor: runs one unit of work (a Task, or one ActualLrp
//! instance) in its own container, from creating the container directory
//! to destroying it. [`task`] and [`lrp`] hold the two life cycles; this
//! module holds what they share: the cell context, building the container
//! spec, and a started process with its log pumps and a graceful stop.

pub mod lrp;
pub mod metrics;
pub mod quiet;
pub mod sidecars;
pub mod task;

use crate::CellConfig;
use crate::container::ContainerDir;
use crate::disk::Disk;
use crate::download::Downloader;
use crate::logs::{self, LogTarget};
use crate::network::{Attachment, CellNetwork, HeldPort};
use crate::ports::PortAllocator;
use crate::runtime::{
    BindMount, ContainerRuntime, ContainerSpec, Limits, ProcessSpec, RunningProcess, RuntimeError,
    Signal, cpu_shares, cpu_weight,
};
use crate::stack::Stack;
use futures_util::future::BoxFuture;
use kiln_bbs_client::BbsClient;
use kiln_logs::LogSink;
use kiln_model::bbs::RunAction;
use kiln_model::logs::MessageType;
use kiln_model::{CONTAINER_GID, CONTAINER_UID, CONTAINER_USER};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Open files allowed per container process (CF's default `file_descriptors`).
pub const NOFILE: u64 = 16384;
/// Processes and threads per container: a fork-bomb guard, far above what
/// staging or an app needs (a JVM runs a few hundred threads).
pub const PIDS_LIMIT: i64 = 1024;
/// How long a stopped process gets between TERM and KILL (Diego: 10 s).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The container's pid 1. The kernel drops signals to a namespace's init
/// that it has no handler for, so an app running as pid 1 would ignore the
/// TERM that asks it to stop and always wait out the grace period. As in
/// Garden (whose containers have their own init), the action runs as a
/// child instead: this shell forwards TERM to it and exits with its
/// status (128 + n when a signal n killed it). The shell comes from the
/// stack (`/bin/sh` in host `/usr`). A `kiln lifecycle init` subcommand
/// could take its place without changing anything else.
pub const INIT_SCRIPT: &str = r#"trap 'kill -TERM "$child" 2>/dev/null' TERM
"$@" &
child=$!
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || exit "$status"
done"#;

/// Everything an executor needs, shared by all of them.
pub struct CellCtx {
    pub config: CellConfig,
    pub images: crate::image::Images,
    pub stack: Stack,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub bbs: Arc<dyn BbsClient>,
    pub logs: Arc<dyn LogSink>,
    pub http: reqwest::Client,
    pub downloader: Downloader,
    pub ports: PortAllocator,
    pub containers_dir: PathBuf,
    /// Container file systems made ahead.
    pub disks: Arc<crate::disk::DiskPool>,
    /// `None` when containers share the host's network.
    pub network: Option<Arc<CellNetwork>>,
    /// Whether the kernel can cap memory+swap (see [`Limits::limit_swap`]).
    pub limit_swap: bool,
    /// The cell's shutdown: executors stopped by it kill at once instead
    /// of granting a grace period.
    pub shutdown: CancellationToken,
    /// Instances starting, which deferred teardowns wait out.
    pub quiet: quiet::Quiet,
}

impl CellCtx {
    pub fn grace(&self) -> Duration {
        if self.shutdown.is_cancelled() {
            Duration::ZERO
        } else {
            STOP_GRACE
        }
    }

    /// The container spec for running `run` in `dir` on `root`.
    pub fn spec(
        &self,
        id: &str,
        dir: &ContainerDir,
        run: &RunAction,
        env: Vec<String>,
        memory_mb: u64,
        root: &Root,
    ) -> Result<ContainerSpec, String> {
        let (uid, gid) = match root {
            Root::Stack => user_ids(&run.user)?,
            Root::Image(image) => crate::image::user_ids(&image.path, &run.user)?,
        };
        if run.path.is_empty() {
            return Err("the process has no command (an image without ENTRYPOINT or CMD needs a start command)".into());
        }
        // An image without a shell runs its command as pid 1: TERM reaches
        // it only if it handles TERM, else the stop's KILL ends it.
        let wrapped = match root {
            Root::Stack => true,
            Root::Image(image) => image.has_shell,
        };
        let mut args: Vec<String> = if wrapped {
            ["/bin/sh", "-c", INIT_SCRIPT, "kiln-init"]
                .map(String::from)
                .into()
        } else {
            Vec::new()
        };
        args.push(run.path.clone());
        args.extend(run.args.iter().cloned());
        let mut mounts = match root {
            Root::Stack => dir.mounts(&self.stack.usr, &self.config.lifecycle_binary),
            Root::Image(_) => dir.image_mounts(),
        };
        // After `/usr`, which it lies under (and must have the mountpoint,
        // being read-only): the locale `LANG` names.
        if let (Root::Stack, Some(locales)) = (root, &self.stack.locales)
            && self.stack.usr.join("lib/locale").is_dir()
        {
            mounts.push(BindMount {
                source: locales.clone(),
                destination: "/usr/lib/locale".into(),
                read_only: true,
            });
        }
        let attachment = self.network.as_ref().and_then(|n| n.attachment(id));
        if let Some(network) = &self.network {
            // The stack's resolv.conf names the host's resolvers, which a
            // container in its own namespace may not reach; the relay it
            // names instead is on the bridge.
            mounts.push(BindMount {
                source: network.resolv_conf().to_path_buf(),
                destination: "/etc/resolv.conf".into(),
                read_only: true,
            });
        }
        Ok(ContainerSpec {
            id: id.into(),
            bundle: dir.root.clone(),
            rootfs: match root {
                Root::Stack => self.stack.rootfs.clone(),
                Root::Image(image) => image.path.clone(),
            },
            writable_root: matches!(root, Root::Image(_)),
            hostname: hostname(id),
            process: ProcessSpec {
                args,
                env,
                cwd: run.dir.clone().unwrap_or_else(|| match root {
                    Root::Stack => "/home/vcap".into(),
                    Root::Image(_) => "/".into(),
                }),
                uid,
                gid,
                nofile: NOFILE,
            },
            mounts,
            limits: Limits {
                memory_mb,
                limit_swap: self.limit_swap,
                cpu_shares: cpu_shares(cpu_weight(memory_mb)),
                pids: PIDS_LIMIT,
            },
            network: attachment.map(|a| a.netns),
        })
    }

    /// A host port for an instance, taken in one step (see
    /// [`PortAllocator::allocate`]): in a cell network, bound by the network
    /// from here on; without one, only found free, for the app binds it
    /// itself.
    pub fn take_port(&self) -> Option<(u16, Option<HeldPort>)> {
        self.ports.allocate(|port| match &self.network {
            Some(network) => network.hold_port(port).ok().map(Some),
            None => std::net::TcpListener::bind(("0.0.0.0", port))
                .ok()
                .map(|_| None),
        })
    }

    /// Gives the container its network namespace (and, with `host_port`,
    /// the mapping to its `PORT`, `container_port`); `None` when the cell
    /// runs containers in the host's network.
    pub async fn attach_network(
        &self,
        id: &str,
        host_port: Option<HeldPort>,
        container_port: u16,
    ) -> Result<Option<Attachment>, String> {
        let Some(network) = &self.network else {
            return Ok(None);
        };
        let started = Instant::now();
        let attachment = network
            .attach_to_port(id, host_port, container_port)
            .await
            .map_err(|e| format!("creating container network: {e}"))?;
        network.refill();
        tracing::debug!(
            container = id,
            ip = %attachment.ip,
            elapsed_us = started.elapsed().as_micros() as u64,
            "container network attached"
        );
        Ok(Some(attachment))
    }

    /// Creates the container directory on its own `disk_mb` file system
    /// (off the async threads: `mkfs` and `mount` are blocking commands).
    pub async fn create_container_dir(
        &self,
        dir: &ContainerDir,
        disk_mb: u64,
    ) -> Result<Option<Disk>, String> {
        let dir = dir.clone();
        let containers_dir = self.containers_dir.clone();
        let disks = self.disks.clone();
        tokio::task::spawn_blocking(move || {
            crate::disk::check_room(&containers_dir, disk_mb)?;
            dir.create(&disks, disk_mb)
                .map_err(|e| format!("creating container: {e}"))
        })
        .await
        .map_err(|e| format!("creating container: {e}"))?
    }

    /// Diego's description of a process exit, with "(out of memory)" when
    /// the OOM killer killed part of the container. Asked before `destroy`.
    pub async fn exit_description(&self, id: &str, code: i32) -> (String, bool) {
        let oom = code != 0 && self.runtime.oom_killed(id).await;
        (exit_description(code, oom), oom)
    }

    /// Makes the container's writable trees vcap's and readies the
    /// working directory and the lifecycle mountpoint; run after downloads.
    pub fn finish_container_dir(
        &self,
        id: &str,
        dir: &ContainerDir,
        run: &RunAction,
    ) -> Result<(), String> {
        if let Some(cwd) = &run.dir
            && let Ok(host) = dir.host_path(cwd)
        {
            // runc refuses to start in a missing working directory.
            std::fs::create_dir_all(&host).map_err(|e| format!("creating {cwd}: {e}"))?;
        }
        dir.chown_writable()
            .map_err(|e| format!("preparing container directories: {e}"))?;
        dir.prepare_lifecycle_mountpoint()
            .map_err(|e| format!("preparing lifecycle mountpoint: {e}"))?;
        dir.write_hosts(&hostname(id))
            .map_err(|e| format!("writing /etc/hosts: {e}"))?;
        Ok(())
    }

    /// Removes the container and its directory; failures are logged, not
    /// returned: there is nobody to report them to, and the next start
    /// sweeps what is left.
    /// Destroys a container; with `defer`, once no instance is starting
    /// (see [`quiet`]): nobody waits for this teardown.
    pub async fn destroy(&self, id: &str, dir: &ContainerDir, defer: bool) {
        if defer {
            self.quiet.wait(&self.shutdown).await;
        }
        if let Err(error) = self.runtime.destroy(id).await {
            tracing::warn!(container = id, %error, "destroying container");
        }
        if let Some(network) = &self.network {
            network.detach(id).await;
        }
        let root = dir.clone();
        let removed = tokio::task::spawn_blocking(move || root.remove()).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(container = id, %error, "removing container directory");
        }
    }
}

/// What a container's `/` is.
#[derive(Debug, Clone)]
pub enum Root {
    /// The cell's stack (read-only, with `/usr`, `/tmp`, `/home/vcap`).
    Stack,
    /// A docker image's overlay.
    Image(crate::image::ImageRoot),
}

impl CellCtx {
    /// The root an instance runs on: the stack, or its image's layers
    /// (pulled once per cell, then cached) assembled in `dir`.
    pub async fn prepare_root(
        &self,
        rootfs: &kiln_model::rootfs::RootFs,
        (username, password): (&str, &kiln_model::rootfs::Secret),
        dir: &ContainerDir,
        log: &LogTarget,
    ) -> Result<Root, String> {
        let Some(image) = rootfs.image() else {
            return Ok(Root::Stack);
        };
        let started = Instant::now();
        let before = self.images.cache_stats();
        let lowers = self
            .images
            .layers(image, username, password)
            .await
            .map_err(|e| format!("Docker image {image}: {e}"))?;
        let pulled = self.images.cache_stats().pulls - before.pulls;
        let dir = dir.clone();
        let root = tokio::task::spawn_blocking(move || crate::image::mount_root(&dir, &lowers))
            .await
            .map_err(|e| format!("assembling the image's root: {e}"))??;
        log.out(format!(
            "Image {image} ready ({pulled} layers pulled) in {} ms",
            started.elapsed().as_millis()
        ));
        Ok(Root::Image(root))
    }
}

/// `Exited with status N`, and ` (out of memory)` after it for an OOM kill,
/// as Diego's run step says it.
pub fn exit_description(code: i32, oom: bool) -> String {
    if oom {
        format!("Exited with status {code} (out of memory)")
    } else {
        format!("Exited with status {code}")
    }
}

/// A container's host name: its id, cut to what `sethostname` takes.
fn hostname(id: &str) -> String {
    id.chars().take(63).collect()
}

/// Containers run as vcap; nothing else is offered (no privileged work).
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    if user == CONTAINER_USER || user.is_empty() {
        Ok((CONTAINER_UID, CONTAINER_GID))
    } else {
        Err(format!(
            "unsupported user {user:?}: processes run as {CONTAINER_USER}"
        ))
    }
}

/// A running container process, its exit status once known, and the tasks
/// copying its output to the log sink.
pub struct Process {
    exit: BoxFuture<'static, Result<i32, RuntimeError>>,
    code: Option<i32>,
    pumps: Vec<JoinHandle<()>>,
    /// The cell's writers of sidecars' log FIFOs, dropped once the
    /// process ended so their readers see the end.
    fifo_writers: Vec<tokio::net::unix::pipe::Sender>,
    pub started: Instant,
}

impl Process {
    pub async fn start(
        runtime: &dyn ContainerRuntime,
        spec: &ContainerSpec,
        log: &LogTarget,
    ) -> Result<Process, RuntimeError> {
        let started = Instant::now();
        let RunningProcess {
            stdout,
            stderr,
            exit,
        } = runtime.create_and_run(spec).await?;
        let pumps = vec![
            tokio::spawn(logs::pump(stdout, log.clone(), MessageType::Out)),
            tokio::spawn(logs::pump(stderr, log.clone(), MessageType::Err)),
        ];
        Ok(Process {
            exit,
            code: None,
            pumps,
            fifo_writers: Vec::new(),
            started,
        })
    }

    /// Also copies the sidecars' output, each with its own source type.
    pub fn pump_sidecar_logs(&mut self, logs: sidecars::SidecarLogs) {
        let (pumps, writers) = logs.pump();
        self.pumps.extend(pumps);
        self.fifo_writers.extend(writers);
    }

    /// Waits for the exit status. Cancel-safe: usable in `select!`.
    pub async fn wait(&mut self) -> i32 {
        if let Some(code) = self.code {
            return code;
        }
        let code = match (&mut self.exit).await {
            Ok(code) => code,
            Err(error) => {
                tracing::warn!(%error, "waiting for container process");
                255
            }
        };
        self.code = Some(code);
        code
    }

    /// Waits until the output has been copied (bounded: a stray holder of
    /// the pipes must not hang the cell).
    pub async fn drain_logs(&mut self) {
        self.fifo_writers.clear();
        for pump in self.pumps.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
    }

    /// TERM, then KILL after `grace`, as Diego's executor stops a process.
    /// Returns the exit status.
    pub async fn stop(&mut self, runtime: &dyn ContainerRuntime, id: &str, grace: Duration) -> i32 {
        if let Some(code) = self.code {
            return code;
        }
        // TERM is repeated every second of the grace period: one sent
        // before the container's init has set its trap (a just-started
        // container) is dropped by the kernel, and a later one is not.
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if let Err(error) = runtime.kill(id, Signal::Term).await {
                tracing::warn!(container = id, %error, "sending TERM");
            }
            let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if let Ok(code) = tokio::time::timeout_at(until, self.wait()).await {
                return code;
            }
        }
        // KILL is repeated too: a container still being created by runc
        // is not yet known to `runc kill`.
        for _ in 0..10 {
            if let Err(error) = runtime.kill(id, Signal::Kill).await {
                tracing::warn!(container = id, %error, "sending KILL");
            }
            if let Ok(code) = tokio::time::timeout(Duration::from_secs(1), self.wait()).await {
                return code;
            }
        }
        // runc itself is stuck: tear the container down under it.
        let _ = runtime.destroy(id).await;
        tokio::time::timeout(Duration::from_secs(5), self.wait())
            .await
            .unwrap_or(137)
    }
}

/// Sizes as Diego prints them (`Downloaded droplet (12.3M)`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, f64); 3] = [("G", 1e9), ("M", 1e6), ("K", 1e3)];
    for (unit, size) in UNITS {
        if bytes as f64 >= size {
            return format!("{:.1}{unit}", bytes as f64 / size);
        }
    }
    format!("{bytes}B")
}

/// Seconds as Diego prints timeouts (`900s`); sub-second values in ms.
pub fn human_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500), "1.5K");
        assert_eq!(human_size(12_340_000), "12.3M");
        assert_eq!(human_duration(900_000), "900s");
        assert_eq!(human_duration(1_500), "1500ms");
        assert_eq!(exit_description(1, false), "Exited with status 1");
        assert_eq!(
            exit_description(137, true),
            "Exited with status 137 (out of memory)"
        );
        assert!(user_ids("root").is_err());
        assert_eq!(user_ids("vcap").unwrap(), (2000, 2000));
    }
}
