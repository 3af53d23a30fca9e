//! Rolling deployments under steady traffic, and a canary that is cancelled.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// The app's deployments, newest last, through `kiln curl`.
async fn deployments(home: &Path) -> Vec<serde_json::Value> {
    let out = cli(home, &["curl", "/v3/deployments?per_page=5000"]).await;
    assert!(out.success, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    list["resources"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_push_under_traffic_and_a_cancelled_canary() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (server, home, router_port) = logged_in_server(scratch.path()).await;
    create_legacy_buildpack(&home).await;
    let probe_dir = fixture("apps/envprobe");
    let probe = probe_dir.to_str().unwrap();
    let out = cli(
        &home,
        &["push", "roll", "-p", probe, "-i", "2", "-m", "128M"],
    )
    .await;
    assert!(out.success, "push failed\n{out}\n{}", server.log());
    // Staging headers name the buildpack by its name.
    assert!(
        out.stdout.contains("Running compile for e2e_legacy"),
        "{out}"
    );
    // The app drains on SIGTERM, as Cloud Foundry asks of apps: the
    // platform's part is to start new instances, route to them, and only
    // then stop old ones; an app that dies mid-request loses that request
    // on any platform.
    let drain = ["set-env", "roll", "E2E_DRAIN_SECONDS", "1"];
    assert!(cli(&home, &drain).await.success);
    let out = cli(&home, &["restart", "roll"]).await;
    assert!(out.success, "restart failed\n{out}\n{}", server.log());
    let first = wait_for_200(router_port, "roll.localhost", Duration::from_secs(30)).await;
    assert_eq!(first.status(), 200, "{}", server.log());

    // A rolling push under steady traffic: every answer is a 200, and at
    // the end every answer comes from the new instances.
    assert!(
        cli(&home, &["set-env", "roll", "E2E_RELEASE", "two"])
            .await
            .success
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(router_port, "roll.localhost", stop.clone(), 20_000);
    let out = cli(
        &home,
        &["push", "roll", "-p", probe, "--strategy", "rolling"],
    )
    .await;
    assert!(out.success, "rolling push failed\n{out}\n{}", server.log());
    assert!(out.stdout.contains("Waiting for app to deploy"), "{out}");
    assert!(out.stdout.contains("new instances running"), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    let failures: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    if !failures.is_empty() {
        let logs = cli(&home, &["logs", "roll", "--recent"]).await;
        panic!(
            "{} of {} requests failed during the rolling push: {failures:?}\n{logs}\n{}",
            failures.len(),
            seen.len(),
            server.log()
        );
    }
    assert!(
        seen.len() >= 20,
        "too little traffic to tell: {}",
        seen.len()
    );
    assert_eq!(
        seen.first().unwrap().1,
        None,
        "old instances answered first"
    );
    assert_eq!(seen.last().unwrap().1.as_deref(), Some("two"));
    let ds = deployments(&home).await;
    let rolled = ds.last().unwrap();
    assert_eq!(rolled["strategy"], "rolling");
    assert_eq!(rolled["status"]["value"], "FINALIZED", "{rolled}");
    assert_eq!(rolled["status"]["reason"], "DEPLOYED", "{rolled}");

    // A canary: one new instance beside the two old ones, paused; the
    // router sends it traffic; cancelled, only the old ones answer.
    assert!(
        cli(&home, &["set-env", "roll", "E2E_RELEASE", "three"])
            .await
            .success
    );
    let out = cli(&home, &["restart", "roll", "--strategy", "canary"]).await;
    assert!(
        out.success,
        "canary restart failed\n{out}\n{}",
        server.log()
    );
    assert!(out.stdout.contains("is paused"), "{out}");
    let ds = deployments(&home).await;
    let canary = ds.last().unwrap();
    assert_eq!(canary["status"]["value"], "ACTIVE", "{canary}");
    assert_eq!(canary["status"]["reason"], "PAUSED", "{canary}");
    let mut releases = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let r = route_get(router_port, "roll.localhost").await;
        assert_eq!(r.status(), 200);
        let p: serde_json::Value = r.json().await.unwrap();
        releases.insert(
            p["e2e_env"]["E2E_RELEASE"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        if releases.len() == 2 {
            break;
        }
    }
    assert_eq!(
        releases.into_iter().collect::<Vec<_>>(),
        ["three", "two"],
        "old and canary instances both serve"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(router_port, "roll.localhost", stop.clone(), 20_000);
    let out = cli(&home, &["cancel-deployment", "roll"]).await;
    assert!(out.success, "cancel failed\n{out}");
    let ds = deployments(&home).await;
    let canceled = ds.last().unwrap();
    assert_eq!(canceled["status"]["value"], "FINALIZED", "{canceled}");
    assert_eq!(canceled["status"]["reason"], "CANCELED", "{canceled}");
    // The canary leaves the router's table: bounded wait for 20 answers
    // in a row from the old instances.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(Instant::now() < deadline, "the canary kept answering");
        let r = route_get(router_port, "roll.localhost").await;
        assert_eq!(r.status(), 200, "{}", server.log());
        let p: serde_json::Value = r.json().await.unwrap();
        if p["e2e_env"]["E2E_RELEASE"] == "two" {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    assert!(
        seen.iter().all(|(s, _)| *s == 200),
        "a request failed while the canary was cancelled: {seen:?}"
    );
    let out = cli(&home, &["cancel-deployment", "roll"]).await;
    assert!(!out.success, "nothing is left to cancel\n{out}");
    assert!(out.stderr.contains("no active deployment"), "{out}");

    // A first push with --strategy: the deployment starts the new app,
    // and the push returns once it runs.
    let out = cli(
        &home,
        &["push", "fresh", "-p", probe, "--strategy", "rolling"],
    )
    .await;
    assert!(
        out.success,
        "first rolling push failed\n{out}\n{}",
        server.log()
    );
    let response = wait_for_200(router_port, "fresh.localhost", Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200, "{}", server.log());
}
