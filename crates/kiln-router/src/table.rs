//! The routing table: which instances serve which host.
//!
//! Built whole from the BBS's view, never patched, so it is always a
//! consistent picture of one moment. A host whose process has no RUNNING
//! instance stays in the table with no endpoints, so the router can tell
//! "no such route" (404) from "no instance up" (503), as Gorouter does.

use kiln_model::ActualLrpState;
use kiln_model::bbs::{ActualLrp, DesiredLrp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `address:host_port` of the instance.
    pub addr: String,
    pub app_guid: String,
    pub process_guid: String,
    pub index: u32,
    pub instance_guid: String,
}

#[derive(Debug, Default)]
pub struct Pool {
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

impl Pool {
    /// The endpoints in the order to try them for one request: round-robin
    /// start, then the others in turn.
    pub fn attempt_order(&self) -> impl Iterator<Item = &Endpoint> {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| &self.endpoints[(start + i) % n])
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<String, Pool>,
}

/// Lower-cases a host and strips a `:port`; routes are matched without them.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }
        _ => host,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

impl RouteTable {
    pub fn from_lrps(desired: &[DesiredLrp], actual: &[ActualLrp]) -> RouteTable {
        let by_process: HashMap<&str, &DesiredLrp> = desired
            .iter()
            .map(|d| (d.process_guid.as_str(), d))
            .collect();
        let mut hosts: HashMap<String, Pool> = HashMap::new();
        for d in desired {
            for route in &d.routes {
                hosts.entry(normalize_host(route)).or_default();
            }
        }
        for a in actual {
            if a.state != ActualLrpState::Running {
                continue;
            }
            let (Some(d), Some(net), Some(ik)) = (
                by_process.get(a.key.process_guid.as_str()),
                &a.net_info,
                &a.instance_key,
            ) else {
                continue;
            };
            let Some(port) = net.ports.first() else {
                continue;
            };
            let endpoint = Endpoint {
                addr: format!("{}:{}", net.address, port.host_port),
                app_guid: d.log_guid.clone(),
                process_guid: d.process_guid.clone(),
                index: a.key.index,
                instance_guid: ik.instance_guid.clone(),
            };
            for route in &d.routes {
                if let Some(pool) = hosts.get_mut(&normalize_host(route)) {
                    pool.endpoints.push(endpoint.clone());
                }
            }
        }
        RouteTable { hosts }
    }

    pub fn lookup(&self, host: &str) -> Option<&Pool> {
        self.hosts.get(&normalize_host(host))
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::bbs::*;

    fn desired(process_guid: &str, routes: &[&str]) -> DesiredLrp {
        DesiredLrp {
            process_guid: process_guid.into(),
            domain: "cf-apps".into(),
            instances: 2,
            rootfs: "preloaded:s".into(),
            memory_mb: 256,
            disk_mb: 1024,
            env: vec![],
            setup: vec![],
            action: RunAction {
                path: "x".into(),
                args: vec![],
                env: vec![],
                dir: None,
                user: "vcap".into(),
            },
            health_check: HealthCheck::Port,
            start_timeout_ms: 60_000,
            routes: routes.iter().map(|r| r.to_string()).collect(),
            log_guid: format!("app-of-{process_guid}"),
            log_source: "APP/PROC/WEB".into(),
            annotation: String::new(),
        }
    }

    fn actual(process_guid: &str, index: u32, state: ActualLrpState, port: u16) -> ActualLrp {
        ActualLrp {
            key: ActualLrpKey {
                process_guid: process_guid.into(),
                index,
                domain: "cf-apps".into(),
            },
            instance_key: Some(ActualLrpInstanceKey {
                instance_guid: format!("ig-{index}"),
                cell_id: "c".into(),
            }),
            net_info: Some(ActualLrpNetInfo {
                address: "127.0.0.1".into(),
                ports: vec![PortMapping {
                    container_port: port,
                    host_port: port,
                }],
                instance_address: String::new(),
            }),
            state,
            crash_count: 0,
            crash_reason: String::new(),
            placement_error: String::new(),
            since: 0,
        }
    }

    #[test]
    fn hosts_are_normalized() {
        for (input, expected) in [
            ("App.Example.COM", "app.example.com"),
            ("app.example.com:8080", "app.example.com"),
            ("app.example.com.", "app.example.com"),
            (" app ", "app"),
        ] {
            assert_eq!(normalize_host(input), expected, "{input:?}");
        }
    }

    #[test]
    fn only_running_instances_are_endpoints_and_empty_routes_stay_known() {
        let d = [
            desired("p1", &["a.test"]),
            desired("p2", &["b.test", "alias.test"]),
        ];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 61001),
            actual("p1", 1, ActualLrpState::Claimed, 61002),
            actual("p2", 0, ActualLrpState::Running, 61003),
            actual("orphan", 0, ActualLrpState::Running, 61004),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        let pool = table.lookup("A.test:80").unwrap();
        assert_eq!(pool.endpoints.len(), 1);
        assert_eq!(pool.endpoints[0].addr, "127.0.0.1:61001");
        assert_eq!(pool.endpoints[0].app_guid, "app-of-p1");
        assert_eq!(
            table.lookup("alias.test").unwrap().endpoints[0].addr,
            "127.0.0.1:61003"
        );
        assert!(table.lookup("nowhere.test").is_none());

        let no_instances = RouteTable::from_lrps(&d, &[]);
        assert!(no_instances.lookup("a.test").unwrap().endpoints.is_empty());
    }

    #[test]
    fn attempts_start_round_robin_and_cover_every_endpoint() {
        let d = [desired("p1", &["a.test"])];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 1),
            actual("p1", 1, ActualLrpState::Running, 2),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        let pool = table.lookup("a.test").unwrap();
        let first: Vec<_> = pool.attempt_order().map(|e| e.index).collect();
        let second: Vec<_> = pool.attempt_order().map(|e| e.index).collect();
        assert_eq!(first.len(), 2);
        assert_ne!(
            first[0], second[0],
            "the next request starts at the next instance"
        );
    }
}
