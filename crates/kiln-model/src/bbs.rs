//! Diego's BBS nouns as plain data: Tasks, DesiredLrps, ActualLrps, cells and
//! the actions a cell performs. These cross the API ↔ BBS ↔ cell boundary
//! (in process today, over HTTP when roles are split), so they are serde
//! types with Diego's field names.
//!
//! Deliberate simplification of Diego's action tree: a unit of work is
//! `downloads` (in parallel) → one `run` → `uploads`, under one timeout. That
//! is exactly the shape Cloud Controller builds for staging and for app
//! instances, without a general tree interpreter.

use crate::rootfs::{RootFs, RootFsProvider, Secret};
use crate::state::{ActualLrpState, TaskState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Nanoseconds since the Unix epoch, as Diego keeps its timestamps.
pub type Nanos = i64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// How a downloaded artifact is laid into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A zip archive, extracted into `to` (app packages, buildpacks).
    Zip,
    /// A gzipped tarball, extracted into `to` (droplets, build caches).
    Tgz,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// `sha256` (the only algorithm Kiln produces).
    pub algorithm: String,
    pub value: String,
}

/// Diego's `DownloadAction`: fetch `from` (an HTTP URL the cell may GET
/// without further credentials) and extract it at `to`, a path inside the
/// container's writable directories (`/tmp/...` or `/home/vcap/...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadAction {
    pub artifact: String,
    pub from: String,
    pub to: String,
    pub kind: ArtifactKind,
    /// When set, the cell may keep the artifact in its local cache under this
    /// key and reuse it instead of downloading again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// A missing artifact (HTTP 404) is not an error (Diego's `Try`).
    #[serde(default)]
    pub optional: bool,
}

/// Diego's `UploadAction`: POST the file at `from` (a path inside the
/// container) to `to` as the raw request body; or, with `method: put`,
/// PUT it to a blobstore's own signed URL, so the bytes go from the cell
/// to the store directly, then POST an [`UploadReport`] to `report_to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadAction {
    pub artifact: String,
    pub from: String,
    pub to: String,
    /// Absent on the wire for a POST: what older cells and APIs read.
    #[serde(default, skip_serializing_if = "UploadMethod::is_post")]
    pub method: UploadMethod,
    /// Where the cell reports what it PUT (the API verifies the stored
    /// object against it before it trusts the blob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadMethod {
    /// Diego's: the raw body to the API, which stores it.
    #[default]
    Post,
    /// To a blobstore's signed URL, in one request.
    Put,
}

impl UploadMethod {
    pub fn is_post(&self) -> bool {
        *self == UploadMethod::Post
    }
}

/// What a cell PUT, as it counted while streaming: the API compares the
/// object the store holds with it (size, and S3's single-PUT ETag, the
/// MD5) and records the SHA-256 as the droplet's checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReport {
    pub size: u64,
    /// Hex SHA-256 of the bytes sent.
    pub sha256: String,
    /// Hex MD5 of the bytes sent.
    pub md5: String,
}

/// S3's limit on one PUT (5 GiB); larger blobs need a multipart upload,
/// which a single signed URL cannot do.
pub const SINGLE_PUT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// Diego's `RunAction`: one process in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAction {
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    pub user: String,
}

/// One sidecar's command in a DesiredLrp: a program and its arguments,
/// named for the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarAction {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The source type its output is logged with (CC's
    /// `APP/PROC/WEB/SIDECAR/NAME`); empty means the LRP's own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
}

/// Staging a Docker image: the cell asks the image's registry, on the
/// host side (containers reach no loopback registry), what the reference
/// names, and the Task's result is the [`crate::staging::StagingResult`]
/// with the pinned digest and the image's execution metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveImageAction {
    /// The reference as the user gave it (`registry/repo:tag`, `repo@sha256:…`).
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub password: Secret,
}

/// What a Task does, as submitted to the BBS (`TaskDefinition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinition {
    pub rootfs: RootFs,
    /// When set, the Task is this host-side step alone: no container, no
    /// downloads, no run, no uploads (the cell refuses a Task with both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_image: Option<ResolveImageAction>,
    /// Registry credentials for a Docker rootfs (a docker app's task).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_username: String,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub image_password: Secret,
    pub log_guid: String,
    pub log_source: String,
    pub memory_mb: u64,
    pub disk_mb: u64,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub downloads: Vec<DownloadAction>,
    pub run: RunAction,
    #[serde(default)]
    pub uploads: Vec<UploadAction>,
    /// A file inside the container whose first 10 KB become the task's
    /// `result` when it succeeds.
    #[serde(default)]
    pub result_file: String,
    /// The whole task (downloads, run, uploads) must finish within this.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub task_guid: String,
    pub domain: String,
    pub definition: TaskDefinition,
    pub state: TaskState,
    /// The cell the auctioneer placed the task on (set while PENDING once
    /// placed, and kept while RUNNING and after).
    #[serde(default)]
    pub cell_id: String,
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub failure_reason: String,
    pub created_at: Nanos,
    pub updated_at: Nanos,
}

