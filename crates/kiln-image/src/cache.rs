//! The cell's layer cache: unpacked layers on disk, one directory per layer
//! digest, shared by every container of every app on the cell.
//!
//! Layout under the cache root:
//! - `layers/<hex>/`: an unpacked layer (an overlay lower, never written
//!   after it is renamed into place);
//! - `layers/<hex>.json`: its size; the file's mtime is the layer's last
//!   use, which garbage collection orders by;
//! - `images/<hex>.json`: a resolved image by manifest digest, so that a
//!   pinned reference already seen needs no registry request;
//! - `tmp/`: blobs while they download and layers while they unpack,
//!   emptied when the cache is opened (a crash leaves only scratch there).
//!
//! A layer is pulled and unpacked at most once, even when several
//! containers ask for it at the same moment: each digest has an async lock,
//! held while the layer is fetched; whoever gets it second finds the
//! directory in place. A layer appears under `layers/` only by a rename of a
//! complete unpack, so a reader never sees half a layer.
//!
//! **Garbage** ([`LayerCache::gc`]): the cell calls it on a schedule with
//! the layers of every image desired work uses ([`LayerCache::layers_of`]
//! the images of all DesiredLrps and of its tasks). Those are never
//! removed, nor a layer mounted by any overlay (read from
//! `/proc/self/mountinfo`) or being fetched. Every other layer goes once
//! unused for the grace period (the time between [`LayerCache::rootfs`]
//! and a container's mount), or sooner, least recently used first, while
//! the cache is over its size.

use crate::overlay::mounted_lowers;
use crate::registry::sha256_digest;
use crate::unpack::{UnpackOptions, UnpackStats, unpack_layer};
use crate::{Credentials, ImageError, ImageReference, LayerDescriptor, Registry, ResolvedImage};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long after its last use a layer is safe from garbage collection.
const DEFAULT_GC_GRACE: Duration = Duration::from_secs(600);

/// Unpacked layers on a cell. One per cache root in a process, shared
/// behind an `Arc`: opening a cache empties its `tmp/`, and the per-digest
/// locks only order the fetches of one instance.
#[derive(Debug)]
pub struct LayerCache {
    root: PathBuf,
    max_bytes: u64,
    id_offset: u32,
    gc_grace: Duration,
    /// One async lock per layer digest: fetching holds it, so a layer is
    /// fetched once, and gc skips a layer whose lock is taken.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pulls: AtomicU64,
    unpacks: AtomicU64,
}

/// Counters since the cache was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Layer blobs downloaded.
    pub pulls: u64,
    /// Layers unpacked into the cache.
    pub unpacks: u64,
}

/// What a garbage collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Digests of the layers removed.
    pub removed: Vec<String>,
    pub freed_bytes: u64,
    /// Size of the layers kept.
    pub kept_bytes: u64,
    /// Layers kept because desired work needs them, an overlay mounts
    /// them, they were being fetched or were used within the grace period.
    pub kept_busy: Vec<String>,
    /// The layers kept still exceed the cache's size: what desired work
    /// needs (or what runs) is more than the operator allowed.
    pub over_limit: bool,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    digest: String,
    bytes: u64,
}

impl LayerCache {
    /// Opens (creating) the cache at `root`. `max_bytes` is the size garbage
    /// collection brings the cache under, and the most a single layer may
    /// unpack to; `id_offset` shifts every file owner (a user namespace's
    /// host range; 0 for none).
    pub fn new(root: PathBuf, max_bytes: u64, id_offset: u32) -> Result<LayerCache, ImageError> {
        for dir in ["layers", "images"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(ImageError::io("creating", &path))?;
        }
        let tmp = root.join("tmp");
        if tmp.exists() {
            remove_tree(&tmp)?;
        }
        fs::create_dir_all(&tmp).map_err(ImageError::io("creating", &tmp))?;
        Ok(LayerCache {
            root,
            max_bytes,
            id_offset,
            gc_grace: DEFAULT_GC_GRACE,
            locks: Mutex::new(HashMap::new()),
            pulls: AtomicU64::new(0),
            unpacks: AtomicU64::new(0),
        })
    }

