//! Buildpacks a user brings: by git URL and zip URL, and sidecars a buildpack declares.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid")
        .output()
        .expect("git must be installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A buildpack repository whose compile stamps `mark` into the droplet
/// (with its working directory and whether staging's VCAP_APPLICATION has
/// `application_version`): `main` stamps "git-main", branch `feature`
/// "git-feature".
fn custom_buildpack_repo(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let legacy = fixture("buildpacks/legacy/bin");
    std::fs::copy(legacy.join("release"), dir.join("bin/release")).unwrap();
    std::fs::write(dir.join("bin/detect"), "#!/bin/sh\necho custom\n").unwrap();
    let write = |mark: &str| {
        std::fs::write(
            dir.join("bin/compile"),
            format!(
                "#!/bin/sh\nset -eu\necho \"-----> custom buildpack {mark}\"\n\
                 case \"$VCAP_APPLICATION\" in *'\"application_version\":'*) v=yes;; *) v=no;; esac\n\
                 echo \"{mark} cwd=$(pwd) application_version=$v\" > \"$1/build-stamp.txt\"\n\
                 touch left-in-cwd\n"
            ),
        )
        .unwrap();
        for f in ["detect", "compile", "release"] {
            let p = dir.join("bin").join(f);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    };
    write("git-main");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "main"]);
    git(dir, &["checkout", "-q", "-b", "feature"]);
    write("git-feature");
    git(dir, &["commit", "-q", "-am", "feature"]);
    git(dir, &["checkout", "-q", "main"]);
}

/// Serves `body` to every GET on 127.0.0.1 until the handle is aborted.
async fn serve_file(body: Vec<u8>) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    (port, handle)
}

async fn build_stamp(router_port: u16, host: &str) -> String {
    let response = wait_for_200(router_port, host, Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200, "{host} does not answer");
    let probe: serde_json::Value = response.json().await.unwrap();
    probe["build_stamp"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_buildpacks_by_git_and_zip_url() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (server, home, router_port) = logged_in_server(scratch.path()).await;
    let repo = scratch.path().join("buildpack-repo");
    custom_buildpack_repo(&repo);
    let probe_dir = fixture("apps/envprobe");
    let probe = probe_dir.to_str().unwrap();

    // A git URL with #branch, cloned from a repository on this machine.
    let git_url = format!("file://{}#feature", repo.display());
    let out = cli(
        &home,
        &["push", "gitbp", "-p", probe, "-b", &git_url, "-m", "128M"],
    )
    .await;
    assert!(
        out.success,
        "push -b {git_url} failed\n{out}\n{}",
        server.log()
    );
    assert!(out.stdout.contains("custom buildpack git-feature"), "{out}");
    assert_eq!(
        build_stamp(router_port, "gitbp.localhost").await,
        "git-feature cwd=/home/vcap application_version=yes"
    );

    // A zip by URL, served on loopback, downloaded by the staging task.
    let zip = scratch.path().join("bp.zip");
    git(
        &repo,
        &[
            "archive",
            "--format=zip",
            "-o",
            zip.to_str().unwrap(),
            "main",
        ],
    );
    let (port, served) = serve_file(std::fs::read(&zip).unwrap()).await;
    let zip_url = format!("http://127.0.0.1:{port}/buildpacks/bp.zip");
    let out = cli(
        &home,
        &["push", "zipbp", "-p", probe, "-b", &zip_url, "-m", "128M"],
    )
    .await;
    assert!(
        out.success,
        "push -b {zip_url} failed\n{out}\n{}",
        server.log()
    );
    assert_eq!(
        build_stamp(router_port, "zipbp.localhost").await,
        "git-main cwd=/home/vcap application_version=yes"
    );
    served.abort();

    // Unreachable: the push fails with the reason.
    let gone = format!("http://127.0.0.1:{}/bp.zip", free_port());
    let out = cli(&home, &["push", "gonebp", "-p", probe, "-b", &gone]).await;
    assert!(!out.success, "an unreachable buildpack must fail\n{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("bp.zip"),
        "the error must name the buildpack\n{out}"
    );
    let missing = format!("file://{}/nope#main", scratch.path().display());
    let out = cli(&home, &["push", "nobp", "-p", probe, "-b", &missing]).await;
    assert!(!out.success, "a missing repository must fail\n{out}");
    assert!(
        out.stderr.contains("Failed to clone git repository"),
        "the error must say why\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildpack_sidecars_run_and_log_under_their_own_name() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (server, home, router_port) = logged_in_server(scratch.path()).await;
    let bp = fixture("buildpacks/sidecar");
    let out = cli(
        &home,
        &["create-buildpack", "e2e_sidecar", bp.to_str().unwrap(), "1"],
    )
    .await;
    assert!(out.success, "create-buildpack failed\n{out}");
    let app_dir = scratch.path().join("site");
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(app_dir.join("index.html"), "hi\n").unwrap();

    // The buildpack's launch.yml declares the sidecar; nothing else does.
    let out = cli(
        &home,
        &[
            "push",
            "bpsidecar",
            "-p",
            app_dir.to_str().unwrap(),
            "-b",
            "e2e_sidecar",
            "-m",
            "128M",
        ],
    )
    .await;
    assert!(out.success, "push failed\n{out}\n{}", server.log());
    // It runs in the app's container, as the app's user.
    assert_eq!(
        route_text(router_port, "bpsidecar.localhost", "/ticker.txt").await,
        "tock from vcap\n"
    );
    let apps = curl_json(&home, "/v3/apps?names=bpsidecar").await;
    let guid = apps["resources"][0]["guid"].as_str().unwrap().to_string();
    let sidecars = curl_json(&home, &format!("/v3/apps/{guid}/sidecars")).await;
    let ticker = &sidecars["resources"][0];
    assert_eq!(
        (
            &ticker["name"],
            &ticker["origin"],
            &ticker["process_types"],
            &ticker["memory_in_mb"]
        ),
        (
            &serde_json::json!("ticker"),
            &serde_json::json!("buildpack"),
            &serde_json::json!(["web"]),
            &serde_json::json!(16)
        ),
        "{sidecars}"
    );

    // Its lines are the sidecar's in `kiln logs`, stdout and stderr.
    let deadline = Instant::now() + Duration::from_secs(20);
    let logs = loop {
        let logs = cli(&home, &["logs", "bpsidecar", "--recent"]).await;
        let has = |what: &str| {
            logs.stdout
                .lines()
                .any(|l| l.contains("[APP/PROC/WEB/SIDECAR/TICKER/0]") && l.ends_with(what))
        };
        if (has("OUT ticker up") && has("ERR ticker warns")) || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let tagged = |what: &str| {
        logs.stdout
            .lines()
            .any(|l| l.contains("[APP/PROC/WEB/SIDECAR/TICKER/0]") && l.ends_with(what))
    };
    assert!(
        tagged("OUT ticker up") && tagged("ERR ticker warns"),
        "the sidecar's lines under its own source\n{logs}"
    );
    assert!(
        !logs.stdout.contains("[APP/PROC/WEB/0] OUT ticker up"),
        "{logs}"
    );
}
