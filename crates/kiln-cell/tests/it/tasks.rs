//! Tasks end to end: the BBS places them on the cell, the cell downloads,
//! runs, reads the result, uploads and completes them.

use crate::support::*;
use kiln_model::bbs::*;
use std::time::{Duration, Instant};

/// A completed task's container and directory go soon after: the cell
/// reports the completion first, then destroys the container.
async fn container_gone(cell: &TestCell, task_guid: &str) {
    eventually("the container gone", Duration::from_secs(10), || async {
        (cell.containers().await.is_empty() && !cell.container_dir(task_guid).exists())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_downloads_runs_as_vcap_writes_a_result_and_uploads() {
    if !runc_available("task_downloads_runs_as_vcap_writes_a_result_and_uploads") {
        return;
    }
    let blobs = BlobServer::start().await;
    let package = zip_of(&[
        ("hello.txt", 0o644, "hello from the package\n"),
        ("bin/run.sh", 0o755, "#!/bin/sh\necho script-ran\n"),
    ]);
    let checksum = sha256(&package);
    blobs.put("package", package);
    let cell = TestCell::start(63100..63110).await;

    let script = r#"set -e
id -u; id -g
echo "user=$USER home=$HOME path=$PATH pwd=$(pwd) lang=$LANG"
cat /tmp/app/hello.txt
/tmp/app/bin/run.sh
test -e /etc/shadow && echo shadow-visible || echo no-shadow
touch /usr/kiln-probe 2>/dev/null && echo usr-writable || echo usr-read-only
test -x /tmp/lifecycle/kiln && echo lifecycle-present
touch /tmp/lifecycle/kiln 2>/dev/null && echo lifecycle-writable || echo lifecycle-read-only
getent hosts "$(cat /proc/sys/kernel/hostname)" >/dev/null && echo hostname-resolves
echo to-stderr >&2
locale charmap
perl -e 'print "perl-ok\n"'
printf '{"ok":true}' > /tmp/result.json
tar -czf /tmp/droplet -C /tmp/app .
"#;
    let mut run = sh(script);
    run.dir = Some("/tmp/app".into());
    run.env = vec![EnvVar::new("LANG", "en_US.UTF-8")];
    let mut def = task_definition(&cell.stack, "app-1", run);
    def.downloads = vec![DownloadAction {
        artifact: "app package".into(),
        from: blobs.blob_url("package"),
        to: "/tmp/app".into(),
        kind: ArtifactKind::Zip,
        cache_key: Some("package-1".into()),
        checksum: Some(Checksum {
            algorithm: "sha256".into(),
            value: checksum,
        }),
        optional: false,
    }];
    def.uploads = vec![UploadAction {
        artifact: "droplet".into(),
        from: "/tmp/droplet".into(),
        to: blobs.upload_url("droplet"),
        ..Default::default()
    }];
    def.result_file = "/tmp/result.json".into();

    let task_guid = guid();
    let started = Instant::now();
    cell.desire_task(&task_guid, def.clone()).await;
    let task = cell
        .completed_task(&task_guid, Duration::from_secs(30))
        .await;
    eprintln!(
        "MEASURED task desire -> completed (download zip, run, upload): {:?}",
        started.elapsed()
    );
    let lines = cell.logs.lines("app-1");
    assert!(!task.failed, "{} / logs: {lines:#?}", task.failure_reason);
    assert_eq!(task.result, r#"{"ok":true}"#);
    assert_eq!(task.cell_id, cell.config.cell_id);

    for want in [
        "STG|OUT|Downloading app package...",
        "STG|OUT|2000",
        "STG|OUT|user=vcap home=/home/vcap path=/usr/local/bin:/usr/bin:/bin pwd=/tmp/app lang=en_US.UTF-8",
        "STG|OUT|hello from the package",
        "STG|OUT|script-ran",
        "STG|OUT|no-shadow",
        "STG|OUT|usr-read-only",
        "STG|OUT|lifecycle-present",
        "STG|OUT|lifecycle-read-only",
        "STG|OUT|hostname-resolves",
        "STG|ERR|to-stderr",
        // The stack has the locale LANG names: no fallback, no warning.
        "STG|OUT|UTF-8",
        "STG|OUT|perl-ok",
        "STG|OUT|Uploading droplet...",
        "STG|OUT|Uploading complete",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in {lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|l| !l.contains("secret")),
        "signed URLs must not reach logs: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("Setting locale failed") && !l.contains("Cannot set")),
        "no locale warnings: {lines:#?}"
    );
    assert!(
        cell.logs
            .envelopes("app-1")
            .iter()
            .all(|e| e.instance_id == "0")
    );
    let (content_type, droplet) = blobs.uploaded("droplet").expect("droplet uploaded");
    assert_eq!(content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(&droplet[..2], &[0x1f, 0x8b], "a gzip body");

    // The container and its directory are gone; the cache stays and is
    // reused by the next task with the same cache key.
    container_gone(&cell, &task_guid).await;
    assert_eq!(blobs.gets("package"), 1);
    let second = guid();
    cell.desire_task(&second, def).await;
    let task = cell.completed_task(&second, Duration::from_secs(30)).await;
    assert!(!task.failed, "{}", task.failure_reason);
    assert_eq!(blobs.gets("package"), 1, "the cached package is reused");

    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_downloads_and_uploads_fail_the_task_with_diegos_reasons() {
    if !runc_available("failed_runs_downloads_and_uploads_fail_the_task_with_diegos_reasons") {
        return;
    }
    let blobs = BlobServer::start().await;
    blobs.put("cache", tgz_of(&[("a.txt", 0o644, "a")]));
    let cell = TestCell::start(63110..63120).await;
    let stack = cell.stack.clone();
    let download =
        |artifact: &str, name: &str, optional: bool, checksum: Option<&str>| DownloadAction {
            artifact: artifact.into(),
            from: blobs.blob_url(name),
            to: "/tmp/cache".into(),
            kind: ArtifactKind::Tgz,
            cache_key: None,
            checksum: checksum.map(|v| Checksum {
                algorithm: "sha256".into(),
                value: v.into(),
            }),
            optional,
        };

    let exits = guid();
    cell.desire_task(
        &exits,
        task_definition(&stack, "exits", sh("echo about to fail >&2; exit 3")),
    )
    .await;

    let missing = guid();
    let mut def = task_definition(&stack, "missing", sh("true"));
    def.downloads = vec![download("app package", "nope", false, None)];
    cell.desire_task(&missing, def).await;

    let optional = guid();
    let mut def = task_definition(&stack, "optional", sh("test ! -e /tmp/cache/a.txt"));
    def.downloads = vec![download("build artifacts cache", "nope", true, None)];
    cell.desire_task(&optional, def).await;

    let corrupt = guid();
    let mut def = task_definition(&stack, "corrupt", sh("true"));
    def.downloads = vec![download(
        "build artifacts cache",
        "cache",
        false,
        Some(&"0".repeat(64)),
    )];
    cell.desire_task(&corrupt, def).await;

    let not_writable = guid();
    let mut def = task_definition(&stack, "not-writable", sh("true"));
    def.downloads = vec![DownloadAction {
        to: "/etc/app".into(),
        ..download("app package", "cache", false, None)
    }];
    cell.desire_task(&not_writable, def).await;

    let upload_fails = guid();
    let mut def = task_definition(&stack, "upload-fails", sh("echo x > /tmp/droplet"));
    def.uploads = vec![UploadAction {
        artifact: "droplet".into(),
        from: "/tmp/droplet".into(),
        to: blobs.upload_url("fail-droplet"),
        ..Default::default()
    }];
    cell.desire_task(&upload_fails, def).await;

    let escapes = guid();
    let mut def = task_definition(&stack, "escapes", sh("ln -s /etc/passwd /tmp/droplet"));
    def.uploads = vec![UploadAction {
        artifact: "droplet".into(),
        from: "/tmp/droplet".into(),
        to: blobs.upload_url("escaped"),
        ..Default::default()
    }];
    cell.desire_task(&escapes, def).await;

    let within = Duration::from_secs(30);
    let t = cell.completed_task(&exits, within).await;
    assert!(t.failed);
    assert_eq!(t.failure_reason, "Exited with status 3");
    assert!(cell.logs.has("exits", "STG|ERR|about to fail"));

    let t = cell.completed_task(&missing, within).await;
    assert!(t.failed);
    let host = blobs.addr;
    assert_eq!(
        t.failure_reason,
        format!("Downloading app package failed: GET http://{host}/blobs/nope: 404 Not Found")
    );

    let t = cell.completed_task(&optional, within).await;
    assert!(!t.failed, "{}", t.failure_reason);

    let t = cell.completed_task(&corrupt, within).await;
    assert!(t.failed);
    assert!(
        t.failure_reason.starts_with(
            "Downloading build artifacts cache failed: checksum mismatch: expected sha256 000"
        ),
        "{}",
        t.failure_reason
    );

    let t = cell.completed_task(&not_writable, within).await;
    assert!(t.failed);
    assert_eq!(
        t.failure_reason,
        "Downloading app package failed: /etc/app is not under /tmp or /home/vcap"
    );

    let t = cell.completed_task(&upload_fails, within).await;
    assert!(t.failed);
    assert_eq!(
        t.failure_reason,
        format!(
            "Uploading droplet failed: POST http://{host}/uploads/fail-droplet: 500 Internal Server Error"
        )
    );

    let t = cell.completed_task(&escapes, within).await;
    assert!(
        t.failed,
        "a symlink planted by the container must not be followed on the host"
    );
    assert!(
        t.failure_reason
            .starts_with("Uploading droplet failed: /tmp/droplet"),
        "{}",
        t.failure_reason
    );
    assert!(blobs.uploaded("escaped").is_none());

    eventually("the containers gone", Duration::from_secs(10), || async {
        cell.containers().await.is_empty().then_some(())
    })
    .await;
    cell.shutdown().await;
}

/// Issue 15: an upload PUT straight into a blobstore's signed URL (the
/// test server answers as S3 does, the MD5 as ETag), then reported: the
/// report is what the cell counted while streaming. A store that kept
/// other bytes (another ETag) or a refused report fails the task with the
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_put_into_the_store_and_report_what_they_sent() {
    if !runc_available("uploads_put_into_the_store_and_report_what_they_sent") {
        return;
    }
    let blobs = BlobServer::start().await;
    let cell = TestCell::start(63340..63350).await;
    let stack = cell.stack.clone();
    let put_task = |name: &str| {
        let mut def = task_definition(
            &stack,
            name,
            sh("head -c 300000 /dev/urandom > /tmp/droplet"),
        );
        def.uploads = vec![UploadAction {
            artifact: "droplet".into(),
            from: "/tmp/droplet".into(),
            to: blobs.upload_url(name),
            method: UploadMethod::Put,
            report_to: Some(blobs.report_url(name)),
        }];
        def
    };
    let (honest, bad_etag, refused) = (guid(), guid(), guid());
    cell.desire_task(&honest, put_task("droplet")).await;
    cell.desire_task(&bad_etag, put_task("badetag-droplet"))
        .await;
    cell.desire_task(&refused, put_task("refuse-droplet")).await;

    let within = Duration::from_secs(30);
    let t = cell.completed_task(&honest, within).await;
    assert!(!t.failed, "{}", t.failure_reason);
    let (_, body) = blobs.uploaded("droplet").unwrap();
    assert_eq!(body.len(), 300_000);
    let report = blobs.report("droplet").unwrap();
    assert_eq!(report["size"], 300_000);
    assert_eq!(report["sha256"], sha256(&body));
    {
        use md5::Digest;
        assert_eq!(report["md5"], hex::encode(md5::Md5::digest(&body)));
    }

    let host = blobs.addr;
    let t = cell.completed_task(&bad_etag, within).await;
    assert!(t.failed);
    assert!(
        t.failure_reason.starts_with(&format!(
            "Uploading droplet failed: PUT http://{host}/uploads/badetag-droplet: the store kept other bytes"
        )),
        "{}",
        t.failure_reason
    );
    assert!(
        blobs.report("badetag-droplet").is_none(),
        "nothing reported"
    );

    let t = cell.completed_task(&refused, within).await;
    assert!(t.failed);
    assert_eq!(
        t.failure_reason,
        format!(
            "Uploading droplet failed: POST http://{host}/reports/refuse-droplet: 422 Unprocessable Entity: The droplet upload was refused: the stored object has 1 bytes, the upload 2"
        )
    );
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_killed_and_fails() {
    if !runc_available("a_task_past_its_timeout_is_killed_and_fails") {
        return;
    }
    let cell = TestCell::start(63120..63130).await;
    let mut def = task_definition(&cell.stack, "slow", sh("echo started; sleep 600"));
    def.timeout_ms = 1_000;
    let task_guid = guid();
    let started = Instant::now();
    cell.desire_task(&task_guid, def).await;
    let t = cell
        .completed_task(&task_guid, Duration::from_secs(20))
        .await;
    let elapsed = started.elapsed();
    assert!(t.failed);
    assert_eq!(t.failure_reason, "exceeded 1s timeout");
    assert!(cell.logs.has("slow", "STG|OUT|started"));
    // TERM reaches the process through the container's init: no grace
    // period is waited out.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    eprintln!("MEASURED 1 s timeout task completed after {elapsed:?}");
    container_gone(&cell, &task_guid).await;
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_has_its_container_stopped() {
    if !runc_available("a_cancelled_task_has_its_container_stopped") {
        return;
    }
    let cell = TestCell::start(63130..63140).await;
    let task_guid = guid();
    cell.desire_task(
        &task_guid,
        task_definition(&cell.stack, "long", sh("echo running; sleep 600")),
    )
    .await;
    eventually("task running", Duration::from_secs(20), || async {
        cell.logs.has("long", "STG|OUT|running").then_some(())
    })
    .await;
    assert_eq!(cell.containers().await, std::slice::from_ref(&task_guid));
    let started = Instant::now();
    kiln_bbs::BbsClient::cancel_task(&cell.bbs, &task_guid)
        .await
        .unwrap();
    eventually("container stopped", Duration::from_secs(20), || async {
        (cell.containers().await.is_empty() && !cell.container_dir(&task_guid).exists())
            .then_some(())
    })
    .await;
    eprintln!("MEASURED cancel -> container gone: {:?}", started.elapsed());
    let t = kiln_bbs::BbsClient::task_by_guid(&cell.bbs, &task_guid)
        .await
        .unwrap();
    assert_eq!(
        t.failure_reason, "task was cancelled",
        "the cancellation stands"
    );
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cell_sweeps_leftovers_and_fails_tasks_it_lost() {
    if !runc_available("a_restarted_cell_sweeps_leftovers_and_fails_tasks_it_lost") {
        return;
    }
    let mut cell = TestCell::start(63140..63150).await;
    let task_guid = guid();
    cell.desire_task(
        &task_guid,
        task_definition(&cell.stack, "lost", sh("echo running; sleep 600")),
    )
    .await;
    eventually("task running", Duration::from_secs(20), || async {
        cell.logs.has("lost", "STG|OUT|running").then_some(())
    })
    .await;
    cell.stop_cell().await;
    assert!(
        cell.containers().await.is_empty(),
        "shutdown stops containers"
    );

    // What a `kill -9` of the cell leaves: a container still running under
    // the cell's runc root, and its directory.
    use kiln_cell::ContainerRuntime;
    let stack_dir = cell.config.data_dir.join("stacks").join(&cell.stack);
    let leftover_dir = cell.container_dir("leftover");
    std::fs::create_dir_all(&leftover_dir).unwrap();
    let spec = kiln_cell::runtime::ContainerSpec {
        id: "leftover".into(),
        bundle: leftover_dir.clone(),
        rootfs: stack_dir,
        writable_root: false,
        hostname: "leftover".into(),
        process: kiln_cell::runtime::ProcessSpec {
            args: vec!["/bin/sleep".into(), "600".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 2000,
            gid: 2000,
            nofile: 1024,
        },
        mounts: vec![kiln_cell::runtime::BindMount {
            source: "/usr".into(),
            destination: "/usr".into(),
            read_only: true,
        }],
        limits: Default::default(),
        network: None,
    };
    let orphan = cell.runtime().create_and_run(&spec).await.unwrap();
    eventually("leftover running", Duration::from_secs(5), || async {
        (cell.containers().await == ["leftover"]
            && runc_running(&cell.config.data_dir.join("runc"), "leftover"))
        .then_some(())
    })
    .await;

    cell.restart_cell().await;
    let t = cell
        .completed_task(&task_guid, Duration::from_secs(20))
        .await;
    assert!(t.failed);
    assert_eq!(t.failure_reason, "cell restarted before completion");
    let code = tokio::time::timeout(Duration::from_secs(10), orphan.exit)
        .await
        .expect("the leftover container is killed")
        .unwrap();
    assert_eq!(code, 137);
    assert!(cell.containers().await.is_empty());
    assert!(!leftover_dir.exists());
    cell.shutdown().await;
}
