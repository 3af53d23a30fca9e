//! A container's root file system from cached layers: one overlayfs mount
//! whose lower directories are the unpacked layers (shared, never written)
//! and whose upper and work directories belong to the container.
//!
//! Options, kept minimal: `lowerdir`, `upperdir`, `workdir` and `index=off`.
//! The inode index (on by default on some kernels) records lower file
//! handles in the upper layer and refuses a later mount whose lowers differ;
//! Kiln's uppers are fresh per container and its lowers are shared by many
//! mounts, so the index buys nothing and could only refuse a mount.
//! `redirect_dir` and `metacopy` stay at the kernel's defaults: they only
//! change how the container's own writes are recorded in its upper.
//!
//! The mount's options must fit in one page (4096 bytes). When every lower
//! sits in one directory (the cache's `layers/`), `mount` runs there and
//! names them relatively (a 71-byte `sha256-hex` each: about 55 layers),
//! otherwise absolutely. An image with more layers than fit, or more than
//! overlayfs stacks ([`MAX_LOWERS`]), is refused with a clear error rather
//! than flattened; Docker's own builds stop at 125 layers, and in practice
//! images have a few dozen at most.
//!
//! `mount`/`umount` are run as commands, as the cell does for its disk
//! quotas: no unsafe code, and the error says what the kernel said.

use crate::ImageError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// overlayfs' lower stack limit on older kernels (500 on newer ones).
pub const MAX_LOWERS: usize = 128;
const MAX_OPTIONS_BYTES: usize = 4000;

/// Mounts at `target` the overlay of `lowers` (bottom layer first, as
/// [`crate::LayerCache::rootfs`] returns them) under `upper`, with `work`
/// (an empty directory on the same file system as `upper`).
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    let mount_error = |detail: String| ImageError::Mount {
        target: target.to_path_buf(),
        detail,
    };
    if lowers.is_empty() {
        return Err(mount_error("an image needs at least one layer".into()));
    }
    if lowers.len() > MAX_LOWERS {
        return Err(ImageError::TooLarge {
            what: "image's layer count".into(),
            size: lowers.len() as u64,
            limit: MAX_LOWERS as u64,
        });
    }
    let (cwd, lowerdir) = lower_list(lowers);
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},index=off",
        upper.display(),
        work.display()
    );
    if options.len() > MAX_OPTIONS_BYTES || options.contains('\n') {
        return Err(ImageError::TooLarge {
            what: format!("overlay options for {} layers", lowers.len()),
            size: options.len() as u64,
            limit: MAX_OPTIONS_BYTES as u64,
        });
    }
    let mut command = Command::new("mount");
    command
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(target);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    run(command).map_err(mount_error)
}

/// Unmounts `target` (an overlay from [`mount_overlay`]). Not mounted is
/// not an error, so a destroy can always call it.
pub fn unmount(target: &Path) -> Result<(), ImageError> {
    if !is_mount_point(target) {
        return Ok(());
    }
    let mut command = Command::new("umount");
    command.arg(target);
    run(command).map_err(|detail| ImageError::Mount {
        target: target.to_path_buf(),
        detail: format!("unmounting: {detail}"),
    })
}

/// Lower directories, top first as overlayfs wants them, relative to their
/// common parent when they share one (returned as the directory to run in).
fn lower_list(lowers: &[PathBuf]) -> (Option<PathBuf>, String) {
    let parent = lowers[0].parent().map(Path::to_path_buf);
    let shared = parent.as_ref().is_some_and(|p| {
        lowers
            .iter()
            .all(|l| l.parent() == Some(p.as_path()) && l.file_name().is_some())
    });
    let names: Vec<String> = lowers
        .iter()
        .rev()
        .map(|l| {
            if shared {
                l.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            } else {
                l.display().to_string()
            }
        })
        .collect();
    (if shared { parent } else { None }, names.join(":"))
}

fn run(mut command: Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("running {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
}

/// True when `path` is a mount point, from `/proc/self/mountinfo`.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    mountinfo()
        .iter()
        .any(|m| Path::new(&m.mount_point) == canonical)
}

pub(crate) struct MountInfo {
    pub mount_point: String,
    pub fs_type: String,
    pub super_options: String,
}

/// The mounts this process sees (octal escapes in paths decoded).
pub(crate) fn mountinfo() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = unescape(left.split(' ').nth(4)?);
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_string();
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("").to_string();
            Some(MountInfo {
                mount_point,
                fs_type,
                super_options,
            })
        })
        .collect()
}

/// The lower directories of every overlay mounted now, as the kernel
/// reports them (relative when they were given relative).
pub(crate) fn mounted_lowers() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|m| m.fs_type == "overlay")
        .flat_map(|m| {
            m.super_options
                .split(',')
                .filter_map(|o| o.strip_prefix("lowerdir="))
                .flat_map(|l| l.split(':').map(|p| PathBuf::from(unescape(p))))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(oct) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_listed_top_first_and_relative_when_they_share_a_parent() {
        let lowers = vec![PathBuf::from("/c/layers/aa"), PathBuf::from("/c/layers/bb")];
        assert_eq!(
            lower_list(&lowers),
            (Some(PathBuf::from("/c/layers")), "bb:aa".to_string())
        );
        let mixed = vec![PathBuf::from("/c/layers/aa"), PathBuf::from("/d/bb")];
        assert_eq!(lower_list(&mixed), (None, "/d/bb:/c/layers/aa".to_string()));
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
