//! Limits with real runc: an OOM kill reported as "out of memory", the
//! disk quota (ENOSPC), the pids limit, the seccomp profile, usage figures
//! of a busy instance, and a cell restarted after `kill -9` removing the
//! mounts, loop devices and cgroups its previous run left. Each faulty
//! instance crashes alone: a bystander keeps serving throughout.

use crate::support::*;
use kiln_bbs::BbsClient;
use kiln_model::ActualLrpState;
use kiln_model::bbs::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

fn python_available(test: &str) -> bool {
    if Path::new(PYTHON).is_file() {
        return true;
    }
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test}: KILN_REQUIRE_RUNC=1 but {PYTHON} is missing");
    }
    eprintln!("\n!!!!!!!! SKIPPING {test}: {PYTHON} is missing !!!!!!!!\n");
    false
}

async fn crashed(cell: &TestCell, process_guid: &str) -> ActualLrp {
    eventually(
        &format!("{process_guid} to crash"),
        Duration::from_secs(60),
        || async {
            cell.actual_lrp(process_guid)
                .await
                .filter(|a| a.crash_count >= 1 && !a.crash_reason.is_empty())
        },
    )
    .await
}

async fn status(url: &str) -> Option<u16> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    Some(client.get(url).send().await.ok()?.status().as_u16())
}

/// Mounts under `dir`, but for the file systems the cell keeps made ahead
/// (`.disk-pool`, at most one per size used).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir) && !m.contains(POOL))
        .collect()
}

const POOL: &str = "/.disk-pool/";

/// Loop devices whose backing file is under `dir`, but for those of the
/// file systems made ahead.
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim();
            (backing.starts_with(&dir) && !backing.contains(POOL))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// The container's cgroup directories: in every v1 hierarchy (the hybrid
