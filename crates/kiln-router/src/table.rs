//! The routing table: which instances serve which host.
//!
//! Built whole from the BBS's view, never patched, so it is always a
//! consistent picture of one moment. A host whose processes have no RUNNING
//! instance stays in the table with no endpoints, so the router can tell
//! "no such route" (404) from "no instance up" (503), as Gorouter does.

use kiln_model::ActualLrpState;
use kiln_model::bbs::{ActualLrp, DesiredLrp};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One RUNNING instance the router may send a request to (Gorouter's
/// endpoint, as the route emitter registers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `address:host_port` of the instance (IPv6 addresses in brackets).
    pub addr: String,
    /// The DesiredLrp's `log_guid`, which is the app guid (Gorouter's `app`).
    pub app_guid: String,
    pub process_guid: String,
    pub index: u32,
    pub instance_guid: String,
}

/// The endpoints of one host, with the round-robin position.
#[derive(Debug)]
pub struct Pool {
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

impl Pool {
    fn new() -> Pool {
        // A random start, so that instance 0 does not get the first request
        // after every table rebuild (a rebuild resets the position).
        let start = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as usize;
        Pool {
            endpoints: Vec::new(),
            next: AtomicUsize::new(start),
        }
    }

    /// The endpoints in the order to try them for one request: the next one
    /// round-robin first, then the others in turn, each once.
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

/// Host name (normalized) → pool. Immutable once built; the router swaps
/// in a new one on every change.
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<String, Pool>,
}

/// Lower-cases a host and strips a `:port` and a trailing dot: routes are
/// matched without them (Gorouter strips the port and lower-cases the key).
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]:8080`.
        rest.split_once(']').map_or(host, |(addr, _)| addr)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

impl RouteTable {
    /// The table for this set of LRPs: every route of every DesiredLrp is a
    /// host; its endpoints are the RUNNING ActualLrps of those DesiredLrps
    /// that have a port. Several processes may share a host; their
    /// instances then share its pool.
    pub fn from_lrps(desired: &[DesiredLrp], actual: &[ActualLrp]) -> RouteTable {
        let by_process: HashMap<&str, &DesiredLrp> = desired
            .iter()
            .map(|d| (d.process_guid.as_str(), d))
            .collect();
        let mut hosts: HashMap<String, Pool> = HashMap::new();
        for d in desired {
            for route in &d.routes {
                let host = normalize_host(route);
                if !host.is_empty() {
                    hosts.entry(host).or_insert_with(Pool::new);
                }
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
            let address = if net.address.contains(':') && !net.address.starts_with('[') {
                format!("[{}]", net.address)
            } else {
                net.address.clone()
            };
            let endpoint = Endpoint {
                addr: format!("{address}:{}", port.host_port),
                app_guid: d.log_guid.clone(),
                process_guid: d.process_guid.clone(),
                index: a.key.index,
                instance_guid: ik.instance_guid.clone(),
            };
            let mut routes: Vec<String> = d.routes.iter().map(|r| normalize_host(r)).collect();
            routes.sort();
            routes.dedup();
            for route in routes {
                if let Some(pool) = hosts.get_mut(&route) {
                    pool.endpoints.push(endpoint.clone());
                }
            }
        }
        // A stable order, so round-robin walks the instances the same way
        // whatever order the BBS listed them in.
        for pool in hosts.values_mut() {
            pool.endpoints
                .sort_by(|a, b| (&a.process_guid, a.index).cmp(&(&b.process_guid, b.index)));
        }
        RouteTable { hosts }
    }

    /// The pool of `host` (any case, with or without a port), if it is a route.
    pub fn lookup(&self, host: &str) -> Option<&Pool> {
        self.hosts.get(&normalize_host(host))
    }

    /// How many hosts are routes.
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
            ("app.example.com.:80", "app.example.com"),
            (" app ", "app"),
            ("[::1]:8080", "::1"),
            ("", ""),
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
            actual("p2", 1, ActualLrpState::Crashed, 61005),
            actual("orphan", 0, ActualLrpState::Running, 61004),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        assert_eq!(table.len(), 3);
        let pool = table.lookup("A.test:80").unwrap();
        assert_eq!(pool.endpoints.len(), 1);
        assert_eq!(pool.endpoints[0].addr, "127.0.0.1:61001");
        assert_eq!(pool.endpoints[0].app_guid, "app-of-p1");
        assert_eq!(pool.endpoints[0].instance_guid, "ig-0");
        assert_eq!(
            table.lookup("alias.test").unwrap().endpoints[0].addr,
            "127.0.0.1:61003"
        );
        assert!(table.lookup("nowhere.test").is_none());

        let no_instances = RouteTable::from_lrps(&d, &[]);
        assert!(no_instances.lookup("a.test").unwrap().endpoints.is_empty());
    }

    #[test]
    fn processes_sharing_a_host_share_its_pool_once_each() {
        let d = [
            desired("web", &["shop.test", "SHOP.test"]),
            desired("worker", &["shop.test"]),
        ];
        let a = [
            actual("worker", 0, ActualLrpState::Running, 2),
            actual("web", 0, ActualLrpState::Running, 1),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        let pool = table.lookup("shop.test").unwrap();
        let addrs: Vec<_> = pool.endpoints.iter().map(|e| e.addr.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut a = actual("p1", 0, ActualLrpState::Running, 8080);
        a.net_info.as_mut().unwrap().address = "::1".into();
        let table = RouteTable::from_lrps(&[desired("p1", &["v6.test"])], &[a]);
        assert_eq!(
            table.lookup("v6.test").unwrap().endpoints[0].addr,
            "[::1]:8080"
        );
    }

    #[test]
    fn attempts_start_round_robin_and_cover_every_endpoint() {
        let d = [desired("p1", &["a.test"])];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 1),
            actual("p1", 1, ActualLrpState::Running, 2),
            actual("p1", 2, ActualLrpState::Running, 3),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        let pool = table.lookup("a.test").unwrap();
        let orders: Vec<Vec<u32>> = (0..3)
            .map(|_| pool.attempt_order().map(|e| e.index).collect())
            .collect();
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2], "every endpoint once: {order:?}");
        }
        let mut firsts: Vec<u32> = orders.iter().map(|o| o[0]).collect();
        firsts.sort();
        assert_eq!(
            firsts,
            [0, 1, 2],
            "each request starts at the next instance"
        );
    }
}
