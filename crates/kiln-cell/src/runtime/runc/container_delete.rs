//! `runc delete --force`: kill whatever still runs in the container and
//! remove runc's state and the container's cgroup.

use super::{RuncRuntime, is_gone};
use crate::runtime::{RuntimeError, valid_id};

pub(super) async fn delete(runtime: &RuncRuntime, id: &str) -> Result<(), RuntimeError> {
    if !valid_id(id) {
        return Err(RuntimeError::InvalidId(id.into()));
    }
    match runtime.run_verb("delete", id, &["--force", id]).await {
        Err(e) if is_gone(&e) => Ok(()),
        other => other.map(drop),
    }
}
