//! Unpacking one image layer (a tar, gzip-compressed or not) into a
//! directory that becomes an overlayfs lower layer.
//!
//! Every layer is untrusted. What it may hold, and what becomes of it:
//! - **Paths** are relative; an absolute path or a `..` component is refused.
//! - **Whiteouts** (OCI's tar form): `dir/.wh.name` becomes what overlayfs
//!   reads as a deletion, a character device 0/0 at `dir/name`;
//!   `dir/.wh..wh..opq` marks `dir` opaque with the `trusted.overlay.opaque=y`
//!   xattr; other `.wh..wh.*` names (aufs bookkeeping) are skipped.
//! - **Symlinks** are kept exactly as they are, whatever they point to: they
//!   resolve inside the container, against its root. The host never follows
//!   one: every parent of an entry must be a real directory (a symlink in the
//!   way is refused), an existing entry is removed and recreated (never
//!   opened), files are created with `O_EXCL` (which does not follow a final
//!   symlink), and owners are set with `lchown`.
//! - **Hard links** must name a regular file this layer already holds,
//!   reached through real directories; anything else (`../x`, a link to a
//!   link, a missing file) is refused.
//! - **Device nodes and fifos** are refused (a container gets its `/dev`
//!   from runc, an image has no business shipping one).
//! - **Modes** are kept except setuid and setgid, which are dropped; the
//!   sticky bit is kept (`/tmp`). **Owners** are kept, shifted by the
//!   cache's uid/gid offset, when running as root (otherwise they cannot be
//!   set and files belong to the cell's user).
//! - **Size**: unpacking stops when the bytes written pass the limit (a
//!   small gzip can hold a huge tar).
//!
//! Extended attributes in PAX headers (e.g. file capabilities) are not
//! restored: a capability on a file in an app image is not something Kiln
//! grants.
//!
//! Blocking IO; callers run it in `spawn_blocking`.

