//! Docker images on the cell (the docker lifecycle's cell side): staging
//! resolves an image reference on the host (test and private registries
//! live on loopback, which containers cannot reach) into the staging
//! result; running assembles an instance's root file system from the
//! cached layers with overlayfs, upper and work directories on the
//! container's own disk so its quota holds; the rep collects garbage.
//!
//! The registry client, the layer cache and the overlay mount are
//! `kiln-image`'s; this module only joins them to Tasks and instances.

use crate::container::ContainerDir;
use kiln_image::{Credentials, ImageError, LayerCache, Registry, RegistryConfig, ResolvedImage};
use kiln_model::bbs::ResolveImageAction;
use kiln_model::rootfs::Secret;
use kiln_model::staging::{DockerExecutionMetadata, ExposedPort, LifecycleMetadata, StagingResult};
use kiln_model::{CONTAINER_GID, CONTAINER_UID};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The operator's image settings (`kiln server` flags).
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// `--insecure-docker-registries`: spoken to over plain HTTP (loopback
    /// registries always are).
    pub insecure_registries: Vec<String>,
    /// `--image-cache-mb`: garbage collection keeps the layer cache under it.
    pub cache_max_bytes: u64,
    /// `--image-max-layer-mb`: a bigger layer fails staging or the start.
    pub max_layer_bytes: u64,
    /// One registry exchange (and every stall of a layer download).
    pub timeout: Duration,
}

impl Default for ImageSettings {
    fn default() -> ImageSettings {
        ImageSettings {
            insecure_registries: Vec::new(),
            cache_max_bytes: 10 << 30,
            max_layer_bytes: 2 << 30,
            timeout: Duration::from_secs(60),
        }
    }
}

/// The registry client and the layer cache of one cell.
#[derive(Debug, Clone)]
pub struct Images {
    registry: Registry,
    cache: Arc<LayerCache>,
}

fn credentials(username: &str, password: &Secret) -> Option<Credentials> {
    (!username.is_empty()).then(|| Credentials {
        username: username.to_string(),
        password: password.expose().to_string(),
    })
}

impl Images {
    /// Opens the layer cache under `<data_dir>/images`.
    pub fn open(data_dir: &Path, settings: &ImageSettings) -> Result<Images, ImageError> {
        let registry = Registry::new(RegistryConfig {
            insecure_registries: settings.insecure_registries.clone(),
            timeout: settings.timeout,
            max_layer_bytes: settings.max_layer_bytes,
            ..RegistryConfig::default()
        });
        // No user namespace: files keep the image's owners (see
        // ARCHITECTURE.md, "Docker images").
        let cache = LayerCache::new(data_dir.join("images"), settings.cache_max_bytes, 0)?;
        Ok(Images {
            registry,
            cache: Arc::new(cache),
        })
    }

    /// Staging: what `action.image` names now, as the staging result
    /// Cloud Controller records on the droplet.
    pub async fn stage(&self, action: &ResolveImageAction) -> Result<ResolvedImage, ImageError> {
        let creds = credentials(&action.username, &action.password);
        self.registry.resolve(&action.image, creds.as_ref()).await
    }

    /// Staging's second half: every layer of `image` pulled, its digest
    /// verified and unpacked into the cache (bad content, a digest that
    /// does not match, a layer too large fail the build, not the first
    /// instance; the instances on this cell then find them cached).
    pub async fn pull(
        &self,
        image: &ResolvedImage,
        action: &ResolveImageAction,
    ) -> Result<usize, ImageError> {
        let creds = credentials(&action.username, &action.password);
        let layers = self
            .cache
            .rootfs(&self.registry, image, creds.as_ref())
            .await?;
        Ok(layers.len())
    }

    /// The unpacked layers of a pinned image, bottom first, pulled once
    /// per cell (a second instance finds them cached).
    pub async fn layers(
        &self,
        pinned: &str,
        username: &str,
        password: &Secret,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let creds = credentials(username, password);
        self.cache
            .rootfs_pinned(&self.registry, pinned, creds.as_ref())
            .await
    }

    /// Collects the layer cache, keeping every layer of `needed` (pinned
    /// references, `registry/repo@sha256:…`, of the images desired work
    /// runs) whether or not a container mounts it now; see
    /// [`LayerCache::gc`] for the rest (blocking: run off the async
    /// threads).
    pub fn gc(&self, needed: &[String]) -> kiln_image::GcReport {
        let layers: HashSet<String> = needed
            .iter()
            .filter_map(|pinned| pinned.rsplit_once('@'))
            .filter_map(|(_, digest)| self.cache.layers_of(digest))
            .flatten()
            .collect();
        self.cache.gc(&layers)
    }

    pub fn cache_stats(&self) -> kiln_image::CacheStats {
        self.cache.stats()
    }
}

