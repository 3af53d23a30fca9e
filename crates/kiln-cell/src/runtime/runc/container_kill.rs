//! `runc kill`: signal the container's init process.
//!
//! The init is pid 1 of its namespace, so the kernel drops signals it has
//! no handler for (TERM included) unless they are KILL: callers send TERM,
//! wait a grace period, then KILL, as Diego's executor does.

use super::{RuncRuntime, is_gone};
use crate::runtime::{RuntimeError, Signal, valid_id};

pub(super) async fn kill(
    runtime: &RuncRuntime,
    id: &str,
    signal: Signal,
) -> Result<(), RuntimeError> {
    if !valid_id(id) {
        return Err(RuntimeError::InvalidId(id.into()));
    }
    match runtime.run_verb("kill", id, &[id, signal.as_str()]).await {
        Err(e) if is_gone(&e) => Ok(()),
        other => other.map(drop),
    }
}