use crate::ImageError;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How to unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Added to every owner's uid and gid (a user namespace's host range).
    pub id_offset: u32,
    /// The most bytes of file content a layer may unpack to.
    pub max_bytes: u64,
}

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Unpacks the layer blob at `blob` (tar or tar+gzip, sniffed from its
/// first bytes) into `dest`, which must not exist yet. `digest` names the
/// layer in errors.
pub fn unpack_layer(
    blob: &Path,
    digest: &str,
    dest: &Path,
    options: UnpackOptions,
) -> Result<UnpackStats, ImageError> {
    fs::create_dir(dest).map_err(ImageError::io("creating layer directory", dest))?;
    let file = File::open(blob).map_err(ImageError::io("opening layer blob", blob))?;
    let mut reader = BufReader::new(file);
    let gzip = {
        let head = io::BufRead::fill_buf(&mut reader).map_err(ImageError::io("reading", blob))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    // Multi-member: parallel compressors (pigz, Go's pgzip) write several
    // gzip members one after the other, and a single-member decoder would
    // stop silently after the first.
    let input: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut writer = Writer {
        dest: dest.to_path_buf(),
        digest: digest.to_string(),
        options,
        dirs: Vec::new(),
        stats: UnpackStats::default(),
        chown: rustix::process::geteuid().is_root(),
    };
    writer.unpack(input)?;
    writer.finish()
}

/// A file's `(uid, gid)` on the host.
type Owner = (u32, u32);

struct Writer {
    dest: PathBuf,
    digest: String,
    options: UnpackOptions,
    /// Directory modes and owners are applied last (deepest first), so a
    /// read-only directory does not stop its own entries from being written.
    dirs: Vec<(PathBuf, u32, Option<Owner>)>,
    stats: UnpackStats,
    chown: bool,
}

impl Writer {
    fn bad(&self, entry: &str, why: impl Into<String>) -> ImageError {
        ImageError::BadLayer {
            digest: self.digest.clone(),
            entry: entry.to_string(),
            why: why.into(),
        }
    }

    fn tar_error(&self, e: io::Error) -> ImageError {
        self.bad("", format!("not a valid tar stream: {e}"))
    }

    fn unpack(&mut self, input: Box<dyn Read>) -> Result<(), ImageError> {
        use tar::EntryType;
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|e| self.tar_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.tar_error(e))?;
            let raw = entry.path().map_err(|e| self.tar_error(e))?.into_owned();
            let name = raw.to_string_lossy().into_owned();
            let header = entry.header();
            let kind = header.entry_type();
            let mode = header.mode().unwrap_or(0o644);
            let owner = self.owner(header);
            let mtime = header
                .mtime()
                .ok()
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
            match kind {
                EntryType::Char | EntryType::Block => {
                    return Err(self.bad(&name, "device node (refused)"));
                }
                EntryType::Fifo => return Err(self.bad(&name, "fifo (refused)")),
                EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link => {}
                // Pax and GNU extension headers are metadata the tar reader
                // has already applied to the entries they describe.
                _ => continue,
            }
            let Some(rel) = self.entry_path(&name, &raw)? else {
                continue;
            };
            if let Some(whiteout) = whiteout_of(&rel) {
                self.whiteout(&name, &rel, whiteout)?;
                continue;
            }
            match kind {
                EntryType::Directory => self.dir(&name, &rel, mode, owner)?,
                EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| self.tar_error(e))?
                        .ok_or_else(|| self.bad(&name, "symlink without a target"))?
                        .into_owned();
                    self.symlink(&name, &rel, &target, owner)?;
                }
                EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| self.tar_error(e))?
                        .ok_or_else(|| self.bad(&name, "hard link without a target"))?
                        .into_owned();
                    self.hardlink(&name, &rel, &target)?;
                }
                _ => self.file(&name, &rel, mode, owner, &mut entry, mtime)?,
            }
        }
        Ok(())
    }

    fn owner(&self, header: &tar::Header) -> Option<Owner> {
        if !self.chown {
            return None;
        }
        let offset = self.options.id_offset;
        let uid = u32::try_from(header.uid().ok()?).ok()?;
        let gid = u32::try_from(header.gid().ok()?).ok()?;
        Some((uid.checked_add(offset)?, gid.checked_add(offset)?))
    }

    /// The entry's path relative to the layer root, or `None` for the root
    /// itself (`./`).
    fn entry_path(&self, name: &str, raw: &Path) -> Result<Option<PathBuf>, ImageError> {
        if name.contains('\0') {
            return Err(self.bad(name, "path contains a nul byte"));
        }
        let mut rel = PathBuf::new();
        for component in raw.components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.bad(name, "path contains ..")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.bad(name, "absolute path"));
                }
            }
        }
        Ok((!rel.as_os_str().is_empty()).then_some(rel))
    }

    /// Makes every parent of `rel` a real directory (creating missing ones)
    /// and returns the entry's path. A symlink or file in the way is
    /// refused: writing through it could leave the layer.
    fn prepare(&self, name: &str, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut at = self.dest.clone();
        if let Some(parent) = rel.parent() {
            for component in parent.components() {
                at.push(component);
                match fs::symlink_metadata(&at) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(self.bad(name, "a parent is a symlink or a file")),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&at).map_err(ImageError::io("creating directory", &at))?;
                    }
                    Err(e) => return Err(ImageError::io("inspecting", &at)(e)),
                }
            }
        }
        Ok(self.dest.join(rel))
    }

    /// Clears `path` for a new entry: whatever is there (a file, a link, a
    /// whiteout, a directory tree from earlier in this layer) is removed,
    /// never followed.
    fn clear(&self, path: &Path) -> Result<(), ImageError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(path).map_err(ImageError::io("replacing directory", path))
            }
            Ok(_) => fs::remove_file(path).map_err(ImageError::io("replacing", path)),
            Err(_) => Ok(()),
        }
    }

    fn whiteout(&mut self, name: &str, rel: &Path, whiteout: Whiteout) -> Result<(), ImageError> {
        let path = self.prepare(name, rel)?;
        match whiteout {
            Whiteout::Opaque => {
                let dir = path.parent().unwrap_or(&self.dest).to_path_buf();
                rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| ImageError::io("marking opaque", &dir)(e.into()))?;
            }
            Whiteout::Entry(hidden) => {
                let target = path.with_file_name(hidden);
                self.clear(&target)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| ImageError::io("creating whiteout", &target)(e.into()))?;
            }
            Whiteout::Skip => return Ok(()),
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn dir(
        &mut self,
        name: &str,
        rel: &Path,
        mode: u32,
        owner: Option<Owner>,
    ) -> Result<(), ImageError> {
        let path = self.prepare(name, rel)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                self.clear(&path)?;
                fs::create_dir(&path).map_err(ImageError::io("creating directory", &path))?;
            }
            Err(_) => fs::create_dir(&path).map_err(ImageError::io("creating directory", &path))?,
        }
        self.dirs.push((path, safe_mode(mode), owner));
        Ok(())
    }

    fn file(
        &mut self,
        name: &str,
        rel: &Path,
        mode: u32,
        owner: Option<Owner>,
        content: &mut dyn Read,
        mtime: Option<SystemTime>,
    ) -> Result<(), ImageError> {
        let path = self.prepare(name, rel)?;
        self.clear(&path)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(ImageError::io("creating", &path))?;
        let room = self.options.max_bytes.saturating_sub(self.stats.bytes);
        let written = io::copy(&mut content.take(room + 1), &mut out)
            .map_err(|e| self.bad(name, format!("reading its content: {e}")))?;
        self.stats.bytes += written;
        if self.stats.bytes > self.options.max_bytes {
            return Err(ImageError::TooLarge {
                what: format!("layer {} unpacked", self.digest),
                size: self.stats.bytes,
                limit: self.options.max_bytes,
            });
        }
        if let Some(mtime) = mtime {
            // Best effort: nothing depends on it.
            let _ = out.set_modified(mtime);
        }
        drop(out);
        self.set_owner(&path, owner)?;
        // After chown, which would clear setuid anyway; modes never carry it.
        fs::set_permissions(&path, fs::Permissions::from_mode(safe_mode(mode)))
            .map_err(ImageError::io("setting mode", &path))?;
        self.stats.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        name: &str,
        rel: &Path,
        target: &Path,
        owner: Option<Owner>,
    ) -> Result<(), ImageError> {
        if target.as_os_str().is_empty() {
            return Err(self.bad(name, "symlink with an empty target"));
        }
        let path = self.prepare(name, rel)?;
        self.clear(&path)?;
        symlink(target, &path).map_err(ImageError::io("creating symlink", &path))?;
        self.set_owner(&path, owner)
    }

    fn hardlink(&mut self, name: &str, rel: &Path, target: &Path) -> Result<(), ImageError> {
        let target_name = target.to_string_lossy();
        let target_rel = self
            .entry_path(&target_name, target)
            .map_err(|_| {
                self.bad(
                    name,
                    format!("hard link to {target_name:?} escapes the layer"),
                )
            })?
            .ok_or_else(|| self.bad(name, "hard link to the layer root"))?;
        // Only a regular file of this layer, reached through real directories.
        let mut at = self.dest.clone();
        let n = target_rel.components().count();
        for (i, component) in target_rel.components().enumerate() {
            at.push(component);
            let meta = fs::symlink_metadata(&at).map_err(|_| {
                self.bad(
                    name,
                    format!("hard link to {target_name:?}, which this layer does not hold"),
                )
            })?;
            let ok = if i + 1 == n {
                meta.is_file()
            } else {
                meta.is_dir()
            };
            if !ok {
                return Err(self.bad(name, "hard link to something other than a regular file"));
            }
        }
        let path = self.prepare(name, rel)?;
        if path == at {
            return Ok(());
        }
        self.clear(&path)?;
        fs::hard_link(&at, &path).map_err(ImageError::io("creating hard link", &path))?;
        self.stats.files += 1;
        Ok(())
    }

    fn set_owner(&self, path: &Path, owner: Option<Owner>) -> Result<(), ImageError> {
        match owner {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(ImageError::io("setting owner of", path)),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<UnpackStats, ImageError> {
        self.dirs
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (path, mode, owner) in &self.dirs {
            self.set_owner(path, *owner)?;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(ImageError::io("setting mode", path))?;
        }
        Ok(self.stats)
    }
}

/// Permission bits and sticky, without setuid and setgid.
fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

enum Whiteout {
    /// `.wh..wh..opq`: the directory hides lower layers' content.
    Opaque,
    /// `.wh.name`: `name` is deleted.
    Entry(String),
    /// Other `.wh..wh.` names: aufs bookkeeping, meaningless here.
    Skip,
}

fn whiteout_of(rel: &Path) -> Option<Whiteout> {
    let file_name = rel.file_name()?.to_str()?;
    if file_name == OPAQUE_MARKER {
        return Some(Whiteout::Opaque);
    }
    if file_name.starts_with(".wh..wh.") {
        return Some(Whiteout::Skip);
    }
    let hidden = file_name.strip_prefix(WHITEOUT_PREFIX)?;
    if hidden.is_empty() || hidden == "." || hidden == ".." {
        return Some(Whiteout::Skip);
    }
    Some(Whiteout::Entry(hidden.to_string()))
}
