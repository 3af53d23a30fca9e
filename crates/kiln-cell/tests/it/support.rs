//! Test support: the root+runc gate, a blob server on 127.0.0.1:0 (GET
//! artifacts, POST uploads), a log sink that collects, archive builders,
//! and a cell running against the real in-process BBS on SQLite.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use kiln_bbs::{ActualLrpFilter, Bbs, BbsClient, BbsConfig};
use kiln_cell::CellConfig;
use kiln_logs::LogSink;
use kiln_model::bbs::*;
use kiln_model::logs::{ContainerMetric, LogEnvelope, MessageType};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const RUNC: &str = "/usr/sbin/runc";

/// Whether root and runc are here. Without them the test is skipped with a
/// loud message, or fails when `KILN_REQUIRE_RUNC=1`.
pub fn runc_available(test: &str) -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    let why = if uid != "0" {
        Some("not running as root".to_string())
    } else if !Path::new(RUNC).is_file() {
        Some(format!("{RUNC} is missing"))
    } else {
        None
    };
    let Some(why) = why else { return true };
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test}: KILN_REQUIRE_RUNC=1 but {why}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPING {test}: {why}; set KILN_REQUIRE_RUNC=1 to make this a failure !!!!!!!!\n"
    );
    false
}

/// Polls `check` every 50 ms until it yields a value or `within` passes.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether runc reports the container `running` (listed is not enough: a
/// container is listed while runc still starts it, and a KILL then fails
/// the start with status 1 instead of killing the process with 137).
pub fn runc_running(runc_root: &Path, id: &str) -> bool {
    std::process::Command::new(RUNC)
        .arg("--root")
        .arg(runc_root)
        .args(["state", id])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(r#""status": "running""#))
}

// ---------------------------------------------------------------- logs

#[derive(Default)]
pub struct CollectLogs(Mutex<Vec<LogEnvelope>>, Mutex<Vec<ContainerMetric>>);

impl LogSink for CollectLogs {
    fn emit(&self, envelope: LogEnvelope) {
        self.0.lock().unwrap().push(envelope);
    }

    fn emit_metric(&self, metric: ContainerMetric) {
        self.1.lock().unwrap().push(metric);
    }
}

impl CollectLogs {
    /// Container metrics of one process, oldest first.
    pub fn metrics(&self, process_id: &str) -> Vec<ContainerMetric> {
        self.1
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.process_id == process_id)
            .cloned()
            .collect()
    }

    pub fn envelopes(&self, source_id: &str) -> Vec<LogEnvelope> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.source_id == source_id)
            .cloned()
            .collect()
    }

    /// `source_type|OUT|message` lines of one source id, for assertions.
    pub fn lines(&self, source_id: &str) -> Vec<String> {
        self.envelopes(source_id)
            .into_iter()
            .map(|e| {
                let t = match e.message_type {
                    MessageType::Out => "OUT",
                    MessageType::Err => "ERR",
                };
                format!("{}|{t}|{}", e.source_type, e.message)
            })
            .collect()
    }

    pub fn has(&self, source_id: &str, line: &str) -> bool {
        self.lines(source_id).iter().any(|l| l == line)
    }
}

// ---------------------------------------------------------------- blob server

/// An upload as received: its content type and body.
pub type Upload = (Option<String>, Vec<u8>);

#[derive(Default)]
pub struct BlobState {
    pub blobs: Mutex<HashMap<String, Vec<u8>>>,
    pub uploads: Mutex<HashMap<String, Upload>>,
    pub gets: Mutex<HashMap<String, usize>>,
    /// Upload reports (after a PUT) by name, as JSON.
    pub reports: Mutex<HashMap<String, serde_json::Value>>,
}

