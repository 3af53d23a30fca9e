//! `kiln push` from a manifest with variables: several apps, processes, routes, services.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_two_apps_from_a_manifest_with_variables() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (mut server, home, router_port) = logged_in_server(scratch.path()).await;
    create_legacy_buildpack(&home).await;

    // Two apps, each from its own `path`, with variables from a file and
    // the command line, env, explicit routes and a default one.
    let project = scratch.path().join("project");
    copy_dir(&fixture("apps/envprobe"), &project.join("one"));
    copy_dir(&fixture("apps/envprobe"), &project.join("two"));
    std::fs::write(
        project.join("manifest.yml"),
        "---\napplications:\n\
         - name: ((prefix))-one\n  path: one\n  buildpacks: [e2e_legacy]\n  instances: ((count))\n  memory: 128M\n\
         \x20 env:\n    E2E_GREETING: ((greeting))\n    E2E_COUNT: ((count))\n\
         \x20 routes:\n  - route: ((prefix))-one.localhost\n  - route: alias-((prefix)).localhost\n\
         \x20 services: [e2e-db]\n\
         - name: ((prefix))-two\n  path: two\n  memory: 128M\n  env: {E2E_ROLE: second}\n\
         \x20 processes:\n  - type: web\n  - type: worker\n    command: sleep 3600\n    instances: 1\n    memory: 64M\n    health-check-type: process\n\
         \x20 sidecars:\n  - name: stamper\n    process_types: [web]\n    memory: 16M\n\
         \x20   command: 'mkdir -p /home/vcap/tmp && echo \"sidecar $E2E_ROLE $CF_INSTANCE_INDEX\" > /home/vcap/tmp/sidecar-stamp.txt && exec sleep 3600'\n",
    )
    .unwrap();
    std::fs::write(project.join("vars.yml"), "prefix: mf\ncount: 2\n").unwrap();

    // A manifest with a bad value fails with its line and changes nothing.
    std::fs::write(
        project.join("broken.yml"),
        "applications:\n- name: broken\n  instances: lots\n",
    )
    .unwrap();
    let out = cli_in(&home, &project, &["push", "-f", "broken.yml"]).await;
    assert!(!out.success, "a malformed manifest must fail\n{out}");
    assert!(
        out.stderr.contains("line 3"),
        "the error must name the line\n{out}"
    );
    let out = cli(&home, &["apps"]).await;
    assert!(!out.stdout.contains("broken"), "nothing may change\n{out}");

    // A missing variable is named and changes nothing.
    let out = cli_in(&home, &project, &["push", "--vars-file", "vars.yml"]).await;
    assert!(!out.success, "a missing variable must fail\n{out}");
    assert!(out.stderr.contains("greeting"), "{out}");

    // The service the manifest names exists; an unknown one fails the push.
    let out = cli(
        &home,
        &["cups", "e2e-db", "-p", r#"{"uri":"postgres://e2e"}"#],
    )
    .await;
    assert!(out.success, "{out}");
    let out = cli_in(
        &home,
        &project,
        &[
            "push",
            "--vars-file",
            "vars.yml",
            "--var",
            "greeting=hello-there",
        ],
    )
    .await;
    assert!(
        out.success,
        "manifest push failed\n{out}\n--- server log ---\n{}",
        server.log()
    );

    let response = wait_for_200(router_port, "mf-one.localhost", Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200, "{}", server.log());
    let probe: serde_json::Value = response.json().await.unwrap();
    assert_eq!(probe["e2e_env"]["E2E_GREETING"], "hello-there", "{probe}");
    assert_eq!(probe["e2e_env"]["E2E_COUNT"], "2", "{probe}");
    // The manifest's service is bound before the app started.
    let services: serde_json::Value =
        serde_json::from_str(probe["env"]["VCAP_SERVICES"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(
        services["user-provided"][0]["credentials"]["uri"], "postgres://e2e",
        "{probe}"
    );
    let alias = wait_for_200(router_port, "alias-mf.localhost", Duration::from_secs(30)).await;
    assert_eq!(alias.status(), 200);
    // instances: ((count)) = 2; each answers through the router, asked for
    // by `X-Cf-App-Instance` (round robin alone may skip an instance that
    // briefly failed to dial, for Gorouter's 30 s).
    let out = cli(&home, &["curl", "/v3/apps?names=mf-one"]).await;
    let apps: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let app_guid = apps["resources"][0]["guid"].as_str().unwrap().to_string();
    for index in ["0", "1"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let seen = loop {
            let response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{router_port}/probe"))
                .header("Host", "mf-one.localhost")
                .header("X-Cf-App-Instance", format!("{app_guid}:{index}"))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                let probe: serde_json::Value = response.json().await.unwrap();
                break probe["env"]["CF_INSTANCE_INDEX"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
            }
            assert!(
                Instant::now() < deadline,
                "instance {index} of mf-one never answered\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(seen, index);
    }

    // The second app's worker process, from `processes:`, runs with its
    // own command and memory.
    let out = cli(&home, &["curl", "/v3/apps?names=mf-two"]).await;
    let apps: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let two = apps["resources"][0]["guid"].as_str().unwrap().to_string();
    let out = cli(
        &home,
        &["curl", &format!("/v3/apps/{two}/processes/worker")],
    )
    .await;
    let worker: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (&worker["command"], &worker["memory_in_mb"]),
        (&serde_json::json!("sleep 3600"), &serde_json::json!(64)),
        "{worker}"
    );
    let worker_guid = worker["guid"].as_str().unwrap().to_string();
    let logs = || server.log();
    wait_running(
        &home,
        &worker_guid,
        1,
        Duration::from_secs(60),
        |_| true,
        "the manifest's worker process",
        &logs,
    )
    .await;

    // The second app got the default route and its own env.
    let response = wait_for_200(router_port, "mf-two.localhost", Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200, "{}", server.log());
    let probe: serde_json::Value = response.json().await.unwrap();
    assert_eq!(probe["e2e_env"]["E2E_ROLE"], "second", "{probe}");
    assert!(probe["e2e_env"].get("E2E_GREETING").is_none(), "{probe}");
    // Its sidecar runs in the same container, with the app's environment.
    assert_eq!(probe["sidecar_stamp"], "sidecar second 0\n", "{probe}");

    // `kiln push NAME` pushes only that app of the manifest; flags
    // override it (a second push of mf-two scaled to 2 instances).
    let out = cli_in(
        &home,
        &project,
        &[
            "push",
            "mf-two",
            "-i",
            "2",
            "--vars-file",
            "vars.yml",
            "--var",
            "greeting=x",
        ],
    )
    .await;
    assert!(out.success, "push of one app failed\n{out}");
    assert!(
        !out.stdout.contains("mf-one"),
        "only mf-two is pushed\n{out}"
    );
    let out = cli(&home, &["app", "mf-two"]).await;
    assert!(
        out.stdout.contains("#1"),
        "mf-two should have two instances\n{out}"
    );

    // The everyday verbs, against the apps the manifest made.
    let out = cli(&home, &["set-env", "mf-two", "E2E_ROLE", "restaged"]).await;
    assert!(
        out.success && out.stdout.contains("kiln restage mf-two"),
        "{out}"
    );
    let out = cli(&home, &["env", "mf-two"]).await;
    assert!(
        out.success && out.stdout.contains("E2E_ROLE: restaged"),
        "{out}"
    );
    assert!(out.stdout.contains("VCAP_APPLICATION"), "{out}");
    let out = cli(&home, &["restage", "mf-two"]).await;
    assert!(out.success, "restage failed\n{out}\n{}", server.log());
    assert!(
        out.stdout.contains("kiln-e2e legacy buildpack compiling"),
        "{out}"
    );
    let probe: serde_json::Value =
        wait_for_200(router_port, "mf-two.localhost", Duration::from_secs(30))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(probe["e2e_env"]["E2E_ROLE"], "restaged", "{probe}");
    let out = cli(&home, &["unset-env", "mf-two", "E2E_ROLE"]).await;
    assert!(out.success, "{out}");
    let out = cli(&home, &["env", "mf-two"]).await;
    assert!(!out.stdout.contains("E2E_ROLE"), "{out}");

    let out = cli(&home, &["scale", "mf-two", "-i", "1"]).await;
    assert!(out.success, "scale failed\n{out}");
    assert!(
        !out.stdout.contains("#1"),
        "one instance after scale -i 1\n{out}"
    );
    let out = cli(&home, &["restart", "mf-two"]).await;
    assert!(
        out.success && out.stdout.contains("running"),
        "restart failed\n{out}"
    );

    let out = cli(&home, &["create-route", "localhost", "--hostname", "extra"]).await;
    assert!(out.success, "{out}");
    let out = cli(
        &home,
        &["map-route", "mf-two", "localhost", "--hostname", "extra"],
    )
    .await;
    assert!(out.success, "{out}");
    assert_eq!(
        wait_for_200(router_port, "extra.localhost", Duration::from_secs(30))
            .await
            .status(),
        200
    );
    let out = cli(&home, &["routes"]).await;
    assert!(out.success, "{out}");
    let extra = out
        .stdout
        .lines()
        .find(|l| l.contains("extra"))
        .unwrap_or_default();
    assert!(
        extra.contains("localhost") && extra.contains("mf-two"),
        "{out}"
    );
    let out = cli(
        &home,
        &["unmap-route", "mf-two", "localhost", "--hostname", "extra"],
    )
    .await;
    assert!(out.success, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while route_get(router_port, "extra.localhost").await.status() != 404
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        route_get(router_port, "extra.localhost").await.status(),
        404
    );
    let out = cli(
        &home,
        &["delete-route", "localhost", "--hostname", "extra", "-f"],
    )
    .await;
    assert!(out.success, "{out}");
    let out = cli(&home, &["routes"]).await;
    assert!(!out.stdout.contains("extra"), "{out}");

    // A private domain of the org: listed as private, routed by the router,
    // seen by check-route, and deleted with its route.
    let out = cli(
        &home,
        &["create-private-domain", "kiln", "shop.private.test"],
    )
    .await;
    assert!(out.success && out.stdout.contains("OK"), "{out}");
    let out = cli(&home, &["domains"]).await;
    let line = out.stdout.lines().find(|l| l.contains("shop.private.test"));
    assert!(line.is_some_and(|l| l.contains("private")), "{out}");
    let out = cli(
        &home,
        &[
            "map-route",
            "mf-two",
            "shop.private.test",
            "--hostname",
            "www",
        ],
    )
    .await;
    assert!(out.success, "{out}");
    assert_eq!(
        wait_for_200(
            router_port,
            "www.shop.private.test",
            Duration::from_secs(30)
        )
        .await
        .status(),
        200
    );
    let out = cli(&home, &["check-route", "www", "shop.private.test"]).await;
    assert!(
        out.stdout
            .contains("Route 'www.shop.private.test' does exist."),
        "{out}"
    );
    let out = cli(&home, &["check-route", "nope", "shop.private.test"]).await;
    assert!(out.stdout.contains("does not exist."), "{out}");
    let out = cli(&home, &["delete-shared-domain", "shop.private.test", "-f"]).await;
    assert!(!out.success, "{out}");
    let out = cli(&home, &["delete-private-domain", "shop.private.test", "-f"]).await;
    assert!(out.success, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while route_get(router_port, "www.shop.private.test")
        .await
        .status()
        != 404
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        route_get(router_port, "www.shop.private.test")
            .await
            .status(),
        404
    );

    let out = cli(&home, &["rename", "mf-two", "mf-second"]).await;
    assert!(out.success, "{out}");
    let out = cli(&home, &["apps"]).await;
    assert!(
        out.stdout.contains("mf-second") && !out.stdout.contains("mf-two "),
        "{out}"
    );
    for verb in ["domains", "stacks", "orgs", "spaces", "version"] {
        let out = cli(&home, &[verb]).await;
        assert!(out.success, "{verb} failed\n{out}");
    }
    let out = cli(&home, &["domains"]).await;
    assert!(
        out.stdout.contains("localhost") && out.stdout.contains("shared"),
        "{out}"
    );

    // delete -r takes the app's routes with it.
    let out = cli(&home, &["delete", "mf-second", "-f", "-r"]).await;
    assert!(out.success, "{out}");
    let out = cli(&home, &["routes"]).await;
    assert!(
        !out.stdout.contains("mf-two"),
        "the app's routes must be gone\n{out}"
    );
    assert!(
        out.stdout.contains("alias-mf"),
        "other apps' routes stay\n{out}"
    );

    // A verb whose output pipe closes early exits quietly.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!("{} curl /v3/apps | true", kiln_binary()))
        .env("KILN_HOME", &home)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");

    server.stop().await;
    // The stop leaves no container file system mounted.
    assert_eq!(mounts_under(&server.data_dir), Vec::<String>::new());
}
