//! Cells in processes of their own: joining, SIGKILL (re-placement) and
//! SIGTERM (evacuation under traffic).

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_join_die_and_evacuate() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (api_port, router_port, bbs_port) = (free_port(), free_port(), free_port());
    let main_network = free_subnet();
    let server = Server::start_with(
        &scratch.path().join("data"),
        api_port,
        router_port,
        &main_network,
        &["--bbs-listen".into(), format!("127.0.0.1:{bbs_port}")],
    )
    .await;
    let home = scratch.path().join("home");
    login(&home, &server).await;
    let credentials = scratch.path().join("data/bbs/credentials");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the credentials are the owner's only");
    let creds = kiln_bbs_client::Credentials::read(&credentials).unwrap();
    assert_eq!(creds.bbs_url, format!("http://127.0.0.1:{bbs_port}"));
    let bbs = kiln_bbs_client::HttpBbsClient::from_credentials(&creds, None).unwrap();

    // Refused: forged credentials, and a process without any.
    let forged = scratch.path().join("forged");
    std::fs::write(
        &forged,
        serde_json::json!({"bbs_url": creds.bbs_url, "token": "kbbs1.0.00ff"}).to_string(),
    )
    .unwrap();
    let out = Command::new(kiln_binary())
        .args([
            "server",
            "--roles",
            "cell",
            "--cell-id",
            "forger",
            "--cell-network",
            "none",
        ])
        .arg("--bbs-credentials")
        .arg(&forged)
        .arg("--data-dir")
        .arg(scratch.path().join("forger"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("refused this node's credentials"), "{text}");
    let out = Command::new(kiln_binary())
        .args(["server", "--roles", "router"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("--bbs-credentials"),
        "{text}"
    );

    // Two cells join on other loopback addresses.
    let net_b = another_subnet(&[&main_network]);
    let net_c = another_subnet(&[&main_network, &net_b]);
    let id = |name: &str| format!("{name}-{bbs_port}");
    let mut cell_b = CellNode::new(
        scratch.path(),
        &id("cell-b"),
        "127.0.0.2",
        net_b,
        &credentials,
    );
    let mut cell_c = CellNode::new(
        scratch.path(),
        &id("cell-c"),
        "127.0.0.3",
        net_c,
        &credentials,
    );
    cell_b.spawn();
    cell_c.spawn();
    cell_b.wait_present(&bbs).await;
    cell_c.wait_present(&bbs).await;

    // A second process under a live cell's id is refused, and leaves the
    // live cell's network alone.
    let net_dup = another_subnet(&[&main_network, &cell_b.network, &cell_c.network]);
    let mut dup = CellNode::new(
        scratch.path(),
        &id("cell-b"),
        "127.0.0.4",
        net_dup,
        &credentials,
    );
    dup.data_dir = scratch.path().join("dup");
    dup.log_path = scratch.path().join("dup.log");
    dup.spawn();
    let status = dup.wait_exit(Duration::from_secs(120)).await;
    assert!(!status.success(), "{}", dup.log());
    assert!(dup.log().contains("in use by a live cell"), "{}", dup.log());
    std::mem::forget(dup); // its Drop would sweep cell-b's network by name
    cell_b.wait_present(&bbs).await;

    // An app staged on whichever cell, scaled to 6: instances on every
    // cell, each reached through the router.
    let (log_b, log_c) = (cell_b.log_path.clone(), cell_c.log_path.clone());
    let all_logs = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}\n--- cell-b ---\n{}\n--- cell-c ---\n{}",
            server.log(),
            read(&log_b),
            read(&log_c)
        )
    };
    create_legacy_buildpack(&home).await;
    let probe = fixture("apps/envprobe");
    let out = cli(
        &home,
        &["push", "mc", "-p", probe.to_str().unwrap(), "-m", "128M"],
    )
    .await;
    assert!(out.success, "push failed\n{out}\n{}", all_logs());
    assert!(
        cli(&home, &["set-env", "mc", "E2E_DRAIN_SECONDS", "1"])
            .await
            .success
    );
    assert!(cli(&home, &["restart", "mc"]).await.success);
    let out = cli(&home, &["scale", "mc", "-i", "6"]).await;
    assert!(out.success, "scale failed\n{out}");
    let app: serde_json::Value =
        serde_json::from_str(&cli(&home, &["curl", "/v3/apps?names=mc"]).await.stdout).unwrap();
    let app_guid = app["resources"][0]["guid"].as_str().unwrap().to_string();
    let processes: serde_json::Value = serde_json::from_str(
        &cli(&home, &["curl", &format!("/v3/apps/{app_guid}/processes")])
            .await
            .stdout,
    )
    .unwrap();
    let process_guid = processes["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let every_cell = |hosts: &[String]| {
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .iter()
            .all(|a| hosts.iter().any(|h| h == a))
    };
    let hosts = wait_running(
        &home,
        &process_guid,
        6,
        Duration::from_secs(180),
        every_cell,
        "6 instances on 3 cells",
        &all_logs,
    )
    .await;
    println!("instances by index on hosts {hosts:?}");
    for index in 0..6 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{router_port}/probe"))
                .header("Host", "mc.localhost")
                .header("X-Cf-App-Instance", format!("{app_guid}:{index}"))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                let probe: serde_json::Value = response.json().await.unwrap();
                let addr = probe["env"]["CF_INSTANCE_ADDR"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                assert_eq!(probe["env"]["CF_INSTANCE_INDEX"], index.to_string());
                assert!(addr.starts_with("127.0.0."), "{probe}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {index} never answered\n{}",
                all_logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // A router-only node joined the same way serves the app too.
    let remote_router_port = free_port();
    let router_log = scratch.path().join("router-node.log");
    let mut router_node = Command::new(kiln_binary())
        .args(["server", "--roles", "router", "--bbs-credentials"])
        .arg(&credentials)
        .arg("--router-listen")
        .arg(format!("127.0.0.1:{remote_router_port}"))
        .arg("--data-dir")
        .arg(scratch.path().join("router-node"))
        .stdout(std::fs::File::create(&router_log).unwrap())
        .stderr(std::fs::File::create(scratch.path().join("router-node.err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let listening = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", remote_router_port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < listening,
            "the router node never listened\n{}",
            std::fs::read_to_string(scratch.path().join("router-node.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = wait_for_200(remote_router_port, "mc.localhost", Duration::from_secs(60)).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        std::fs::read_to_string(scratch.path().join("router-node.err")).unwrap_or_default()
    );
    router_node.start_kill().unwrap();
    router_node.wait().await.unwrap();

    // Logs from remote cells reach the log cache.
    let out = cli(&home, &["logs", "mc", "--recent"]).await;
    assert!(out.success, "{out}");
    for host in ["127.0.0.2", "127.0.0.3"] {
        let index = hosts.iter().position(|h| h == host).unwrap();
        assert!(
            out.stdout.contains(&format!("[APP/PROC/WEB/{index}]")),
            "no log line of instance {index} on {host}\n{out}"
        );
    }

    // SIGKILL cell-b: its instances run again on the others. Its
    // containers outlive it, and they stay routed (SUSPECT once its
    // presence expires) until their replacements run: no request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(router_port, "mc.localhost", stop.clone(), 20_000);
    let killed = Instant::now();
    cell_b.kill_hard().await;
    let no_b = |hosts: &[String]| hosts.iter().all(|h| h != "127.0.0.2");
    wait_running(
        &home,
        &process_guid,
        6,
        Duration::from_secs(180),
        no_b,
        "re-placed after SIGKILL",
        &all_logs,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    println!(
        "all 6 instances RUNNING again {:.1} s after SIGKILL of a cell (cell TTL 15 s); \
         {} requests through the router meanwhile, {} failed",
        killed.elapsed().as_secs_f64(),
        seen.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed while a killed cell's instances were re-placed: {failed:?}\n{}",
        all_logs()
    );

    // cell-b restarted with the same id after kill -9: it destroys its
    // leftovers and takes its id back; nothing runs twice.
    cell_b.spawn();
    cell_b.wait_present(&bbs).await;
    let leftovers_gone = Instant::now() + Duration::from_secs(60);
    while cell_b.containers() > 0 {
        assert!(
            Instant::now() < leftovers_gone,
            "cell-b kept its leftovers\n{}",
            cell_b.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // SIGTERM cell-c under traffic: it evacuates, and no request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(router_port, "mc.localhost", stop.clone(), 20_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on_c = instances(&home, &process_guid)
        .await
        .iter()
        .filter(|(_, _, h)| h == "127.0.0.3")
        .count();
    let evacuating = Instant::now();
    cell_c.signal("-TERM");
    let status = cell_c.wait_exit(Duration::from_secs(300)).await;
    let evacuated_in = evacuating.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    assert!(
        status.success(),
        "cell-c exited with {status}\n{}",
        cell_c.log()
    );
    // Each of its instances was stopped only once its replacement ran.
    assert_eq!(
        cell_c
            .log()
            .matches("replacement runs elsewhere; stopping the evacuated instance")
            .count(),
        on_c,
        "{}",
        cell_c.log()
    );
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    println!(
        "cell-c evacuated in {:.1} s; {} requests through the router during it, {} failed",
        evacuated_in.as_secs_f64(),
        seen.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the evacuation: {failed:?}\n{}",
        all_logs()
    );
    let no_c = |hosts: &[String]| hosts.iter().all(|h| h != "127.0.0.3");
    wait_running(
        &home,
        &process_guid,
        6,
        Duration::from_secs(60),
        no_c,
        "after evacuation",
        &all_logs,
    )
    .await;
    // Exactly six containers run on the cells that are left.
    let main_runc = scratch.path().join("data/cell/runc");
    assert_eq!(
        runc_containers(&main_runc) + cell_b.containers() + cell_c.containers(),
        6,
        "one container per instance, none twice"
    );
}