pub struct BlobServer {
    pub addr: SocketAddr,
    pub state: Arc<BlobState>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl BlobServer {
    pub async fn start() -> BlobServer {
        let state = Arc::new(BlobState::default());
        let app = Router::new()
            .route("/blobs/{name}", get(get_blob))
            .route("/uploads/{name}", post(post_upload).put(put_upload))
            .route("/reports/{name}", post(post_report))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        BlobServer {
            addr,
            state,
            _shutdown: tx,
        }
    }

    pub fn put(&self, name: &str, content: Vec<u8>) {
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(name.into(), content);
    }

    /// A URL with a query, as signed URLs have.
    pub fn blob_url(&self, name: &str) -> String {
        format!("http://{}/blobs/{name}?signature=secret", self.addr)
    }

    pub fn upload_url(&self, name: &str) -> String {
        format!("http://{}/uploads/{name}?signature=secret", self.addr)
    }

    /// Where a cell reports what it PUT under `name`.
    pub fn report_url(&self, name: &str) -> String {
        format!("http://{}/reports/{name}?signature=secret", self.addr)
    }

    pub fn report(&self, name: &str) -> Option<serde_json::Value> {
        self.state.reports.lock().unwrap().get(name).cloned()
    }

    pub fn gets(&self, name: &str) -> usize {
        self.state
            .gets
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn uploaded(&self, name: &str) -> Option<Upload> {
        self.state.uploads.lock().unwrap().get(name).cloned()
    }
}

async fn get_blob(
    State(state): State<Arc<BlobState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Vec<u8>, StatusCode> {
    *state.gets.lock().unwrap().entry(name.clone()).or_default() += 1;
    state
        .blobs
        .lock()
        .unwrap()
        .get(&name)
        .cloned()
        .ok_or(StatusCode::NOT_FOUND)
}

/// Keeps an uploaded body, with its content type, under its name.
fn keep_upload(state: &BlobState, name: String, headers: &HeaderMap, body: &Bytes) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state
        .uploads
        .lock()
        .unwrap()
        .insert(name, (content_type, body.to_vec()));
}

async fn post_upload(
    State(state): State<Arc<BlobState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if name.starts_with("fail") {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    keep_upload(&state, name, &headers, &body);
    StatusCode::CREATED
}

/// A PUT as S3 answers it: the ETag is the body's MD5 (a name starting
/// with `badetag` gets another one, as if the store kept other bytes).
async fn put_upload(
    State(state): State<Arc<BlobState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    use md5::Digest;
    let mut etag = hex::encode(md5::Md5::digest(&body));
    if name.starts_with("badetag") {
        etag = hex::encode(md5::Md5::digest(b"other bytes"));
    }
    keep_upload(&state, name, &headers, &body);
    let mut answer = HeaderMap::new();
    answer.insert("etag", format!("\"{etag}\"").parse().unwrap());
    (StatusCode::OK, answer)
}

/// A report is kept; one for a name starting with `refuse` is refused
/// with a Cloud Controller error body.
async fn post_report(
    State(state): State<Arc<BlobState>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> (StatusCode, String) {
    if name.starts_with("refuse") {
        let error = serde_json::json!({"errors": [{"code": 10008, "title": "CF-UnprocessableEntity",
            "detail": "The droplet upload was refused: the stored object has 1 bytes, the upload 2"}]});
        return (StatusCode::UNPROCESSABLE_ENTITY, error.to_string());
    }
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    state.reports.lock().unwrap().insert(name, report);
    (StatusCode::CREATED, String::new())
}

// ---------------------------------------------------------------- archives

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A zip of `(path, mode, content)` files.
pub fn zip_of(files: &[(&str, u32, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, mode, content) in files {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        w.start_file(*path, opts).unwrap();
        w.write_all(content.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A tar.gz of `(path, mode, content)` files.
pub fn tgz_of(files: &[(&str, u32, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, mode, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

// ---------------------------------------------------------------- definitions

pub fn sh(script: &str) -> RunAction {
    RunAction {
        path: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![],
        dir: None,
        user: "vcap".into(),
    }
}

/// Disk quotas are small: a cell's presence caps its disk at what the
/// machine has free, and tests desire many at once.
pub fn task_definition(stack: &str, log_guid: &str, run: RunAction) -> TaskDefinition {
    TaskDefinition {
        rootfs: kiln_model::rootfs::RootFs::preloaded(stack),
        resolve_image: None,
        image_username: String::new(),
        image_password: Default::default(),
        log_guid: log_guid.into(),
        log_source: "STG".into(),
        memory_mb: 256,
        disk_mb: 256,
        env: vec![],
        downloads: vec![],
        run,
        uploads: vec![],
        result_file: String::new(),
        timeout_ms: 60_000,
    }
}

pub fn desired_lrp(stack: &str, process_guid: &str, action: RunAction) -> DesiredLrp {
    DesiredLrp {
        rootfs: kiln_model::rootfs::RootFs::preloaded(stack),
        memory_mb: 256,
        disk_mb: 256,
        action,
        start_timeout_ms: 30_000,
        log_guid: format!("{process_guid}-app"),
        ..kiln_model::testing::desired_lrp(process_guid, 1)
    }
}

pub fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------- cell

/// A cell against a real BBS (SQLite in a temp dir), both running.
pub struct TestCell {
    pub bbs: Bbs,
    pub logs: Arc<CollectLogs>,
    pub config: CellConfig,
    pub stack: String,
    _dir: tempfile::TempDir,
    bbs_stop: CancellationToken,
    cell_stop: CancellationToken,
    cell: Option<JoinHandle<Result<(), kiln_cell::CellError>>>,
}

/// A /24 for one test cell's network, in 10.200.0.0/13, that no address
/// on this machine is in yet: concurrent test processes (other worktrees
/// run the same suites) each get their own, and the cell refuses one that
/// overlaps anyway.
pub fn test_subnet() -> kiln_cell::network::Subnet {
    let taken = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for _ in 0..64 {
        let n = (uuid::Uuid::new_v4().as_u128() % 2048) as u32;
        let (b, c) = (200 + n / 256, n % 256);
        let prefix = format!(" 10.{b}.{c}.");
        if !taken.contains(&prefix) {
            return format!("10.{b}.{c}.0/24").parse().unwrap();
        }
    }
    panic!("no free test subnet in 10.200.0.0/13");
}

pub fn test_network(dns_servers: Vec<SocketAddr>) -> kiln_cell::network::NetworkConfig {
    kiln_cell::network::NetworkConfig {
        subnet: test_subnet(),
        dns_servers,
    }
}

impl TestCell {
    /// A cell whose containers have their own network (a fresh subnet).
    /// `port_range`: the test's own, apart from every other test's and from
    /// `kiln_cell::DEFAULT_PORT_RANGE`, where the kiln servers of end-to-end
    /// tests running meanwhile hand out ports: a cell passes over a port
    /// another holds, and a test that names the port its instance gets (or
    /// sizes its range to its instances) would then see another.
    pub async fn start(port_range: std::ops::Range<u16>) -> TestCell {
        TestCell::start_with(port_range, Some(test_network(vec![]))).await
    }

    pub async fn start_with(
        port_range: std::ops::Range<u16>,
        network: Option<kiln_cell::network::NetworkConfig>,
    ) -> TestCell {
        let dir = tempfile::tempdir().unwrap();
        let bbs = Bbs::open_with(
            &dir.path().join("bbs.sqlite"),
            BbsConfig {
                convergence_interval: Duration::from_millis(500),
                ..BbsConfig::default()
            },
        )
        .await
        .unwrap();
        let bbs_stop = CancellationToken::new();
        {
            let bbs = bbs.clone();
            let stop = bbs_stop.clone();
            tokio::spawn(async move { bbs.run(stop).await });
        }
        let stack = kiln_cell::stack::host_stack_name();
        let config = CellConfig {
            cell_id: format!("cell-{}", &guid()[..8]),
            data_dir: dir.path().join("cell"),
            address: "127.0.0.1".into(),
            capacity: CellCapacity {
                memory_mb: 16_384,
                disk_mb: 65_536,
                containers: 64,
            },
            stack_name: stack.clone(),
            lifecycle_binary: std::env::current_exe().unwrap(),
            runc: PathBuf::from(RUNC),
            port_range,
            heartbeat_interval: Duration::from_millis(500),
            bulk_sync_interval: kiln_cell::DEFAULT_BULK_SYNC_INTERVAL,
            network,
            evacuation_timeout: kiln_cell::DEFAULT_EVACUATION_TIMEOUT,
            images: Default::default(),
        };
        let mut cell = TestCell {
            bbs,
            logs: Arc::new(CollectLogs::default()),
            config,
            stack,
            _dir: dir,
            bbs_stop,
            cell_stop: CancellationToken::new(),
            cell: None,
        };
        cell.start_cell();
        cell.wait_present().await;
        cell
    }

    /// Waits until the cell has heartbeated (its stack is built and its
    /// leftovers swept), so that measurements start from a ready cell.
    pub async fn wait_present(&self) {
        eventually("cell present", Duration::from_secs(30), || async {
            let cells = self.bbs.cells().await.unwrap();
            cells
                .iter()
                .any(|c| c.cell_id == self.config.cell_id)
                .then_some(())
        })
        .await
    }

    /// Runs the cell on a runtime of its own, then drops that runtime
    /// without letting the cell clean up: what a `kill -9` of the cell
    /// leaves (runc containers, mounts, cgroups). `until` says when.
    pub async fn run_cell_then_kill_it<F, Fut>(&mut self, until: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        self.stop_cell().await;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(kiln_cell::run(
            self.config.clone(),
            Arc::new(self.bbs.clone()),
            self.logs.clone(),
            CancellationToken::new(),
        ));
        until().await;
        runtime.shutdown_background();
    }

    fn start_cell(&mut self) {
        self.cell_stop = CancellationToken::new();
        let handle = tokio::spawn(kiln_cell::run(
            self.config.clone(),
            Arc::new(self.bbs.clone()),
            self.logs.clone(),
            self.cell_stop.clone(),
        ));
        self.cell = Some(handle);
    }

    /// Shuts the cell down (it stops its containers) and waits for it.
    pub async fn stop_cell(&mut self) {
        self.cell_stop.cancel();
        if let Some(handle) = self.cell.take() {
            tokio::time::timeout(Duration::from_secs(40), handle)
                .await
                .expect("cell shutdown in time")
                .unwrap()
                .unwrap();
        }
    }

    /// Starts the cell again on the same data dir, as after a restart.
    pub async fn restart_cell(&mut self) {
        self.start_cell();
    }

    pub fn runtime(&self) -> kiln_cell::RuncRuntime {
        kiln_cell::RuncRuntime::new(RUNC.into(), self.config.data_dir.join("runc"))
    }

    pub async fn containers(&self) -> Vec<String> {
        use kiln_cell::ContainerRuntime;
        self.runtime().list().await.unwrap()
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("containers").join(id)
    }

    pub async fn desire_task(&self, task_guid: &str, definition: TaskDefinition) {
        self.bbs
            .desire_task(task_guid, "cf-app-staging", definition)
            .await
            .unwrap();
    }

    /// Waits for the task to complete and returns it.
    pub async fn completed_task(&self, task_guid: &str, within: Duration) -> Task {
        eventually(&format!("task {task_guid} to complete"), within, || async {
            let t = self.bbs.task_by_guid(task_guid).await.unwrap();
            (t.state == kiln_model::TaskState::Completed).then_some(t)
        })
        .await
    }

    pub async fn actual_lrp(&self, process_guid: &str) -> Option<ActualLrp> {
        let filter = ActualLrpFilter {
            process_guid: Some(process_guid.into()),
            ..Default::default()
        };
        self.bbs
            .actual_lrps(filter)
            .await
            .unwrap()
            .into_iter()
            .next()
    }

    /// The instance of `process_guid`, once it is RUNNING (within 30 s).
    pub async fn running(&self, process_guid: &str) -> ActualLrp {
        eventually(
            &format!("{process_guid} RUNNING"),
            Duration::from_secs(30),
            || async {
                self.actual_lrp(process_guid)
                    .await
                    .filter(|a| a.state == kiln_model::ActualLrpState::Running)
            },
        )
        .await
    }

    pub async fn shutdown(mut self) {
        self.stop_cell().await;
        self.bbs_stop.cancel();
    }
}

impl Drop for TestCell {
    /// A failed test must not leave containers running on the machine:
    /// destroy whatever is still under this cell's runc root.
    fn drop(&mut self) {
        self.cell_stop.cancel();
        self.bbs_stop.cancel();
        let _network = NetworkCleanup(
            self.config
                .network
                .is_some()
                .then(|| self.config.cell_id.clone()),
        );
        let root = self.config.data_dir.join("runc");
        if !root.exists() {
            return;
        }
        let runc = |args: &[&str]| {
            std::process::Command::new(RUNC)
                .arg("--root")
                .arg(&root)
                .args(args)
                .output()
                .ok()
        };
        if let Some(out) = runc(&["list", "-q"]) {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                runc(&["delete", "--force", id]);
            }
        }
        // Nor a container file system mounted (its loop device goes too).
        let data_dir = self.config.data_dir.to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
            if mount.starts_with(&data_dir) {
                let _ = std::process::Command::new("umount")
                    .args(["-l", mount])
                    .output();
            }
        }
    }
}

/// Removes a cell's network when dropped, so that a failed test leaves no
/// bridge, table or namespace behind (in `TestCell::drop` it is dropped
/// last, after the containers are destroyed).
pub struct NetworkCleanup(pub Option<String>);

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        if let Some(cell_id) = &self.0 {
            kiln_cell::network::remove_leftovers_blocking(cell_id);
        }
    }
}
