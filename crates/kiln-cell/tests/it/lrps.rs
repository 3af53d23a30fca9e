//! ActualLrp instances end to end: placed by the BBS, started by the cell,
//! health-checked from the host, reported RUNNING or crashed, stopped when
//! no longer desired.

use crate::support::*;
use kiln_bbs::BbsClient;
use kiln_model::bbs::*;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn python_available(test: &str) -> bool {
    if std::path::Path::new(PYTHON).is_file() {
        return true;
    }
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test}: KILN_REQUIRE_RUNC=1 but {PYTHON} is missing");
    }
    eprintln!("\n!!!!!!!! SKIPPING {test}: {PYTHON} is missing !!!!!!!!\n");
    false
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_downloads_its_droplet_passes_its_health_check_and_serves() {
    let test = "an_instance_downloads_its_droplet_passes_its_health_check_and_serves";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let blobs = BlobServer::start().await;
    let droplet = tgz_of(&[
        ("./app/index.html", 0o644, "hello from kiln\n"),
        ("./app/health", 0o644, "ok\n"),
    ]);
    let checksum = sha256(&droplet);
    blobs.put("droplet", droplet);
    let cell = TestCell::start(63200..63210).await;

    let server =
        "env > /home/vcap/app/env.txt; cd /home/vcap/app && exec python3 -m http.server $PORT";
    let setup = vec![DownloadAction {
        artifact: "droplet".into(),
        from: blobs.blob_url("droplet"),
        to: "/home/vcap".into(),
        kind: ArtifactKind::Tgz,
        cache_key: Some("droplet-1".into()),
        checksum: Some(Checksum {
            algorithm: "sha256".into(),
            value: checksum,
        }),
        optional: false,
    }];
    let mut web = desired_lrp(&cell.stack, "web-1", sh(server));
    web.setup = setup.clone();
    web.env = vec![
        EnvVar::new("PORT", "8080"),
        EnvVar::new("VCAP_SERVICES", "{}"),
    ];
    let mut http = desired_lrp(&cell.stack, "http-1", sh(server));
    http.setup = setup;
    http.health_check = HealthCheck::Http {
        endpoint: "/health".into(),
    };

    let started = Instant::now();
    cell.bbs.desire_lrp(web).await.unwrap();
    cell.bbs.desire_lrp(http).await.unwrap();
    let actual = cell.running("web-1").await;
    eprintln!(
        "MEASURED desire -> RUNNING (droplet download, python3 http.server, port check): {:?}",
        started.elapsed()
    );
    let net = actual.net_info.clone().expect("net info when RUNNING");
    assert_eq!(net.address, "127.0.0.1");
    let port = net.ports[0].host_port;
    assert_eq!(net.ports[0].container_port, 8080);
    assert!((63200..63210).contains(&port), "{port}");
    let subnet = cell.config.network.as_ref().unwrap().subnet;
    let internal_ip: std::net::Ipv4Addr = net.instance_address.parse().unwrap();
    assert!(subnet.contains(internal_ip), "{internal_ip} in {subnet}");
    let instance_guid = actual.instance_key.clone().unwrap().instance_guid;

    let (status, body) = get(&format!("http://127.0.0.1:{port}/index.html")).await;
    assert_eq!((status, body.as_str()), (200, "hello from kiln\n"));
    let (_, env) = get(&format!("http://127.0.0.1:{port}/env.txt")).await;
    for want in [
        "PORT=8080".into(),
        "VCAP_APP_PORT=8080".into(),
        format!("CF_INSTANCE_PORT={port}"),
        format!("CF_INSTANCE_ADDR=127.0.0.1:{port}"),
        format!("CF_INSTANCE_INTERNAL_IP={internal_ip}"),
        format!("CF_INSTANCE_GUID={instance_guid}"),
        format!("INSTANCE_GUID={instance_guid}"),
        "CF_INSTANCE_INDEX=0".into(),
        "CF_INSTANCE_IP=127.0.0.1".into(),
        format!(r#"CF_INSTANCE_PORTS=[{{"external":{port},"internal":8080}}]"#),
        "USER=vcap".into(),
        "HOME=/home/vcap".into(),
        "VCAP_SERVICES={}".into(),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
    }

    let http_actual = cell.running("http-1").await;
    let http_port = http_actual.net_info.unwrap().ports[0].host_port;
    assert_ne!(http_port, port, "every instance gets its own host port");

    let cell_id = &cell.config.cell_id;
    let lines = cell.logs.lines("web-1-app");
    for want in [
        format!("CELL|OUT|Cell {cell_id} creating container for instance {instance_guid}"),
        format!(
            "CELL|OUT|Cell {cell_id} successfully created container for instance {instance_guid}"
        ),
        "CELL|OUT|Downloading droplet...".into(),
        "CELL|OUT|Starting health monitoring of container".into(),
        "CELL|OUT|Container became healthy".into(),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {lines:#?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("APP/PROC/WEB|ERR|") && l.contains("GET /index.html")),
        "python's access log reaches the app's log stream: {lines:#?}"
    );
    assert_eq!(
        blobs.gets("droplet"),
        1,
        "one download serves both instances"
    );

    // No longer desired: the cell stops the instance, promptly (TERM
    // reaches python through the container's init).
    let started = Instant::now();
    cell.bbs.remove_desired_lrp("web-1").await.unwrap();
    let destroyed = format!(
        "CELL|OUT|Cell {cell_id} successfully destroyed container for instance {instance_guid}"
    );
    eventually("web-1 container gone", Duration::from_secs(20), || async {
        let ids = cell.containers().await;
        (!ids.contains(&instance_guid)
            && !cell.container_dir(&instance_guid).exists()
            && cell.logs.has("web-1-app", &destroyed))
        .then_some(())
    })
    .await;
    let stop_time = started.elapsed();
    eprintln!("MEASURED remove desired lrp -> container destroyed: {stop_time:?}");
    assert!(stop_time < Duration::from_secs(8), "{stop_time:?}");
    let lines = cell.logs.lines("web-1-app");
    for want in [
        format!("CELL|OUT|Cell {cell_id} stopping instance {instance_guid}"),
        format!(
            "CELL|OUT|Cell {cell_id} successfully destroyed container for instance {instance_guid}"
        ),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {lines:#?}");
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing listens on the stopped instance's port"
    );

    // Shutdown stops the rest.
    let mut cell = cell;
    assert!(!cell.containers().await.is_empty());
    cell.stop_cell().await;
    assert!(cell.containers().await.is_empty());
    let containers_dir = cell.config.data_dir.join("containers");
    assert_eq!(std::fs::read_dir(containers_dir).unwrap().count(), 0);
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_that_exit_or_never_become_healthy_crash_with_diegos_reasons() {
    let test = "instances_that_exit_or_never_become_healthy_crash_with_diegos_reasons";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let cell = TestCell::start(63210..63220).await;
    let stack = cell.stack.clone();

    cell.bbs
        .desire_lrp(desired_lrp(&stack, "exits", sh("echo starting; exit 3")))
        .await
        .unwrap();
    let mut silent = desired_lrp(&stack, "silent", sh("exec sleep 600"));
    silent.start_timeout_ms = 1_000;
    cell.bbs.desire_lrp(silent).await.unwrap();
    let mut wrong_path = desired_lrp(
        &stack,
        "wrong-path",
        sh("cd /tmp && exec python3 -m http.server $PORT"),
    );
    wrong_path.health_check = HealthCheck::Http {
        endpoint: "/missing".into(),
    };
    wrong_path.start_timeout_ms = 3_000;
    cell.bbs.desire_lrp(wrong_path).await.unwrap();
    let mut process_check = desired_lrp(&stack, "process-check", sh("exec sleep 600"));
    process_check.health_check = HealthCheck::Process;
    cell.bbs.desire_lrp(process_check).await.unwrap();

    let crashed = |guid: &'static str| {
        let cell = &cell;
        async move {
            eventually(
                &format!("{guid} to crash"),
                Duration::from_secs(30),
                || async { cell.actual_lrp(guid).await.filter(|a| a.crash_count >= 1) },
            )
            .await
        }
    };
    let a = crashed("exits").await;
    assert_eq!(a.crash_reason, "APP/PROC/WEB: Exited with status 3");
    assert!(cell.logs.has("exits-app", "APP/PROC/WEB|OUT|starting"));

    let a = crashed("silent").await;
    assert!(
        a.crash_reason
            .starts_with("Instance never healthy after 1s: failed to connect to port 8080"),
        "{}",
        a.crash_reason
    );

    let a = crashed("wrong-path").await;
    assert_eq!(
        a.crash_reason,
        "Instance never healthy after 3s: http health check of /missing got status 404"
    );

    // No check: RUNNING as soon as the process runs.
    let a = cell.running("process-check").await;
    assert_eq!(a.crash_count, 0);

    for guid in ["exits", "silent", "wrong-path", "process-check"] {
        cell.bbs.remove_desired_lrp(guid).await.unwrap();
    }
    eventually("all containers gone", Duration::from_secs(8), || async {
        cell.containers().await.is_empty().then_some(())
    })
    .await;
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_share_the_container_and_their_exit_crashes_the_instance() {
    let test = "sidecars_share_the_container_and_their_exit_crashes_the_instance";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let cell = TestCell::start(63220..63230).await;
    let stack = cell.stack.clone();
    // The sidecar writes what it sees into the directory the app serves:
    // same filesystem, same environment.
    let mut served = desired_lrp(
        &stack,
        "with-sidecar",
        sh("mkdir -p /tmp/www && cd /tmp/www && exec python3 -m http.server $PORT"),
    );
    served.env = vec![
        EnvVar::new("E2E_SHARED", "from-the-lrp"),
        EnvVar::new("LANG", "en_US.UTF-8"),
    ];
    served.sidecars = vec![SidecarAction {
        name: "stamper".into(),
        path: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            concat!(
                "mkdir -p /tmp/www; ",
                // Python sets the stack's locale for LANG, with no warning.
                "l=$(python3 -c 'import locale; print(locale.setlocale(locale.LC_ALL, \"\"))' 2>&1); ",
                "echo \"$E2E_SHARED $CF_INSTANCE_INDEX $(id -un) $l\" > /tmp/www/stamp.txt; ",
                "echo stamped; echo 'stamp warning' >&2; exec sleep 600"
            )
            .into(),
        ],
        log_source: "APP/PROC/WEB/SIDECAR/STAMPER".into(),
    }];
    cell.bbs.desire_lrp(served).await.unwrap();
    let mut quitter = desired_lrp(&stack, "sidecar-quits", sh("exec sleep 600"));
    quitter.health_check = HealthCheck::Process;
    quitter.sidecars = vec![SidecarAction {
        name: "quitter".into(),
        path: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 1; exit 4".into()],
        log_source: "APP/PROC/WEB/SIDECAR/QUITTER".into(),
    }];
    cell.bbs.desire_lrp(quitter).await.unwrap();

    let actual = cell.running("with-sidecar").await;
    let port = actual.net_info.unwrap().ports[0].host_port;
    let stamp = eventually("the sidecar's stamp", Duration::from_secs(10), || async {
        let (status, body) = get(&format!("http://127.0.0.1:{port}/stamp.txt")).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(stamp, "from-the-lrp 0 vcap en_US.UTF-8\n");
    // Its output is logged under its own source type, not the app's.
    eventually(
        "the sidecar's log lines",
        Duration::from_secs(10),
        || async {
            let logs = &cell.logs;
            (logs.has(
                "with-sidecar-app",
                "APP/PROC/WEB/SIDECAR/STAMPER|OUT|stamped",
            ) && logs.has(
                "with-sidecar-app",
                "APP/PROC/WEB/SIDECAR/STAMPER|ERR|stamp warning",
            ))
            .then_some(())
        },
    )
    .await;
    assert!(
        !cell
            .logs
            .has("with-sidecar-app", "APP/PROC/WEB|OUT|stamped")
    );

    let a = eventually(
        "sidecar-quits to crash",
        Duration::from_secs(30),
        || async {
            cell.actual_lrp("sidecar-quits")
                .await
                .filter(|a| a.crash_count >= 1)
        },
    )
    .await;
    assert_eq!(a.crash_reason, "APP/PROC/WEB: Exited with status 1");
    assert!(
        cell.logs.has(
            "sidecar-quits-app",
            "APP/PROC/WEB|ERR|Sidecar quitter exited with status 4"
        ),
        "the sidecar's exit is in the app's log"
    );
    // The instance with the running sidecar was never disturbed.
    let a = cell.actual_lrp("with-sidecar").await.unwrap();
    assert_eq!(a.crash_count, 0);

    for guid in ["with-sidecar", "sidecar-quits"] {
        cell.bbs.remove_desired_lrp(guid).await.unwrap();
    }
    eventually("all containers gone", Duration::from_secs(15), || async {
        cell.containers().await.is_empty().then_some(())
    })
    .await;
    cell.shutdown().await;
}
