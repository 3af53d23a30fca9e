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
