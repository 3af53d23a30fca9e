//! Values tests, benchmarks and examples across the workspace build the
//! same way: start from these and override the fields a test looks at.

use crate::bbs::{DesiredLrp, HealthCheck, RunAction};
use crate::rootfs::RootFs;

/// A DesiredLrp of `instances` that runs `/bin/true` as vcap on the
/// preloaded stack `s`, 64 MB of memory and disk each, a port health
/// check, no routes, logging as `app-<process_guid>` from `APP/PROC/WEB`.
pub fn desired_lrp(process_guid: &str, instances: u32) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "cf-apps".into(),
        instances,
        rootfs: RootFs::preloaded("s"),
        image_username: String::new(),
        image_password: Default::default(),
        ports: vec![],
        memory_mb: 64,
        disk_mb: 64,
        env: vec![],
        setup: vec![],
        action: RunAction {
            path: "/bin/true".into(),
            args: vec![],
            env: vec![],
            dir: None,
            user: "vcap".into(),
        },
        sidecars: Vec::new(),
        health_check: HealthCheck::Port,
        start_timeout_ms: 60_000,
        routes: vec![],
        log_guid: format!("app-{process_guid}"),
        log_source: "APP/PROC/WEB".into(),
        annotation: String::new(),
    }
}
