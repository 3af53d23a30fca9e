//! Custom buildpacks by URL: a git repository the test creates (cloned by
//! the API with the host's git and handed to the staging task as a zip
//! over a signed URL) and a zip URL (downloaded by the staging task
//! itself); an unreachable repository fails the build with the reason.

use super::{Kiln, PASSWORD, cell, cell_upload, start, zip_of};
use kiln_bbs::BbsClient;
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git must be installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A buildpack repository: `main` says "main", branch `feature` and tag
/// `v1` say "feature".
fn buildpack_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let write = |said: &str| {
        std::fs::write(dir.join("bin/detect"), "#!/bin/sh\necho custom\n").unwrap();
        std::fs::write(dir.join("bin/compile"), format!("#!/bin/sh\necho {said}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in ["detect", "compile"] {
            std::fs::set_permissions(
                dir.join("bin").join(f),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
    };
    write("main");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "main"]);
    git(dir, &["checkout", "-q", "-b", "feature"]);
    write("feature");
    git(dir, &["commit", "-q", "-am", "feature"]);
    git(dir, &["tag", "v1"]);
    git(dir, &["checkout", "-q", "main"]);
}

async fn build_with(kiln: &Kiln, app_guid: &str, buildpack: &str) -> serde_json::Value {
    let pkg = kiln.new_package(app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let (status, build) = kiln
        .post(
            "/v3/builds",
            json!({"package": {"guid": pkg}, "lifecycle": {"type": "buildpack", "data": {"buildpacks": [buildpack]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    build
}

/// Reads a zip's `bin/compile`.
fn compile_script_of(zip: &[u8]) -> String {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut file = archive.by_name("bin/compile").unwrap();
    assert_eq!(file.unix_mode().unwrap() & 0o111, 0o111, "modes are kept");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).unwrap();
    text
}

#[tokio::test]
async fn git_and_zip_buildpacks_by_url() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let repo = dir.path().join("bp-repo");
    buildpack_repo(&repo);
    let app = kiln.create_app("custom", None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();

    // A git URL with #branch: the Task downloads the API's clone of the
    // branch, with file modes kept, into the directory the builder is told.
    for (fragment, says) in [("#feature", "feature"), ("#v1", "feature"), ("", "main")] {
        let url = format!("file://{}{fragment}", repo.display());
        let build = build_with(&kiln, &app_guid, &url).await;
        assert_eq!(build["state"], "STAGING", "{build}");
        let guid = build["guid"].as_str().unwrap().to_string();
        let task = kiln.bbs.task_by_guid(&guid).await.unwrap();
        let download = task
            .definition
            .downloads
            .iter()
            .find(|d| d.artifact == format!("buildpack {url}"))
            .unwrap_or_else(|| panic!("no buildpack download in {:?}", task.definition.downloads));
        assert!(
            download.from.contains("/internal/v4/custom_buildpacks/"),
            "{download:?}"
        );
        let zip = kiln.http.get(&download.from).send().await.unwrap();
        assert_eq!(zip.status(), StatusCode::OK);
        let bytes = zip.bytes().await.unwrap();
        assert_eq!(
            compile_script_of(&bytes),
            format!("#!/bin/sh\necho {says}\n")
        );
        let key = download
            .to
            .trim_start_matches("/tmp/buildpacks/")
            .to_string();
        assert!(
            task.definition
                .run
                .args
                .contains(&format!("--buildpack-order={key}"))
        );
        assert!(
            task.definition
                .run
                .args
                .contains(&"--skip-detect=true".to_string())
        );
        // Staged: the droplet names the buildpack by its URL; the clone goes.
        kiln.bbs.heartbeat_cell(cell()).await.unwrap();
        kiln.bbs.converge().await.unwrap();
        assert!(kiln.bbs.start_task(&guid, "cell-1").await.unwrap());
        let up = cell_upload(&kiln, &task.definition.uploads[0], b"droplet").await;
        assert!(up.status().is_success());
        let result = json!({
            "lifecycle_type": "buildpack",
            "lifecycle_metadata": {"buildpack_key": key, "detected_buildpack": "custom-detected",
                                   "buildpacks": [{"key": "supply-key", "name": "supply", "version": ""},
                                                  {"key": key, "name": "custom", "version": ""}]},
            "process_types": {"web": "python3 app.py"},
            "execution_metadata": "",
        });
        kiln.bbs
            .complete_task(&guid, "cell-1", false, "", &result.to_string())
            .await
            .unwrap();
        let staged = kiln
            .wait_for(&format!("/v3/builds/{guid}"), |b| b["state"] != "STAGING")
            .await;
        assert_eq!(staged["state"], "STAGED", "{staged}");
        let (_, droplet) = kiln
            .get(&format!(
                "/v3/droplets/{}",
                staged["droplet"]["guid"].as_str().unwrap()
            ))
            .await;
        assert_eq!(droplet["buildpacks"][1]["name"], url, "{droplet}");
        assert_eq!(droplet["buildpacks"][1]["buildpack_name"], "custom");
        // detect_output only on the final buildpack, as CC shows it.
        assert_eq!(droplet["buildpacks"][0]["detect_output"], json!(null));
        assert_eq!(droplet["buildpacks"][1]["detect_output"], "custom-detected");
        let gone = kiln.http.get(&download.from).send().await.unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "the clone is removed");
    }

    // A zip URL is the Task's own download, straight from the URL.
    let zip_url = "http://127.0.0.1:9/buildpacks/custom.zip";
    let build = build_with(&kiln, &app_guid, zip_url).await;
    let guid = build["guid"].as_str().unwrap();
    let task = kiln.bbs.task_by_guid(guid).await.unwrap();
    assert!(
        task.definition
            .downloads
            .iter()
            .any(|d| d.from == zip_url && d.checksum.is_none()),
        "{:?}",
        task.definition.downloads
    );
    kiln.bbs.cancel_task(guid).await.unwrap();
    kiln.wait_for(&format!("/v3/builds/{guid}"), |b| b["state"] != "STAGING")
        .await;

    // A repository that is not there: the build fails and says why; no Task.
    let missing = format!("file://{}/nope.git#main", dir.path().display());
    let failed = build_with(&kiln, &app_guid, &missing).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("Failed to clone git repository at") && error.contains("nope.git"),
        "{error}"
    );
    let guid = failed["guid"].as_str().unwrap();
    assert!(kiln.bbs.task_by_guid(guid).await.is_err());
    // A branch that is not there either.
    let no_branch = format!("file://{}#no-such-branch", repo.display());
    let failed = build_with(&kiln, &app_guid, &no_branch).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("no-such-branch"),
        "{failed}"
    );

    // An unknown name that is no URL is refused before anything is written.
    let pkg = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let (status, body) = kiln
        .post(
            "/v3/builds",
            json!({"package": {"guid": pkg}, "lifecycle": {"type": "buildpack", "data": {"buildpacks": ["nope"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(super::error_of(&body).2.contains("valid git URI"), "{body}");
    kiln.stop().await;
}