/// The staging result of a resolved image: the pinned reference, the web
/// start command (ENTRYPOINT + CMD, as Cloud Controller shows it) and the
/// execution metadata the cell runs it by.
pub fn staging_result(image: &ResolvedImage) -> StagingResult {
    let c = &image.config;
    let meta = DockerExecutionMetadata {
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        workdir: c.working_dir.clone().unwrap_or_default(),
        user: c.user.clone().unwrap_or_default(),
        ports: c
            .exposed_ports
            .iter()
            .map(|&port| ExposedPort {
                port,
                protocol: "tcp".into(),
            })
            .collect(),
        digest: image.digest.clone(),
    };
    let mut process_types = BTreeMap::new();
    process_types.insert("web".to_string(), meta.start_args().join(" "));
    StagingResult {
        lifecycle_type: "docker".into(),
        lifecycle_metadata: LifecycleMetadata {
            docker_image: image.pinned.clone(),
            ..LifecycleMetadata::default()
        },
        process_types,
        execution_metadata: serde_json::to_string(&meta).expect("metadata serializes"),
        sidecars: Vec::new(),
    }
}

/// An image's root file system mounted for one container.
#[derive(Debug, Clone)]
pub struct ImageRoot {
    /// The overlay's mount point: the container's `/`.
    pub path: PathBuf,
    /// Whether the image has `/bin/sh` for the init wrapper.
    pub has_shell: bool,
}

/// Mounts the overlay of `lowers` at `<dir>/rootfs`, with its upper and
/// work directories in `<dir>/overlay/` (the container's own disk). The
/// container dir's removal unmounts it (deepest mounts first).
pub fn mount_root(dir: &ContainerDir, lowers: &[PathBuf]) -> Result<ImageRoot, String> {
    let overlay = dir.root.join("overlay");
    let (upper, work, target) = (
        overlay.join("upper"),
        overlay.join("work"),
        dir.root.join("rootfs"),
    );
    for d in [&upper, &work, &target] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    kiln_image::mount_overlay(lowers, &upper, &work, &target)
        .map_err(|e| format!("assembling the image's root: {e}"))?;
    // lstat only: a link named /bin/sh resolves inside the container.
    let has_shell = fs::symlink_metadata(target.join("bin/sh")).is_ok();
    Ok(ImageRoot {
        path: target,
        has_shell,
    })
}

/// Reads `etc/<name>` of an image root without following a link (on the
/// host a link would lead out of the image, e.g. to the host's
/// `/etc/shadow`); none is an empty file.
fn read_etc(root: &Path, name: &str) -> String {
    let etc = root.join("etc");
    let file = etc.join(name);
    let plain = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink());
    if !plain(&etc) || !plain(&file) {
        return String::new();
    }
    fs::read_to_string(&file).unwrap_or_default()
}

/// `name:x:uid:gid:…` or `name:x:gid:…`: the ids of `name` in such a file.
fn lookup(file: &str, name: &str) -> Option<(u32, u32)> {
    file.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) || fields.len() < 3 {
            return None;
        }
        let id = fields[2].parse().ok()?;
        let gid = fields.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
        Some((id, gid))
    })
}

/// The uid and gid to run the image's USER as (`name`, `uid`,
/// `name:group`, `uid:gid`; names from the image's `/etc/passwd` and
/// `/etc/group`). Root, or no USER, runs as the unprivileged vcap ids:
/// without a user namespace, root in a container would be root on the
/// host.
pub fn user_ids(root: &Path, user: &str) -> Result<(u32, u32), String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid) = match user_part {
        "" | "root" => (0, 0),
        u => match u.parse::<u32>() {
            Ok(uid) => {
                let passwd = read_etc(root, "passwd");
                let gid = passwd
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.get(2) == Some(&u)).then(|| f.get(3)?.parse().ok())?
                    })
                    .unwrap_or(uid);
                (uid, gid)
            }
            Err(_) => lookup(&read_etc(root, "passwd"), u)
                .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
        },
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(&read_etc(root, "group"), g)
                    .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?
                    .0
            }
        };
    }
    if uid == 0 {
        return Ok((CONTAINER_UID, CONTAINER_GID));
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_and_id_and_root_is_never_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(root.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let ids = |u: &str| user_ids(root.path(), u);
        assert_eq!(ids("app").unwrap(), (1234, 4321));
        assert_eq!(ids("1234").unwrap(), (1234, 4321));
        assert_eq!(ids("77").unwrap(), (77, 77));
        assert_eq!(ids("app:staff").unwrap(), (1234, 50));
        assert_eq!(ids("77:88").unwrap(), (77, 88));
        assert_eq!(ids("").unwrap(), (CONTAINER_UID, CONTAINER_GID));
        assert_eq!(ids("root").unwrap(), (CONTAINER_UID, CONTAINER_GID));
        assert!(ids("nobody").unwrap_err().contains("nobody"));
        assert!(ids("app:wheel").is_err());

        // A passwd that is a link is not read (it could name a host file).
        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        assert!(ids("root").is_ok());
        assert!(ids("daemon").is_err());
    }
}