/// How a cell decides that an instance is healthy (CF's health check types).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HealthCheck {
    /// A TCP connect to the instance's port (CF's default).
    Port,
    /// `GET endpoint` on the instance's port must answer 200.
    Http { endpoint: String },
    /// No check: healthy while the process runs.
    Process,
}

/// A long-running process the BBS keeps `instances` copies of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLrp {
    /// `<cc process guid>-<version>`; any change but instances/routes means
    /// a new DesiredLrp under a new process guid.
    pub process_guid: String,
    pub domain: String,
    pub instances: u32,
    /// A stack, or the image pinned by digest at staging.
    pub rootfs: RootFs,
    /// Registry credentials for a Docker rootfs (Diego's `image_username`,
    /// `image_password`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_username: String,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub image_password: Secret,
    pub memory_mb: u64,
    pub disk_mb: u64,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Run before `action`, e.g. the droplet download into `/home/vcap`.
    #[serde(default)]
    pub setup: Vec<DownloadAction>,
    pub action: RunAction,
    /// More commands run in the same container beside `action` (CC's
    /// sidecars; Diego's codependent run actions): each as `action`'s user,
    /// in its directory, with its environment. If any of them or `action`
    /// exits, the instance has crashed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<SidecarAction>,
    /// The ports the app listens on inside its container (Diego's
    /// `ports`); empty means 8080. The first is `PORT` and the one mapped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    pub health_check: HealthCheck,
    pub start_timeout_ms: u64,
    /// The routes the router sends to this process's instances.
    #[serde(default)]
    pub routes: Vec<HttpRoute>,
    pub log_guid: String,
    /// e.g. `APP/PROC/WEB`; the instance index is added by the cell.
    pub log_source: String,
    /// Free text for the desirer; Cloud Controller keeps its own bookkeeping here.
    #[serde(default)]
    pub annotation: String,
}

/// One HTTP route of a DesiredLrp: a host name and an optional path
/// prefix (`/a/b`, or empty), kept apart so the router need not guess where
/// the host ends. Gorouter's route URI is `host` followed by `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HttpRouteWire")]
pub struct HttpRoute {
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl HttpRoute {
    /// Splits a route URL (`host.domain/path`, as Cloud Controller writes
    /// it) at the first `/`.
    pub fn from_url(url: &str) -> HttpRoute {
        match url.split_once('/') {
            Some((host, path)) => HttpRoute {
                host: host.to_string(),
                path: format!("/{path}"),
            },
            None => HttpRoute {
                host: url.to_string(),
                path: String::new(),
            },
        }
        .without_root_path()
    }

    fn without_root_path(mut self) -> HttpRoute {
        if self.path == "/" {
            self.path.clear();
        }
        self
    }
}

impl From<&str> for HttpRoute {
    fn from(url: &str) -> HttpRoute {
        HttpRoute::from_url(url)
    }
}

impl std::fmt::Display for HttpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.host, self.path)
    }
}

/// DesiredLrps stored before routes had a path carry plain `host` strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum HttpRouteWire {
    Url(String),
    Parts {
        host: String,
        #[serde(default)]
        path: String,
    },
}

impl From<HttpRouteWire> for HttpRoute {
    fn from(wire: HttpRouteWire) -> HttpRoute {
        match wire {
            HttpRouteWire::Url(url) => HttpRoute::from_url(&url),
            HttpRouteWire::Parts { host, path } => HttpRoute { host, path }.without_root_path(),
        }
    }
}