/// layout's `unified` included) or in the v2 tree.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("kiln").join(id)];
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        dirs.push(entry.path().join("kiln").join(id));
    }
    dirs.into_iter().filter(|p| p.exists()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_disk_and_pids_faults_crash_only_their_instance_with_their_reason() {
    let test = "oom_disk_and_pids_faults_crash_only_their_instance_with_their_reason";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let cell = TestCell::start(63300..63310).await;
    let stack = cell.stack.clone();

    let bystander = desired_lrp(
        &stack,
        "bystander",
        sh("cd /tmp && exec python3 -m http.server $PORT"),
    );
    cell.bbs.desire_lrp(bystander).await.unwrap();
    let by = cell.running("bystander").await;
    let url = format!(
        "http://127.0.0.1:{}/",
        by.net_info.as_ref().unwrap().ports[0].host_port
    );
    assert_eq!(status(&url).await, Some(200));

    // Allocates without bound: a string doubling in the shell.
    let mut oom = desired_lrp(&stack, "oom", sh("a=x; while :; do a=$a$a; done"));
    oom.memory_mb = 32;
    oom.health_check = HealthCheck::Process;
    // Fills its disk: /tmp and /home/vcap share one 16 MB quota.
    let mut disk = desired_lrp(
        &stack,
        "disk",
        sh("dd if=/dev/zero of=/tmp/fill bs=1M count=64; \
            dd if=/dev/zero of=/home/vcap/more bs=1M count=1 2>/dev/null || echo home-full-too; \
            exit 9"),
    );
    disk.disk_mb = 16;
    disk.health_check = HealthCheck::Process;
    // Forks without bound, until the pids limit refuses.
    let mut forks = desired_lrp(&stack, "forks", sh("while :; do sleep 600 & done"));
    forks.memory_mb = 1024;
    forks.health_check = HealthCheck::Process;
    for d in [oom, disk, forks] {
        cell.bbs.desire_lrp(d).await.unwrap();
    }

    let a = crashed(&cell, "oom").await;
    assert_eq!(
        a.crash_reason,
        "APP/PROC/WEB: Exited with status 137 (out of memory)"
    );
    assert!(
        cell.logs.has(
            "oom-app",
            "APP/PROC/WEB|OUT|Exit status 137 (out of memory)"
        ),
        "{:?}",
        cell.logs.lines("oom-app")
    );
    assert!(
        cell.logs
            .has("oom-app", "CELL|ERR|Exited with status 137 (out of memory)")
    );
    // Crashed instances restart at once: stop each when seen, to spare
    // the machine (and the tests beside this one) the repeats.
    cell.bbs.remove_desired_lrp("oom").await.unwrap();

    let a = crashed(&cell, "disk").await;
    assert_eq!(a.crash_reason, "APP/PROC/WEB: Exited with status 9");
    let lines = cell.logs.lines("disk-app");
    assert!(
        lines.iter().any(|l| l.contains("No space left on device")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("|home-full-too")),
        "{lines:?}"
    );
    cell.bbs.remove_desired_lrp("disk").await.unwrap();

    let a = crashed(&cell, "forks").await;
    assert!(
        a.crash_reason
            .starts_with("APP/PROC/WEB: Exited with status "),
        "{}",
        a.crash_reason
    );
    assert!(
        !a.crash_reason.contains("out of memory"),
        "{}",
        a.crash_reason
    );
    let lines = cell.logs.lines("forks-app");
    assert!(
        lines.iter().any(|l| l.to_lowercase().contains("fork")),
        "{lines:?}"
    );
    cell.bbs.remove_desired_lrp("forks").await.unwrap();

    // The bystander never noticed.
    assert_eq!(status(&url).await, Some(200));
    let by = cell.actual_lrp("bystander").await.unwrap();
    assert_eq!((by.state, by.crash_count), (ActualLrpState::Running, 0));

    cell.bbs.remove_desired_lrp("bystander").await.unwrap();
    let data_dir = cell.config.data_dir.clone();
    eventually(
        "containers, mounts, loop devices gone",
        Duration::from_secs(30),
        || async {
            (cell.containers().await.is_empty()
                && mounts_under(&data_dir).is_empty()
                && loop_devices_under(&data_dir).is_empty())
            .then_some(())
        },
    )
    .await;
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_reports_cpu_memory_and_disk_usage() {
    let test = "a_busy_instance_reports_cpu_memory_and_disk_usage";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let cell = TestCell::start(63310..63320).await;
    let busy = desired_lrp(
        &cell.stack,
        "busy",
        sh(
            "dd if=/dev/zero of=/home/vcap/data bs=1M count=5 2>/dev/null; \
            (while :; do :; done) & exec python3 -m http.server $PORT",
        ),
    );
    cell.bbs.desire_lrp(busy).await.unwrap();
    let a = cell.running("busy").await;
    let instance_guid = a.instance_key.unwrap().instance_guid;

    let m = eventually("a container metric", Duration::from_secs(20), || async {
        cell.logs.metrics("busy").into_iter().next()
    })
    .await;
    eprintln!("MEASURED container metric of a busy instance: {m:?}");
    assert_eq!(m.source_id, "busy-app");
    assert_eq!(
        (m.instance_id.as_str(), m.instance_guid.as_str()),
        ("0", instance_guid.as_str())
    );
    assert!(m.cpu_percentage > 0.0, "{m:?}");
    assert!(m.memory_bytes > 1024 * 1024, "{m:?}");
    assert!(m.disk_bytes >= 5 * 1024 * 1024, "{m:?}");
    assert!(m.disk_bytes < 64 * 1024 * 1024, "{m:?}");
    assert_eq!(m.memory_bytes_quota, 256 * 1024 * 1024);
    assert_eq!(m.disk_bytes_quota, 256 * 1024 * 1024);

    // The cgroup has the limits: memory, swap (where accounted), CPU
    // shares from Diego's weight for 256 MB (3 → 30 shares), pids.
    let memory = Path::new("/sys/fs/cgroup/memory/kiln").join(&instance_guid);
    if memory.exists() {
        let read = |dir: &Path, f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read(&memory, "memory.limit_in_bytes").trim(), "268435456");
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(&memory, "memory.memsw.limit_in_bytes").trim(),
                "268435456"
            );
        }
        let cpu = Path::new("/sys/fs/cgroup/cpu/kiln").join(&instance_guid);
        assert_eq!(read(&cpu, "cpu.shares").trim(), "30");
        let pids = Path::new("/sys/fs/cgroup/pids/kiln").join(&instance_guid);
        assert_eq!(read(&pids, "pids.max").trim(), "1024");
    } else {
        eprintln!("cgroup v2 machine: v1 limit files not checked");
    }

    cell.bbs.remove_desired_lrp("busy").await.unwrap();
    eventually("container gone", Duration::from_secs(20), || async {
        cell.containers().await.is_empty().then_some(())
    })
    .await;
    assert!(
        cgroup_dirs(&instance_guid).is_empty(),
        "cgroup removed with the instance"
    );
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_refuses_namespaces_and_mounts_to_an_ordinary_program() {
    let test = "seccomp_refuses_namespaces_and_mounts_to_an_ordinary_program";
    if !runc_available(test) {
        return;
    }
    let cell = TestCell::start(63320..63330).await;
    let task_guid = guid();
    let script = "unshare -U true && echo unshare-allowed || echo unshare-refused; \
                  unshare -U -r true 2>&1 | tail -n 1; \
                  ls / > /dev/null && echo ls-works";
    cell.desire_task(
        &task_guid,
        task_definition(&cell.stack, "seccomp", sh(script)),
    )
    .await;
    let t = cell
        .completed_task(&task_guid, Duration::from_secs(30))
        .await;
    assert!(!t.failed, "{}", t.failure_reason);
    let lines = cell.logs.lines("seccomp");
    assert!(
        lines.contains(&"STG|OUT|unshare-refused".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Operation not permitted")),
        "{lines:?}"
    );
    assert!(lines.contains(&"STG|OUT|ls-works".to_string()), "{lines:?}");
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_restarted_after_kill_9_removes_the_mounts_and_cgroups_it_left() {
    let test = "a_cell_restarted_after_kill_9_removes_the_mounts_and_cgroups_it_left";
    if !runc_available(test) {
        return;
    }
    let mut cell = TestCell::start(63330..63340).await;
    let data_dir = cell.config.data_dir.clone();
    let left = desired_lrp(&cell.stack, "left", sh("exec sleep 600"));
    let mut left = left;
    left.health_check = HealthCheck::Process;
    left.disk_mb = 64;

    let mut instance_guid = String::new();
    let probe = &mut instance_guid;
    let bbs = cell.bbs.clone();
    cell.run_cell_then_kill_it(|| async move {
        bbs.desire_lrp(left).await.unwrap();
        let a = eventually("left RUNNING", Duration::from_secs(30), || async {
            let filter = kiln_bbs::ActualLrpFilter {
                process_guid: Some("left".into()),
                ..Default::default()
            };
            bbs.actual_lrps(filter)
                .await
                .unwrap()
                .into_iter()
                .find(|a| a.state == ActualLrpState::Running)
        })
        .await;
        *probe = a.instance_key.unwrap().instance_guid;
    })
    .await;

    // What the killed cell left: its container, mount, loop device, cgroup.
    // (runc may still be creating it: RUNNING only meant "spawned".)
    eventually("the orphan listed", Duration::from_secs(10), || async {
        (cell.containers().await == [instance_guid.clone()]).then_some(())
    })
    .await;
    assert_eq!(
        mounts_under(&data_dir).len(),
        1,
        "{:?}",
        mounts_under(&data_dir)
    );
    assert_eq!(loop_devices_under(&data_dir).len(), 1);
    assert!(!cgroup_dirs(&instance_guid).is_empty());
    // And a cgroup whose runc state is gone (as if runc's root was lost).
    let stray = format!("stray-{}", &guid()[..8]);
    let stray_cgroup = Path::new("/sys/fs/cgroup/pids/kiln").join(&stray);
    let made_stray = std::fs::create_dir(&stray_cgroup).is_ok();
    std::fs::create_dir(cell.container_dir(&stray)).unwrap();

    // Not wanted any more: the restarted cell only sweeps.
    cell.bbs.remove_desired_lrp("left").await.unwrap();
    cell.restart_cell().await;
    cell.wait_present().await;
    eventually("leftovers swept", Duration::from_secs(20), || async {
        (cell.containers().await.is_empty() && mounts_under(&data_dir).is_empty()).then_some(())
    })
    .await;
    // A loop device detaches itself once its file system's last holder
    // (the killed container's mount namespace) is gone.
    eventually("loop devices detached", Duration::from_secs(10), || async {
        loop_devices_under(&data_dir).is_empty().then_some(())
    })
    .await;
    assert_eq!(cgroup_dirs(&instance_guid), Vec::<PathBuf>::new());
    if made_stray {
        assert!(!stray_cgroup.exists(), "stray cgroup removed");
    }
    // The sweep ends by removing every directory and image.
    eventually(
        "containers dir emptied",
        Duration::from_secs(10),
        || async {
            let left = std::fs::read_dir(data_dir.join("containers")).ok()?.count();
            (left == 0).then_some(())
        },
    )
    .await;
    cell.shutdown().await;
}
