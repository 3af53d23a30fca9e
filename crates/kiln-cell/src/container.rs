//! The per-container directory `<data_dir>/containers/<id>/`: the OCI
//! bundle, and the host directories behind the container's only writable
//! paths, `/tmp` (`tmp/`) and `/home/vcap` (`home/`). With a disk quota the
//! directory is the mount point of the container's own file system
//! ([`crate::disk`]), so the quota covers both.
//!
//! It maps container paths to host paths for downloads, the result file and
//! uploads. Reading what a container wrote is done without following
//! symlinks: the container's user can plant `/tmp/droplet → /etc/shadow`,
//! which inside the container means the stack's harmless `/etc`, but on the
//! host would mean the host's secrets.

use crate::disk::{self, Disk, DiskPool};
use crate::runtime::BindMount;
use kiln_model::{CONTAINER_GID, CONTAINER_UID, LIFECYCLE_BINARY_PATH};
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{0} is not under /tmp or /home/vcap")]
    NotWritable(String),
    #[error("{0} is not an absolute path without ..")]
    Invalid(String),
    #[error("a symlink on the way is not followed")]
    Symlink,
}

/// The container paths backed by a host directory, and that directory's
/// name inside the container dir.
const WRITABLE: &[(&str, &str)] = &[("/tmp", "tmp"), ("/home/vcap", "home")];

#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub root: PathBuf,
}

impl ContainerDir {
    pub fn new(containers_dir: &Path, id: &str) -> ContainerDir {
        ContainerDir {
            root: containers_dir.join(id),
        }
    }

