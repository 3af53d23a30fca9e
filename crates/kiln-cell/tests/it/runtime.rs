//! The runc runtime on its own: create+run latency, the read-only `/usr`,
//! cgroup limits, kill, destroy and list.

use crate::support::{RUNC, runc_available};
use kiln_cell::ContainerRuntime;
use kiln_cell::runtime::{BindMount, ContainerSpec, Limits, ProcessSpec, Signal};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

fn spec(dir: &Path, rootfs: &Path, id: &str, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        bundle: dir.join("containers").join(id),
        rootfs: rootfs.to_path_buf(),
        writable_root: false,
        hostname: id.into(),
        process: ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/".into(),
            uid: 2000,
            gid: 2000,
            nofile: 1024,
        },
        mounts: vec![BindMount {
            source: "/usr".into(),
            destination: "/usr".into(),
            read_only: true,
        }],
        limits: Limits {
            memory_mb: 64,
            limit_swap: false,
            cpu_shares: 0,
            pids: 64,
        },
        network: None,
    }
}

#[tokio::test]
async fn runc_runs_containers_fast_with_a_read_only_usr_and_limits() {
    if !runc_available("runc_runs_containers_fast_with_a_read_only_usr_and_limits") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stack =
        kiln_cell::stack::build_host_stack(&dir.path().join("stack"), "test-stack").unwrap();
    let runtime = kiln_cell::RuncRuntime::new(RUNC.into(), dir.path().join("runc"));
    assert!(runtime.list().await.unwrap().is_empty());
    // Cgroups are machine-wide: ids unique to this run keep concurrent
    // runs of this test apart.
    let run = &crate::support::guid()[..8];

    // Create + start + exit of /bin/true, as a bare `runc run` would.
    let mut times = Vec::new();
    for i in 0..10 {
        let s = spec(
            dir.path(),
            &stack.rootfs,
            &format!("true-{run}-{i}"),
            &["/bin/true"],
        );
        let started = Instant::now();
        let process = runtime.create_and_run(&s).await.unwrap();
        assert_eq!(process.exit.await.unwrap(), 0);
        times.push(started.elapsed());
        // Containers are kept after their exit until destroyed.
        runtime.destroy(&s.id).await.unwrap();
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "MEASURED runc create+start+exit of /bin/true: median {median:?}, min {:?}, max {:?} (n=10)",
        times[0],
        times[times.len() - 1]
    );
    assert!(median < Duration::from_secs(2), "median {median:?}");

    // /usr is the host's, read-only: the container cannot write it.
    let s = spec(
        dir.path(),
        &stack.rootfs,
        &format!("usr-probe-{run}"),
        &[
            "/bin/sh",
            "-c",
            "id -u; touch /usr/kiln-probe && echo wrote || echo refused; test -e /etc/shadow && echo shadow || echo no-shadow",
        ],
    );
    let mut process = runtime.create_and_run(&s).await.unwrap();
    let mut out = String::new();
    process.stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(process.exit.await.unwrap(), 0);
    assert_eq!(out, "2000\nrefused\nno-shadow\n");
    runtime.destroy(&s.id).await.unwrap();
    assert!(!Path::new("/usr/kiln-probe").exists());

    // A long-running container: listed, limited, killed, destroyed.
    let sleeper = format!("sleeper-{run}");
    let s = spec(dir.path(), &stack.rootfs, &sleeper, &["/bin/sleep", "300"]);
    let process = runtime.create_and_run(&s).await.unwrap();
    let listed = crate::support::eventually("sleeper listed", Duration::from_secs(5), || async {
        let ids = runtime.list().await.unwrap();
        ids.contains(&sleeper).then_some(ids)
    })
    .await;
    assert_eq!(listed, std::slice::from_ref(&sleeper));
    // Listed is not yet started: wait until runc has started the process.
    crate::support::eventually("sleeper running", Duration::from_secs(5), || async {
        crate::support::runc_running(&dir.path().join("runc"), &sleeper).then_some(())
    })
    .await;
    let v1 = format!("/sys/fs/cgroup/memory/kiln/{sleeper}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/kiln/{sleeper}/memory.max");
    if let Ok(limit) = std::fs::read_to_string(v1).or_else(|_| std::fs::read_to_string(v2)) {
        assert_eq!(limit.trim(), (64u64 * 1024 * 1024).to_string());
    } else {
        eprintln!("no cgroup memory file found for the sleeper; limit not checked");
    }
    // pid 1 has no TERM handler: only KILL stops it.
    runtime.kill(&sleeper, Signal::Kill).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), process.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 137);
    runtime.destroy(&sleeper).await.unwrap();
    runtime.destroy(&sleeper).await.unwrap();
    runtime.kill(&sleeper, Signal::Term).await.unwrap();
    assert!(runtime.list().await.unwrap().is_empty());
}
