//! What every end-to-end test stands on: the server as a child process,
//! the CLI, free ports and subnets, and the clean-up a failed test needs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub(crate) const ADMIN_PASSWORD: &str = "e2e-admin-secret";

/// One whole server at a time, under `cargo test` too (nextest runs each
/// test in a process of its own and groups them: `.config/nextest.toml`).
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn kiln_binary() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub(crate) fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Whether this machine can run the test; panics where it must but cannot.
pub(crate) fn runnable() -> bool {
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

/// A port for a server this test starts later.
pub(crate) use kiln_store::testing::free_port;

/// A /24 in 10.200.0.0/13 that no address on this machine is in yet, so
/// that this server's cell network does not meet another test's.
pub(crate) fn free_subnet() -> String {
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

pub(crate) struct Server {
    pub(crate) child: Option<Child>,
    pub(crate) data_dir: PathBuf,
    pub(crate) api_port: u16,
    pub(crate) log_path: PathBuf,
    pub(crate) cell_id: String,
}

impl Server {
    /// `cell_network` and the cell id (from the API port) are kept across
    /// a restart, as an operator's configuration is.
    pub(crate) async fn start(
        data_dir: &Path,
        api_port: u16,
        router_port: u16,
        cell_network: &str,
    ) -> Server {
        Server::start_with(data_dir, api_port, router_port, cell_network, &[]).await
    }

    /// [`Server::start`] with more flags.
    pub(crate) async fn start_with(
        data_dir: &Path,
        api_port: u16,
        router_port: u16,
        cell_network: &str,
        extra: &[String],
    ) -> Server {
        Server::start_with_env(data_dir, api_port, router_port, cell_network, extra, &[]).await
    }

    /// [`Server::start_with`] with more environment variables.
    pub(crate) async fn start_with_env(
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

    pub(crate) fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub(crate) async fn wait_until_up(&mut self) {
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

    pub(crate) async fn kill_hard(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// SIGTERM, as an operator stops it; the cell stops its containers.
    pub(crate) async fn stop(&mut self) {
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
pub(crate) fn clean_up_cell(data_dir: &Path, cell_id: &str) {
    let runc_root = data_dir.join("cell").join("runc");
    for id in runc_ids(&runc_root) {
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["delete", "--force", &id])
            .output();
    }
    kiln_cell::network::remove_leftovers_blocking(cell_id);
    // Innermost first, so that each unmount finds its mount point.
    let mut mounts = mounts_under(data_dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = std::process::Command::new("umount")
            .args(["-l", &mount])
            .output();
    }
}

/// The ids of the containers runc lists under `root`.
pub(crate) fn runc_ids(root: &Path) -> Vec<String> {
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

pub(crate) struct CliOutput {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CliOutput {
    /// Both streams, for a test that looks for a message in either.
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
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

pub(crate) async fn cli(home: &Path, args: &[&str]) -> CliOutput {
    cli_in(home, Path::new("."), args).await
}

/// `kiln curl PATH` through `home`'s API as JSON.
pub(crate) async fn curl_json(home: &Path, path: &str) -> serde_json::Value {
    let out = cli(home, &["curl", path]).await;
    assert!(out.success, "curl {path}\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("curl {path}: {e}\n{out}"))
}

/// The CLI run from `dir` (where `kiln push` looks for `manifest.yml`).
pub(crate) async fn cli_in(home: &Path, dir: &Path, args: &[&str]) -> CliOutput {
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
pub(crate) async fn logged_in_server(scratch: &Path) -> (Server, PathBuf, u16) {
    let (api_port, router_port) = (free_port(), free_port());
    let data_dir = scratch.join("data");
    let server = Server::start(&data_dir, api_port, router_port, &free_subnet()).await;
    let home = scratch.join("home");
    login(&home, &server).await;
    (server, home, router_port)
}

/// `kiln login` as admin against `server`.
pub(crate) async fn login(home: &Path, server: &Server) {
    let api = server.api_url();
    let out = cli(
        home,
        &["login", "-a", &api, "-u", "admin", "-p", ADMIN_PASSWORD],
    )
    .await;
    assert!(out.success, "login failed\n{out}");
}

/// The suite's own legacy buildpack, registered first as `e2e_legacy`.
pub(crate) async fn create_legacy_buildpack(home: &Path) {
    let legacy = fixture("buildpacks/legacy");
    let path = legacy.to_str().unwrap();
    let out = cli(home, &["create-buildpack", "e2e_legacy", path, "1"]).await;
    assert!(out.success, "create-buildpack failed\n{out}");
}

pub(crate) async fn route_get(router_port: u16, host: &str) -> reqwest::Response {
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
pub(crate) const MOTO_CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", kiln_store::testing::ACCESS_KEY_ID),
    (
        "AWS_SECRET_ACCESS_KEY",
        kiln_store::testing::SECRET_ACCESS_KEY,
    ),
];

/// A cluster's shared state (issue 15) on loopback: a PostgreSQL server
/// and a moto S3 server with one bucket, both stopped on drop.
pub(crate) struct SharedState {
    pub(crate) pg: kiln_store::testing::Postgres,
    pub(crate) moto: kiln_store::testing::MotoS3,
    pub(crate) bucket: &'static str,
}

impl SharedState {
    /// `None`, loudly, when PostgreSQL or moto is not installed (their
    /// harnesses panic instead when `KILN_REQUIRE_RUNC=1`).
    pub(crate) async fn start(bucket: &'static str) -> Option<SharedState> {
        let pg = kiln_store::testing::Postgres::start().await?;
        let moto = kiln_store::testing::MotoS3::start().await?;
        moto.create_bucket(bucket).await;
        Some(SharedState { pg, moto, bucket })
    }

    pub(crate) fn blobstore_url(&self) -> String {
        self.moto.url(self.bucket)
    }

    /// The `kiln server` flags of a node on this state (the credentials
    /// are [`MOTO_CREDENTIALS`] in its environment).
    pub(crate) fn server_flags(&self) -> Vec<String> {
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
pub(crate) async fn push_envprobe(home: &Path, server: &Server, name: &str, router_port: u16) {
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
pub(crate) async fn wait_for_200(
    router_port: u16,
    host: &str,
    within: Duration,
) -> reqwest::Response {
    let deadline = Instant::now() + within;
    loop {
        let response = route_get(router_port, host).await;
        if response.status() == 200 || Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Mount points under `dir` (the cell's container file systems).
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// `GET http://<router>/<path>` for `host`, as text, once it answers 200.
pub(crate) async fn route_text(router_port: u16, host: &str, path: &str) -> String {
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

/// Requests through the router, one after another, until `stop` is set
/// (at most `max`); returns each answer's status and `E2E_RELEASE`.
pub(crate) fn steady_traffic(
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

/// A subnet unlike the ones already picked (nothing is on them yet).
pub(crate) fn another_subnet(taken: &[&str]) -> String {
    loop {
        let subnet = free_subnet();
        if !taken.contains(&subnet.as_str()) {
            return subnet;
        }
    }
}

/// A `kiln server --roles cell` process joined to a server's BBS, with its
/// own data dir, address and subnet.
pub(crate) struct CellNode {
    pub(crate) child: Option<Child>,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) cell_id: String,
    pub(crate) address: String,
    pub(crate) network: String,
    pub(crate) credentials: PathBuf,
    /// `--bbs-url` (several, comma-separated); `None`: the credentials'.
    pub(crate) bbs_url: Option<String>,
}

impl CellNode {
    pub(crate) fn new(
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
    pub(crate) fn spawn(&mut self) {
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

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the BBS lists the cell with its capacity.
    pub(crate) async fn wait_present(&mut self, bbs: &kiln_bbs_client::HttpBbsClient) {
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

    pub(crate) async fn kill_hard(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    /// Waits for the process to exit by itself, for at most `within`.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = tokio::time::timeout(within, child.wait())
            .await
            .unwrap_or_else(|_| panic!("cell {} did not exit:\n{}", self.cell_id, self.log()))
            .unwrap();
        self.child = None;
        status
    }

    pub(crate) fn containers(&self) -> usize {
        runc_containers(&self.data_dir.join("cell").join("runc"))
    }
}

impl Drop for CellNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        clean_up_cell(&self.data_dir, &self.cell_id);
    }
}

/// Waits until every one of `n` instances is RUNNING and `ok` holds for
/// their hosts; returns the hosts by index.
pub(crate) async fn wait_running(
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

/// Issue 15: the staging cell PUT the droplet into the bucket itself (the
/// API logged checking it) and never sent it through the API's upload
/// route (which logs every droplet it receives).
pub(crate) fn assert_droplet_went_straight_to_the_store(log: &str) {
    assert!(
        log.contains("droplet stored by the cell in the blobstore and checked"),
        "no droplet PUT into the store by the cell was checked\n{log}"
    );
    assert!(
        !log.contains("droplet received from a cell through the api"),
        "a droplet went through the api\n{log}"
    );
}

/// Copies a fixture directory (files only, one level deep is enough here).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// An image whose start command writes what it runs as (id, working
/// directory, environment) where its web server (busybox httpd on `$PORT`,
/// the first exposed port) serves it; USER is a name from its own
/// /etc/passwd, WORKDIR /www.
pub(crate) fn probe_image() -> kiln_image::testing::TestImage {
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

pub(crate) fn runc_containers(root: &Path) -> usize {
    runc_ids(root).len()
}

/// The process's instances as `GET /v3/processes/:guid/stats` shows them:
/// (index, state, host).
pub(crate) async fn instances(home: &Path, process_guid: &str) -> Vec<(u64, String, String)> {
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
