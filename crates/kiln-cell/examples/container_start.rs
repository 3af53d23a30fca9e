//! Container start time, side by side in one run (see
//! `bench/container-start.sh`): a bare `runc run` of the bundle Kiln
//! writes, Kiln's runtime without networking, and Kiln's runtime with the
//! container's network (namespace, veth, port mapping) set up first. Each
//! figure is create → `/bin/true` exited; the three kinds are interleaved
//! so that machine noise hits them alike. Prints medians and ratios.
//!
//! With `deferred`, networked containers are detached after all the timed
//! runs instead of each right after its run: the kernel finishes removing
//! a namespace on a worker thread some 30 ms later, and on a small machine
//! that work lands on the next timed runs.
//!
//! Usage: `container_start [RUNS] [SUBNET] [deferred]` (root, runc at
//! /usr/sbin/runc).

use kiln_cell::ContainerRuntime;
use kiln_cell::network::{CellNetwork, NetworkConfig};
use kiln_cell::runtime::{BindMount, ContainerSpec, Limits, ProcessSpec, oci};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNC: &str = "/usr/sbin/runc";

fn spec(dir: &Path, rootfs: &Path, id: &str, network: Option<PathBuf>) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        bundle: dir.join("bundles").join(id),
        rootfs: rootfs.to_path_buf(),
        writable_root: false,
        hostname: id.into(),
        process: ProcessSpec {
            args: vec!["/bin/true".into()],
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
            pids: 64,
            ..Limits::default()
        },
        network,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let subnet = args.next().unwrap_or_else(|| "10.199.0.0/24".into());
    let deferred = args.next().as_deref() == Some("deferred");
    let mut to_detach = Vec::new();
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().to_path_buf();
    let stack = kiln_cell::stack::build_host_stack(&dir.join("stack"), "bench")?;
    let cell_id = format!("bench-{}", std::process::id());
    let network = CellNetwork::setup(
        &cell_id,
        &NetworkConfig {
            subnet: subnet.parse()?,
            dns_servers: vec![],
        },
        Some(std::net::Ipv4Addr::LOCALHOST),
        &dir.join("net"),
    )
    .await?;
    let runtime = kiln_cell::RuncRuntime::new(RUNC.into(), dir.join("runc"));
    let bare_root = dir.join("bare-runc");

    let (mut bare, mut plain, mut networked, mut attach, mut detach) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..runs + 1 {
        // The order rotates so that no kind always follows another's
        // teardown (a namespace's removal finishes in the kernel later).
        for k in 0..3 {
            match (i + k) % 3 {
                0 => {
                    // Bare runc: the same config.json, written beforehand.
                    let id = format!("bare-{i}");
                    let s = spec(&dir, &stack.rootfs, &id, None);
                    std::fs::create_dir_all(&s.bundle)?;
                    std::fs::write(
                        s.bundle.join("config.json"),
                        serde_json::to_vec(&oci::config_json(&s))?,
                    )?;
                    let t = Instant::now();
                    let status = tokio::process::Command::new(RUNC)
                        .arg("--root")
                        .arg(&bare_root)
                        .args(["run", "--bundle"])
                        .arg(&s.bundle)
                        .arg(&id)
                        .status()
                        .await?;
                    let elapsed = t.elapsed();
                    assert!(status.success(), "bare runc run failed");
                    if i > 0 {
                        bare.push(elapsed);
                    }
                }
                1 => {
                    // Kiln's runtime, host network.
                    let id = format!("plain-{i}");
                    let s = spec(&dir, &stack.rootfs, &id, None);
                    let t = Instant::now();
                    let code = runtime.create_and_run(&s).await?.exit.await?;
                    let elapsed = t.elapsed();
                    assert_eq!(code, 0);
                    runtime.destroy(&id).await?;
                    if i > 0 {
                        plain.push(elapsed);
                    }
                }
                _ => {
                    // Kiln's runtime with the container's network.
                    let id = format!("net-{i}");
                    let t = Instant::now();
                    let attachment = network
                        .attach(&id, Some(network.hold_port(62300 + i as u16)?))
                        .await?;
                    let attach_t = t.elapsed();
                    let s = spec(&dir, &stack.rootfs, &id, Some(attachment.netns));
                    let code = runtime.create_and_run(&s).await?.exit.await?;
                    let elapsed = t.elapsed();
                    assert_eq!(code, 0);
                    runtime.destroy(&id).await?;
                    // The first round warms caches; it is not counted.
                    if i > 0 {
                        networked.push(elapsed);
                        attach.push(attach_t);
                    }
                    if deferred {
                        to_detach.push(id);
                    } else {
                        let t = Instant::now();
                        network.detach(&id).await;
                        detach.push(t.elapsed());
                    }
                }
            }
        }
    }
    for id in to_detach {
        let t = Instant::now();
        network.detach(&id).await;
        detach.push(t.elapsed());
    }
    network.teardown().await;

    let (b, p, n) = (median(bare), median(plain), median(networked));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let when = if deferred {
        "after all runs"
    } else {
        "right after each run"
    };
    println!(
        "container start, create -> /bin/true exited, median of {runs} interleaved runs \
         (network detach {when})"
    );
    println!("  bare runc run:                 {:7.1} ms", ms(b));
    println!("  kiln, host network:            {:7.1} ms", ms(p));
    println!("  kiln, own network (all setup): {:7.1} ms", ms(n));
    println!(
        "    of which network attach:     {:7.1} ms",
        ms(median(attach))
    );
    println!(
        "  network detach (not counted):  {:7.1} ms",
        ms(median(detach))
    );
    println!("ratio kiln host network / bare runc: {:.2}", ms(p) / ms(b));
    println!("ratio kiln own network  / bare runc: {:.2}", ms(n) / ms(b));
    Ok(())
}
