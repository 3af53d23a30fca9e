//! Reading a container's cgroup: CPU time, memory counted against the
//! limit, and how many processes the OOM killer took. runc creates the
//! cgroup (`linux.cgroupsPath` = [`CGROUP_PARENT`]`/<id>`) and, since it runs
//! with `--keep`, leaves it in place after the container's init exits, so
//! the OOM count can still be read then; `runc delete` removes it.
//!
//! Both layouts are supported, detected once at start: cgroup v1 (one
//! hierarchy per controller under `/sys/fs/cgroup/<controller>`, the hybrid
//! layout of these machines) and v2 (one unified tree at `/sys/fs/cgroup`).

use super::oci::CGROUP_PARENT;
use std::io;
use std::path::{Path, PathBuf};

/// What a container has used, as read from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupUsage {
    /// Total CPU time of all its processes, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory counted against the limit: usage without the inactive file
    /// cache the kernel reclaims first (Garden's `TotalUsageTowardLimit`).
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct Cgroups {
    mount: PathBuf,
    pub version: CgroupVersion,
    /// v1 only limits memory+swap when swap accounting is on
    /// (`memory.memsw.*` exists); runc refuses a swap limit otherwise.
    pub swap_limit: bool,
}

impl Cgroups {
    /// The layout of this machine's `/sys/fs/cgroup`.
    pub fn detect() -> Cgroups {
        Cgroups::at(Path::new("/sys/fs/cgroup"))
    }

