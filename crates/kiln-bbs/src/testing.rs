//! What the unit tests of several modules build the same way.

use kiln_model::bbs::{DesiredLrp, HealthCheck, RunAction};

/// A DesiredLrp of `instances` (64 MB memory and disk each) that runs
/// `/bin/true` on the stack `s`; tests override what they look at.
pub(crate) fn desired(process_guid: &str, instances: u32) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "cf-apps".into(),
        instances,
        rootfs: "preloaded:s".parse().unwrap(),
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
        start_timeout_ms: 1000,
        routes: vec![],
        log_guid: "l".into(),
        log_source: "APP/PROC/WEB".into(),
        annotation: String::new(),
    }
}
