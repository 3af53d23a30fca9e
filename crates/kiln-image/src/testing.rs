//! Test support (feature `test-support`): a real registry on 127.0.0.1 and
//! images built by the test, for this crate's tests and the docker
//! lifecycle's end-to-end tests.
//!
//! [`TestRegistry`] runs Debian's `docker-registry` (distribution 2.8) on
//! `127.0.0.1` with a port it picks itself (`http.addr: 127.0.0.1:0`, read
//! back from its log, so concurrent tests never race for a port), storage in
//! a temp dir, optionally htpasswd basic auth; it is killed on drop. Its
//! access log is kept, so a test can count the requests it served.
//!
//! Images are built in memory ([`LayerBuilder`], [`TestImage`]) and pushed
//! with the distribution API itself (monolithic blob upload, manifest PUT),
//! which needs no other tool and lets a test push what skopeo would refuse
//! (an index whose only platform is arm64, a layer with `../x`).

use crate::registry::sha256_digest;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `KILN_REQUIRE_RUNC=1` turns a skip into a failure (CI sets it).
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test}: KILN_REQUIRE_RUNC=1 but {why}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPING {test}: {why}; set KILN_REQUIRE_RUNC=1 to make this a failure !!!!!!!!\n"
    );
}

/// True when `docker-registry` can run here; otherwise says so loudly (or
/// fails under `KILN_REQUIRE_RUNC=1`) and the test returns early.
pub fn registry_available(test: &str) -> bool {
    let found = Command::new("docker-registry")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip_or_fail(
            test,
            "docker-registry is not installed (scripts/install-deps.sh)",
        );
    }
    found
}

/// True when running as root (whiteouts, trusted xattrs, overlay mounts).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A `docker-registry` process on 127.0.0.1, killed on drop.
pub struct TestRegistry {
    host: String,
    child: Child,
    dir: tempfile::TempDir,
    basic_auth: Option<(String, String)>,
    http: reqwest::Client,
}

impl TestRegistry {
    /// A registry that serves anyone.
    pub fn start() -> TestRegistry {
        TestRegistry::start_inner(None)
    }

    /// A registry that asks for `username`/`password` (htpasswd, bcrypt).
    pub fn start_with_basic_auth(username: &str, password: &str) -> TestRegistry {
        TestRegistry::start_inner(Some((username.to_string(), password.to_string())))
    }

