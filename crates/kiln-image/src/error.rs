//! The one error type of this crate: a closed list of outcomes, each message
//! saying which failure it is, because the docker lifecycle shows it as the
//! build's failure reason (`kiln push -o IMAGE` prints it as it is).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },

    #[error("image {repository} not found in registry {registry}")]
    ImageNotFound {
        registry: String,
        repository: String,
    },

    #[error(
        "manifest unknown: {reference} not found in registry {registry} (no such tag or digest)"
    )]
    ManifestUnknown { registry: String, reference: String },

    #[error("blob {digest} of image {repository} not found in registry {registry}")]
    BlobUnknown {
        registry: String,
        repository: String,
        digest: String,
    },

    #[error("unauthorized: registry {registry} refused {why}")]
    Unauthorized { registry: String, why: String },

    #[error("registry {registry} unreachable: {reason}")]
    Unreachable { registry: String, reason: String },

    #[error("registry {registry} timed out after {seconds}s")]
    Timeout { registry: String, seconds: u64 },

    #[error("no linux/amd64 image in {reference} (platforms: {available})")]
    WrongPlatform {
        reference: String,
        available: String,
    },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },

    #[error("bad manifest for {reference}: {why}")]
    BadManifest { reference: String, why: String },

    #[error("bad layer content in {digest}: entry {entry:?}: {why}")]
    BadLayer {
        digest: String,
        entry: String,
        why: String,
    },

    #[error("user {user:?} of the image: {why}")]
    UnknownUser { user: String, why: String },

    #[error("registry {registry} error: {detail}")]
    Registry { registry: String, detail: String },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("mounting overlay at {target}: {detail}")]
    Mount { target: PathBuf, detail: String },
}

impl ImageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}
