//! Waiting for the BBS to report a change (for `Prefer: wait` reads): the
//! caller subscribes before it reads the current state, so no change can
//! fall between the read and the wait.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kiln_model::bbs::BbsEvent;
use std::time::Duration;

/// Returns when an event satisfies `done` (or the stream lagged or ended:
/// the caller re-reads), or when `wait` has passed.
pub async fn until(
    mut events: BoxStream<'static, BbsEvent>,
    wait: Duration,
    done: impl Fn(&BbsEvent) -> bool,
) {
    let watch = async {
        while let Some(event) = events.next().await {
            if matches!(event, BbsEvent::Lagged) || done(&event) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(wait, watch).await;
}
