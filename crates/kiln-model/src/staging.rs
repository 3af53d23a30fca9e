//! What staging produces, shared by the lifecycle builder (which writes it),
//! the cell (which carries it back as the Task result) and Cloud Controller
//! (which records it on the droplet). Field names follow
//! buildpackapplifecycle's `StagingResult`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackMetadata {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleMetadata {
    #[serde(default)]
    pub buildpack_key: String,
    #[serde(default)]
    pub detected_buildpack: String,
    #[serde(default)]
    pub buildpacks: Vec<BuildpackMetadata>,
    /// The docker lifecycle's image, pinned by digest
    /// (`registry/repo@sha256:…`), as Diego's docker stager reports it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docker_image: String,
}

/// One port an image exposes (`EXPOSE 8080/tcp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: String,
}

/// A docker droplet's `execution_metadata`: what the image's config says
/// about running it (Diego's docker lifecycle writes the same fields, plus
/// `env` and the digest, which Kiln's cell needs to run without a
/// launcher inside the image).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerExecutionMetadata {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub ports: Vec<ExposedPort>,
    #[serde(default)]
    pub digest: String,
}

impl DockerExecutionMetadata {
    /// The port the app listens on: the first exposed TCP port, else 8080
    /// (Cloud Controller's rule for docker apps).
    pub fn app_port(&self) -> u16 {
        self.ports
            .iter()
            .find(|p| p.protocol.eq_ignore_ascii_case("tcp"))
            .map_or(8080, |p| p.port)
    }

    /// ENTRYPOINT followed by CMD: the image's own start command.
    pub fn start_args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// The content of `/tmp/result.json` after a buildpack staging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingResult {
    pub lifecycle_type: String,
    pub lifecycle_metadata: LifecycleMetadata,
    /// Process type (`web`, `worker`, …) → start command.
    pub process_types: BTreeMap<String, String>,
    #[serde(default)]
    pub execution_metadata: String,
    /// Sidecars the buildpacks declared in their `launch.yml`; the API makes
    /// them the app's `origin: buildpack` sidecars when the droplet becomes
    /// current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<BuildpackSidecar>,
}

/// A sidecar a buildpack declared (buildpackapplifecycle's `Sidecar`): a
/// `launch.yml` process with `platforms.cloudfoundry.sidecar_for`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackSidecar {
    pub name: String,
    pub process_types: Vec<String>,
    pub command: String,
    /// `limits.memory`, in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
}

/// Staging failures, with Cloud Foundry's error names and the lifecycle
/// builder's exit codes (buildpackapplifecycle's `models.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingFailure {
    NoAppDetected,
    BuildpackCompileFailed,
    BuildpackReleaseFailed,
    SupplyFailed,
    FinalizeFailed,
    Other,
}

impl StagingFailure {
    pub fn exit_code(self) -> i32 {
        match self {
            StagingFailure::NoAppDetected => 222,
            StagingFailure::BuildpackCompileFailed => 223,
            StagingFailure::BuildpackReleaseFailed => 224,
            StagingFailure::SupplyFailed => 225,
            StagingFailure::FinalizeFailed => 226,
            StagingFailure::Other => 1,
        }
    }

    pub fn from_exit_code(code: i32) -> Self {
        match code {
            222 => StagingFailure::NoAppDetected,
            223 => StagingFailure::BuildpackCompileFailed,
            224 => StagingFailure::BuildpackReleaseFailed,
            225 => StagingFailure::SupplyFailed,
            226 => StagingFailure::FinalizeFailed,
            _ => StagingFailure::Other,
        }
    }

    /// The `<ErrorName> - <description>` text Cloud Controller puts in
    /// `build.error` (its failure reason sanitizer maps 222–224 by name and
    /// everything else to `StagingError`).
    pub fn build_error(self, detail: &str) -> String {
        let (name, description) = match self {
            StagingFailure::NoAppDetected => (
                "NoAppDetectedError",
                "An app was not successfully detected by any available buildpack",
            ),
            StagingFailure::BuildpackCompileFailed => (
                "BuildpackCompileFailed",
                "App staging failed in the buildpack compile phase",
            ),
            StagingFailure::BuildpackReleaseFailed => (
                "BuildpackReleaseFailed",
                "App staging failed in the buildpack release phase",
            ),
            _ => ("StagingError", "Staging error"),
        };
        if detail.is_empty() {
            format!("{name} - {description}")
        } else {
            format!("{name} - {description}: {detail}")
        }
    }
}