    /// Sets how long after its last use a layer is safe from gc (default 10
    /// minutes: a container's start, from `rootfs` to its overlay mount).
    pub fn with_gc_grace(mut self, grace: Duration) -> LayerCache {
        self.gc_grace = grace;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            pulls: self.pulls.load(Ordering::Relaxed),
            unpacks: self.unpacks.load(Ordering::Relaxed),
        }
    }

    /// The directory layer `digest` unpacks to (whether or not it is there).
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(digest))
    }

    /// The unpacked layers of `image`, bottom first (what
    /// [`crate::mount_overlay`] takes), fetching the ones not cached.
    pub async fn rootfs(
        &self,
        registry: &Registry,
        image: &ResolvedImage,
        credentials: Option<&Credentials>,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let fetches = image
            .layers
            .iter()
            .map(|layer| self.layer(registry, image, layer, credentials));
        // Every fetch runs to its end even when one fails, so a failed
        // rootfs leaves no layer half-way through its pull behind it.
        let layers = futures_util::future::join_all(fetches)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        // Remembered only once whole: a failed image is not "seen".
        self.remember(image)?;
        Ok(layers)
    }

    /// Like [`LayerCache::rootfs`] for a pinned reference
    /// (`registry/repository@sha256:…`, as a droplet records it): the
    /// manifest is read from the cache when this digest was seen before,
    /// from the registry (verified against the digest) otherwise.
    pub async fn rootfs_pinned(
        &self,
        registry: &Registry,
        pinned: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let reference: ImageReference = pinned.parse()?;
        let Some(digest) = reference.digest() else {
            return Err(ImageError::InvalidReference {
                reference: pinned.to_string(),
                why: "not pinned by digest".into(),
            });
        };
        let image = match self.remembered(digest) {
            Some(image) => image,
            None => registry.resolve(pinned, credentials).await?,
        };
        self.rootfs(registry, &image, credentials).await
    }

    fn image_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", hex_of(digest)))
    }

    fn remember(&self, image: &ResolvedImage) -> Result<(), ImageError> {
        let path = self.image_path(&image.digest);
        if path.exists() {
            return Ok(());
        }
        let json = serde_json::to_vec(image).unwrap_or_default();
        write_atomically(&self.root.join("tmp"), &path, &json)
    }

    fn remembered(&self, digest: &str) -> Option<ResolvedImage> {
        let bytes = fs::read(self.image_path(digest)).ok()?;
        let image: ResolvedImage = serde_json::from_slice(&bytes).ok()?;
        (image.digest == digest).then_some(image)
    }

    fn lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(digest.to_string()).or_default().clone()
    }

    /// One layer: cached, or pulled and unpacked under its lock.
    async fn layer(
        &self,
        registry: &Registry,
        image: &ResolvedImage,
        layer: &LayerDescriptor,
        credentials: Option<&Credentials>,
    ) -> Result<PathBuf, ImageError> {
        check_digest(&layer.digest)?;
        let dir = self.layer_dir(&layer.digest);
        let lock = self.lock(&layer.digest);
        let _held = lock.lock().await;
        if !dir.is_dir() {
            self.fetch(registry, image, layer, credentials, &dir)
                .await?;
        }
        self.touch(&layer.digest);
        Ok(dir)
    }

    /// Pull phase (blob to `tmp/`, digest verified while it streams), then
    /// unpack phase (into `tmp/`, renamed into place when complete). The
    /// scratch directory goes whatever happens: with this future if it is
    /// dropped while pulling, with the unpacking thread (which outlives a
    /// dropped future) once that ends.
    async fn fetch(
        &self,
        registry: &Registry,
        image: &ResolvedImage,
        layer: &LayerDescriptor,
        credentials: Option<&Credentials>,
        dir: &Path,
    ) -> Result<(), ImageError> {
        let scratch = Scratch(tempfile_in(&self.root.join("tmp"), &hex_of(&layer.digest))?);
        let blob = scratch.0.join("blob");
        self.pull(registry, image, layer, credentials, &blob)
            .await?;
        let unpacked = scratch.0.join("layer");
        let options = UnpackOptions {
            id_offset: self.id_offset,
            max_bytes: self.max_bytes,
        };
        let (tmp, digest, dir_owned) = (
            self.root.join("tmp"),
            layer.digest.clone(),
            dir.to_path_buf(),
        );
        let into_place = move || -> Result<UnpackStats, ImageError> {
            let scratch = scratch;
            let stats = unpack_layer(&blob, &digest, &unpacked, options)?;
            let meta = serde_json::to_vec(&LayerMeta {
                digest,
                bytes: stats.bytes,
            })
            .unwrap_or_default();
            write_atomically(&tmp, &meta_path(&dir_owned), &meta)?;
            fs::rename(&unpacked, &dir_owned)
                .map_err(ImageError::io("moving layer into place", &dir_owned))?;
            drop(scratch);
            Ok(stats)
        };
        let stats = tokio::task::spawn_blocking(into_place)
            .await
            .map_err(|e| ImageError::Io {
                action: "unpacking",
                path: dir.to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        self.unpacks.fetch_add(1, Ordering::Relaxed);
        tracing::info!(digest = %layer.digest, files = stats.files, bytes = stats.bytes, "layer unpacked");
        Ok(())
    }

    async fn pull(
        &self,
        registry: &Registry,
        image: &ResolvedImage,
        layer: &LayerDescriptor,
        credentials: Option<&Credentials>,
        blob: &Path,
    ) -> Result<(), ImageError> {
        let mut file = tokio::fs::File::create(blob)
            .await
            .map_err(ImageError::io("creating", blob))?;
        self.pulls.fetch_add(1, Ordering::Relaxed);
        registry
            .pull_blob(image, layer, credentials, &mut file)
            .await?;
        Ok(())
    }

    /// Records a use of the layer (its metadata file's mtime).
    fn touch(&self, digest: &str) {
        let path = meta_path(&self.layer_dir(digest));
        if let Ok(file) = fs::OpenOptions::new().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// The layer digests of the image with manifest `digest` (bottom
    /// first), when this cache has seen that image; `None` otherwise (then
    /// none of its layers can be here on its account).
    pub fn layers_of(&self, digest: &str) -> Option<Vec<String>> {
        let image = self.remembered(digest)?;
        Some(image.layers.into_iter().map(|l| l.digest).collect())
    }

    /// Collects the cache. `needed` holds the layer digests of every image
    /// that desired work uses (see [`LayerCache::layers_of`]): those are
    /// never removed, mounted or not, since an instance restarting must
    /// find them. Of the others, a layer no overlay mounts and nobody is
    /// fetching goes once it is unused for the grace period, and, while the
    /// cache is still over its size, sooner (least recently used first).
    /// If the needed, mounted and fetched layers alone exceed the size, the
    /// cache stays over it ([`GcReport::over_limit`]). Blocking file system
    /// work: call it from `spawn_blocking` in async code.
    pub fn gc(&self, needed: &HashSet<String>) -> GcReport {
        let mut layers = self.cached_layers();
        layers.sort_by_key(|l| l.last_used);
        let mounted: HashSet<String> = mounted_lowers()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let now = SystemTime::now();
        let mut report = GcReport::default();
        let mut total: u64 = layers.iter().map(|l| l.bytes).sum();
        let (mut stale, mut recent) = (Vec::new(), Vec::new());
        for layer in layers {
            let used_lately = layer.last_used > now
                || now
                    .duration_since(layer.last_used)
                    .is_ok_and(|age| age < self.gc_grace);
            if needed.contains(&layer.digest) || mounted.contains(&hex_of(&layer.digest)) {
                report.kept_busy.push(layer.digest);
            } else if used_lately {
                recent.push(layer);
            } else {
                stale.push(layer);
            }
        }
        // Stale garbage always goes; recently used garbage only while the
        // cache is over its size, oldest first.
        let candidates = stale
            .iter()
            .map(|l| (l, true))
            .chain(recent.iter().map(|l| (l, false)));
        for (layer, always) in candidates {
            if !always && total <= self.max_bytes {
                report.kept_busy.push(layer.digest.clone());
                continue;
            }
            if !self.remove_layer(&layer.digest) {
                report.kept_busy.push(layer.digest.clone());
                continue;
            }
            total -= layer.bytes;
            report.freed_bytes += layer.bytes;
            report.removed.push(layer.digest.clone());
        }
        report.kept_bytes = total;
        report.over_limit = total > self.max_bytes;
        report
    }

    /// Removes a layer unless it is being fetched: renamed out of
    /// `layers/` first, so it vanishes at once, then deleted.
    fn remove_layer(&self, digest: &str) -> bool {
        let lock = self.lock(digest);
        let Ok(_held) = lock.try_lock() else {
            return false;
        };
        let dir = self.layer_dir(digest);
        let Ok(doomed) = tempfile_in(&self.root.join("tmp"), "gc") else {
            return false;
        };
        let moved = doomed.join("layer");
        if fs::rename(&dir, &moved).is_err() {
            let _ = fs::remove_dir(&doomed);
            return false;
        }
        let _ = fs::remove_file(meta_path(&dir));
        if let Err(e) = remove_tree(&doomed) {
            tracing::warn!(%digest, error = %e, "removing a collected layer");
        }
        true
    }

    fn cached_layers(&self) -> Vec<CachedLayer> {
        let Ok(entries) = fs::read_dir(self.root.join("layers")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let hex = e.file_name().to_string_lossy().into_owned();
                let meta_file = meta_path(&e.path());
                let meta: LayerMeta = serde_json::from_slice(&fs::read(&meta_file).ok()?).ok()?;
                let last_used = fs::metadata(&meta_file).and_then(|m| m.modified()).ok()?;
                (hex_of(&meta.digest) == hex).then_some(CachedLayer {
                    digest: meta.digest,
                    bytes: meta.bytes,
                    last_used,
                })
            })
            .collect()
    }
}

/// A scratch directory under `tmp/`, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "removing scratch");
        }
    }
}