/// What may change on a DesiredLrp without replacing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLrpUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<HttpRoute>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActualLrpKey {
    pub process_guid: String,
    pub index: u32,
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActualLrpInstanceKey {
    pub instance_guid: String,
    pub cell_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrpNetInfo {
    /// Where the router reaches the instance (the cell's address).
    pub address: String,
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub instance_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrp {
    pub key: ActualLrpKey,
    /// Set from CLAIMED on: which cell runs it, under which instance guid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_key: Option<ActualLrpInstanceKey>,
    /// Set only while RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_info: Option<ActualLrpNetInfo>,
    pub state: ActualLrpState,
    #[serde(default)]
    pub crash_count: u32,
    #[serde(default)]
    pub crash_reason: String,
    /// Set only while UNCLAIMED, when no cell can take it.
    #[serde(default)]
    pub placement_error: String,
    /// When the state last changed.
    pub since: Nanos,
    /// Diego's ActualLRP presence: SUSPECT while its cell's presence has
    /// expired and its replacement is not yet RUNNING.
    #[serde(default, skip_serializing_if = "ActualLrpPresence::is_ordinary")]
    pub presence: ActualLrpPresence,
}

/// Diego's ActualLRP presence (Kiln keeps evacuating instances apart, see
/// `evacuating_lrps`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActualLrpPresence {
    #[default]
    Ordinary,
    Suspect,
}

impl ActualLrpPresence {
    pub fn is_ordinary(&self) -> bool {
        *self == Self::Ordinary
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCapacity {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u32,
}

/// A cell's announcement of itself, refreshed by its heartbeat (Diego's
/// `CellPresence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPresence {
    pub cell_id: String,
    /// Where instances on this cell are reached (`CF_INSTANCE_IP`).
    pub address: String,
    pub capacity: CellCapacity,
    /// The stacks (`preloaded:<stack>`) and `docker` this cell can run.
    pub rootfs_providers: Vec<RootFsProvider>,
}

/// The work placed on one cell, as its bulk sync reads it.
///
/// The records are shared (`Arc`) with the BBS's in-memory copy: every
/// cell reads its work every few seconds, and at a thousand cells deep
/// copies of them were most of the BBS's CPU. On the wire they are plain
/// records, as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellWork {
    /// Tasks placed on the cell that are PENDING (to start) or RUNNING.
    pub tasks: Vec<Task>,
    /// What to run for the instances in `lrps`, each DesiredLrp once however
    /// many of its instances the cell has.
    #[serde(with = "shared")]
    pub desired_lrps: Vec<Arc<DesiredLrp>>,
    /// ActualLrps CLAIMED by or RUNNING on the cell; each one's DesiredLrp
    /// is in `desired_lrps` (by process guid).
    #[serde(with = "shared")]
    pub lrps: Vec<Arc<ActualLrp>>,
}

impl CellWork {
    /// `desired_lrps` by process guid.
    pub fn desired_by_guid(&self) -> std::collections::HashMap<&str, &DesiredLrp> {
        self.desired_lrps
            .iter()
            .map(|d| (d.process_guid.as_str(), &**d))
            .collect()
    }
}

/// `Vec<Arc<T>>` as a plain sequence of `T` (what serde's `rc` feature
/// would do, without turning it on for every crate).
mod shared {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<T: Serialize, S: Serializer>(
        items: &[Arc<T>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|item| &**item))
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Arc<T>>, D::Error> {
        let items = Vec::<T>::deserialize(deserializer)?;
        Ok(items.into_iter().map(Arc::new).collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpAssignment {
    pub actual: ActualLrp,
    pub desired: DesiredLrp,
}

/// A change in the BBS, as subscribers (cells, router, Cloud Controller)
/// receive it. Subscribers must treat events as hints and re-read state when
/// they lag: delivery is best-effort, the store is the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BbsEvent {
    TaskChanged {
        task: Task,
    },
    TaskRemoved {
        task_guid: String,
    },
    DesiredLrpChanged {
        desired_lrp: DesiredLrp,
    },
    DesiredLrpRemoved {
        process_guid: String,
    },
    ActualLrpChanged {
        actual_lrp: ActualLrp,
    },
    ActualLrpRemoved {
        key: ActualLrpKey,
    },
    /// An instance crashed (Diego's `ActualLRPCrashedEvent`): who ran it,
    /// its crash count after this crash, the cell's reason, and when (the
    /// ActualLrp's `since` after the crash, so one crash has one identity).
    ActualLrpCrashed {
        key: ActualLrpKey,
        instance_key: ActualLrpInstanceKey,
        crash_count: u32,
        crash_reason: String,
        since: Nanos,
    },
    /// The receiver fell behind and missed events: re-read everything.
    Lagged,
}

#[cfg(test)]
mod tests {
    use super::{HttpRoute, UploadAction, UploadMethod};

    #[test]
    fn a_post_upload_keeps_diegos_wire_form_and_a_put_names_its_method() {
        let post = UploadAction {
            artifact: "droplet".into(),
            from: "/tmp/droplet".into(),
            to: "http://api/upload".into(),
            ..Default::default()
        };
        let json = serde_json::to_string(&post).unwrap();
        assert_eq!(
            json,
            r#"{"artifact":"droplet","from":"/tmp/droplet","to":"http://api/upload"}"#
        );
        assert_eq!(serde_json::from_str::<UploadAction>(&json).unwrap(), post);
        let put = UploadAction {
            method: UploadMethod::Put,
            report_to: Some("http://api/uploaded".into()),
            ..post
        };
        let json = serde_json::to_string(&put).unwrap();
        assert!(json.contains(r#""method":"put""#), "{json}");
        assert_eq!(serde_json::from_str::<UploadAction>(&json).unwrap(), put);
    }

    #[test]
    fn routes_split_host_and_path_and_read_the_old_plain_form() {
        let plain: HttpRoute = "app.test".into();
        assert_eq!((plain.host.as_str(), plain.path.as_str()), ("app.test", ""));
        let with_path = HttpRoute::from_url("app.test/a/b");
        assert_eq!(
            (with_path.host.as_str(), with_path.path.as_str()),
            ("app.test", "/a/b")
        );
        assert_eq!(with_path.to_string(), "app.test/a/b");

        let json = serde_json::to_string(&with_path).unwrap();
        assert_eq!(json, r#"{"host":"app.test","path":"/a/b"}"#);
        assert_eq!(serde_json::from_str::<HttpRoute>(&json).unwrap(), with_path);
        // DesiredLrps written before paths were kept apart.
        assert_eq!(
            serde_json::from_str::<HttpRoute>(r#""app.test/a/b""#).unwrap(),
            with_path
        );
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"host":"app.test"}"#
        );
    }
}
