//! The S3 blobstore, PostgreSQL (and it restarting), and migrating a
//! single-machine platform to both.

use crate::support::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Packages, droplets and buildpacks in an S3 bucket (a real moto server on
/// 127.0.0.1): a push stages and runs with nothing in the blob directory;
/// with the store down, a push fails with CC's error and the running app
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_with_an_s3_blobstore() {
    if !runnable() {
        return;
    }
    let Some(mut moto) = kiln_store::testing::MotoS3::start().await else {
        return;
    };
    let _one_at_a_time = SERIAL.lock().await;
    moto.create_bucket("kiln-e2e").await;
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let home = scratch.path().join("home");
    let (api_port, router_port) = (free_port(), free_port());
    let server = Server::start_with_env(
        &data_dir,
        api_port,
        router_port,
        &free_subnet(),
        &["--blobstore-url".to_string(), moto.url("kiln-e2e")],
        &MOTO_CREDENTIALS,
    )
    .await;
    push_envprobe(&home, &server, "s3probe", router_port).await;
    let probe_dir = fixture("apps/envprobe");
    let local_blobs = data_dir.join("blobs");
    assert!(
        !local_blobs.exists() || std::fs::read_dir(&local_blobs).unwrap().count() == 0,
        "blobs went to the directory, not the bucket"
    );
    assert_droplet_went_straight_to_the_store(&server.log());

    // The store goes away: a new push fails with CC's error, not a hang or
    // a panic; what runs keeps running.
    moto.kill();
    let started = Instant::now();
    let out = cli(
        &home,
        &["push", "s3probe2", "-p", probe_dir.to_str().unwrap()],
    )
    .await;
    assert!(!out.success, "a push without a blobstore succeeded\n{out}");
    assert!(
        out.stderr.contains("blobstore"),
        "the failure does not say why\n{out}"
    );
    eprintln!(
        "push with the blobstore down failed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        route_get(router_port, "s3probe.localhost").await.status(),
        200
    );
    drop(server);
}

/// Issue 15: the same binary on PostgreSQL and S3 (moto). A push through
/// the CLI stores its rows in PostgreSQL (no SQLite file in the data dir)
/// and its blobs in the bucket, and a docker image pushes and runs on them
/// too; the database going away turns requests
/// into CC's 503 `CF-ServiceUnavailable`, and once it is back the same
/// request succeeds and the app is still there and still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_on_postgres_and_s3_and_the_database_restarting() {
    if !runnable() {
        return;
    }
    let Some(shared) = SharedState::start("kiln-e2e-pg").await else {
        return;
    };
    let pg = &shared.pg;
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let home = scratch.path().join("home");
    let (api_port, router_port) = (free_port(), free_port());
    let server = Server::start_with_env(
        &data_dir,
        api_port,
        router_port,
        &free_subnet(),
        &shared.server_flags(),
        &MOTO_CREDENTIALS,
    )
    .await;
    push_envprobe(&home, &server, "pgprobe", router_port).await;
    let _registry = push_probe_image(
        &home,
        router_port,
        "pgdimg",
        "push_on_postgres_and_s3_and_the_database_restarting",
    )
    .await;
    for file in ["bbs.sqlite", "api/ccdb.sqlite"] {
        assert!(
            !data_dir.join(file).exists(),
            "{file} was written: the database is PostgreSQL"
        );
    }

    // The database goes away: a request gets CC's 503, not a 500 or a hang.
    tokio::task::block_in_place(|| pg.stop());
    let down = cli(&home, &["curl", "-i", "/v3/apps?names=pgprobe"]).await;
    assert!(
        down.stdout.contains("503") && down.stdout.contains("CF-ServiceUnavailable"),
        "with the database down\n{down}\n--- server log ---\n{}",
        server.log()
    );
    // The app keeps being served: the router's table is in memory.
    assert_eq!(
        route_get(router_port, "pgprobe.localhost").await.status(),
        200
    );

    // Back: the same request succeeds on the reconnected pool.
    tokio::task::block_in_place(|| pg.pg_ctl_start());
    let mut back = None;
    for _ in 0..40 {
        let out = cli(&home, &["curl", "-i", "/v3/apps?names=pgprobe"]).await;
        if out.stdout.contains("HTTP/1.1 200") {
            back = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back = back.unwrap_or_else(|| panic!("no 200 after the restart\n{}", server.log()));
    assert!(back.stdout.contains("\"pgprobe\""), "{back}");
    assert_eq!(
        route_get(router_port, "pgprobe.localhost").await.status(),
        200
    );
    drop(server);
}

/// Pushes [`probe_image`] from a registry of the test's own as `name` and
/// checks it is served; returns the registry (the app's image lives
/// there). Skipped, loudly, without a registry or busybox.
async fn push_probe_image(
    home: &Path,
    router_port: u16,
    name: &str,
    test: &str,
) -> Option<kiln_image::testing::TestRegistry> {
    if !kiln_image::testing::registry_available(test)
        || !kiln_image::testing::busybox_available(test)
    {
        return None;
    }
    let registry = kiln_image::testing::TestRegistry::start();
    registry.push("probe", "v1", &probe_image()).await;
    let image = registry.reference("probe", "v1");
    let out = cli(home, &["push", name, "-o", &image, "-m", "128M"]).await;
    assert!(out.success, "docker push of {name} failed\n{out}");
    assert_eq!(
        route_text(router_port, &format!("{name}.localhost"), "/index.html").await,
        "hello from an image\n"
    );
    Some(registry)
}

/// How many apps, packages, droplets, routes and roles the API lists.
async fn platform_counts(home: &Path) -> Vec<(&'static str, u64)> {
    let mut counts = Vec::new();
    for path in [
        "/v3/apps",
        "/v3/packages",
        "/v3/droplets",
        "/v3/routes",
        "/v3/roles",
    ] {
        let body = curl_json(home, path).await;
        let total = body["pagination"]["total_results"]
            .as_u64()
            .unwrap_or_else(|| panic!("{path}: no total_results\n{body}"));
        counts.push((path, total));
    }
    counts
}

/// `kiln migrate` with `args`, its output.
async fn migrate(args: &[&str]) -> CliOutput {
    let out = Command::new(kiln_binary())
        .arg("migrate")
        .args(args)
        .envs(MOTO_CREDENTIALS)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running kiln migrate");
    CliOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Issue 15: a single-machine platform (SQLite, blob directory) with a
/// pushed app is stopped, moved with `kiln migrate` to PostgreSQL and S3
/// (moto), and started on those: the app answers 200 through the router
/// again and the API lists as many apps, packages, droplets, routes and
/// roles as before. Bad input changes nothing: an unknown scheme, an
/// unreachable database, and a target that already holds a platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_machine_platform_migrates_to_postgres_and_s3() {
    if !runnable() {
        return;
    }
    let Some(shared) = SharedState::start("kiln-e2e-migrated").await else {
        return;
    };
    let pg = &shared.pg;
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let home = scratch.path().join("home");
    let (api_port, router_port) = (free_port(), free_port());
    let subnet = free_subnet();
    let mut server = Server::start(&data_dir, api_port, router_port, &subnet).await;
    push_envprobe(&home, &server, "movedprobe", router_port).await;
    for args in [
        &["create-user", "mover", "mover-pw"][..],
        &["set-space-role", "mover", "kiln", "dev", "SpaceDeveloper"],
    ] {
        let out = cli(&home, args).await;
        assert!(out.success, "{args:?}\n{out}");
    }
    let before = platform_counts(&home).await;
    server.stop().await;

    let data = data_dir.to_str().unwrap();
    let blobs_to = shared.blobstore_url();
    let unreachable = format!(
        "postgres://{}:{}@127.0.0.1:{}/kiln",
        kiln_store::testing::PG_USER,
        kiln_store::testing::PG_PASSWORD,
        free_port()
    );
    for (args, says) in [
        (
            vec!["--data-dir", data, "--to", "mysql://u:p@127.0.0.1/db"],
            "PostgreSQL",
        ),
        (vec!["--data-dir", data, "--blobs-to", "gs://bucket"], "S3"),
        (
            vec!["--data-dir", data, "--to", &unreachable],
            "opening the target",
        ),
    ] {
        let out = migrate(&args).await;
        assert!(!out.success && out.stderr.contains(says), "{args:?}\n{out}");
    }

    let out = migrate(&[
        "--data-dir",
        data,
        "--to",
        &pg.url(),
        "--blobs-to",
        &blobs_to,
    ])
    .await;
    assert!(out.success, "migrate failed\n{out}");
    assert!(out.stdout.contains("the same count in each table"), "{out}");
    eprintln!("{}", out.stdout);

    // Again: the target now holds a platform, and is left alone.
    let again = migrate(&["--data-dir", data, "--to", &pg.url()]).await;
    assert!(
        !again.success && again.stderr.contains("not empty"),
        "a second migrate was not refused\n{again}"
    );

    // The blob directory goes, so the app can only come from the bucket.
    std::fs::rename(data_dir.join("blobs"), scratch.path().join("old-blobs")).unwrap();
    let server = Server::start_with_env(
        &data_dir,
        api_port,
        router_port,
        &subnet,
        &shared.server_flags(),
        &MOTO_CREDENTIALS,
    )
    .await;
    let response = wait_for_200(router_port, "movedprobe.localhost", Duration::from_secs(90)).await;
    assert_eq!(response.status(), 200, "{}", server.log());
    assert_eq!(platform_counts(&home).await, before);
    assert!(
        before.iter().all(|(_, n)| *n > 0),
        "the platform was empty: {before:?}"
    );
    drop(server);
}
