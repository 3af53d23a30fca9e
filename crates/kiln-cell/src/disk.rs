//! The disk quota of a container: a file system of its own, `disk_mb`
//! large, loop-mounted on the container directory, so that everything the
//! container can write (`/tmp`, `/home/vcap` with the app) and everything
//! the cell unpacks into it (the droplet) shares one hard limit. Writing
//! past it fails with ENOSPC ("No space left on device") inside this file
//! system only; the host and other containers keep their space.
//!
//! Why not project quotas on one shared XFS or ext4 (grootfs's way): this
//! kernel is built without quota support (`CONFIG_QUOTA`, XFS quota), so
//! project quotas cannot be enforced here. A loop-mounted ext4 per
//! container needs nothing but `mkfs.ext4` and a loop device: the image is
//! a sparse file (it costs only what is written) and usage is one
//! `statvfs`. Its price is one loop device per container and the time of
//! copying an empty image (made once per size with `mkfs.ext4`) and
//! mounting it at each start (`bench/container-limits.sh`).
//!
//! The image is `<containers>/<id>.disk` next to the directory; `mount -o
//! loop` sets the loop device to detach itself at unmount.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `mkfs.ext4`, `cp`, `mount` and `umount` are, whatever the cell's PATH.
const TOOL_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("creating disk image {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("running {tool}: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
}

/// A mounted container file system.
#[derive(Debug, Clone)]
pub struct Disk {
    pub mountpoint: PathBuf,
    /// What the empty file system already uses (root directory,
    /// `lost+found`): not the container's writing.
    baseline: u64,
}

impl Disk {
    /// Creates a `size_mb` image at `image` and mounts it on `mountpoint`
    /// (an existing, empty directory).
    pub fn create(image: &Path, mountpoint: &Path, size_mb: u64) -> Result<Disk, DiskError> {
        let quota_bytes = size_mb
            .checked_mul(1024 * 1024)
            .ok_or_else(|| DiskError::Image {
                path: image.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("disk_mb {size_mb} is too large"),
                ),
            })?;
        make_image(image, quota_bytes)?;
        mount(image, mountpoint)?;
        let baseline = used_bytes(mountpoint).unwrap_or(0);
        Ok(Disk {
            mountpoint: mountpoint.to_path_buf(),
            baseline,
        })
    }

    /// Bytes the container (and its droplet) occupy now.
    pub fn usage(&self) -> io::Result<u64> {
        Ok(used_bytes(&self.mountpoint)?.saturating_sub(self.baseline))
    }
}

/// Where the pool keeps its ready file systems, under the containers dir
/// (so the cell's sweep unmounts and removes leftovers at start and stop).
pub const POOL_DIR: &str = ".disk-pool";

/// Ready file systems kept per size: one covers a push (its staging
/// container and then its app instance each find one).
const POOL_TARGET: usize = 1;

