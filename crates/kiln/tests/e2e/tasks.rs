//! Tasks (success, failure, cancel) and crashes recorded as audit events.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `kiln curl path` until `done` holds on its JSON, for at most
/// `within`; returns the last answer.
async fn curl_until(
    home: &Path,
    path: &str,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let out = cli(home, &["curl", path]).await;
        assert!(out.success, "kiln curl {path}\n{out}");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_fail_and_cancel_and_crashes_become_events() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (server, home, _router_port) = logged_in_server(scratch.path()).await;
    create_legacy_buildpack(&home).await;
    let probe_dir = fixture("apps/envprobe");
    let out = cli(
        &home,
        &["push", "tasker", "-p", probe_dir.to_str().unwrap()],
    )
    .await;
    assert!(out.success, "push failed\n{out}\n{}", server.log());
    let task = async |name: &str| -> serde_json::Value {
        let path = format!("/v3/tasks?names={name}");
        let list = curl_until(&home, &path, Duration::from_secs(1), |_| true).await;
        list["resources"][0].clone()
    };
    let ended = |name: &'static str| {
        let home = home.clone();
        async move {
            let path = format!("/v3/tasks?names={name}");
            let list = curl_until(&home, &path, Duration::from_secs(120), |l| {
                matches!(
                    l["resources"][0]["state"].as_str(),
                    Some("SUCCEEDED" | "FAILED")
                )
            })
            .await;
            list["resources"][0].clone()
        }
    };

    // A task that succeeds; its output is in the app's logs as APP/TASK/<name>.
    let out = cli(
        &home,
        &[
            "run-task",
            "tasker",
            "--command",
            "echo task-says-hello",
            "--name",
            "hello",
        ],
    )
    .await;
    assert!(out.success, "run-task failed\n{out}\n{}", server.log());
    assert!(
        out.stdout
            .contains("Task has been submitted successfully for execution."),
        "{out}"
    );
    assert!(out.stdout.contains("task name:   hello"), "{out}");
    assert!(out.stdout.contains("task id:     1"), "{out}");
    let hello = ended("hello").await;
    assert_eq!(hello["state"], "SUCCEEDED", "{hello}\n{}", server.log());
    let logs = cli(&home, &["logs", "tasker", "--recent"]).await;
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.contains("[APP/TASK/hello/0]") && l.contains("task-says-hello")),
        "task output not in the logs\n{logs}"
    );

    // A task that fails: FAILED with the exit status as its reason.
    let out = cli(
        &home,
        &["run-task", "tasker", "-c", "exit 3", "--name", "boom"],
    )
    .await;
    assert!(out.success, "{out}");
    let boom = ended("boom").await;
    assert_eq!(boom["state"], "FAILED", "{boom}");
    assert_eq!(
        boom["result"]["failure_reason"], "Exited with status 3",
        "{boom}"
    );

    // A long task, cancelled with terminate-task while it runs.
    let out = cli(
        &home,
        &["run-task", "tasker", "-c", "sleep 600", "--name", "long"],
    )
    .await;
    assert!(out.success, "{out}");
    curl_until(
        &home,
        "/v3/tasks?names=long",
        Duration::from_secs(60),
        |l| l["resources"][0]["state"] == "RUNNING",
    )
    .await;
    let out = cli(&home, &["terminate-task", "tasker", "3"]).await;
    assert!(out.success, "terminate-task failed\n{out}");
    assert!(
        out.stdout.contains("Terminating task 3 of app tasker"),
        "{out}"
    );
    let long = ended("long").await;
    assert_eq!(long["state"], "FAILED", "{long}");
    assert_eq!(
        long["result"]["failure_reason"], "task was cancelled",
        "{long}"
    );
    let out = cli(&home, &["terminate-task", "tasker", "9"]).await;
    assert!(
        !out.success && out.stderr.contains("Task sequence ID 9 not found."),
        "{out}"
    );

    let out = cli(&home, &["tasks", "tasker"]).await;
    assert!(out.success, "{out}");
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].starts_with("3 ") && rows[0].contains("long") && rows[0].contains("FAILED"),
        "{out}"
    );
    assert!(
        rows[2].starts_with("1 ")
            && rows[2].contains("SUCCEEDED")
            && rows[2].contains("echo task-says-hello"),
        "{out}"
    );
    assert_eq!(task("hello").await["sequence_id"], 1);

    // The app crashes: its web command exits. Each crash is an
    // audit.app.process.crash event with the index and exit status.
    let app = curl_until(
        &home,
        "/v3/apps?names=tasker",
        Duration::from_secs(1),
        |_| true,
    )
    .await;
    let app_guid = app["resources"][0]["guid"].as_str().unwrap().to_string();
    let procs = curl_until(
        &home,
        &format!("/v3/apps/{app_guid}/processes"),
        Duration::from_secs(1),
        |_| true,
    )
    .await;
    let web = procs["resources"][0]["guid"].as_str().unwrap().to_string();
    let patch = r#"{"command":"sleep 1; exit 7","health_check":{"type":"process"}}"#;
    let out = cli(
        &home,
        &[
            "curl",
            "-X",
            "PATCH",
            &format!("/v3/processes/{web}"),
            "-d",
            patch,
        ],
    )
    .await;
    assert!(out.success, "{out}");
    let out = cli(
        &home,
        &[
            "curl",
            "-X",
            "POST",
            &format!("/v3/apps/{app_guid}/actions/restart"),
        ],
    )
    .await;
    assert!(out.success, "{out}");
    let crashes = curl_until(
        &home,
        &format!("/v3/audit_events?types=audit.app.process.crash&target_guids={app_guid}"),
        Duration::from_secs(90),
        |l| l["pagination"]["total_results"].as_u64().unwrap_or(0) >= 1,
    )
    .await;
    let crash = &crashes["resources"][0];
    assert_eq!(
        crash["type"],
        "audit.app.process.crash",
        "{crashes}\n{}",
        server.log()
    );
    assert_eq!(crash["data"]["index"], 0, "{crash}");
    assert_eq!(crash["data"]["exit_status"], 7, "{crash}");
    assert_eq!(crash["data"]["reason"], "CRASHED", "{crash}");
    assert_eq!(crash["actor"]["type"], "process", "{crash}");
    let out = cli(&home, &["events", "tasker"]).await;
    assert!(out.success, "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("audit.app.process.crash")
                && l.contains("index: 0")
                && l.contains("exit_status: 7")),
        "no crash in kiln events\n{out}"
    );
    for kind in [
        "audit.app.task.create",
        "audit.app.task.cancel",
        "audit.app.create",
        "audit.app.restart",
    ] {
        assert!(
            out.stdout.contains(kind),
            "{kind} missing from kiln events\n{out}"
        );
    }
    let logs = cli(&home, &["logs", "tasker", "--recent"]).await;
    assert!(
        logs.stdout
            .contains("Process has crashed with type: \"web\""),
        "no API crash line\n{logs}"
    );
    drop(server);
}
