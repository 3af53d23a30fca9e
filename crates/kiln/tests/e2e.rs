//! End to end, as a user does it: the real `kiln` binary runs the server
//! (real SQLite, blobstore on disk, real runc containers, real router), and
//! the same binary as the CLI logs in, creates buildpacks and pushes apps;
//! then the apps are reached over HTTP through the router. The server is
//! killed with SIGKILL and started again, and nothing is lost.
//!
//! Needs root and runc. Without them it skips with a loud message, unless
//! `KILN_REQUIRE_RUNC=1` (CI sets it), where it fails instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const ADMIN_PASSWORD: &str = "e2e-admin-secret";

/// One whole server at a time, under `cargo test` too (nextest runs each
/// test in a process of its own and groups them: `.config/nextest.toml`).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kiln_binary() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Whether this machine can run the test; panics where it must but cannot.
fn runnable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let runc = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && runc {
        return true;
    }
    let why = format!("root: {root}, runc on PATH: {runc}");
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("the end-to-end test must run here (KILN_REQUIRE_RUNC=1) but cannot: {why}");
    }
    eprintln!("\n\n*** SKIPPING the end-to-end test: it needs root and runc ({why}) ***\n\n");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A /24 in 10.200.0.0/13 that no address on this machine is in yet, so
/// that this server's cell network does not meet another test's.
fn free_subnet() -> String {
    let taken = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let seed = std::process::id() ^ free_port() as u32;
    for i in 0..2048u32 {
        let n = (seed.wrapping_mul(2654435761).wrapping_add(i)) % 2048;
        let (b, c) = (200 + n / 256, n % 256);
        if !taken.contains(&format!(" 10.{b}.{c}.")) {
            return format!("10.{b}.{c}.0/24");
        }
    }
    panic!("no free subnet for the e2e cell");
}

struct Server {
    child: Option<Child>,
    data_dir: PathBuf,
    api_port: u16,
    log_path: PathBuf,
    cell_id: String,
}

impl Server {
    /// `cell_network` and the cell id (from the API port) are kept across
    /// a restart, as an operator's configuration is.
    async fn start(data_dir: &Path, api_port: u16, router_port: u16, cell_network: &str) -> Server {
        Server::start_with(data_dir, api_port, router_port, cell_network, &[]).await
    }

    /// [`Server::start`] with more flags.
    async fn start_with(
        data_dir: &Path,
        api_port: u16,
        router_port: u16,
        cell_network: &str,
        extra: &[String],
    ) -> Server {
        Server::start_with_env(data_dir, api_port, router_port, cell_network, extra, &[]).await
    }

