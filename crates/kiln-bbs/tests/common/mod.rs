//! What several of kiln-bbs's test binaries build the same way.

use kiln_model::bbs::*;

/// The stack every test cell provides and every test LRP asks for.
pub const STACK: &str = "preloaded:test-stack";

/// A DesiredLrp of `instances` that runs `/bin/true` on [`STACK`], routed
/// at `app.localhost`.
pub fn desired(process_guid: &str, instances: u32) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "cf-apps".into(),
        instances,
        rootfs: STACK.parse().unwrap(),
        image_username: String::new(),
        image_password: Default::default(),
        ports: vec![],
        memory_mb: 256,
        disk_mb: 1024,
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
        routes: vec!["app.localhost".into()],
        log_guid: "app-guid".into(),
        log_source: "APP/PROC/WEB".into(),
        annotation: String::new(),
    }
}