    /// Creates the directory afresh (removing any leftover) with empty,
    /// vcap-owned `tmp/` and `home/`, on a file system of `disk_mb` of its
    /// own (none when 0).
    pub fn create(&self, disks: &Arc<DiskPool>, disk_mb: u64) -> io::Result<Option<Disk>> {
        self.remove()?;
        fs::create_dir_all(&self.root)?;
        let disk = if disk_mb > 0 {
            let disk = disks
                .create(&self.root, disk_mb)
                .map_err(io::Error::other)?;
            Some(disk)
        } else {
            None
        };
        // Only root (the cell, runc) needs to get in; the container sees
        // the inner directories through its bind mounts.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
        for (dir, mode) in [("tmp", 0o1777), ("home", 0o755)] {
            let path = self.root.join(dir);
            fs::create_dir(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        Ok(disk)
    }

    /// Unmounts the container's file system, if any, and removes the
    /// directory and the image.
    pub fn remove(&self) -> io::Result<()> {
        for mount in disk::mounts_under(&self.root)? {
            disk::unmount(&mount).map_err(io::Error::other)?;
        }
        // The directory goes last: its absence means the container is gone.
        for result in [
            fs::remove_file(disk::image_of(&self.root)),
            fs::remove_dir_all(&self.root),
        ] {
            match result {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Where downloads go when they have no cache key.
    pub fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// The host path behind a container path under `/tmp` or `/home/vcap`.
    pub fn host_path(&self, container_path: &str) -> Result<PathBuf, PathError> {
        let path = Path::new(container_path);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(PathError::Invalid(container_path.into()));
        }
        for (prefix, dir) in WRITABLE {
            if let Ok(rest) = path.strip_prefix(prefix) {
                return Ok(self.root.join(dir).join(rest));
            }
        }
        Err(PathError::NotWritable(container_path.into()))
    }

    /// Makes the writable trees vcap's, after downloads were extracted as root.
    pub fn chown_writable(&self) -> io::Result<()> {
        for (_, dir) in WRITABLE {
            chown_tree(&self.root.join(dir), CONTAINER_UID, CONTAINER_GID)?;
        }
        Ok(())
    }

    /// The mountpoint for the lifecycle binary inside `/tmp`: root-owned,
    /// so the container's user cannot swap it out of the way.
    pub fn prepare_lifecycle_mountpoint(&self) -> io::Result<PathBuf> {
        let host = self
            .host_path(LIFECYCLE_BINARY_PATH)
            .map_err(io::Error::other)?;
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent)?;
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
        }
        fs::write(&host, b"")?;
        Ok(host)
    }

    /// The container's own `/etc/hosts`, naming its host name (the
    /// container id) as Garden does, so that programs resolving their own
    /// host name (Java's `getLocalHost`) work; the stack's `/etc` is shared
    /// and read-only, so it is a file of its own, bind-mounted read-only.
    pub fn write_hosts(&self, hostname: &str) -> io::Result<()> {
        let path = self.root.join("hosts");
        fs::write(
            &path,
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
    }

    /// `/usr`, `/etc/hosts`, `/tmp`, `/home/vcap` and the lifecycle binary,
    /// in mount order.
    pub fn mounts(&self, usr: &Path, lifecycle_binary: &Path) -> Vec<BindMount> {
        vec![
            BindMount {
                source: self.root.join("hosts"),
                destination: "/etc/hosts".into(),
                read_only: true,
            },
            BindMount {
                source: usr.to_path_buf(),
                destination: "/usr".into(),
                read_only: true,
            },
            BindMount {
                source: self.root.join("tmp"),
                destination: "/tmp".into(),
                read_only: false,
            },
            BindMount {
                source: self.root.join("home"),
                destination: "/home/vcap".into(),
                read_only: false,
            },
            BindMount {
                source: lifecycle_binary.to_path_buf(),
                destination: LIFECYCLE_BINARY_PATH.into(),
                read_only: true,
            },
        ]
    }

    /// An image's container gets its own `/etc/hosts` only (resolv.conf
    /// is the network's); its `/` is the image, writable.
    pub fn image_mounts(&self) -> Vec<BindMount> {
        vec![BindMount {
            source: self.root.join("hosts"),
            destination: "/etc/hosts".into(),
            read_only: true,
        }]
    }

    /// Opens a regular file the container wrote, refusing symlinks in any
    /// component below the writable root. Safe once the container's
    /// processes are gone (nothing can swap a component meanwhile).
    pub fn open_written_file(&self, container_path: &str) -> Result<fs::File, OpenError> {
        let host = self.host_path(container_path)?;
        let (prefix, dir) = WRITABLE
            .iter()
            .find(|(p, _)| Path::new(container_path).starts_with(p))
            .ok_or_else(|| PathError::NotWritable(container_path.into()))?;
        let rest = Path::new(container_path)
            .strip_prefix(prefix)
            .map_err(|_| PathError::Invalid(container_path.into()))?;
        let mut at = self.root.join(dir);
        for component in rest.components() {
            at.push(component);
            if fs::symlink_metadata(&at)?.file_type().is_symlink() {
                return Err(PathError::Symlink.into());
            }
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)?;
        if !file.metadata()?.is_file() {
            return Err(OpenError::Io(io::Error::other(format!(
                "{container_path} is not a regular file"
            ))));
        }
        Ok(file)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `lchown -R`: never follows symlinks, so a link planted by an archive
/// cannot make the cell chown a host file.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            if entry.file_type()?.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_only_writable_container_paths() {
        let c = ContainerDir::new(Path::new("/data/containers"), "abc");
        let check = |p: &str, want: Option<&str>| {
            assert_eq!(c.host_path(p).ok(), want.map(PathBuf::from), "{p}")
        };
        check("/tmp/app", Some("/data/containers/abc/tmp/app"));
        check("/tmp", Some("/data/containers/abc/tmp"));
        check("/home/vcap", Some("/data/containers/abc/home"));
        check("/home/vcap/app/x", Some("/data/containers/abc/home/app/x"));
        check("/home/vcapx", None);
        check("/tmpfoo", None);
        check("/etc/passwd", None);
        check("/tmp/../etc", None);
        check("tmp/app", None);
        check("/usr/bin", None);
    }

    #[test]
    fn refuses_to_read_through_symlinks() {
        let data = tempfile::tempdir().unwrap();
        let c = ContainerDir::new(data.path(), "abc");
        c.create(&DiskPool::new(data.path()), 0).unwrap();
        let secret = data.path().join("secret");
        fs::write(&secret, "host secret").unwrap();
        std::os::unix::fs::symlink(&secret, c.root.join("tmp/droplet")).unwrap();
        fs::create_dir(c.root.join("tmp/real")).unwrap();
        std::os::unix::fs::symlink(data.path(), c.root.join("tmp/dir")).unwrap();
        fs::write(c.root.join("tmp/real/result.json"), "{}").unwrap();

        assert!(c.open_written_file("/tmp/droplet").is_err());
        assert!(c.open_written_file("/tmp/dir/secret").is_err());
        assert!(c.open_written_file("/tmp/real").is_err());
        assert!(c.open_written_file("/tmp/real/result.json").is_ok());
    }
}
