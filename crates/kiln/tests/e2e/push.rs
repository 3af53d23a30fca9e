//! The seed's whole path (push, stage, run, route) and a server restart that loses nothing.

use crate::support::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stage_run_route_and_survive_a_restart() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let home = scratch.path().join("home");
    let (api_port, router_port) = (free_port(), free_port());
    let cell_network = free_subnet();
    let mut server = Server::start(&data_dir, api_port, router_port, &cell_network).await;

    // kiln login, then the platform's buildpacks: the suite's own legacy
    // buildpack from a directory, the example supply/finalize one too.
    login(&home, &server).await;
    create_legacy_buildpack(&home).await;
    let python = workspace_root().join("examples/buildpacks/python");
    let out = cli(
        &home,
        &["create-buildpack", "python", python.to_str().unwrap(), "2"],
    )
    .await;
    assert!(out.success, "create-buildpack failed\n{out}");

    // Push: detect picks the legacy buildpack; its staging output reaches
    // the terminal; the route is printed.
    let probe_dir = fixture("apps/envprobe");
    let out = cli(
        &home,
        &["push", "envprobe", "-p", probe_dir.to_str().unwrap()],
    )
    .await;
    assert!(
        out.success,
        "push failed\n{out}\n--- server log ---\n{}",
        server.log()
    );
    assert!(
        out.stdout.contains("kiln-e2e legacy buildpack compiling"),
        "staging output not shown\n{out}"
    );
    assert!(
        out.stdout.contains("envprobe.localhost"),
        "route not printed\n{out}"
    );

    // Through the router, to the app in its container.
    let response = wait_for_200(router_port, "envprobe.localhost", Duration::from_secs(30)).await;
    assert_eq!(
        response.status(),
        200,
        "the app does not answer through the router\n{}",
        server.log()
    );
    let probe: serde_json::Value = response.json().await.unwrap();
    let env = &probe["env"];
    assert_eq!(
        probe["uid"], 2000,
        "the app must run as vcap, not root: {probe}"
    );
    assert_eq!(env["HOME"], "/home/vcap/app", "{probe}");
    assert_eq!(env["DEPS_DIR"], "/home/vcap/deps", "{probe}");
    assert_eq!(
        env["E2E_PROFILE_D"], "sourced",
        ".profile.d was not sourced by the launcher: {probe}"
    );
    assert_eq!(env["CF_INSTANCE_INDEX"], "0", "{probe}");
    // Its own network: 8080 inside, a host port outside, an address on
    // the cell's network.
    assert_eq!(env["PORT"], "8080", "{probe}");
    assert_ne!(env["CF_INSTANCE_PORT"], "8080", "{probe}");
    assert_eq!(
        env["CF_INSTANCE_ADDR"],
        format!("127.0.0.1:{}", env["CF_INSTANCE_PORT"].as_str().unwrap()),
        "{probe}"
    );
    // The same in the process stats, as `cf app` reads them.
    let stats = async |path: String| -> serde_json::Value {
        let out = cli(&home, &["curl", &path]).await;
        assert!(out.success, "kiln curl {path}\n{out}");
        serde_json::from_str(&out.stdout).unwrap()
    };
    let app = stats("/v3/apps?names=envprobe".into()).await;
    let app_guid = app["resources"][0]["guid"].as_str().unwrap().to_string();
    let processes = stats(format!("/v3/apps/{app_guid}/processes")).await;
    let process_guid = processes["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let instance =
        stats(format!("/v3/processes/{process_guid}/stats")).await["resources"][0].clone();
    assert_eq!(instance["host"], "127.0.0.1", "{instance}");
    assert_eq!(
        instance["instance_internal_ip"], env["CF_INSTANCE_INTERNAL_IP"],
        "{instance}"
    );
    assert_eq!(
        instance["instance_ports"][0]["internal"], 8080,
        "{instance}"
    );
    assert_eq!(
        instance["instance_ports"][0]["external"].to_string(),
        env["CF_INSTANCE_PORT"].as_str().unwrap(),
        "{instance}"
    );
    let subnet_prefix = cell_network.trim_end_matches("0/24");
    assert!(
        env["CF_INSTANCE_INTERNAL_IP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with(subnet_prefix)),
        "{probe}"
    );
    assert!(
        env["MEMORY_LIMIT"]
            .as_str()
            .is_some_and(|m| m.ends_with('m')),
        "{probe}"
    );
    let vcap: serde_json::Value =
        serde_json::from_str(env["VCAP_APPLICATION"].as_str().unwrap()).unwrap();
    assert_eq!(vcap["application_name"], "envprobe");
    assert_eq!(vcap["instance_index"], 0);
    assert!(
        probe["build_stamp"]
            .as_str()
            .unwrap()
            .contains("stage ran as uid 2000 with CF_STACK="),
        "{probe}"
    );
    assert!(
        !probe["build_stamp"]
            .as_str()
            .unwrap()
            .contains("CF_STACK=unset"),
        "{probe}"
    );
    assert_eq!(
        probe["etc_shadow_exists"], false,
        "the host's /etc leaks into the container: {probe}"
    );
    assert_eq!(
        probe["host_repo_visible"], false,
        "host files leak into the container: {probe}"
    );
    // What buildpacks and apps read on cflinuxfs4, as far as the host has it.
    for (path, there) in probe["stack_files"].as_object().unwrap() {
        assert_eq!(
            there.as_bool(),
            Some(Path::new(path).exists()),
            "{path} in the container vs on the host: {probe}"
        );
    }
    assert_eq!(probe["app_link"], "/home/vcap/app", "{probe}");
    let headers = probe["headers"].as_object().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert!(
        header("X-Vcap-Request-Id").is_some(),
        "router headers missing: {probe}"
    );
    assert!(
        header("X-Forwarded-For").is_some(),
        "router headers missing: {probe}"
    );

    // A push returns once the new instance is RUNNING, and by then the
    // router routes it: a request at once is answered 200, every time.
    for round in 1..=3 {
        let out = cli(
            &home,
            &["push", "envprobe", "-p", probe_dir.to_str().unwrap()],
        )
        .await;
        assert!(out.success, "push {round} failed\n{out}\n{}", server.log());
        let status = route_get(router_port, "envprobe.localhost").await.status();
        assert_eq!(
            status,
            200,
            "push {round} returned before its instance was routed\n{}",
            server.log()
        );
    }

    // A user-provided service, bound: it reaches the instance when the app
    // restarts (as on CF, not before), in CF's VCAP_SERVICES shape.
    assert_eq!(env["VCAP_SERVICES"], "{}", "{probe}");
    let creds = r#"{"user":"e2e","password":"s3cret"}"#;
    let out = cli(&home, &["cups", "e2e-db", "-p", creds, "-t", "pg,sql"]).await;
    assert!(out.success, "cups failed\n{out}");
    let out = cli(&home, &["bind-service", "envprobe", "e2e-db"]).await;
    assert!(out.success, "bind-service failed\n{out}");
    assert!(out.stdout.contains("kiln restage envprobe"), "{out}");
    let before: serde_json::Value = route_get(router_port, "envprobe.localhost")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        before["env"]["VCAP_SERVICES"], "{}",
        "bound before a restart: {before}"
    );
    let out = cli(&home, &["restart", "envprobe"]).await;
    assert!(out.success, "restart failed\n{out}\n{}", server.log());
    let response = wait_for_200(router_port, "envprobe.localhost", Duration::from_secs(30)).await;
    let after: serde_json::Value = response.json().await.unwrap();
    let services: serde_json::Value =
        serde_json::from_str(after["env"]["VCAP_SERVICES"].as_str().unwrap()).unwrap();
    let entry = &services["user-provided"][0];
    assert_eq!(entry["label"], "user-provided", "{services}");
    assert_eq!(entry["name"], "e2e-db", "{services}");
    assert_eq!(entry["instance_name"], "e2e-db", "{services}");
    assert_eq!(
        entry["tags"],
        serde_json::json!(["pg", "sql"]),
        "{services}"
    );
    assert_eq!(
        entry["credentials"],
        serde_json::json!({"user": "e2e", "password": "s3cret"}),
        "{services}"
    );
    assert_eq!(
        entry["binding_guid"].as_str().map(str::len),
        Some(36),
        "{services}"
    );
    let out = cli(&home, &["services"]).await;
    assert!(out.success, "services failed\n{out}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("e2e-db"))
        .unwrap_or("");
    assert!(
        row.contains("user-provided") && row.contains("envprobe"),
        "{out}"
    );

    // Org quotas: the default one, and one of our own set on the org.
    let out = cli(
        &home,
        &["create-org-quota", "roomy", "-m", "100G", "-r", "50"],
    )
    .await;
    assert!(out.success, "create-org-quota failed\n{out}");
    let out = cli(&home, &["set-org-quota", "kiln", "roomy"]).await;
    assert!(out.success, "set-org-quota failed\n{out}");
    let out = cli(&home, &["org-quotas"]).await;
    assert!(out.success, "org-quotas failed\n{out}");
    let quota_row = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .to_string()
    };
    assert!(quota_row("default").contains("10G"), "{out}");
    assert!(quota_row("roomy").contains("100G"), "{out}");

    // Space quotas in the targeted org, every verb cf has for them.
    let ok = |out: &CliOutput, what: &str| assert!(out.success, "{what} failed\n{out}");
    let out = cli(
        &home,
        &[
            "create-space-quota",
            "roomy-space",
            "-m",
            "50G",
            "-a",
            "100",
        ],
    )
    .await;
    ok(&out, "create-space-quota");
    let out = cli(&home, &["space-quotas"]).await;
    ok(&out, "space-quotas");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("roomy-space"))
        .unwrap_or("");
    assert!(row.contains("50G") && row.contains("100"), "{out}");
    let out = cli(
        &home,
        &[
            "update-space-quota",
            "roomy-space",
            "-n",
            "airy",
            "-r",
            "100",
            "-a",
            "-1",
        ],
    )
    .await;
    ok(&out, "update-space-quota");
    let out = cli(&home, &["set-space-quota", "dev", "airy"]).await;
    ok(&out, "set-space-quota");
    let out = cli(&home, &["space-quota", "airy"]).await;
    ok(&out, "space-quota");
    let shows = |k: &str, v: &str| {
        out.stdout
            .lines()
            .any(|l| l.starts_with(k) && l.ends_with(v))
    };
    assert!(shows("total memory:", " 50G"), "{out}");
    assert!(shows("app instances:", " unlimited"), "{out}");
    assert!(shows("routes:", " 100"), "{out}");
    let out = cli(&home, &["delete-space-quota", "airy", "-f"]).await;
    assert!(
        !out.success && out.stderr.contains("applied to one or more spaces"),
        "{out}"
    );
    let out = cli(&home, &["unset-space-quota", "dev", "airy"]).await;
    ok(&out, "unset-space-quota");
    let out = cli(&home, &["delete-space-quota", "airy", "-f"]).await;
    ok(&out, "delete-space-quota");
    let out = cli(&home, &["space-quotas"]).await;
    assert!(out.stdout.contains("No space quotas found."), "{out}");

    // An unknown host gets Gorouter's 404.
    let response = route_get(router_port, "nobody.localhost").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-cf-routererror"], "unknown_route");

    // The example app: detected by the supply/finalize buildpack.
    let hello_dir = workspace_root().join("examples/hello");
    let out = cli(&home, &["push", "hello", "-p", hello_dir.to_str().unwrap()]).await;
    assert!(
        out.success,
        "push hello failed\n{out}\n--- server log ---\n{}",
        server.log()
    );
    let response = wait_for_200(router_port, "hello.localhost", Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("Hello from Kiln! I am hello, instance 0"),
        "{text}"
    );
    // `kiln app` shows the instance's real usage (the cell's container
    // metrics, through the log service, in the process stats).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli(&home, &["app", "hello"]).await;
        assert!(out.success, "app hello failed\n{out}");
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with("#0"))
            .unwrap_or("");
        if row.contains("running") && !row.contains(" 0 of 256M") && !row.contains(" 0 of 1G") {
            eprintln!("MEASURED kiln app hello: {row}");
            break;
        }
        assert!(Instant::now() < deadline, "no usage figures in\n{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Droplets by hand: hello's droplet downloaded by the CLI, uploaded to
    // a new app through the API, set current, started and routed.
    droplet_to_another_app(&home, router_port, scratch.path()).await;

    // A push nothing detects fails, says why, and exits non-zero.
    let undetectable = fixture("apps/undetectable");
    let out = cli(
        &home,
        &["push", "nothing", "-p", undetectable.to_str().unwrap()],
    )
    .await;
    assert!(!out.success, "a push no buildpack detects must fail\n{out}");
    assert!(format!("{out}").contains("NoAppDetectedError"), "{out}");

    // ssh: a feature stored per app; Kiln runs no SSH proxy, so never on.
    let out = cli(&home, &["ssh-enabled", "envprobe"]).await;
    assert!(
        out.success
            && out
                .stdout
                .contains("ssh support is disabled for app 'envprobe'.\nssh is disabled globally"),
        "{out}"
    );
    let out = cli(&home, &["disable-ssh", "envprobe"]).await;
    assert!(out.success, "{out}");
    let ssh = stats(format!("/v3/apps/{app_guid}/features/ssh")).await;
    assert_eq!(ssh["enabled"], false, "{ssh}");
    let out = cli(&home, &["enable-ssh", "envprobe"]).await;
    assert!(
        out.success && out.stdout.contains("TIP: Ensure ssh is also enabled"),
        "{out}"
    );

    // update-buildpack and delete-buildpack, as an admin runs them.
    let out = cli(
        &home,
        &[
            "update-buildpack",
            "python",
            "-i",
            "1",
            "--disable",
            "--lock",
        ],
    )
    .await;
    assert!(out.success, "update-buildpack failed\n{out}");
    let out = cli(&home, &["buildpacks"]).await;
    let first = out
        .stdout
        .lines()
        .find(|l| l.starts_with('1'))
        .unwrap_or("");
    let cells: Vec<&str> = first.split_whitespace().collect();
    assert!(
        cells.starts_with(&["1", "python"]) && cells.contains(&"false") && cells.contains(&"true"),
        "python first, disabled and locked\n{out}"
    );
    let out = cli(&home, &["delete-buildpack", "python", "-f"]).await;
    assert!(out.success, "delete-buildpack failed\n{out}");
    let out = cli(&home, &["buildpacks"]).await;
    assert!(
        !out.stdout.contains("python") && out.stdout.contains("e2e_legacy"),
        "{out}"
    );

    // kill -9 and start again: apps, packages and droplets are all there,
    // and the instances come back behind their routes.
    server.kill_hard().await;
    let mut server = Server::start(&data_dir, api_port, router_port, &cell_network).await;
    let out = cli(&home, &["apps"]).await;
    assert!(out.success, "apps failed after restart\n{out}");
    for name in ["envprobe", "hello"] {
        assert!(
            out.stdout.contains(name),
            "{name} lost in the restart\n{out}"
        );
    }
    let response = wait_for_200(router_port, "hello.localhost", Duration::from_secs(60)).await;
    assert_eq!(
        response.status(),
        200,
        "hello did not come back after kill -9\n{}",
        server.log()
    );
    let response = wait_for_200(router_port, "envprobe.localhost", Duration::from_secs(60)).await;
    assert_eq!(
        response.status(),
        200,
        "envprobe did not come back after kill -9\n{}",
        server.log()
    );
    // The killed run's namespaces and veths are gone: the two instances
    // (and no staging task) have one each, and at most one more is made
    // ahead for the next container; each has its veth.
    let names = kiln_cell::network::Names::for_cell(&server.cell_id);
    let (netns, veths) = cell_network_objects(&names);
    assert!(
        (2..=3).contains(&netns) && veths == netns,
        "namespaces {netns} and veths {veths} after the restart\n{}",
        server.log()
    );

    server.stop().await;
    assert_eq!(
        cell_network_objects(&names),
        (0, 0),
        "a stopped cell leaves no network behind"
    );
    let bridge = std::process::Command::new("ip")
        .args(["link", "show", &names.bridge])
        .output()
        .unwrap();
    assert!(!bridge.status.success(), "the bridge outlived the server");
    // The restart swept what the killed run left, the stop the rest: no
    // container file system is still mounted.
    assert_eq!(mounts_under(&data_dir), Vec::<String>::new());
}

