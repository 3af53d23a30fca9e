//! Image references as Docker reads them: `busybox` is
//! `registry-1.docker.io/library/busybox:latest`, a first component with a
//! dot, a colon or `localhost` is a registry host, a digest pins the image
//! (and wins over a tag given with it).
//!
//! The grammar is oci-client's (a port of Docker's `reference` package);
//! this module only adds Docker Hub's real API host, `registry-1.docker.io`,
//! so that the normalized reference names the host Kiln talks to.

use crate::ImageError;
use std::fmt;
use std::str::FromStr;

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// The registry host (and port), e.g. `registry-1.docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository within the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `None` when the reference is pinned by digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`) the reference is pinned to, if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The tag or digest that names the manifest in the registry's API.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// This image pinned to `digest`: `registry/repository@digest`.
    pub fn pinned(&self, digest: &str) -> ImageReference {
        ImageReference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// `registry/repository@digest` from a `ResolvedImage`'s parts, which
    /// came from a parsed reference.
    pub(crate) fn pinned_parts(registry: &str, repository: &str, digest: &str) -> ImageReference {
        ImageReference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match &self.digest {
            Some(digest) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            None => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                self.manifest_reference().to_string(),
            ),
        }
    }
}

impl FromStr for ImageReference {
    type Err = ImageError;

    fn from_str(reference: &str) -> Result<ImageReference, ImageError> {
        let invalid = |why: String| ImageError::InvalidReference {
            reference: reference.to_string(),
            why,
        };
        if reference.trim() != reference {
            return Err(invalid("surrounding whitespace".into()));
        }
        let parsed =
            oci_client::Reference::try_from(reference).map_err(|e| invalid(e.to_string()))?;
        if let Some(digest) = parsed.digest()
            && !digest.starts_with("sha256:")
        {
            return Err(invalid("only sha256 digests are supported".into()));
        }
        let registry = match parsed.registry() {
            DOCKER_HUB => DOCKER_HUB_API.to_string(),
            other => other.to_string(),
        };
        let digest = parsed.digest().map(str::to_string);
        // Docker pulls by digest when both are given; the tag is then only a
        // label, and keeping it would suggest that it matters.
        let tag = if digest.is_some() {
            None
        } else {
            parsed.tag().map(str::to_string)
        };
        Ok(ImageReference {
            registry,
            repository: parsed.repository().to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.digest, &self.tag) {
            (Some(digest), _) => write!(f, "@{digest}"),
            (None, Some(tag)) => write!(f, ":{tag}"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_as_docker_does() {
        let cases = [
            ("busybox", "registry-1.docker.io/library/busybox:latest"),
            ("busybox:1.36", "registry-1.docker.io/library/busybox:1.36"),
            (
                "cloudfoundry/diego-docker-app",
                "registry-1.docker.io/cloudfoundry/diego-docker-app:latest",
            ),
            (
                "docker.io/library/nginx:1",
                "registry-1.docker.io/library/nginx:1",
            ),
            (
                "index.docker.io/library/nginx",
                "registry-1.docker.io/library/nginx:latest",
            ),
            ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
            ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
        ];
        for (given, want) in cases {
            let parsed: ImageReference = given.parse().unwrap();
            assert_eq!(parsed.to_string(), want, "{given}");
        }
    }

    #[test]
    fn a_digest_pins_and_wins_over_a_tag() {
        let parsed: ImageReference = format!("127.0.0.1:5000/app@{D}").parse().unwrap();
        assert_eq!(parsed.digest(), Some(D));
        assert_eq!(parsed.manifest_reference(), D);
        let both: ImageReference = format!("app:v1@{D}").parse().unwrap();
        assert_eq!(both.tag(), None);
        assert_eq!(
            both.to_string(),
            format!("registry-1.docker.io/library/app@{D}")
        );
    }

    #[test]
    fn rejects_malformed_references() {
        let cases = [
            "",
            " busybox",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "-app",
            "app:tag:more",
            "a//b",
            "http://registry/app",
        ];
        for given in cases {
            let result = given.parse::<ImageReference>();
            assert!(
                matches!(result, Err(ImageError::InvalidReference { .. })),
                "{given:?}: {result:?}"
            );
        }
    }
}