    pub fn at(mount: &Path) -> Cgroups {
        // On v2 the unified tree is mounted at the top; on v1 and hybrid
        // there is a directory per controller instead.
        let version = if mount.join("cgroup.controllers").is_file() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };
        let swap_limit = match version {
            CgroupVersion::V1 => mount.join("memory/memory.memsw.limit_in_bytes").exists(),
            CgroupVersion::V2 => true,
        };
        Cgroups {
            mount: mount.to_path_buf(),
            version,
            swap_limit,
        }
    }

    /// The container's directory in one controller's hierarchy (v1) or in
    /// the unified tree (v2, `controller` ignored).
    fn dir(&self, controller: &str, id: &str) -> PathBuf {
        let relative = format!("{}/{id}", CGROUP_PARENT.trim_start_matches('/'));
        match self.version {
            CgroupVersion::V1 => self.mount.join(controller).join(relative),
            CgroupVersion::V2 => self.mount.join(relative),
        }
    }

    fn read(&self, controller: &str, id: &str, file: &str) -> io::Result<String> {
        std::fs::read_to_string(self.dir(controller, id).join(file))
    }

    pub fn usage(&self, id: &str) -> io::Result<CgroupUsage> {
        match self.version {
            CgroupVersion::V1 => {
                let cpu = self.read("cpuacct", id, "cpuacct.usage")?;
                let usage = self.read("memory", id, "memory.usage_in_bytes")?;
                let stat = self.read("memory", id, "memory.stat")?;
                Ok(CgroupUsage {
                    cpu_nanos: parse_number(&cpu)?,
                    memory_bytes: memory_toward_limit(
                        parse_number(&usage)?,
                        &stat,
                        "total_inactive_file",
                    ),
                })
            }
            CgroupVersion::V2 => {
                let cpu = self.read("", id, "cpu.stat")?;
                let current = self.read("", id, "memory.current")?;
                let stat = self.read("", id, "memory.stat")?;
                let usec = keyed(&cpu, "usage_usec").ok_or_else(|| bad("cpu.stat usage_usec"))?;
                Ok(CgroupUsage {
                    cpu_nanos: usec.saturating_mul(1000),
                    memory_bytes: memory_toward_limit(
                        parse_number(&current)?,
                        &stat,
                        "inactive_file",
                    ),
                })
            }
        }
    }

    /// Processes of the container the OOM killer killed; `None` when the
    /// cgroup is gone or the kernel does not count them.
    pub fn oom_kills(&self, id: &str) -> Option<u64> {
        let (file, key) = match self.version {
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
            CgroupVersion::V2 => ("memory.events", "oom_kill"),
        };
        keyed(&self.read("memory", id, file).ok()?, key)
    }

    /// Removes the container's cgroup directories that runc left (after a
    /// `kill -9` of the cell, say). Only empty cgroups can go; one that
    /// still has processes is left and reported.
    pub fn remove(&self, id: &str) -> io::Result<usize> {
        let mut removed = 0;
        for dir in self.all_dirs(id) {
            match std::fs::remove_dir(dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Whether any hierarchy still has a cgroup for the container.
    pub fn exists(&self, id: &str) -> bool {
        self.all_dirs(id).iter().any(|d| d.exists())
    }

    /// The container's directory in every hierarchy: on v1 each mounted
    /// one (runc also makes one in the hybrid layout's `unified` and in
    /// `systemd`), on v2 the one tree.
    fn all_dirs(&self, id: &str) -> Vec<PathBuf> {
        match self.version {
            CgroupVersion::V1 => std::fs::read_dir(&self.mount)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| self.dir(&e.file_name().to_string_lossy(), id))
                        .collect()
                })
                .unwrap_or_default(),
            CgroupVersion::V2 => vec![self.dir("", id)],
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unreadable {what}"))
}

fn parse_number(text: &str) -> io::Result<u64> {
    text.trim()
        .parse()
        .map_err(|_| bad(&format!("number {:?}", text.trim())))
}

/// The value of `key` in a flat keyed file (`key value` per line), as
/// `memory.stat`, `cpu.stat`, `memory.events` and `memory.oom_control` are.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `usage` less the inactive file cache named `inactive_key` in `stat`.
fn memory_toward_limit(usage: u64, stat: &str, inactive_key: &str) -> u64 {
    usage.saturating_sub(keyed(stat, inactive_key).unwrap_or(0))
}

/// The CPU share of one core between two readings, in percent.
pub fn cpu_percentage(before_nanos: u64, after_nanos: u64, elapsed_nanos: u64) -> f64 {
    if elapsed_nanos == 0 {
        return 0.0;
    }
    after_nanos.saturating_sub(before_nanos) as f64 * 100.0 / elapsed_nanos as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = "cache 4096\nrss 1048576\ninactive_file 4096\n\
        hierarchical_memory_limit 268435456\ntotal_cache 8192\ntotal_rss 2097152\n\
        total_inactive_file 8192\ntotal_active_file 0\n";
    const V1_OOM: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
    const V2_CPU: &str = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
    const V2_STAT: &str =
        "anon 2097152\nfile 8192\nkernel 0\ninactive_file 4096\nactive_file 4096\n";
    const V2_EVENTS: &str = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";

    fn cgroup_tree(version: CgroupVersion) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        match version {
            CgroupVersion::V1 => {
                write(
                    "memory/memory.memsw.limit_in_bytes",
                    "9223372036854771712\n",
                );
                write("cpuacct/kiln/c1/cpuacct.usage", "123456789\n");
                write("memory/kiln/c1/memory.usage_in_bytes", "2113536\n");
                write("memory/kiln/c1/memory.stat", V1_STAT);
                write("memory/kiln/c1/memory.oom_control", V1_OOM);
            }
            CgroupVersion::V2 => {
                write("cgroup.controllers", "cpu memory pids\n");
                write("kiln/c1/cpu.stat", V2_CPU);
                write("kiln/c1/memory.current", "2105344\n");
                write("kiln/c1/memory.stat", V2_STAT);
                write("kiln/c1/memory.events", V2_EVENTS);
            }
        }
        root
    }

    #[test]
    fn reads_v1_usage_and_oom_kills() {
        let root = cgroup_tree(CgroupVersion::V1);
        let c = Cgroups::at(root.path());
        assert_eq!(c.version, CgroupVersion::V1);
        assert!(c.swap_limit);
        let usage = c.usage("c1").unwrap();
        assert_eq!(usage.cpu_nanos, 123_456_789);
        assert_eq!(usage.memory_bytes, 2_113_536 - 8192);
        assert_eq!(c.oom_kills("c1"), Some(1));
        assert_eq!(c.oom_kills("gone"), None);
        assert!(c.usage("gone").is_err());
    }

    #[test]
    fn removes_a_leftover_cgroup_from_every_v1_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        for h in ["memory", "pids", "unified"] {
            std::fs::create_dir_all(root.path().join(h).join("kiln/c1")).unwrap();
        }
        std::fs::create_dir_all(root.path().join("cpu/kiln")).unwrap();
        let c = Cgroups::at(root.path());
        assert!(c.exists("c1"));
        assert_eq!(c.remove("c1").unwrap(), 3);
        assert!(!c.exists("c1"));
        assert_eq!(c.remove("c1").unwrap(), 0);
    }

    #[test]
    fn reads_v2_usage_and_oom_kills() {
        let root = cgroup_tree(CgroupVersion::V2);
        let c = Cgroups::at(root.path());
        assert_eq!(c.version, CgroupVersion::V2);
        let usage = c.usage("c1").unwrap();
        assert_eq!(usage.cpu_nanos, 1_500_000);
        assert_eq!(usage.memory_bytes, 2_105_344 - 4096);
        assert_eq!(c.oom_kills("c1"), Some(2));
    }

    #[test]
    fn v1_without_swap_accounting_sets_no_swap_limit() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("memory")).unwrap();
        assert!(!Cgroups::at(root.path()).swap_limit);
    }

    #[test]
    fn parses_keyed_files_and_cpu_shares_of_a_core() {
        assert_eq!(keyed(V2_EVENTS, "oom_kill"), Some(2));
        assert_eq!(keyed(V2_EVENTS, "oom"), Some(2));
        assert_eq!(keyed(V1_STAT, "total_rss"), Some(2_097_152));
        assert_eq!(keyed(V1_STAT, "missing"), None);
        assert_eq!(keyed("garbage", "garbage"), None);
        assert_eq!(cpu_percentage(0, 500_000_000, 1_000_000_000), 50.0);
        assert_eq!(cpu_percentage(10, 5, 1_000), 0.0);
        assert_eq!(cpu_percentage(0, 5, 0), 0.0);
    }
}