/// File systems made ahead of the containers that will need them: copying
/// the template and loop-mounting it is most of a container's creation
/// (`mount -o loop` alone takes tens of milliseconds, more on a busy
/// machine). A container takes a ready one with a bind mount, and a
/// replacement is made in the background. Sizes are learnt from use: the
/// first container of a size makes its own.
#[derive(Debug)]
pub struct DiskPool {
    dir: PathBuf,
    state: std::sync::Mutex<PoolState>,
    next: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct PoolState {
    closed: bool,
    /// Background jobs not finished (making or releasing a file system).
    in_flight: usize,
    /// Mount points of ready file systems, by size in bytes.
    ready: std::collections::HashMap<u64, Vec<PathBuf>>,
    /// File systems being made, by size in bytes.
    making: std::collections::HashMap<u64, usize>,
}

impl DiskPool {
    pub fn new(containers_dir: &Path) -> std::sync::Arc<DiskPool> {
        std::sync::Arc::new(DiskPool {
            dir: containers_dir.join(POOL_DIR),
            state: Default::default(),
            next: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mounts a `size_mb` file system on `mountpoint` (an existing, empty
    /// directory) with its image at [`image_of`] it: a ready one when the
    /// pool has one, else one made now.
    pub fn create(
        self: &std::sync::Arc<Self>,
        mountpoint: &Path,
        size_mb: u64,
    ) -> Result<Disk, DiskError> {
        let bytes = size_mb.saturating_mul(1024 * 1024);
        let ready = self.take(bytes);
        self.refill(bytes, size_mb);
        if let Some(pooled) = ready {
            match self.adopt(&pooled, mountpoint) {
                Ok(disk) => return Ok(disk),
                Err(error) => tracing::warn!(%error, "ready disk not usable; making one"),
            }
        }
        Disk::create(&image_of(mountpoint), mountpoint, size_mb)
    }

    fn take(&self, bytes: u64) -> Option<PathBuf> {
        self.lock().ready.get_mut(&bytes).and_then(Vec::pop)
    }

    /// Binds the ready file system at `pooled` on `mountpoint`, gives its
    /// image the container's name and lets go of the pool's mount (in the
    /// background: the bind keeps the file system).
    fn adopt(
        self: &std::sync::Arc<Self>,
        pooled: &Path,
        mountpoint: &Path,
    ) -> Result<Disk, DiskError> {
        let bound = run(
            "mount",
            tool("mount").arg("--bind").arg(pooled).arg(mountpoint),
        )
        .and_then(|()| {
            std::fs::rename(image_of(pooled), image_of(mountpoint)).map_err(|source| {
                DiskError::Image {
                    path: image_of(mountpoint),
                    source,
                }
            })
        });
        if let Err(e) = bound {
            let _ = unmount(mountpoint);
            self.background(release_pooled(pooled.to_path_buf()));
            return Err(e);
        }
        self.background(release_pooled(pooled.to_path_buf()));
        let baseline = used_bytes(mountpoint).unwrap_or(0);
        Ok(Disk {
            mountpoint: mountpoint.to_path_buf(),
            baseline,
        })
    }

    /// Starts making file systems of `bytes` until the pool holds its
    /// target of them (counting those being made).
    fn refill(self: &std::sync::Arc<Self>, bytes: u64, size_mb: u64) {
        let mut state = self.lock();
        let have = state.ready.get(&bytes).map_or(0, Vec::len)
            + state.making.get(&bytes).copied().unwrap_or(0);
        if state.closed || have >= POOL_TARGET {
            return;
        }
        *state.making.entry(bytes).or_default() += 1;
        drop(state);
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mountpoint = self.dir.join(n.to_string());
        let pool = self.clone();
        self.background(move || {
            let made = std::fs::create_dir_all(&mountpoint)
                .map_err(|source| DiskError::Image {
                    path: mountpoint.clone(),
                    source,
                })
                .and_then(|()| Disk::create(&image_of(&mountpoint), &mountpoint, size_mb));
            let mut state = pool.lock();
            if let Some(making) = state.making.get_mut(&bytes) {
                *making = making.saturating_sub(1);
            }
            match made {
                Ok(_) if !state.closed => {
                    state.ready.entry(bytes).or_default().push(mountpoint);
                }
                Ok(_) => {
                    drop(state);
                    release_pooled(mountpoint)();
                }
                Err(error) => {
                    drop(state);
                    tracing::warn!(%error, "making a disk ahead");
                    release_pooled(mountpoint)();
                }
            }
        });
    }

    /// Runs `job` on a thread of its own, counted until it ends so that
    /// [`DiskPool::close`] can wait for it.
    fn background(self: &std::sync::Arc<Self>, job: impl FnOnce() + Send + 'static) {
        self.lock().in_flight += 1;
        let pool = self.clone();
        std::thread::spawn(move || {
            job();
            pool.lock().in_flight -= 1;
        });
    }

    /// Makes no more file systems and releases the ready ones, once the
    /// jobs under way are done (waiting at most `wait`).
    pub async fn close(&self, wait: std::time::Duration) {
        self.lock().closed = true;
        let deadline = tokio::time::Instant::now() + wait;
        while self.lock().in_flight > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let ready: Vec<PathBuf> = self.lock().ready.drain().flat_map(|(_, v)| v).collect();
        let _ = tokio::task::spawn_blocking(move || {
            ready.into_iter().for_each(|p| release_pooled(p)())
        })
        .await;
    }
}

/// Unmounts a pool mount point (if mounted) and removes it and its image.
fn release_pooled(mountpoint: PathBuf) -> impl FnOnce() + Send + 'static {
    move || {
        if mounts_under(&mountpoint).is_ok_and(|m| m.contains(&mountpoint))
            && let Err(error) = unmount(&mountpoint)
        {
            tracing::warn!(%error, "releasing a ready disk");
        }
        let _ = std::fs::remove_dir(&mountpoint);
        let _ = std::fs::remove_file(image_of(&mountpoint));
    }
}

/// The image file of the container directory `root`.
pub fn image_of(root: &Path) -> PathBuf {
    let mut name = OsString::from(root.as_os_str());
    name.push(".disk");
    PathBuf::from(name)
}

fn tool(name: &'static str) -> Command {
    let mut command = Command::new(name);
    command.env("PATH", TOOL_PATH).env("LC_ALL", "C");
    command
}

fn run(name: &'static str, command: &mut Command) -> Result<(), DiskError> {
    let output = command
        .output()
        .map_err(|source| DiskError::Spawn { tool: name, source })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DiskError::Failed {
            tool: name,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// A sparse file with an ext4 file system, copied (holes kept, or
/// reflinked where the host file system can) from a template of that size
/// made once with `mkfs.ext4`: the copy takes a fraction of mkfs's time at
/// every start.
fn make_image(image: &Path, bytes: u64) -> Result<(), DiskError> {
    let made = template(image, bytes).and_then(|template| {
        run(
            "cp",
            tool("cp")
                .args(["--sparse=always", "--reflink=auto"])
                .arg(template)
                .arg(image),
        )
    });
    if made.is_err() {
        let _ = std::fs::remove_file(image);
    }
    made
}

/// `.disk-templates/<bytes>.img` beside `image`, made on first use: no
/// journal (the file system dies with the container, crash safety buys
/// nothing), no blocks reserved for root (the container's user gets the
/// whole quota). Written under a name of its own and renamed, so that
/// containers starting at once never see half a template.
fn template(image: &Path, bytes: u64) -> Result<PathBuf, DiskError> {
    let dir = image.parent().unwrap_or(Path::new(".")).join(TEMPLATES_DIR);
    let path = dir.join(format!("{bytes}.img"));
    if path.is_file() {
        return Ok(path);
    }
    let image_err = |source| DiskError::Image {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(image_err)?;
    let mut scratch = path.clone().into_os_string();
    scratch.push(".");
    scratch.push(image.file_name().unwrap_or_default());
    let scratch = PathBuf::from(scratch);
    let made = std::fs::File::create(&scratch)
        .and_then(|file| file.set_len(bytes))
        .map_err(image_err)
        .and_then(|()| {
            run(
                "mkfs.ext4",
                tool("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
                    .args(["-E", "nodiscard,lazy_itable_init=1"])
                    .arg(&scratch),
            )
        })
        .and_then(|()| std::fs::rename(&scratch, &path).map_err(image_err));
    if made.is_err() {
        let _ = std::fs::remove_file(&scratch);
    }
    made.map(|()| path)
}

/// Where the empty file systems to copy are kept, one per size.
pub const TEMPLATES_DIR: &str = ".disk-templates";

fn mount(image: &Path, mountpoint: &Path) -> Result<(), DiskError> {
    // Concurrent `mount -o loop`s can race for the same free loop device;
    // the loser fails and a retry picks the next one.
    let mut last = None;
    for _ in 0..3 {
        match run(
            "mount",
            tool("mount")
                .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
                .arg(image)
                .arg(mountpoint),
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(last.unwrap_or(DiskError::Failed {
        tool: "mount",
        stderr: "not attempted".into(),
    }))
}

/// Unmounts `mountpoint`; lazily when something still holds it, so the
/// loop device goes as soon as the last holder does.
pub fn unmount(mountpoint: &Path) -> Result<(), DiskError> {
    run("umount", tool("umount").arg(mountpoint))
        .or_else(|_| run("umount", tool("umount").arg("-l").arg(mountpoint)))
}

/// `statvfs`: blocks in use, in bytes.
pub fn used_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize)
}

/// MiB an unprivileged writer may still use on the file system of `path`
/// (what a new container's image can grow into).
pub fn free_mb(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize) / (1024 * 1024))
}

/// Refuses a container of `disk_mb` when the file system holding the
/// containers has less free: its image would fail to fill part-way (or
/// cannot even be made) with an obscure error. Worded as Diego's placement
/// errors, so Cloud Controller reports `InsufficientResources`.
pub fn check_room(containers_dir: &Path, disk_mb: u64) -> Result<(), String> {
    if disk_mb == 0 {
        return Ok(());
    }
    let free = free_mb(containers_dir)
        .map_err(|e| format!("creating container: reading free disk: {e}"))?;
    if free < disk_mb {
        return Err(format!(
            "insufficient resources: disk (cell has {free} MB free, container needs {disk_mb} MB)"
        ));
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first (the order to unmount
/// them in), from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mounts_under(&info, dir))
}

fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(d) = octal {
            out.push(d.iter().fold(0u8, |v, b| v.wrapping_mul(8) + (b - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether this machine can make container file systems.
pub fn available() -> bool {
    TOOL_PATH
        .split(':')
        .any(|dir| Path::new(dir).join("mkfs.ext4").is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executor's own check (a task placed before the cell's presence
    /// showed the disk full) on a filled tmpfs. Needs root to mount.
    #[test]
    fn a_full_file_system_has_no_room_and_says_so_in_diegos_words() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the effective user.
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            assert!(
                std::env::var("KILN_REQUIRE_RUNC").as_deref() != Ok("1"),
                "KILN_REQUIRE_RUNC=1 but not root"
            );
            eprintln!("\n!!!!!!!! SKIPPING a_full_file_system_has_no_room: not root !!!!!!!!\n");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = tool("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "kiln-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success());
        let free = free_mb(dir.path()).unwrap();
        assert!((7..=8).contains(&free), "{free}");
        assert_eq!(check_room(dir.path(), 4), Ok(()));
        let _ = std::fs::write(dir.path().join("filler"), vec![0u8; 9 * 1024 * 1024]);
        let refused = check_room(dir.path(), 4);
        let _ = tool("umount").arg(dir.path()).status();
        assert_eq!(
            refused,
            Err("insufficient resources: disk (cell has 0 MB free, container needs 4 MB)".into())
        );
        assert_eq!(check_room(dir.path(), 0), Ok(()));
    }

    /// The second container of a size takes the file system made ahead
    /// (bound on its directory, its image renamed), a new one is made, and
    /// closing the pool releases it. Needs root to mount.
    #[tokio::test]
    async fn a_container_takes_a_file_system_made_ahead() {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) || !available() {
            assert!(
                std::env::var("KILN_REQUIRE_RUNC").as_deref() != Ok("1"),
                "KILN_REQUIRE_RUNC=1 but not root or no mkfs.ext4"
            );
            eprintln!("\n!!!!!!!! SKIPPING a_container_takes_a_file_system_made_ahead !!!!!!!!\n");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pool = DiskPool::new(dir.path());
        let pool_dir = dir.path().join(POOL_DIR);
        let ready = || {
            mounts_under(&pool_dir)
                .unwrap()
                .into_iter()
                .filter(|m| *m != pool_dir)
                .collect::<Vec<_>>()
        };
        let wait_for = |what: &str, check: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !check() {
                assert!(std::time::Instant::now() < deadline, "waiting for {what}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        let container = |name: &str| {
            let root = dir.path().join(name);
            std::fs::create_dir(&root).unwrap();
            root
        };

        // What the pool holds ready: a file system is mounted a moment
        // before it is (a container coming meanwhile makes its own).
        let pooled = || {
            let state = pool.lock();
            state.ready.values().flatten().cloned().collect::<Vec<_>>()
        };

        // The first makes its own; one is made ahead meanwhile.
        let a = container("a");
        pool.create(&a, 8).unwrap();
        wait_for("a file system made ahead", &|| pooled().len() == 1);
        let made_ahead = pooled().remove(0);
        assert_eq!(ready(), std::slice::from_ref(&made_ahead));

        // The second takes it: mounted on its directory, image renamed.
        let b = container("b");
        let disk = pool.create(&b, 8).unwrap();
        assert!(image_of(&b).is_file());
        assert!(!image_of(&made_ahead).exists());
        std::fs::write(b.join("written"), vec![1u8; 1 << 20]).unwrap();
        assert!(disk.usage().unwrap() >= 1 << 20);
        // Its own quota: 8 MB fill up.
        assert!(std::fs::write(b.join("too-much"), vec![1u8; 9 << 20]).is_err());
        wait_for("the next one made ahead", &|| {
            let r = pooled();
            r.len() == 1 && r[0] != made_ahead
        });
        assert_eq!(ready(), pooled());

        // Closing releases what is ready; the containers' own stay.
        pool.close(std::time::Duration::from_secs(30)).await;
        assert!(ready().is_empty());
        for root in [&a, &b] {
            assert!(mounts_under(root).unwrap().contains(root));
            unmount(root).unwrap();
        }
        assert!(mounts_under(dir.path()).unwrap().is_empty());
    }

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 7:0 / /data/containers/abc rw,nosuid,nodev - ext4 /dev/loop0 rw
91 22 7:1 / /data/containers/with\\040space rw - ext4 /dev/loop1 rw
92 90 0:5 / /data/containers/abc/tmp/x rw - tmpfs tmpfs rw
93 22 7:2 / /data/containersX rw - ext4 /dev/loop2 rw
";

    #[test]
    fn finds_mounts_below_a_directory_deepest_first() {
        let got = parse_mounts_under(MOUNTINFO, Path::new("/data/containers"));
        assert_eq!(
            got,
            [
                PathBuf::from("/data/containers/abc/tmp/x"),
                PathBuf::from("/data/containers/abc"),
                PathBuf::from("/data/containers/with space"),
            ]
        );
        assert!(parse_mounts_under(MOUNTINFO, Path::new("/elsewhere")).is_empty());
    }

    #[test]
    fn an_impossible_size_fails_clearly_and_leaves_no_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("c.disk");
        let mountpoint = dir.path().join("c");
        std::fs::create_dir(&mountpoint).unwrap();
        for size_mb in [u64::MAX, u64::MAX / (1024 * 1024)] {
            let err = Disk::create(&image, &mountpoint, size_mb).unwrap_err();
            assert!(err.to_string().starts_with("creating disk image"), "{err}");
            assert!(!image.exists());
        }
        let templates = dir.path().join(TEMPLATES_DIR);
        assert!(!templates.exists() || std::fs::read_dir(templates).unwrap().count() == 0);
        assert!(mounts_under(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn the_image_sits_next_to_the_directory() {
        assert_eq!(
            image_of(Path::new("/d/containers/a.b-c")),
            PathBuf::from("/d/containers/a.b-c.disk")
        );
    }
}
