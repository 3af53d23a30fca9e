//! Docker images end to end, where they go wrong (issue 12's "Bad input and
//! faults") and where a tag moves: the real `kiln` binary runs the server
//! (API, BBS, a cell with runc, router) and the CLI; images come from
//! Debian's `docker-registry` on 127.0.0.1, built by the test.
//!
//! Every bad image must end in a FAILED build whose `error` says which
//! failure it was (Cloud Controller's `StagingError - …`), leave no
//! staged droplet and no partial file in the cell's layer cache, and a good push
//! afterwards must work. A registry password must never show up in an API
//! answer, a log line, an audit event or the staging log.
//!
//! Needs root, runc, `docker-registry`, `htpasswd` and `busybox-static`.
//! Without them it skips loudly, unless `KILN_REQUIRE_RUNC=1` (CI sets it).

use kiln_image::testing::{LayerBuilder, TestImage, TestRegistry};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const ADMIN_PASSWORD: &str = "docker-e2e-admin-secret";
const REGISTRY_USER: &str = "kiln-e2e";
const REGISTRY_PASSWORD: &str = "Reg1stry-Pa55word-never-shown";
/// `--docker-registry-timeout` of the test's server.
const REGISTRY_TIMEOUT_S: u64 = 4;

/// One whole server at a time within this binary (nextest runs each test
/// in a process of its own; `.config/nextest.toml` puts them in one group).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn runnable(test: &str) -> bool {
    let root = kiln_image::testing::is_root();
    let runc = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && runc) {
        kiln_image::testing::skip_or_fail(test, &format!("root: {root}, runc: {runc}"));
        return false;
    }
    kiln_image::testing::registry_available(test) && kiln_image::testing::busybox_available(test)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A /24 in 10.216.0.0/13 no address on this machine is in yet (e2e.rs
/// picks from 10.200.0.0/13, so the two suites never meet).
fn free_subnet() -> String {
    let taken = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let seed = std::process::id() ^ free_port() as u32;
    for i in 0..2048u32 {
        let n = (seed.wrapping_mul(2654435761).wrapping_add(i)) % 2048;
        let (b, c) = (216 + n / 256, n % 256);
        if !taken.contains(&format!(" 10.{b}.{c}.")) {
            return format!("10.{b}.{c}.0/24");
        }
    }
    panic!("no free subnet for the cell");
}

/// An all-in-one `kiln server` with the image flags under test.
struct Server {
    child: Option<Child>,
    data_dir: PathBuf,
    api_port: u16,
    router_port: u16,
    log_path: PathBuf,
    cell_id: String,
    home: PathBuf,
}

impl Server {
    async fn start(scratch: &Path) -> Server {
        let (api_port, router_port) = (free_port(), free_port());
        let data_dir = scratch.join("data");
        let cell_id = format!("docker-e2e-{api_port}");
        let log_path = scratch.join("server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "server",
                "--domain",
                "localhost",
                "--staging-timeout",
                "120",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--router-listen")
            .arg(format!("127.0.0.1:{router_port}"))
            .args(["--cell-id", &cell_id, "--cell-network", &free_subnet()])
            .args(["--image-max-layer-mb", "2"])
            .args(["--docker-registry-timeout", &REGISTRY_TIMEOUT_S.to_string()])
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting kiln server");
        let mut server = Server {
            child: Some(child),
            data_dir,
            api_port,
            router_port,
            log_path,
            cell_id,
            home: scratch.join("home"),
        };
        server.wait_until_up().await;
        let api = format!("http://127.0.0.1:{api_port}");
        let out = server
            .cli(&["login", "-a", &api, "-u", "admin", "-p", ADMIN_PASSWORD])
            .await;
        assert!(out.success, "login failed\n{out}");
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{}/", self.api_port);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kiln server exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no answer in 60s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_env(args, None).await
    }

    /// The CLI with `CF_DOCKER_PASSWORD` set (or not), as a user runs it.
    async fn cli_env(&self, args: &[&str], docker_password: Option<&str>) -> CliOutput {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(args)
            .env("KILN_HOME", &self.home)
            .env("KILN_STARTUP_TIMEOUT", "120")
            .env_remove("CF_DOCKER_PASSWORD")
            .stdin(Stdio::null());
        if let Some(password) = docker_password {
            command.env("CF_DOCKER_PASSWORD", password);
        }
        let out = command.output().await.expect("running the kiln cli");
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// `kiln curl PATH` as JSON.
    async fn get(&self, path: &str) -> serde_json::Value {
        let out = self.cli(&["curl", path]).await;
        assert!(out.success, "curl {path}\n{out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}\n{out}"))
    }

    async fn app_guid(&self, name: &str) -> String {
        let apps = self.get(&format!("/v3/apps?names={name}")).await;
        apps["resources"][0]["guid"]
            .as_str()
            .unwrap_or_else(|| panic!("no app {name}: {apps}"))
            .to_string()
    }

    /// The text the router serves at `path` for `host`, once it is 200
    /// and (when given) contains `want`.
    async fn route_text(&self, host: &str, path: &str, want: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}{path}", self.router_port))
                .header("Host", host)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("request through the router");
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == 200 && want.is_none_or(|w| text.contains(w)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{host}{path}: {status} {text:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Scratch files in the cell's layer cache (downloads and unpacks in
    /// progress); empty whenever nothing is being pulled.
    fn cache_scratch(&self) -> Vec<String> {
        let tmp = self.data_dir.join("cell/images/tmp");
        std::fs::read_dir(&tmp)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cached_layer(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self.data_dir.join("cell/images/layers").join(hex).exists()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let runc_root = self.data_dir.join("cell/runc");
        let listed = std::process::Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in listed.lines() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", id])
                .output();
        }
        kiln_cell::network::remove_leftovers_blocking(&self.cell_id);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.data_dir.to_string_lossy().into_owned();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in under {
            let _ = std::process::Command::new("umount")
                .args(["-l", mount])
                .output();
        }
    }
}

struct CliOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

impl CliOutput {
    fn text(&self) -> String {
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

/// A one-layer image whose web server (busybox httpd on `$PORT`) serves
/// `/www/index.html` = `body`.
fn web_image(body: &str) -> TestImage {
    let layer = LayerBuilder::new()
        .busybox(&["sh", "httpd"])
        .dir("www/")
        .file("www/index.html", body.as_bytes())
        .gzip();
    let mut image = TestImage::new(vec![layer]);
    image.entrypoint = vec!["/bin/sh".into(), "-c".into()];
    image.cmd = vec!["exec httpd -f -p $PORT -h /www".into()];
    image
}

/// `image` with `bad` stacked on top: a registry accepts any bytes as a
/// layer, only unpacking finds out.
fn with_bad_layer(bad: LayerBuilder) -> TestImage {
    let mut image = web_image("never served\n");
    image.layers.push(bad.gzip());
    image
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A registry that accepts TCP connections and never says a word.
struct SilentRegistry {
    host: String,
    task: tokio::task::JoinHandle<()>,
}

impl SilentRegistry {
    async fn start() -> SilentRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            // Bounded: a staging attempt opens a handful of connections.
            while held.len() < 64 {
                match listener.accept().await {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => return,
                }
            }
        });
        SilentRegistry { host, task }
    }
}

impl Drop for SilentRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pushes `image` (with `password` as `CF_DOCKER_PASSWORD` if given) and
/// checks the failure: the CLI fails saying `want`, the app's build is
/// FAILED with Cloud Controller's `StagingError - ` error naming it, the
/// app has no staged droplet, and the layer cache holds no scratch. Returns the
/// CLI's output.
async fn push_fails(
    server: &Server,
    app: &str,
    image: &str,
    username: Option<&str>,
    password: Option<&str>,
    want: &str,
) -> CliOutput {
    let mut args = vec!["push", app, "-o", image, "-m", "64M"];
    if let Some(user) = username {
        args.extend(["--docker-username", user]);
    }
    let out = server.cli_env(&args, password).await;
    assert!(!out.success, "{app}: pushing {image} must fail\n{out}");
    assert!(
        out.text().contains(want),
        "{app}: the CLI must say {want:?}\n{out}"
    );

    let guid = server.app_guid(app).await;
    let builds = server.get(&format!("/v3/apps/{guid}/builds")).await;
    let build = &builds["resources"][0];
    assert_eq!(build["state"], "FAILED", "{app}: {builds}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("StagingError - ") && error.contains(want),
        "{app}: the build's error must be CC's shape and say {want:?}: {error:?}"
    );
    // Cloud Controller keeps the build's droplet, FAILED; nothing staged.
    let droplets = server.get(&format!("/v3/apps/{guid}/droplets")).await;
    for droplet in droplets["resources"].as_array().unwrap() {
        assert_eq!(droplet["state"], "FAILED", "{app}: {droplet}");
        assert!(
            droplet["image"].is_null(),
            "{app}: no image pinned: {droplet}"
        );
    }
    let current = server
        .cli(&["curl", &format!("/v3/apps/{guid}/droplets/current")])
        .await;
    assert!(
        current.text().contains("CF-ResourceNotFound") || current.text().contains("10010"),
        "{app}: no current droplet\n{current}"
    );
    assert_eq!(
        server.cache_scratch(),
        Vec::<String>::new(),
        "{app}: nothing half-stored in the layer cache"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_builds_fail_clearly_and_leave_nothing_behind() {
    let test = "docker_builds_fail_clearly_and_leave_nothing_behind";
    if !runnable(test) {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let public = TestRegistry::start();
    let private = TestRegistry::start_with_basic_auth(REGISTRY_USER, REGISTRY_PASSWORD);
    let silent = SilentRegistry::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path()).await;
    let mut outputs = Vec::new();

    // Private registry: no credentials, then a wrong password.
    private.push("private", "v1", &web_image("private\n")).await;
    let private_ref = private.reference("private", "v1");
    outputs.push(
        push_fails(
            &server,
            "dnocreds",
            &private_ref,
            None,
            None,
            "unauthorized",
        )
        .await,
    );
    outputs.push(
        push_fails(
            &server,
            "dwrongpw",
            &private_ref,
            Some(REGISTRY_USER),
            Some("not-the-password"),
            "unauthorized",
        )
        .await,
    );

    // Only linux/arm64.
    let mut arm = web_image("arm\n");
    arm.architecture = "arm64".into();
    public
        .push_index("armonly", "v1", &[("linux", "arm64", &arm)])
        .await;
    let want = "no linux/amd64 image";
    outputs.push(
        push_fails(
            &server,
            "darm",
            &public.reference("armonly", "v1"),
            None,
            None,
            want,
        )
        .await,
    );

    // A manifest whose bytes no longer match its digest: one digit of a
    // size changed in the registry's storage (same length, still JSON).
    let digest = public
        .push("tampered", "v1", &web_image("tampered\n"))
        .await;
    let stored = public.blob_path(&digest);
    let manifest = std::fs::read_to_string(&stored).unwrap();
    let at = manifest.find("\"size\":").unwrap() + "\"size\":".len();
    let digit = manifest.as_bytes()[at];
    let swapped = if digit == b'1' { '2' } else { '1' };
    let tampered = format!("{}{swapped}{}", &manifest[..at], &manifest[at + 1..]);
    std::fs::write(&stored, tampered).unwrap();
    let pinned = format!("{}/tampered@{digest}", public.host());
    outputs.push(push_fails(&server, "dmismatch", &pinned, None, None, "digest mismatch").await);

    // Layers whose content is refused when unpacked; none may stay cached.
    let bad_layers = [
        (
            "ddotdot",
            LayerBuilder::new().file("../escaped", b"x"),
            "path contains ..",
        ),
        (
            "dabsolute",
            LayerBuilder::new().file("/etc/escaped", b"x"),
            "absolute path",
        ),
        (
            "dlink",
            LayerBuilder::new().hardlink("www/passwd", "../../../etc/passwd"),
            "escapes the layer",
        ),
    ];
    for (app, layer, want) in bad_layers {
        let image = with_bad_layer(layer);
        let top = sha256(&image.layers[1].blob);
        public.push(app, "v1", &image).await;
        let out = push_fails(
            &server,
            app,
            &public.reference(app, "v1"),
            None,
            None,
            "bad layer content",
        )
        .await;
        assert!(
            out.text().contains(want),
            "{app}: the reason must say {want:?}\n{out}"
        );
        assert!(
            !server.cached_layer(&top),
            "{app}: the bad layer is not cached"
        );
        outputs.push(out);
    }

    // A layer over `--image-max-layer-mb 2` (busybox alone is 1.3 MB): incompressible bytes.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..2_600_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let mut huge = web_image("huge\n");
    huge.layers
        .push(LayerBuilder::new().file("noise", &noise).gzip());
    public.push("huge", "v1", &huge).await;
    outputs.push(
        push_fails(
            &server,
            "dhuge",
            &public.reference("huge", "v1"),
            None,
            None,
            "too large",
        )
        .await,
    );

    // A registry that never answers: failed within the registry time-out,
    // well before the staging timeout.
    let started = Instant::now();
    let silent_ref = format!("{}/silent:v1", silent.host);
    let want = format!("timed out after {REGISTRY_TIMEOUT_S}s");
    outputs.push(push_fails(&server, "dsilent", &silent_ref, None, None, &want).await);
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the registry time-out, not the staging timeout, ended it"
    );

    // After all that, the right credentials stage and the app serves.
    let out = server
        .cli_env(
            &[
                "push",
                "dprivate",
                "-o",
                &private_ref,
                "--docker-username",
                REGISTRY_USER,
                "-m",
                "64M",
            ],
            Some(REGISTRY_PASSWORD),
        )
        .await;
    assert!(
        out.success,
        "the right credentials stage\n{out}\n{}",
        server.log()
    );
    assert_eq!(
        server
            .route_text("dprivate.localhost", "/index.html", None)
            .await,
        "private\n"
    );
    outputs.push(out);

    // The password is nowhere: not in a CLI output (staging logs
    // included), an API answer, an audit event, the recent logs or the
    // server's log.
    let guid = server.app_guid("dprivate").await;
    let mut shown = Vec::new();
    for path in [
        format!("/v3/apps/{guid}"),
        format!("/v3/apps/{guid}/packages"),
        format!("/v3/apps/{guid}/builds"),
        format!("/v3/apps/{guid}/droplets"),
        format!("/v3/apps/{guid}/env"),
        "/v3/packages".to_string(),
        "/v3/builds".to_string(),
        "/v3/droplets".to_string(),
        "/v3/audit_events?per_page=5000".to_string(),
    ] {
        shown.push(server.cli(&["curl", &path]).await.text());
    }
    let packages = server.get(&format!("/v3/apps/{guid}/packages")).await;
    assert_eq!(
        packages["resources"][0]["data"]["username"], REGISTRY_USER,
        "{packages}"
    );
    for app in ["dprivate", "dwrongpw"] {
        shown.push(server.cli(&["logs", app, "--recent"]).await.text());
    }
    shown.extend(outputs.iter().map(CliOutput::text));
    shown.push(server.log());
    for text in &shown {
        assert!(
            !text.contains(REGISTRY_PASSWORD),
            "the password leaked:\n{text}"
        );
    }
    assert!(
        !server.log().contains("not-the-password"),
        "a wrong password leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restage_after_the_tag_moved_runs_the_new_digest() {
    let test = "restage_after_the_tag_moved_runs_the_new_digest";
    if !runnable(test) {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let registry = TestRegistry::start();
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path()).await;
    let reference = registry.reference("moving", "1");

    let first = registry.push("moving", "1", &web_image("first\n")).await;
    let out = server
        .cli(&["push", "dmove", "-o", &reference, "-m", "64M"])
        .await;
    assert!(out.success, "push\n{out}\n{}", server.log());
    assert!(
        out.text().contains(&format!("resolved to {first}")),
        "{out}"
    );
    assert_eq!(
        server
            .route_text("dmove.localhost", "/index.html", None)
            .await,
        "first\n"
    );
    let guid = server.app_guid("dmove").await;
    let pinned_image =
        |droplet: &serde_json::Value| droplet["image"].as_str().unwrap_or_default().to_string();
    let droplet = server
        .get(&format!("/v3/apps/{guid}/droplets/current"))
        .await;
    assert!(
        pinned_image(&droplet).ends_with(&format!("@{first}")),
        "{droplet}"
    );

    // The tag moves. Running code does not: a restart runs the staged
    // digest again.
    let second = registry.push("moving", "1", &web_image("second\n")).await;
    assert_ne!(first, second);
    let out = server.cli(&["restart", "dmove"]).await;
    assert!(out.success, "restart\n{out}");
    // Give a wrongly re-resolved instance time to show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server
            .route_text("dmove.localhost", "/index.html", None)
            .await,
        "first\n"
    );

    // Restaging resolves the tag again: a new droplet pinned to the new
    // digest, and the app serves the new content.
    let out = server.cli(&["restage", "dmove"]).await;
    assert!(out.success, "restage\n{out}\n{}", server.log());
    assert!(
        out.text().contains(&format!("resolved to {second}")),
        "{out}"
    );
    let droplet = server
        .get(&format!("/v3/apps/{guid}/droplets/current"))
        .await;
    assert!(
        pinned_image(&droplet).ends_with(&format!("@{second}")),
        "{droplet}"
    );
    assert_eq!(
        server
            .route_text("dmove.localhost", "/index.html", Some("second"))
            .await,
        "second\n"
    );
    let droplets = server.get(&format!("/v3/apps/{guid}/droplets")).await;
    let images: Vec<String> = droplets["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(pinned_image)
        .collect();
    assert!(
        images.iter().any(|i| i.ends_with(&first)) && images.iter().any(|i| i.ends_with(&second)),
        "both droplets keep their own digest: {images:?}"
    );
}