    /// [`Server::start_with`] with more environment variables.
    async fn start_with_env(
        data_dir: &Path,
        api_port: u16,
        router_port: u16,
        cell_network: &str,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Server {
        let cell_id = format!("e2e-cell-{api_port}");
        let log_path = data_dir.with_extension(format!("server-{}.log", free_port()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(kiln_binary())
            .args([
                "server",
                "--domain",
                "localhost",
                "--staging-timeout",
                "300",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--router-listen")
            .arg(format!("127.0.0.1:{router_port}"))
            .args(["--cell-id", &cell_id, "--cell-network", cell_network])
            .args(extra)
            .envs(env.iter().copied())
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting kiln server");
        let mut server = Server {
            child: Some(child),
            data_dir: data_dir.into(),
            api_port,
            log_path,
            cell_id,
        };
        server.wait_until_up().await;
        server
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/", self.api_url())).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kiln server exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "kiln server did not answer within 60s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn kill_hard(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// SIGTERM, as an operator stops it; the cell stops its containers.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().unwrap().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        clean_up_cell(&self.data_dir, &self.cell_id);
    }
}

/// Last resort after a failed test: no container of a cell that ran with
/// `data_dir` may outlive it, nor its network, nor a container's file
/// system stay mounted (its loop device goes with it).
fn clean_up_cell(data_dir: &Path, cell_id: &str) {
    let runc_root = data_dir.join("cell").join("runc");
    for id in runc_ids(&runc_root) {
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["delete", "--force", &id])
            .output();
    }
    kiln_cell::network::remove_leftovers_blocking(cell_id);
    for mount in mounts_under(data_dir) {
        let _ = std::process::Command::new("umount")
            .args(["-l", &mount])
            .output();
    }
}

/// The ids of the containers runc lists under `root`.
fn runc_ids(root: &Path) -> Vec<String> {
    std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

struct CliOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

async fn cli(home: &Path, args: &[&str]) -> CliOutput {
    cli_in(home, Path::new("."), args).await
}

/// `kiln curl PATH` through `home`'s API as JSON.
async fn curl_json(home: &Path, path: &str) -> serde_json::Value {
    let out = cli(home, &["curl", path]).await;
    assert!(out.success, "curl {path}\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("curl {path}: {e}\n{out}"))
}

/// The CLI run from `dir` (where `kiln push` looks for `manifest.yml`).
async fn cli_in(home: &Path, dir: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(kiln_binary())
        .args(args)
        .current_dir(dir)
        .env("KILN_HOME", home)
        .env("KILN_STARTUP_TIMEOUT", "120")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running the kiln cli");
    CliOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A server in `scratch` on free ports with a cell network of its own, and
/// a CLI home logged in to it; returns the server, the home and the
/// router's port.
async fn logged_in_server(scratch: &Path) -> (Server, PathBuf, u16) {
    let (api_port, router_port) = (free_port(), free_port());
    let data_dir = scratch.join("data");
    let server = Server::start(&data_dir, api_port, router_port, &free_subnet()).await;
    let home = scratch.join("home");
    login(&home, &server).await;
    (server, home, router_port)
}

/// `kiln login` as admin against `server`.
async fn login(home: &Path, server: &Server) {
    let api = server.api_url();
    let out = cli(
        home,
        &["login", "-a", &api, "-u", "admin", "-p", ADMIN_PASSWORD],
    )
    .await;
    assert!(out.success, "login failed\n{out}");
}

/// The suite's own legacy buildpack, registered first as `e2e_legacy`.
async fn create_legacy_buildpack(home: &Path) {
    let legacy = fixture("buildpacks/legacy");
    let path = legacy.to_str().unwrap();
    let out = cli(home, &["create-buildpack", "e2e_legacy", path, "1"]).await;
    assert!(out.success, "create-buildpack failed\n{out}");
}

async fn route_get(router_port: u16, host: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{router_port}/probe?x=1"))
        .header("Host", host)
        // A request the router never answers fails the test, not CI's clock.
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("request through the router")
}

/// moto's credentials, which the S3 blobstore reads from the environment.
const MOTO_CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", kiln_store::testing::ACCESS_KEY_ID),
    (
        "AWS_SECRET_ACCESS_KEY",
        kiln_store::testing::SECRET_ACCESS_KEY,
    ),
];

/// A cluster's shared state (issue 15) on loopback: a PostgreSQL server
/// and a moto S3 server with one bucket, both stopped on drop.
struct SharedState {
    pg: kiln_store::testing::Postgres,
    moto: kiln_store::testing::MotoS3,
    bucket: &'static str,
}

impl SharedState {
    /// `None`, loudly, when PostgreSQL or moto is not installed (their
    /// harnesses panic instead when `KILN_REQUIRE_RUNC=1`).
    async fn start(bucket: &'static str) -> Option<SharedState> {
        let pg = kiln_store::testing::Postgres::start().await?;
        let moto = kiln_store::testing::MotoS3::start().await?;
        moto.create_bucket(bucket).await;
        Some(SharedState { pg, moto, bucket })
    }

    fn blobstore_url(&self) -> String {
        self.moto.url(self.bucket)
    }

    /// The `kiln server` flags of a node on this state (the credentials
    /// are [`MOTO_CREDENTIALS`] in its environment).
    fn server_flags(&self) -> Vec<String> {
        [
            "--blobstore-url",
            &self.blobstore_url(),
            "--database-url",
            &self.pg.url(),
            "--database-max-connections",
            "4",
        ]
        .map(str::to_string)
        .to_vec()
    }
}

/// Logs in, creates the legacy buildpack, pushes the envprobe fixture as
/// `name` and waits for its first 200 through the router.
async fn push_envprobe(home: &Path, server: &Server, name: &str, router_port: u16) {
    login(home, server).await;
    create_legacy_buildpack(home).await;
    let probe_dir = fixture("apps/envprobe");
    let out = cli(home, &["push", name, "-p", probe_dir.to_str().unwrap()]).await;
    assert!(
        out.success,
        "push failed\n{out}\n--- server log ---\n{}",
        server.log()
    );
    let host = format!("{name}.localhost");
    let response = wait_for_200(router_port, &host, Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200, "{}", server.log());
}

/// Retries until the router answers 200 for `host` (routes follow the BBS
/// asynchronously), for at most `within`.
async fn wait_for_200(router_port: u16, host: &str, within: Duration) -> reqwest::Response {
    let deadline = Instant::now() + within;
    loop {
        let response = route_get(router_port, host).await;
        if response.status() == 200 || Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

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

/// Copies a fixture directory (files only, one level deep is enough here).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

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

/// Mount points under `dir` (the cell's container file systems).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Requests through the router, one after another, until `stop` is set
/// (at most `max`); returns each answer's status and `E2E_RELEASE`.
fn steady_traffic(
    router_port: u16,
    host: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: usize,
) -> tokio::task::JoinHandle<Vec<(u16, Option<String>)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && seen.len() < max {
            let r = route_get(router_port, host).await;
            let status = r.status().as_u16();
            let release = r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|p| p["e2e_env"]["E2E_RELEASE"].as_str().map(str::to_string));
            seen.push((status, release));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

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

/// A `kiln server --roles cell` process joined to a server's BBS, with its
/// own data dir, address and subnet.
struct CellNode {
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    cell_id: String,
    address: String,
    network: String,
    credentials: PathBuf,
    /// `--bbs-url` (several, comma-separated); `None`: the credentials'.
    bbs_url: Option<String>,
}

impl CellNode {
    fn new(
        scratch: &Path,
        cell_id: &str,
        address: &str,
        network: String,
        credentials: &Path,
    ) -> CellNode {
        CellNode {
            child: None,
            data_dir: scratch.join(cell_id),
            log_path: scratch.join(format!("{cell_id}.log")),
            cell_id: cell_id.into(),
            address: address.into(),
            network,
            credentials: credentials.into(),
            bbs_url: None,
        }
    }

    /// Starts the process (again); its log is appended to.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut command = Command::new(kiln_binary());
        command
            .args(["server", "--roles", "cell", "--bbs-credentials"])
            .arg(&self.credentials);
        if let Some(urls) = &self.bbs_url {
            command.args(["--bbs-url", urls]);
        }
        let child = command
            .args(["--cell-id", &self.cell_id, "--listen", &self.address])
            .args(["--cell-network", &self.network])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting a kiln cell");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the BBS lists the cell with its capacity.
    async fn wait_present(&mut self, bbs: &kiln_bbs_client::HttpBbsClient) {
        use kiln_bbs_client::BbsClient;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let cells = bbs.cells().await.unwrap_or_default();
            if cells
                .iter()
                .any(|c| c.cell_id == self.cell_id && c.capacity.memory_mb > 0)
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "cell {} exited with {status}:\n{}",
                    self.cell_id,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "cell {} did not join within 120 s:\n{}",
                self.cell_id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn kill_hard(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    /// Waits for the process to exit by itself, for at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = tokio::time::timeout(within, child.wait())
            .await
            .unwrap_or_else(|_| panic!("cell {} did not exit:\n{}", self.cell_id, self.log()))
            .unwrap();
        self.child = None;
        status
    }

    fn containers(&self) -> usize {
        runc_containers(&self.data_dir.join("cell").join("runc"))
    }
}

fn runc_containers(root: &Path) -> usize {
    runc_ids(root).len()
}

impl Drop for CellNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        clean_up_cell(&self.data_dir, &self.cell_id);
    }
}

/// A subnet unlike the ones already picked (nothing is on them yet).
fn another_subnet(taken: &[&str]) -> String {
    loop {
        let subnet = free_subnet();
        if !taken.contains(&subnet.as_str()) {
            return subnet;
        }
    }
}

/// The process's instances as `GET /v3/processes/:guid/stats` shows them:
/// (index, state, host).
async fn instances(home: &Path, process_guid: &str) -> Vec<(u64, String, String)> {
    let out = cli(
        home,
        &["curl", &format!("/v3/processes/{process_guid}/stats")],
    )
    .await;
    assert!(out.success, "{out}");
    let stats: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    stats["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(u64::MAX),
                r["state"].as_str().unwrap_or("").to_string(),
                r["host"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits until every one of `n` instances is RUNNING and `ok` holds for
/// their hosts; returns the hosts by index.
async fn wait_running(
    home: &Path,
    process_guid: &str,
    n: usize,
    within: Duration,
    ok: impl Fn(&[String]) -> bool,
    what: &str,
    logs: &dyn Fn() -> String,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let now = instances(home, process_guid).await;
        let hosts: Vec<String> = now.iter().map(|(_, _, h)| h.clone()).collect();
        if now.len() == n && now.iter().all(|(_, s, _)| s == "RUNNING") && ok(&hosts) {
            return hosts;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; instances {now:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_join_die_and_evacuate() {
    if !runnable() {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (api_port, router_port, bbs_port) = (free_port(), free_port(), free_port());
    let main_network = free_subnet();
    let server = Server::start_with(
        &scratch.path().join("data"),
        api_port,
        router_port,
        &main_network,
        &["--bbs-listen".into(), format!("127.0.0.1:{bbs_port}")],
    )
    .await;
    let home = scratch.path().join("home");
    login(&home, &server).await;
    let credentials = scratch.path().join("data/bbs/credentials");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the credentials are the owner's only");
    let creds = kiln_bbs_client::Credentials::read(&credentials).unwrap();
    assert_eq!(creds.bbs_url, format!("http://127.0.0.1:{bbs_port}"));
    let bbs = kiln_bbs_client::HttpBbsClient::from_credentials(&creds, None).unwrap();

    // Refused: forged credentials, and a process without any.
    let forged = scratch.path().join("forged");
    std::fs::write(
        &forged,
        serde_json::json!({"bbs_url": creds.bbs_url, "token": "kbbs1.0.00ff"}).to_string(),
    )
    .unwrap();
    let out = Command::new(kiln_binary())
        .args([
            "server",
            "--roles",
            "cell",
            "--cell-id",
            "forger",
            "--cell-network",
            "none",
        ])
        .arg("--bbs-credentials")
        .arg(&forged)
        .arg("--data-dir")
        .arg(scratch.path().join("forger"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("refused this node's credentials"), "{text}");
    let out = Command::new(kiln_binary())
        .args(["server", "--roles", "router"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("--bbs-credentials"),
        "{text}"
    );

    // Two cells join on other loopback addresses.
    let net_b = another_subnet(&[&main_network]);
    let net_c = another_subnet(&[&main_network, &net_b]);
    let id = |name: &str| format!("{name}-{bbs_port}");
    let mut cell_b = CellNode::new(
        scratch.path(),
        &id("cell-b"),
        "127.0.0.2",
        net_b,
        &credentials,
    );
    let mut cell_c = CellNode::new(
        scratch.path(),
        &id("cell-c"),
        "127.0.0.3",
        net_c,
        &credentials,
    );
    cell_b.spawn();
    cell_c.spawn();
    cell_b.wait_present(&bbs).await;
    cell_c.wait_present(&bbs).await;

    // A second process under a live cell's id is refused, and leaves the
    // live cell's network alone.
    let net_dup = another_subnet(&[&main_network, &cell_b.network, &cell_c.network]);
    let mut dup = CellNode::new(
        scratch.path(),
        &id("cell-b"),
        "127.0.0.4",
        net_dup,
        &credentials,
    );
    dup.data_dir = scratch.path().join("dup");
    dup.log_path = scratch.path().join("dup.log");
    dup.spawn();
    let status = dup.wait_exit(Duration::from_secs(120)).await;
    assert!(!status.success(), "{}", dup.log());
    assert!(dup.log().contains("in use by a live cell"), "{}", dup.log());
    std::mem::forget(dup); // its Drop would sweep cell-b's network by name
    cell_b.wait_present(&bbs).await;

    // An app staged on whichever cell, scaled to 6: instances on every
    // cell, each reached through the router.
    let (log_b, log_c) = (cell_b.log_path.clone(), cell_c.log_path.clone());
    let all_logs = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}\n--- cell-b ---\n{}\n--- cell-c ---\n{}",
            server.log(),
            read(&log_b),
            read(&log_c)
        )
    };
    create_legacy_buildpack(&home).await;
    let probe = fixture("apps/envprobe");
    let out = cli(
        &home,
        &["push", "mc", "-p", probe.to_str().unwrap(), "-m", "128M"],
    )
    .await;
    assert!(out.success, "push failed\n{out}\n{}", all_logs());
    assert!(
        cli(&home, &["set-env", "mc", "E2E_DRAIN_SECONDS", "1"])
            .await
            .success
    );
    assert!(cli(&home, &["restart", "mc"]).await.success);
    let out = cli(&home, &["scale", "mc", "-i", "6"]).await;
    assert!(out.success, "scale failed\n{out}");
    let app: serde_json::Value =
        serde_json::from_str(&cli(&home, &["curl", "/v3/apps?names=mc"]).await.stdout).unwrap();
    let app_guid = app["resources"][0]["guid"].as_str().unwrap().to_string();
    let processes: serde_json::Value = serde_json::from_str(
        &cli(&home, &["curl", &format!("/v3/apps/{app_guid}/processes")])
            .await
            .stdout,
    )
    .unwrap();
    let process_guid = processes["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let every_cell = |hosts: &[String]| {
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .iter()
            .all(|a| hosts.iter().any(|h| h == a))
    };
    let hosts = wait_running(
        &home,
        &process_guid,
        6,
        Duration::from_secs(180),
        every_cell,
        "6 instances on 3 cells",
        &all_logs,
    )
    .await;
    println!("instances by index on hosts {hosts:?}");
    for index in 0..6 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{router_port}/probe"))
                .header("Host", "mc.localhost")
                .header("X-Cf-App-Instance", format!("{app_guid}:{index}"))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                let probe: serde_json::Value = response.json().await.unwrap();
                let addr = probe["env"]["CF_INSTANCE_ADDR"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                assert_eq!(probe["env"]["CF_INSTANCE_INDEX"], index.to_string());
                assert!(addr.starts_with("127.0.0."), "{probe}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {index} never answered\n{}",
                all_logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // A router-only node joined the same way serves the app too.
    let remote_router_port = free_port();
    let router_log = scratch.path().join("router-node.log");
    let mut router_node = Command::new(kiln_binary())
        .args(["server", "--roles", "router", "--bbs-credentials"])
        .arg(&credentials)
        .arg("--router-listen")
        .arg(format!("127.0.0.1:{remote_router_port}"))
        .arg("--data-dir")
        .arg(scratch.path().join("router-node"))
        .stdout(std::fs::File::create(&router_log).unwrap())
        .stderr(std::fs::File::create(scratch.path().join("router-node.err")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let listening = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", remote_router_port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < listening,
            "the router node never listened\n{}",
            std::fs::read_to_string(scratch.path().join("router-node.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = wait_for_200(remote_router_port, "mc.localhost", Duration::from_secs(60)).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        std::fs::read_to_string(scratch.path().join("router-node.err")).unwrap_or_default()
    );
    router_node.start_kill().unwrap();
    router_node.wait().await.unwrap();

    // Logs from remote cells reach the log cache.
    let out = cli(&home, &["logs", "mc", "--recent"]).await;
    assert!(out.success, "{out}");
    for host in ["127.0.0.2", "127.0.0.3"] {
        let index = hosts.iter().position(|h| h == host).unwrap();
        assert!(
            out.stdout.contains(&format!("[APP/PROC/WEB/{index}]")),
            "no log line of instance {index} on {host}\n{out}"
        );
    }

    // SIGKILL cell-b: its instances run again on the others. Its
    // containers outlive it, and they stay routed (SUSPECT once its
    // presence expires) until their replacements run: no request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(router_port, "mc.localhost", stop.clone(), 20_000);
    let killed = Instant::now();
    cell_b.kill_hard().await;
    let no_b = |hosts: &[String]| hosts.iter().all(|h| h != "127.0.0.2");
    wait_running(
        &home,
        &process_guid,
        6,
        Duration::from_secs(180),
        no_b,
        "re-placed after SIGKILL",
        &all_logs,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    println!(
        "all 6 instances RUNNING again {:.1} s after SIGKILL of a cell (cell TTL 15 s); \
         {} requests through the router meanwhile, {} failed",
        killed.elapsed().as_secs_f64(),
        seen.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed while a killed cell's instances were re-placed: {failed:?}\n{}",
        all_logs()
    );

    // cell-b restarted with the same id after kill -9: it destroys its
    // leftovers and takes its id back; nothing runs twice.
    cell_b.spawn();
    cell_b.wait_present(&bbs).await;
    let leftovers_gone = Instant::now() + Duration::from_secs(60);
    while cell_b.containers() > 0 {
        assert!(
            Instant::now() < leftovers_gone,
            "cell-b kept its leftovers\n{}",
            cell_b.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // SIGTERM cell-c under traffic: it evacuates, and no request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(router_port, "mc.localhost", stop.clone(), 20_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on_c = instances(&home, &process_guid)
        .await
        .iter()
        .filter(|(_, _, h)| h == "127.0.0.3")
        .count();
    let evacuating = Instant::now();
    cell_c.signal("-TERM");
    let status = cell_c.wait_exit(Duration::from_secs(300)).await;
    let evacuated_in = evacuating.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    assert!(
        status.success(),
        "cell-c exited with {status}\n{}",
        cell_c.log()
    );
    // Each of its instances was stopped only once its replacement ran.
    assert_eq!(
        cell_c
            .log()
            .matches("replacement runs elsewhere; stopping the evacuated instance")
            .count(),
        on_c,
        "{}",
        cell_c.log()
    );
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    println!(
        "cell-c evacuated in {:.1} s; {} requests through the router during it, {} failed",
        evacuated_in.as_secs_f64(),
        seen.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed during the evacuation: {failed:?}\n{}",
        all_logs()
    );
    let no_c = |hosts: &[String]| hosts.iter().all(|h| h != "127.0.0.3");
    wait_running(
        &home,
        &process_guid,
        6,
        Duration::from_secs(60),
        no_c,
        "after evacuation",
        &all_logs,
    )
    .await;
    // Exactly six containers run on the cells that are left.
    let main_runc = scratch.path().join("data/cell/runc");
    assert_eq!(
        runc_containers(&main_runc) + cell_b.containers() + cell_c.containers(),
        6,
        "one container per instance, none twice"
    );
}

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

/// `GET http://<router>/<path>` for `host`, as text, once it answers 200.
async fn route_text(router_port: u16, host: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{router_port}{path}"))
            .header("Host", host)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("request through the router");
        if response.status() == 200 {
            return response.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} answers {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An image whose start command writes what it runs as (id, working
/// directory, environment) where its web server (busybox httpd on `$PORT`,
/// the first exposed port) serves it; USER is a name from its own
/// /etc/passwd, WORKDIR /www.
fn probe_image() -> kiln_image::testing::TestImage {
    use kiln_image::testing::{LayerBuilder, TestImage};
    let base = LayerBuilder::new()
        .busybox(&["sh", "httpd", "env", "id", "pwd", "cat", "echo"])
        .file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/www:/bin/sh\n",
        )
        .file("etc/group", b"root:x:0:\napp:x:1234:\n")
        .dir("www/")
        .file("www/index.html", b"hello from an image\n")
        .file("www/secret.txt", b"removed by the next layer\n")
        .gzip();
    // A second layer: files the app (uid 1234) may overwrite, and a
    // whiteout hiding a file of the first.
    let top = LayerBuilder::new()
        .file_owned("www/id.txt", b"", 1234, 1234)
        .file_owned("www/pwd.txt", b"", 1234, 1234)
        .file_owned("www/env.txt", b"", 1234, 1234)
        .whiteout("www/secret.txt")
        .gzip();
    let mut image = TestImage::new(vec![base, top]);
    image.entrypoint = vec!["/bin/sh".into(), "-c".into()];
    image.cmd =
        vec!["id > id.txt; pwd > pwd.txt; env > env.txt; exec httpd -f -p $PORT -h /www".into()];
    image.env.push("FROM_IMAGE=image".into());
    image.env.push("OVERRIDE=image".into());
    image.working_dir = "/www".into();
    image.user = "app".into();
    image.exposed_ports = vec!["9000/tcp".into()];
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_images_push_by_tag_and_digest_and_fail_clearly() {
    let test = "docker_images_push_by_tag_and_digest_and_fail_clearly";
    if !runnable()
        || !kiln_image::testing::registry_available(test)
        || !kiln_image::testing::busybox_available(test)
    {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let registry = kiln_image::testing::TestRegistry::start();
    let image = probe_image();
    let digest = registry.push("probe", "v1", &image).await;
    let layer_pulls = || -> usize {
        use sha2::Digest;
        image
            .layers
            .iter()
            .map(|l| format!("sha256:{}", hex::encode(sha2::Sha256::digest(&l.blob))))
            .map(|d| registry.requests(&format!("/blobs/{d}")))
            .sum()
    };
    let scratch = tempfile::tempdir().unwrap();
    let (server, home, router_port) = logged_in_server(scratch.path()).await;

    // By tag, from a manifest with `docker:` and an env var that wins
    // over the image's.
    let dir = scratch.path().join("dimg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.yml"),
        format!(
            "applications:\n- name: dimg\n  docker: {{image: {}}}\n  memory: 128M\n  env: {{OVERRIDE: app}}\n",
            registry.reference("probe", "v1")
        ),
    )
    .unwrap();
    let out = cli_in(&home, &dir, &["push"]).await;
    assert!(out.success, "docker push failed\n{out}\n{}", server.log());
    assert!(
        out.stdout.contains(&format!("resolved to {digest}")),
        "staging must say what it resolved\n{out}"
    );
    assert_eq!(
        route_text(router_port, "dimg.localhost", "/index.html").await,
        "hello from an image\n"
    );
    let id = route_text(router_port, "dimg.localhost", "/id.txt").await;
    assert!(
        id.starts_with("uid=1234(app) gid=1234(app)"),
        "USER app: {id}"
    );
    let pwd = route_text(router_port, "dimg.localhost", "/pwd.txt").await;
    assert_eq!(pwd.trim(), "/www", "WORKDIR");
    let env = route_text(router_port, "dimg.localhost", "/env.txt").await;
    for want in [
        "FROM_IMAGE=image",
        "OVERRIDE=app",
        "PORT=9000",
        "CF_INSTANCE_INDEX=0",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing:\n{env}");
    }
    assert!(env.contains("VCAP_APPLICATION="), "{env}");
    // The whiteout of the second layer hides the first layer's file.
    let hidden = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{router_port}/secret.txt"))
        .header("Host", "dimg.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);

    // The droplet pins the digest; the password-free package shows no password.
    let app_out = cli(&home, &["curl", "/v3/apps?names=dimg"]).await;
    assert!(app_out.stdout.contains("\"docker\""), "{app_out}");

    // By digest, a second app: its layers are cached, nothing is pulled again.
    let pulls_before = layer_pulls();
    assert!(pulls_before >= image.layers.len(), "every layer was pulled");
    let pinned = format!("{}/probe@{digest}", registry.host());
    let out = cli(&home, &["push", "ddig", "-o", &pinned, "-m", "128M"]).await;
    assert!(
        out.success,
        "push by digest failed\n{out}\n{}",
        server.log()
    );
    assert_eq!(
        route_text(router_port, "ddig.localhost", "/index.html").await,
        "hello from an image\n"
    );
    assert_eq!(
        layer_pulls(),
        pulls_before,
        "a cached layer is not pulled again"
    );

    // A tag that does not exist: a FAILED build that says so, no app runs.
    let missing = registry.reference("probe", "nope");
    let out = cli(&home, &["push", "dmissing", "-o", &missing]).await;
    assert!(!out.success, "an unknown tag must fail\n{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("manifest unknown"),
        "the reason must say which\n{out}"
    );

    // An unreachable registry.
    let gone = format!("127.0.0.1:{}/probe:v1", free_port());
    let out = cli(&home, &["push", "dgone", "-o", &gone]).await;
    assert!(!out.success, "an unreachable registry must fail\n{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("unreachable"),
        "the reason must say which\n{out}"
    );
}

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

/// Issue 15: the staging cell PUT the droplet into the bucket itself (the
/// API logged checking it) and never sent it through the API's upload
/// route (which logs every droplet it receives).
fn assert_droplet_went_straight_to_the_store(log: &str) {
    assert!(
        log.contains("droplet stored by the cell in the blobstore and checked"),
        "no droplet PUT into the store by the cell was checked\n{log}"
    );
    assert!(
        !log.contains("droplet received from a cell through the api"),
        "a droplet went through the api\n{log}"
    );
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

/// The interpreter of the compatibility suite's venv (`scripts/install-deps.sh`
/// puts the pinned PyPI `cloudfoundry-client` there); `None` when it is not
/// installed, which fails the test where it must run (KILN_REQUIRE_RUNC=1).
fn cf_python() -> Option<PathBuf> {
    let python = std::env::var_os("KILN_CF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kiln-compat/bin/python"));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import cloudfoundry_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!("{} cannot import cloudfoundry_client", python.display());
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!(
            "the compatibility suite must run here (KILN_REQUIRE_RUNC=1) but cannot: {why}; run scripts/install-deps.sh"
        );
    }
    eprintln!("\n\n*** SKIPPING the cloudfoundry-client suite: {why} ***\n\n");
    None
}

/// The unmodified PyPI `cloudfoundry-client` drives a real server
/// (`tests/compat/cf_python_client.py`): org, spaces, user and roles, a push
/// through the raw v3 calls, a user-provided service bound and read from
/// inside the instance, audit events, and a developer of another space who
/// sees and changes none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_cloudfoundry_client_drives_kiln() {
    if !runnable() {
        return;
    }
    let Some(python) = cf_python() else {
        return;
    };
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (mut server, home, router_port) = logged_in_server(scratch.path()).await;
    create_legacy_buildpack(&home).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cf_python_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("KILN_API", server.api_url())
        .env("KILN_ROUTER", format!("127.0.0.1:{router_port}"))
        .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("KILN_APP_DIR", fixture("apps/envprobe"))
        .env("KILN_SCRATCH", scratch.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running the compatibility script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("compat: OK"),
        "the cloudfoundry-client suite failed\n{stdout}\n{stderr}\n--- server log ---\n{}",
        server.log()
    );
    eprintln!("{stdout}");
    server.stop().await;
}

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