struct CachedLayer {
    digest: String,
    bytes: u64,
    last_used: SystemTime,
}

fn meta_path(layer_dir: &Path) -> PathBuf {
    layer_dir.with_extension("json")
}

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

/// A digest becomes a directory name: only `sha256:` and 64 lowercase hex.
fn check_digest(digest: &str) -> Result<(), ImageError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        return Ok(());
    }
    Err(ImageError::BadManifest {
        reference: digest.to_string(),
        why: "not a sha256 layer digest".into(),
    })
}

/// A fresh directory under `tmp` named after `prefix` and a random suffix.
fn tempfile_in(tmp: &Path, prefix: &str) -> Result<PathBuf, ImageError> {
    for attempt in 0..16u32 {
        let nonce = sha256_digest(
            format!(
                "{prefix}{attempt}{:?}{:?}",
                SystemTime::now(),
                std::thread::current().id()
            )
            .as_bytes(),
        );
        let path = tmp.join(format!("{prefix}.{}", &nonce[7..19]));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ImageError::io("creating", &path)(e)),
        }
    }
    Err(ImageError::Io {
        action: "creating a scratch directory in",
        path: tmp.to_path_buf(),
        source: std::io::Error::other("no free name"),
    })
}

fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let scratch = tempfile_in(tmp, "write")?;
    let file = scratch.join("file");
    fs::write(&file, bytes).map_err(ImageError::io("writing", &file))?;
    let result = fs::rename(&file, path).map_err(ImageError::io("writing", path));
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Removes a tree, making read-only directories writable first (a layer
/// may hold a `0555` directory, which `remove_dir_all` cannot empty as a
/// non-root user).
fn remove_tree(path: &Path) -> Result<(), ImageError> {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    make_dirs_writable(path);
    fs::remove_dir_all(path).map_err(ImageError::io("removing", path))
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.filter_map(Result::ok) {
            make_dirs_writable(&entry.path());
        }
    }
}
