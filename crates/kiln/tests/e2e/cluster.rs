//! Two full nodes on shared PostgreSQL and S3: the standby BBS takes over when the active one dies.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// The node whose BBS holds the cluster's lock, by its log.
fn bbs_active(server: &Server) -> bool {
    server.log().contains("bbs active on this node")
}

/// Two nodes on one PostgreSQL and one S3 bucket, started at once on an
/// empty database, are one platform: one BBS active (the lock), an app
/// pushed through the active node's API is served through the other
/// node's router; the active node is killed with SIGKILL (its containers
/// and network go with it, as with a machine that dies), the other node's
/// BBS takes over, the app runs again on the surviving cell and is served
/// through its router, and nothing is lost. The second node's wall clock
/// runs 30 s ahead (libfaketime) the whole time: the lease is compared on
/// the database's clock only, so it neither steals the live lease nor
/// waits longer to take over a dead one. Prints the failover times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_two_nodes_survives_losing_the_active_bbs() {
    if !runnable() {
        return;
    }
    let Some(shared) = SharedState::start("kiln-e2e-cluster").await else {
        return;
    };
    let Some(skewed) = faketime_env("+30s") else {
        return;
    };
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let key_file = scratch.path().join("db-encryption-key");
    std::fs::write(&key_file, "cluster-test-db-encryption-key-0123456789").unwrap();
    let (api1, router1, bbs1) = (free_port(), free_port(), free_port());
    let (api2, router2, bbs2) = (free_port(), free_port(), free_port());
    // Cells fetch droplets from the API URL baked into each DesiredLrp: a
    // cluster's --external-url is a load balancer in front of every node's
    // API, as Cloud Controller's is.
    let (balancer, _balancer) = failover_balancer(vec![api1, api2]).await;
    let mut common = shared.server_flags();
    common.extend([
        "--external-url".to_string(),
        format!("http://127.0.0.1:{balancer}"),
        "--db-encryption-key-file".to_string(),
        key_file.display().to_string(),
    ]);
    let net1 = free_subnet();
    let net2 = another_subnet(&[&net1]);
    let mut flags1 = common.to_vec();
    flags1.extend(["--bbs-listen".into(), format!("127.0.0.1:{bbs1}")]);
    let mut flags2 = common.to_vec();
    flags2.extend([
        "--bbs-listen".into(),
        format!("127.0.0.2:{bbs2}"),
        "--cell-address".into(),
        "127.0.0.2".into(),
    ]);
    let mut env2: Vec<(&str, &str)> = MOTO_CREDENTIALS.to_vec();
    env2.extend(skewed.iter().map(|(k, v)| (*k, v.as_str())));
    // Both at once on the empty database: migrations, the lock and the
    // shared secrets are each settled once.
    let (data1, data2) = (scratch.path().join("data1"), scratch.path().join("data2"));
    let (n1, n2) = tokio::join!(
        Server::start_with_env(&data1, api1, router1, &net1, &flags1, &MOTO_CREDENTIALS,),
        Server::start_with_env(&data2, api2, router2, &net2, &flags2, &env2,),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(bbs_active(&n1) || bbs_active(&n2)) {
        assert!(
            Instant::now() < deadline,
            "no node's bbs became active\n--- node 1 ---\n{}\n--- node 2 ---\n{}",
            n1.log(),
            n2.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // "Node 1" is the active one from here on, whichever started first.
    let (bbs_url1, bbs_url2) = (
        format!("http://127.0.0.1:{bbs1}"),
        format!("http://127.0.0.2:{bbs2}"),
    );
    let (mut active, active_router, active_bbs, standby, standby_router, standby_bbs, standby_host) =
        if bbs_active(&n1) {
            (n1, router1, bbs_url1, n2, router2, bbs_url2, "127.0.0.2")
        } else {
            (n2, router2, bbs_url2, n1, router1, bbs_url1, "127.0.0.1")
        };
    let active_host = if standby_host == "127.0.0.1" {
        "127.0.0.2"
    } else {
        "127.0.0.1"
    };
    // A cell process of its own on both nodes' BBS URLs, the active first.
    let credentials = active.data_dir.join("bbs/credentials");
    let token = kiln_bbs_client::Credentials::read(&credentials)
        .unwrap()
        .token;
    let both_bbs = format!("{active_bbs},{standby_bbs}");
    let cell3_host = "127.0.0.3";
    let mut cell3 = CellNode::new(
        scratch.path(),
        &format!("cell-3-{bbs1}"),
        cell3_host,
        another_subnet(&[&net1, &net2]),
        &credentials,
    );
    cell3.bbs_url = Some(both_bbs.clone());
    cell3.spawn();
    let bbs = kiln_bbs_client::HttpBbsClient::new(&both_bbs, &token).unwrap();
    cell3.wait_present(&bbs).await;
    let logs = || {
        format!(
            "--- active ---\n{}\n--- standby ---\n{}\n--- cell 3 ---\n{}",
            active.log(),
            standby.log(),
            cell3.log()
        )
    };
    assert!(!bbs_active(&standby), "two active bbs\n{}", logs());
    for file in ["api/signing-key", "bbs/key"] {
        assert_eq!(
            std::fs::read_to_string(active.data_dir.join(file)).unwrap(),
            std::fs::read_to_string(standby.data_dir.join(file)).unwrap(),
            "{file} differs between the nodes"
        );
    }

    // Pushed through the active node, served through both routers.
    let home = scratch.path().join("home1");
    push_envprobe(&home, &active, "clusterprobe", active_router).await;
    for args in [
        &["create-user", "cluster-dev", "cluster-dev-secret"][..],
        &[
            "set-space-role",
            "cluster-dev",
            "kiln",
            "dev",
            "SpaceDeveloper",
        ][..],
    ] {
        let out = cli(&home, args).await;
        assert!(out.success, "{args:?}\n{out}");
    }
    let host = "clusterprobe.localhost";
    let through_standby = wait_for_200(standby_router, host, Duration::from_secs(30)).await;
    assert_eq!(through_standby.status(), 200, "{}", logs());
    let home2 = scratch.path().join("home2");
    login(&home2, &standby).await;
    let apps = curl_json(&home2, "/v3/apps?names=clusterprobe").await;
    let app_guid = apps["resources"][0]["guid"].as_str().unwrap().to_string();
    let processes = curl_json(&home2, &format!("/v3/apps/{app_guid}/processes")).await;
    let process_guid = processes["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_droplet_went_straight_to_the_store(&format!("{}{}", active.log(), standby.log()));

    // Three instances spread over the three cells, one on cell 3.
    let out = cli(&home, &["scale", "clusterprobe", "-i", "3"]).await;
    assert!(out.success, "scale to 3\n{out}\n{}", logs());
    wait_running(
        &home,
        &process_guid,
        3,
        Duration::from_secs(180),
        |hosts| hosts.iter().any(|h| h == cell3_host),
        "an instance on cell 3",
        &logs,
    )
    .await;
    let on_cell3 = |lrps: &[kiln_model::bbs::ActualLrp]| {
        lrps.iter()
            .find(|l| {
                l.key.process_guid.starts_with(&process_guid)
                    && l.state == kiln_model::ActualLrpState::Running
            })
            .map(|l| {
                (
                    l.key.index,
                    l.instance_key.as_ref().unwrap().instance_guid.clone(),
                )
            })
    };
    // Whether `instance` is still RUNNING (cell 3 may get more instances
    // once node 1's are replaced).
    let still_runs = |lrps: &[kiln_model::bbs::ActualLrp], instance: &str| {
        lrps.iter().any(|l| {
            l.state == kiln_model::ActualLrpState::Running
                && l.instance_key
                    .as_ref()
                    .is_some_and(|k| k.instance_guid == instance)
        })
    };
    let cell3_filter = || kiln_bbs_client::ActualLrpFilter {
        cell_id: Some(cell3.cell_id.clone()),
        ..Default::default()
    };
    use kiln_bbs_client::BbsClient;
    let (cell3_index, cell3_instance) = on_cell3(&bbs.actual_lrps(cell3_filter()).await.unwrap())
        .unwrap_or_else(|| panic!("no instance on cell 3\n{}", logs()));
    assert!(!bbs_active(&standby), "the standby took over\n{}", logs());

    // The active node dies with its containers.
    let data_dir = active.data_dir.clone();
    let cell_id = active.cell_id.clone();
    active.kill_hard().await;
    clean_up_cell(&data_dir, &cell_id);
    let killed = Instant::now();
    let failover = loop {
        if bbs_active(&standby) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the standby did not take over\n{}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "BBS failover: the standby's BBS active {failover:?} after SIGKILL of the active node"
    );
    let standby_log = || format!("{}\n--- cell 3 ---\n{}", standby.log(), cell3.log());

    // Cell 3 moves to node 2's BBS by itself (its log says so): node 2's
    // BBS lists it with the same instance RUNNING, which node 2's router
    // serves.
    let standby_only = kiln_bbs_client::HttpBbsClient::new(&standby_bbs, &token).unwrap();
    let cell3_back = loop {
        let present = standby_only
            .cells()
            .await
            .unwrap_or_default()
            .iter()
            .any(|c| c.cell_id == cell3.cell_id);
        let same = standby_only
            .actual_lrps(cell3_filter())
            .await
            .is_ok_and(|l| still_runs(&l, &cell3_instance));
        if present && same {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "cell 3 does not report to node 2's BBS\n{}",
            standby_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        cell3
            .log()
            .contains("bbs node unreachable; moving to the next"),
        "{}",
        cell3.log()
    );
    let cell3_served = loop {
        let probe = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{standby_router}/probe"))
            .header("Host", host)
            .header("X-Cf-App-Instance", format!("{app_guid}:{cell3_index}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(r) = probe
            && r.status() == 200
        {
            let probe: serde_json::Value = r.json().await.unwrap();
            assert_eq!(probe["env"]["CF_INSTANCE_GUID"], cell3_instance.as_str());
            assert_eq!(probe["env"]["CF_INSTANCE_IP"], cell3_host, "{probe}");
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "cell 3's instance is not served through node 2's router\n{}",
            standby_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "Cell on two BBS URLs: reporting to node 2's BBS {cell3_back:?} and its instance (unrestarted) served through node 2's router {cell3_served:?} after SIGKILL of the active node"
    );

    wait_running(
        &home2,
        &process_guid,
        3,
        Duration::from_secs(120),
        |hosts| hosts.iter().all(|h| h != active_host),
        "every instance on a surviving cell",
        &standby_log,
    )
    .await;
    let served = wait_for_200(standby_router, host, Duration::from_secs(60)).await;
    assert_eq!(served.status(), 200, "{}", standby.log());
    println!(
        "App served again through the surviving node's router {:?} after SIGKILL of the active node",
        killed.elapsed()
    );

    // Nothing lost, as node 2's API lists it.
    let listed = |v: &serde_json::Value| v["resources"].as_array().map_or(0, Vec::len);
    assert_eq!(
        listed(&curl_json(&home2, "/v3/apps?names=clusterprobe").await),
        1
    );
    let app_q = format!("app_guids={app_guid}");
    assert!(listed(&curl_json(&home2, &format!("/v3/packages?{app_q}")).await) >= 1);
    assert!(listed(&curl_json(&home2, &format!("/v3/droplets?{app_q}")).await) >= 1);
    assert_eq!(
        listed(&curl_json(&home2, "/v3/routes?hosts=clusterprobe").await),
        1
    );
    let roles = curl_json(&home2, "/v3/roles?types=space_developer").await;
    assert!(listed(&roles) >= 1, "{roles}");
    assert!(listed(&curl_json(&home2, "/v3/buildpacks?names=e2e_legacy").await) >= 1);

    // Cell 3 kept reporting to node 2's BBS: well past the cell TTL (15 s)
    // after the kill it is still present there and its instance is the
    // same one, RUNNING (a silent cell's instances would be replaced).
    let past_ttl = Duration::from_secs(35);
    if let Some(rest) = past_ttl.checked_sub(killed.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    {
        let cells = standby_only.cells().await.unwrap();
        assert!(
            cells.iter().any(|c| c.cell_id == cell3.cell_id),
            "cell 3 gone from node 2's BBS {:?} after the kill\n{}",
            killed.elapsed(),
            standby_log()
        );
        let lrps = standby_only.actual_lrps(cell3_filter()).await.unwrap();
        assert!(still_runs(&lrps, &cell3_instance), "{lrps:?}");
    }

    // And the surviving BBS takes writes: a scale through node 2.
    let out = cli(&home2, &["scale", "clusterprobe", "-i", "2"]).await;
    assert!(cell3.child.is_some(), "cell 3 runs on");
    assert!(
        out.success,
        "scale through node 2\n{out}\n{}",
        standby.log()
    );
    wait_running(
        &home2,
        &process_guid,
        2,
        Duration::from_secs(120),
        |_| true,
        "two instances after the scale",
        &standby_log,
    )
    .await;
}

/// The environment that runs a process with its wall clock `offset`
/// (libfaketime; the monotonic clock stays true, as on a machine whose
/// clock is merely set wrong). `None`, loudly, without libfaketime, unless
/// the run requires everything (`KILN_REQUIRE_RUNC=1`).
fn faketime_env(offset: &str) -> Option<Vec<(&'static str, String)>> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file());
    let Some(lib) = lib else {
        let why =
            "libfaketime is not installed (apt-get install faketime; scripts/install-deps.sh)";
        if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
            panic!("the cluster test must run here (KILN_REQUIRE_RUNC=1) but cannot: {why}");
        }
        eprintln!("\n\n*** SKIPPING the cluster test: {why} ***\n\n");
        return None;
    };
    Some(vec![
        ("LD_PRELOAD", lib.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_DONT_RESET", "1".to_string()),
    ])
}

/// A TCP load balancer on a loopback port of its own: each connection goes
/// to the first of `ports` (on 127.0.0.1) that accepts it.
async fn failover_balancer(ports: Vec<u16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let ports = ports.clone();
            tokio::spawn(async move {
                for port in ports {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}
