//! An instance's container metrics, as Diego's rep emits them: every
//! [`CONTAINER_METRICS_INTERVAL_MS`] the cell reads the container's cgroup
//! (CPU time, memory) and its file system (disk), and sends one gauge
//! through the `LogSink`, where the API's process stats find the latest.

use crate::disk::Disk;
use crate::logs::now_nanos;
use crate::runtime::ContainerRuntime;
use crate::runtime::cgroups::cpu_percentage;
use kiln_logs::LogSink;
use kiln_model::logs::ContainerMetric;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub use kiln_model::logs::CONTAINER_METRICS_INTERVAL_MS;

pub fn interval() -> Duration {
    Duration::from_millis(CONTAINER_METRICS_INTERVAL_MS)
}

/// Measures one container, remembering the previous CPU reading so that
/// each gauge carries the CPU share since the one before.
pub struct InstanceMetrics {
    pub template: ContainerMetric,
    pub disk: Option<Disk>,
    last_cpu: (u64, Instant),
}

impl InstanceMetrics {
    /// `template` names the instance and carries the quotas; `started` is
    /// when its process started (the first gauge averages from there).
    pub fn new(template: ContainerMetric, disk: Option<Disk>, started: Instant) -> Self {
        InstanceMetrics {
            template,
            disk,
            last_cpu: (0, started),
        }
    }

    /// Reads the container now; `None` when its cgroup cannot be read.
    pub async fn measure(
        &mut self,
        runtime: &dyn ContainerRuntime,
        id: &str,
    ) -> Option<ContainerMetric> {
        let usage = runtime.usage(id).await?;
        let now = Instant::now();
        let (before, at) = self.last_cpu;
        let elapsed = now.duration_since(at).as_nanos() as u64;
        self.last_cpu = (usage.cpu_nanos, now);
        let disk_bytes = match &self.disk {
            Some(disk) => {
                let disk = disk.clone();
                tokio::task::spawn_blocking(move || disk.usage())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0)
            }
            None => 0,
        };
        Some(ContainerMetric {
            timestamp: now_nanos(),
            cpu_percentage: cpu_percentage(before, usage.cpu_nanos, elapsed),
            memory_bytes: usage.memory_bytes,
            disk_bytes,
            ..self.template.clone()
        })
    }

    /// Measures and emits one gauge.
    pub async fn emit(&mut self, runtime: &dyn ContainerRuntime, id: &str, sink: &dyn LogSink) {
        match self.measure(runtime, id).await {
            Some(metric) => sink.emit_metric(metric),
            None => tracing::debug!(container = id, "no container metrics"),
        }
    }
}

/// The instance's measuring loop; aborted when dropped.
pub struct MetricsTask(JoinHandle<()>);

impl Drop for MetricsTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Emits a gauge now and every [`interval`] after, until dropped.
pub fn spawn(
    mut metrics: InstanceMetrics,
    runtime: Arc<dyn ContainerRuntime>,
    sink: Arc<dyn LogSink>,
    id: &str,
) -> MetricsTask {
    let id = id.to_string();
    MetricsTask(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            metrics.emit(runtime.as_ref(), &id, sink.as_ref()).await;
        }
    }))
}
