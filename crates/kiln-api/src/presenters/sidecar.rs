//! A sidecar as Cloud Controller's `SidecarPresenter` shows it (no links).

use crate::db::Sidecar;
use serde_json::{Value, json};

pub fn sidecar_json(s: &Sidecar) -> Value {
    json!({
        "guid": s.guid, "name": s.name, "command": s.command,
        "process_types": s.process_types, "memory_in_mb": s.memory_in_mb,
        "origin": s.origin,
        "relationships": {"app": {"data": {"guid": s.app_guid}}},
        "created_at": s.created_at, "updated_at": s.updated_at,
    })
}
