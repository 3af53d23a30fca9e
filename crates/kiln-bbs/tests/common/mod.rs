//! What several of kiln-bbs's test binaries build the same way.

use kiln_model::bbs::*;

/// The stack every test cell provides and every test LRP asks for.
pub const STACK: &str = "preloaded:test-stack";

/// A DesiredLrp of `instances` that runs `/bin/true` on [`STACK`], routed
/// at `app.localhost`.
pub fn desired(process_guid: &str, instances: u32) -> DesiredLrp {
    DesiredLrp {
        rootfs: STACK.parse().unwrap(),
        memory_mb: 256,
        disk_mb: 1024,
        routes: vec!["app.localhost".into()],
        log_guid: "app-guid".into(),
        ..kiln_model::testing::desired_lrp(process_guid, instances)
    }
}
