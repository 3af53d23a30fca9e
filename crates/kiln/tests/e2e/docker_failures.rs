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

use crate::support::{self, CliOutput, SERIAL, free_port, free_subnet};
use kiln_image::testing::{LayerBuilder, TestImage, TestRegistry};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

const REGISTRY_USER: &str = "kiln-e2e";
const REGISTRY_PASSWORD: &str = "Reg1stry-Pa55word-never-shown";
/// The cell's registry timeout here: short, so the silent registry's
/// failure comes quickly.
const REGISTRY_TIMEOUT_S: u64 = 4;

/// Root and runc as every end-to-end test, and also a registry and busybox.
fn runnable(test: &str) -> bool {
    support::runnable()
        && kiln_image::testing::registry_available(test)
        && kiln_image::testing::busybox_available(test)
}

/// A server with a small layer limit and a short registry timeout, and a
/// CLI home logged in to it as admin.
struct Server {
    server: support::Server,
    router_port: u16,
    home: PathBuf,
}

impl Server {
    async fn start(scratch: &Path) -> Server {
        let (api_port, router_port) = (free_port(), free_port());
        let flags = [
            "--image-max-layer-mb",
            "2",
            "--docker-registry-timeout",
            &REGISTRY_TIMEOUT_S.to_string(),
        ]
        .map(str::to_string);
        let server = support::Server::start_with(
            &scratch.join("data"),
            api_port,
            router_port,
            &free_subnet(),
            &flags,
        )
        .await;
        let home = scratch.join("home");
        support::login(&home, &server).await;
        Server {
            server,
            router_port,
            home,
        }
    }

    fn log(&self) -> String {
        self.server.log()
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
        let tmp = self.server.data_dir.join("cell/images/tmp");
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
        self.server
            .data_dir
            .join("cell/images/layers")
            .join(hex)
            .exists()
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
