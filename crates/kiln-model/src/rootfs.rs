//! The root filesystem a Task or DesiredLrp runs on, and what a cell can
//! provide, written on the wire as Diego writes them: `preloaded:<stack>`
//! for a stack the cell has, `docker://<registry>/<repository>#<tag>` (or
//! `@sha256:…`) for an image, with an empty registry (`docker:///…`) for
//! Docker Hub, as Cloud Controller's `DockerURIConverter` writes it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A typed `rootfs`: a preloaded stack or a Docker image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RootFs {
    Preloaded {
        stack: String,
    },
    /// `image` is the reference as a user writes it (`registry/repo:tag`,
    /// `repo@sha256:…`); the wire form is Diego's URI.
    Docker {
        image: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rootfs {0:?}: want preloaded:<stack> or docker://<registry>/<repository>")]
pub struct InvalidRootFs(pub String);

impl RootFs {
    pub fn preloaded(stack: impl Into<String>) -> RootFs {
        RootFs::Preloaded {
            stack: stack.into(),
        }
    }

    pub fn docker(image: impl Into<String>) -> RootFs {
        RootFs::Docker {
            image: image.into(),
        }
    }

    /// Whether a cell offering `providers` can run work on this rootfs
    /// (Diego's `RootFSProviders.Match`: a stack by name, any image on a
    /// cell with the `docker` provider).
    pub fn runs_on(&self, providers: &[RootFsProvider]) -> bool {
        providers.iter().any(|p| match (self, p) {
            (RootFs::Preloaded { stack }, RootFsProvider::Preloaded { stack: s }) => stack == s,
            (RootFs::Docker { .. }, RootFsProvider::Docker) => true,
            _ => false,
        })
    }

    /// The image reference of a Docker rootfs.
    pub fn image(&self) -> Option<&str> {
        match self {
            RootFs::Docker { image } => Some(image),
            RootFs::Preloaded { .. } => None,
        }
    }
}

/// `registry/repo:tag` → `docker://registry/repo#tag`; a reference whose
/// first component is no host name (no `.` or `:`, not `localhost`) is on
/// Docker Hub and gets an empty host.
fn docker_uri(image: &str) -> String {
    let (host, path) = match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("", image),
    };
    let path = match path.split_once('@') {
        Some((repo, digest)) => format!("{repo}@{digest}"),
        None => match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => format!("{repo}#{tag}"),
            _ => path.to_string(),
        },
    };
    format!("docker://{host}/{path}")
}

/// The inverse of [`docker_uri`].
fn image_of_uri(rest: &str) -> Option<String> {
    let (host, path) = rest.split_once('/')?;
    if path.is_empty() {
        return None;
    }
    let path = match path.split_once('#') {
        Some((repo, tag)) if !tag.is_empty() => format!("{repo}:{tag}"),
        Some(_) => return None,
        None => path.to_string(),
    };
    Some(if host.is_empty() {
        path
    } else {
        format!("{host}/{path}")
    })
}

impl fmt::Display for RootFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootFs::Preloaded { stack } => write!(f, "preloaded:{stack}"),
            RootFs::Docker { image } => f.write_str(&docker_uri(image)),
        }
    }
}

impl std::str::FromStr for RootFs {
    type Err = InvalidRootFs;

    fn from_str(s: &str) -> Result<RootFs, InvalidRootFs> {
        let invalid = || InvalidRootFs(s.to_string());
        if let Some(stack) = s.strip_prefix("preloaded:") {
            if stack.is_empty() {
                return Err(invalid());
            }
            return Ok(RootFs::preloaded(stack));
        }
        let rest = s.strip_prefix("docker://").ok_or_else(invalid)?;
        image_of_uri(rest).map(RootFs::docker).ok_or_else(invalid)
    }
}

impl TryFrom<String> for RootFs {
    type Error = InvalidRootFs;
    fn try_from(s: String) -> Result<RootFs, InvalidRootFs> {
        s.parse()
    }
}

impl From<RootFs> for String {
    fn from(r: RootFs) -> String {
        r.to_string()
    }
}

/// What root filesystems a cell offers (Diego's `Provider`s): a stack by
/// name (`preloaded:<stack>`), or any Docker image (`docker`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RootFsProvider {
    Preloaded { stack: String },
    Docker,
}

impl RootFsProvider {
    pub fn preloaded(stack: impl Into<String>) -> RootFsProvider {
        RootFsProvider::Preloaded {
            stack: stack.into(),
        }
    }
}

impl fmt::Display for RootFsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootFsProvider::Preloaded { stack } => write!(f, "preloaded:{stack}"),
            RootFsProvider::Docker => f.write_str("docker"),
        }
    }
}

impl TryFrom<String> for RootFsProvider {
    type Error = InvalidRootFs;
    fn try_from(s: String) -> Result<RootFsProvider, InvalidRootFs> {
        match s.strip_prefix("preloaded:") {
            _ if s == "docker" => Ok(RootFsProvider::Docker),
            Some(stack) if !stack.is_empty() => Ok(RootFsProvider::Preloaded {
                stack: stack.to_string(),
            }),
            _ => Err(InvalidRootFs(s)),
        }
    }
}

impl From<RootFsProvider> for String {
    fn from(p: RootFsProvider) -> String {
        p.to_string()
    }
}

/// A registry password: carried to the cell, never shown by `Debug` (so
/// never in a log line that prints a Task or a DesiredLrp).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"[REDACTED]\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(wire: &str, typed: RootFs) {
        assert_eq!(wire.parse::<RootFs>().unwrap(), typed, "{wire}");
        assert_eq!(typed.to_string(), wire);
        let json = serde_json::to_string(&typed).unwrap();
        assert_eq!(json, format!("\"{wire}\""));
    }

    #[test]
    fn rootfs_reads_and_writes_diegos_uris() {
        round_trip("preloaded:cflinuxfs4", RootFs::preloaded("cflinuxfs4"));
        round_trip("docker:///busybox#latest", RootFs::docker("busybox:latest"));
        round_trip("docker:///library/app", RootFs::docker("library/app"));
        round_trip(
            "docker://127.0.0.1:5000/team/app#v1",
            RootFs::docker("127.0.0.1:5000/team/app:v1"),
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        round_trip(
            &format!("docker://127.0.0.1:5000/app@{digest}"),
            RootFs::docker(format!("127.0.0.1:5000/app@{digest}")),
        );
        round_trip(
            "docker://localhost/app#1",
            RootFs::docker("localhost/app:1"),
        );
        for bad in [
            "",
            "preloaded:",
            "docker://",
            "docker://host/",
            "oci:x",
            "docker:///a#",
        ] {
            assert!(bad.parse::<RootFs>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rootfs_matches_providers_as_diego_does() {
        let providers = [
            RootFsProvider::Preloaded {
                stack: "cflinuxfs4".into(),
            },
            RootFsProvider::Docker,
        ];
        assert!(RootFs::preloaded("cflinuxfs4").runs_on(&providers));
        assert!(!RootFs::preloaded("other").runs_on(&providers));
        assert!(RootFs::docker("x/y:z").runs_on(&providers));
        assert!(!RootFs::docker("x").runs_on(&providers[..1]));
        let json = serde_json::to_string(&providers).unwrap();
        assert_eq!(json, r#"["preloaded:cflinuxfs4","docker"]"#);
        assert_eq!(
            serde_json::from_str::<Vec<RootFsProvider>>(&json).unwrap(),
            providers
        );
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "\"[REDACTED]\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }
}
