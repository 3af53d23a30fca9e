//! Teardown that yields to starts. Destroying a container (`runc delete`,
//! unmounting its file system, removing its network namespace) costs CPU
//! that an instance starting beside it needs: a push stops the old
//! instance and starts the new one at the same moment, just after its
//! staging container ended. A teardown that nobody waits for (an instance
//! the cell was told to stop, a task whose completion is reported) first
//! waits until no instance has been starting for [`SETTLE`], for at most
//! [`DEFER_LIMIT`], so a cell that starts instances back to back still
//! frees its containers. Crashed instances are torn down at once: their
//! crash report waits for it.

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Quiet means no start for this long (covers the moment between a
/// staging task's end and the start of the instance it built).
pub const SETTLE: Duration = Duration::from_millis(300);
/// A deferred teardown waits at most this long.
pub const DEFER_LIMIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    /// Instances between container creation and healthy (or their end).
    starting: usize,
    /// When the last start (or a noted end of work) was.
    last: Option<Instant>,
}

/// The cell's starts in progress, which deferred teardowns wait out.
#[derive(Debug)]
pub struct Quiet {
    activity: watch::Sender<Activity>,
}

impl Default for Quiet {
    fn default() -> Self {
        Quiet {
            activity: watch::Sender::new(Activity::default()),
        }
    }
}

/// An instance counted as starting until this is dropped.
#[derive(Debug)]
pub struct Starting<'a>(&'a Quiet);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.activity.send_modify(|a| {
            a.starting = a.starting.saturating_sub(1);
            a.last = Some(Instant::now());
        });
    }
}

impl Quiet {
    /// Counts an instance as starting until the guard is dropped.
    pub fn starting(&self) -> Starting<'_> {
        self.activity.send_modify(|a| {
            a.starting += 1;
            a.last = Some(Instant::now());
        });
        Starting(self)
    }

    /// Notes work that just ended (a staging task: the instance it built
    /// is usually asked for next), so a teardown after it settles first.
    pub fn touch(&self) {
        self.activity.send_modify(|a| a.last = Some(Instant::now()));
    }

    /// Returns once no instance has been starting for [`SETTLE`], after
    /// [`DEFER_LIMIT`], or at `shutdown`.
    pub async fn wait(&self, shutdown: &CancellationToken) {
        let deadline = Instant::now() + DEFER_LIMIT;
        let mut activity = self.activity.subscribe();
        loop {
            let now = Instant::now();
            let Activity { starting, last } = *activity.borrow_and_update();
            let settled = last.map_or(now, |last| last + SETTLE);
            if now >= deadline || (starting == 0 && now >= settled) {
                return;
            }
            let wake = if starting == 0 {
                settled.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
                _ = activity.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_cell_tears_down_at_once() {
        let quiet = Quiet::default();
        let begun = Instant::now();
        quiet.wait(&CancellationToken::new()).await;
        assert_eq!(begun.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_teardown_waits_for_a_start_and_then_settles() {
        let quiet = std::sync::Arc::new(Quiet::default());
        let begun = Instant::now();
        let starts = quiet.clone();
        let start = tokio::spawn(async move {
            let _starting = starts.starting();
            tokio::time::sleep(Duration::from_millis(700)).await;
        });
        tokio::task::yield_now().await;
        quiet.wait(&CancellationToken::new()).await;
        assert_eq!(begun.elapsed(), Duration::from_millis(700) + SETTLE);
        start.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ended_work_settles_and_the_wait_is_bounded_and_ends_at_shutdown() {
        let quiet = Quiet::default();
        quiet.touch();
        let begun = Instant::now();
        quiet.wait(&CancellationToken::new()).await;
        assert_eq!(begun.elapsed(), SETTLE);

        let _stuck = quiet.starting();
        let begun = Instant::now();
        quiet.wait(&CancellationToken::new()).await;
        assert_eq!(begun.elapsed(), DEFER_LIMIT);

        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let begun = Instant::now();
        quiet.wait(&shutdown).await;
        assert_eq!(begun.elapsed(), Duration::ZERO);
    }
}