/// `kiln download-droplet hello`, then the droplet uploaded by hand to a
/// new app `hello-copy`, which must answer through the router.
async fn droplet_to_another_app(home: &Path, router_port: u16, scratch: &Path) {
    let file = scratch.join("hello-droplet.tgz");
    let out = cli(
        home,
        &[
            "download-droplet",
            "hello",
            "--path",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.success && out.stdout.contains("Droplet downloaded successfully"),
        "download-droplet failed\n{out}"
    );
    let bits = std::fs::read(&file).unwrap();
    assert_eq!(&bits[..2], &[0x1f, 0x8b], "a gzip file");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config.json")).unwrap()).unwrap();
    let api = config["api"].as_str().unwrap().to_string();
    let token = config["access_token"].as_str().unwrap().to_string();
    let space = config["space"]["guid"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        http.request(method, format!("{api}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let json = |r: reqwest::Response| async move {
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(status.is_success(), "{status} {v}");
        v
    };
    let apps = json(
        call(
            reqwest::Method::GET,
            "/v3/apps?names=hello",
            serde_json::json!(null),
        )
        .await
        .unwrap(),
    )
    .await;
    let hello = apps["resources"][0]["guid"].as_str().unwrap().to_string();
    let current = json(
        call(
            reqwest::Method::GET,
            &format!("/v3/apps/{hello}/droplets/current"),
            serde_json::json!(null),
        )
        .await
        .unwrap(),
    )
    .await;
    let app = json(
        call(
            reqwest::Method::POST,
            "/v3/apps",
            serde_json::json!({"name": "hello-copy", "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await
        .unwrap(),
    )
    .await;
    let copy = app["guid"].as_str().unwrap().to_string();
    let droplet = json(
        call(
            reqwest::Method::POST,
            "/v3/droplets",
            serde_json::json!({"relationships": {"app": {"data": {"guid": copy}}},
                "process_types": current["process_types"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    let droplet = droplet["guid"].as_str().unwrap().to_string();
    let form = reqwest::multipart::Form::new().part(
        "bits",
        reqwest::multipart::Part::bytes(bits).file_name("droplet.tgz"),
    );
    let r = http
        .post(format!("{api}/v3/droplets/{droplet}/upload"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    json(
        call(
            reqwest::Method::PATCH,
            &format!("/v3/apps/{copy}/relationships/current_droplet"),
            serde_json::json!({"data": {"guid": droplet}}),
        )
        .await
        .unwrap(),
    )
    .await;
    let out = cli(
        home,
        &[
            "map-route",
            "hello-copy",
            "localhost",
            "--hostname",
            "hello-copy",
        ],
    )
    .await;
    assert!(out.success, "map-route failed\n{out}");
    json(
        call(
            reqwest::Method::POST,
            &format!("/v3/apps/{copy}/actions/start"),
            serde_json::json!({}),
        )
        .await
        .unwrap(),
    )
    .await;
    let response = wait_for_200(router_port, "hello-copy.localhost", Duration::from_secs(60)).await;
    let text = response.text().await.unwrap();
    assert!(text.starts_with("Hello from Kiln!"), "{text}");
    let out = cli(home, &["delete", "hello-copy", "-f"]).await;
    assert!(out.success, "delete hello-copy failed\n{out}");
}

/// The cell's network namespaces and host-side veths on this machine.
fn cell_network_objects(names: &kiln_cell::network::Names) -> (usize, usize) {
    let prefix = names.netns("");
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0);
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let veths = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter(|l| l.contains(&format!(": {}", names.veth_prefix())))
        .count();
    (netns, veths)
}
