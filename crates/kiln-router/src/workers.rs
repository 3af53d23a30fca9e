//! The threads connections are served on: one single-threaded tokio
//! runtime per thread, each with its own [`Proxy`] (and so its own pool of
//! connections to instances). A connection stays on the thread it was
//! given, so its tasks never wake each other across threads.

use crate::RouterConfig;
use crate::access_log::AccessLog;
use crate::proxy::Proxy;
use crate::sync::SharedTable;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

struct Worker {
    proxy: Arc<Proxy>,
    runtime: Handle,
    /// Sending (or dropping) it ends the thread's runtime.
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

pub(crate) struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

/// How often a worker closes the instance connections idle too long (and
/// lets go of a replaced route table).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the worker's runtime is dropped.
async fn sweep(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        proxy.sweep();
    }
}

impl Workers {
    pub fn start(
        config: &RouterConfig,
        table: &SharedTable,
        log: &AccessLog,
        hard_stop: &CancellationToken,
    ) -> std::io::Result<Workers> {
        let count = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let (finished, done) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("kiln-router-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                    // Ends what is left (idle instance connections, tunnels).
                    drop(runtime);
                    let _ = finished.send(());
                })?;
            let proxy = Arc::new(Proxy::new(
                config.clone(),
                table.clone(),
                log.for_worker(),
                hard_stop.clone(),
            ));
            handle.spawn(sweep(proxy.clone()));
            workers.push(Worker {
                proxy,
                runtime: handle,
                stop,
                done,
            });
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// The worker for the next connection, round-robin.
    pub fn next(&self) -> (Arc<Proxy>, &Handle) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let worker = &self.workers[i];
        (worker.proxy.clone(), &worker.runtime)
    }

    /// Every worker ends each connection after its response in progress.
    pub fn drain(&self) {
        for worker in &self.workers {
            worker.proxy.drain();
        }
    }

    /// Stops every thread and waits for them.
    pub async fn stop(self) {
        let mut done = Vec::with_capacity(self.workers.len());
        for worker in self.workers {
            let _ = worker.stop.send(());
            done.push(worker.done);
        }
        for done in done {
            let _ = done.await;
        }
    }
}