    fn start_inner(basic_auth: Option<(String, String)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("registry temp dir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        let mut auth = String::new();
        if let Some((user, password)) = &basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            assert!(out.status.success(), "htpasswd failed");
            fs::write(&htpasswd, out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n  secret: kiln-test\n{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let mut registry = TestRegistry {
            host: String::new(),
            child,
            dir,
            basic_auth,
            http: reqwest::Client::new(),
        };
        registry.host = registry.wait_for_listening();
        registry
    }

    /// Reads the `listening on 127.0.0.1:PORT` line (bounded wait).
    fn wait_for_listening(&mut self) -> String {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            let log = self.log();
            if let Some(at) = log.find("listening on 127.0.0.1:") {
                let rest = &log[at + "listening on ".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .unwrap_or(rest.len());
                return rest[..end].to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen within 10s: {}", self.log());
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `127.0.0.1:PORT/repository:tag`.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.host)
    }

    /// The registry's log (its own lines and the access log).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests served so far whose path starts with `/v2/` and contains
    /// `fragment` (e.g. `/blobs/`), from the access log.
    pub fn requests(&self, fragment: &str) -> usize {
        let file = match fs::File::open(self.dir.path().join("registry.log")) {
            Ok(f) => f,
            Err(_) => return 0,
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.contains("] \"GET /v2/") || line.contains("] \"HEAD /v2/"))
            .filter(|line| line.contains(fragment))
            .count()
    }

    /// Where the registry keeps blob `digest` (to corrupt it in a test).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `image` as `repository:tag` (an OCI manifest); returns the
    /// manifest's digest.
    pub async fn push(&self, repository: &str, tag: &str, image: &TestImage) -> String {
        self.push_as(repository, tag, image, ManifestFormat::Oci)
            .await
    }

    /// Pushes `image` as `repository:tag` in `format`; returns the
    /// manifest's digest.
    pub async fn push_as(
        &self,
        repository: &str,
        tag: &str,
        image: &TestImage,
        format: ManifestFormat,
    ) -> String {
        let manifest = self.push_blobs(repository, image, format).await;
        self.put_manifest(repository, tag, format.manifest(), &manifest)
            .await
    }

    /// Pushes an image index whose entries are `(os, architecture, image)`,
    /// as `repository:tag`; returns the index's digest.
    pub async fn push_index(
        &self,
        repository: &str,
        tag: &str,
        entries: &[(&str, &str, &TestImage)],
    ) -> String {
        self.push_index_as(repository, tag, entries, ManifestFormat::Oci)
            .await
    }

    /// [`TestRegistry::push_index`] in `format` (Docker: a manifest list).
    pub async fn push_index_as(
        &self,
        repository: &str,
        tag: &str,
        entries: &[(&str, &str, &TestImage)],
        format: ManifestFormat,
    ) -> String {
        let mut manifests = Vec::new();
        for (os, architecture, image) in entries {
            let manifest = self.push_blobs(repository, image, format).await;
            let digest = sha256_digest(&manifest);
            self.put_manifest(repository, &digest, format.manifest(), &manifest)
                .await;
            manifests.push(json!({
                "mediaType": format.manifest(),
                "digest": digest,
                "size": manifest.len(),
                "platform": {"os": os, "architecture": architecture},
            }));
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": format.index(),
            "manifests": manifests,
        }))
        .unwrap();
        self.put_manifest(repository, tag, format.index(), &index)
            .await
    }

    /// Uploads the config and layers; returns the manifest's bytes.
    async fn push_blobs(
        &self,
        repository: &str,
        image: &TestImage,
        format: ManifestFormat,
    ) -> Vec<u8> {
        let config = image.config_bytes();
        self.put_blob(repository, &config).await;
        let mut layers = Vec::new();
        for layer in &image.layers {
            self.put_blob(repository, &layer.blob).await;
            layers.push(json!({
                "mediaType": layer.media_type,
                "digest": sha256_digest(&layer.blob),
                "size": layer.blob.len(),
            }));
        }
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": format.manifest(),
            "config": {
                "mediaType": format.config(),
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": layers,
        }))
        .unwrap()
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.basic_auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Monolithic upload: POST for an upload URL, PUT the bytes with their digest.
    async fn put_blob(&self, repository: &str, blob: &[u8]) {
        let start = format!("http://{}/v2/{repository}/blobs/uploads/", self.host);
        let response = self
            .request(reqwest::Method::POST, &start)
            .send()
            .await
            .expect("start blob upload");
        assert_eq!(
            response.status(),
            202,
            "start upload: {:?}",
            response.text().await
        );
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.host)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", sha256_digest(blob));
        let response = self
            .request(reqwest::Method::PUT, &url)
            .header("content-type", "application/octet-stream")
            .body(blob.to_vec())
            .send()
            .await
            .expect("upload blob");
        assert_eq!(
            response.status(),
            201,
            "upload: {:?}",
            response.text().await
        );
    }

    async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let url = format!("http://{}/v2/{repository}/manifests/{reference}", self.host);
        let response = self
            .request(reqwest::Method::PUT, &url)
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(
            response.status(),
            201,
            "manifest: {:?}",
            response.text().await
        );
        sha256_digest(body)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The media types an image is pushed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest, config and index.
    Oci,
    /// Docker schema 2 manifest, container config and manifest list.
    Docker,
}

impl ManifestFormat {
    fn manifest(self) -> &'static str {
        match self {
            ManifestFormat::Oci => "application/vnd.oci.image.manifest.v1+json",
            ManifestFormat::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    fn index(self) -> &'static str {
        match self {
            ManifestFormat::Oci => "application/vnd.oci.image.index.v1+json",
            ManifestFormat::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    fn config(self) -> &'static str {
        match self {
            ManifestFormat::Oci => "application/vnd.oci.image.config.v1+json",
            ManifestFormat::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
}

/// One layer's blob as pushed.
#[derive(Debug, Clone)]
pub struct TestLayer {
    pub blob: Vec<u8>,
    pub media_type: String,
}

/// An image to push: layers (bottom first) and a Docker/OCI config.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub architecture: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `"8080/tcp"` style keys.
    pub exposed_ports: Vec<String>,
}

impl TestImage {
    pub fn new(layers: Vec<TestLayer>) -> TestImage {
        TestImage {
            layers,
            architecture: "amd64".into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: String::new(),
            user: String::new(),
            exposed_ports: Vec::new(),
        }
    }

    /// The config blob's bytes (what the manifest's config digest names).
    pub fn config_bytes(&self) -> Vec<u8> {
        let diff_ids: Vec<String> = self
            .layers
            .iter()
            .map(|l| sha256_digest(&uncompressed(&l.blob)))
            .collect();
        let ports: serde_json::Map<String, serde_json::Value> = self
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        serde_json::to_vec(&json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "Env": self.env,
                "WorkingDir": self.working_dir,
                "User": self.user,
                "ExposedPorts": ports,
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }
}

fn uncompressed(blob: &[u8]) -> Vec<u8> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(blob), &mut out)
            .map(|_| out)
            .unwrap_or_default()
    } else {
        blob.to_vec()
    }
}

