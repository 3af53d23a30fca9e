//! The OCI runtime `config.json` for a [`ContainerSpec`].
//!
//! It follows `runc spec` (the kernel filesystems, masked and read-only
//! `/proc` paths, deny-all devices) with Kiln's choices on top: the network
//! namespace the cell prepared (`crate::network`), joined by path (without
//! one, the host's), a read-only root, a non-root user with no capabilities
//! and `noNewPrivileges`, a seccomp allowlist ([`super::seccomp`]), and
//! memory (swap included), CPU shares and pids limits in the container's
//! cgroup.
//! Written with `serde_json` rather than the `oci-spec` crate: the document
//! is small and fixed, and the crate would be a large dependency.

use super::{ContainerSpec, seccomp};
use serde_json::{Value, json};

/// The cgroup every Kiln container's cgroup is created under.
pub const CGROUP_PARENT: &str = "/kiln";

pub fn config_json(spec: &ContainerSpec) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &spec.mounts {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        options.push(if m.read_only { "ro" } else { "rw" });
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": options,
        }));
    }

    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if spec.limits.memory_mb > 0 {
        let bytes = spec.limits.memory_mb.saturating_mul(1024 * 1024);
        resources["memory"] = json!({"limit": bytes});
        if spec.limits.limit_swap {
            // memory+swap = memory: the container never swaps (Garden's rule).
            resources["memory"]["swap"] = json!(bytes);
        }
    }
    if spec.limits.cpu_shares > 0 {
        resources["cpu"] = json!({"shares": spec.limits.cpu_shares});
    }
    if spec.limits.pids > 0 {
        resources["pids"] = json!({"limit": spec.limits.pids});
    }
    let no_caps: [&str; 0] = [];
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if let Some(netns) = &spec.network {
        namespaces.push(json!({"type": "network", "path": netns}));
    }

    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.process.uid, "gid": spec.process.gid},
            "args": spec.process.args,
            "env": spec.process.env,
            "cwd": spec.process.cwd,
            // A non-root process needs no capabilities; empty sets also keep
            // setuid binaries (and file capabilities) from granting any.
            "capabilities": {
                "bounding": no_caps, "effective": no_caps, "inheritable": no_caps,
                "permitted": no_caps, "ambient": no_caps,
            },
            "rlimits": [{
                "type": "RLIMIT_NOFILE",
                "hard": spec.process.nofile,
                "soft": spec.process.nofile,
            }],
            "noNewPrivileges": true,
        },
        "root": {"path": spec.rootfs, "readonly": !spec.writable_root},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("{CGROUP_PARENT}/{}", spec.id),
            "resources": resources,
            "seccomp": seccomp::profile(),
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BindMount, Limits, ProcessSpec};
    use std::path::PathBuf;

    #[test]
    fn config_has_no_network_namespace_no_capabilities_and_the_limits() {
        let spec = ContainerSpec {
            id: "abc".into(),
            bundle: PathBuf::from("/data/containers/abc"),
            rootfs: PathBuf::from("/data/stacks/s"),
            writable_root: false,
            hostname: "abc".into(),
            process: ProcessSpec {
                args: vec!["/bin/sh".into()],
                env: vec!["A=1".into()],
                cwd: "/home/vcap".into(),
                uid: 2000,
                gid: 2000,
                nofile: 16384,
            },
            mounts: vec![BindMount {
                source: "/usr".into(),
                destination: "/usr".into(),
                read_only: true,
            }],
            limits: Limits {
                memory_mb: 256,
                limit_swap: true,
                cpu_shares: 30,
                pids: 1024,
            },
            network: None,
        };
        let c = config_json(&spec);
        let namespaces: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!namespaces.contains(&"network"));
        assert!(namespaces.contains(&"pid") && namespaces.contains(&"mount"));
        assert_eq!(c["process"]["user"]["uid"], 2000);
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(c["process"]["capabilities"]["bounding"], json!([]));
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(
            c["linux"]["resources"]["memory"]["limit"],
            256u64 * 1024 * 1024
        );
        assert_eq!(
            c["linux"]["resources"]["memory"]["swap"],
            256u64 * 1024 * 1024
        );
        assert_eq!(c["linux"]["resources"]["cpu"]["shares"], 30);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 1024);
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let usr = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/usr")
            .unwrap();
        assert_eq!(usr["options"], json!(["rbind", "nosuid", "nodev", "ro"]));

        let joined = config_json(&ContainerSpec {
            network: Some("/run/netns/kiln-x-abc".into()),
            ..spec
        });
        assert!(
            joined["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network", "path": "/run/netns/kiln-x-abc"}))
        );
    }
}