/// Builds one layer tar entry by entry. Paths are written into the header
/// as given (the tar crate's own checks bypassed), as a hostile image would.
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: Option<&str>,
    ) -> LayerBuilder {
        let mut header = tar::Header::new_gnu();
        let name = path.as_bytes();
        assert!(name.len() < 100, "test paths are short: {path}");
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        if let Some(target) = link {
            let t = target.as_bytes();
            header.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        }
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    pub fn dir(self, path: &str) -> LayerBuilder {
        self.entry(path, tar::EntryType::Directory, 0o755, b"", None)
    }

    pub fn file(self, path: &str, data: &[u8]) -> LayerBuilder {
        self.entry(path, tar::EntryType::Regular, 0o644, data, None)
    }

    pub fn file_with_mode(self, path: &str, data: &[u8], mode: u32) -> LayerBuilder {
        self.entry(path, tar::EntryType::Regular, mode, data, None)
    }

    /// A file owned by `uid:gid`.
    pub fn file_owned(mut self, path: &str, data: &[u8], uid: u64, gid: u64) -> LayerBuilder {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).unwrap();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    pub fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.entry(path, tar::EntryType::Symlink, 0o777, b"", Some(target))
    }

    pub fn hardlink(self, path: &str, target: &str) -> LayerBuilder {
        self.entry(path, tar::EntryType::Link, 0o644, b"", Some(target))
    }

    /// Deletes `dir/name` of lower layers (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> LayerBuilder {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"")
    }

    /// Hides everything lower layers have in `dir` (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> LayerBuilder {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub fn char_device(self, path: &str) -> LayerBuilder {
        self.entry(path, tar::EntryType::Char, 0o600, b"", None)
    }

    pub fn fifo(self, path: &str) -> LayerBuilder {
        self.entry(path, tar::EntryType::Fifo, 0o600, b"", None)
    }

    /// Debian's static busybox as `/bin/busybox` with the given applets as
    /// symlinks in `/bin` (e.g. `sh`, `httpd`, `env`).
    pub fn busybox(self, applets: &[&str]) -> LayerBuilder {
        let binary =
            fs::read(BUSYBOX).expect("busybox-static is installed (scripts/install-deps.sh)");
        let mut layer = self
            .dir("bin/")
            .file_with_mode("bin/busybox", &binary, 0o755);
        for applet in applets {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
        layer
    }

    fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    /// The layer as `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub fn gzip(self) -> TestLayer {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&self.tar()).unwrap();
        TestLayer {
            blob: gz.finish().unwrap(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    /// The layer as Docker's `…rootfs.diff.tar.gzip`.
    pub fn docker_gzip(self) -> TestLayer {
        let mut layer = self.gzip();
        layer.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
        layer
    }

    /// The layer as an uncompressed `application/vnd.oci.image.layer.v1.tar`.
    pub fn plain(self) -> TestLayer {
        TestLayer {
            blob: self.tar(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }
}

/// Debian's `busybox-static`: statically linked, so it runs in an image
/// with nothing else.
pub const BUSYBOX: &str = "/bin/busybox";

/// True when [`BUSYBOX`] exists; otherwise skips loudly (or fails).
pub fn busybox_available(test: &str) -> bool {
    let found = Path::new(BUSYBOX).exists();
    if !found {
        skip_or_fail(
            test,
            "busybox-static is not installed (scripts/install-deps.sh)",
        );
    }
    found
}

/// A one-layer image: busybox with `sh`, `httpd`, `env`, `id`, `pwd`,
/// `cat`, `echo`, `ls`, `sleep`; and a file `/www/index.html`.
pub fn busybox_image() -> TestImage {
    let layer = LayerBuilder::new()
        .busybox(&[
            "sh", "httpd", "env", "id", "pwd", "cat", "echo", "ls", "sleep", "wget",
        ])
        .dir("www/")
        .file("www/index.html", b"hello from an image\n")
        .gzip();
    TestImage::new(vec![layer])
}
