//! Safe extraction of downloaded archives (zip, tar.gz) into a container's
//! host-side directory.
//!
//! Every archive is untrusted. An entry is refused when its path is
//! absolute or contains `..`, when it is a device, fifo or socket, when it
//! is a hard link to anything but a regular file extracted earlier, or when
//! it is a symlink whose target leaves the destination. Nothing is ever
//! written *through* a symlink: every parent of an entry must be a real
//! directory, and an existing symlink at an entry's path is replaced, never
//! followed. Symlink targets are checked lexically: a relative target may
//! climb (`../`) only at its start and no higher than the destination. An
//! absolute target may point anywhere: it is resolved only inside the
//! container, against the stack (buildpacks link to `/usr/bin/python3` or
//! `/home/vcap/deps/0/...`, and Cloud Foundry accepts such droplets), while
//! the host never follows a link in a container directory — not here, not
//! when it reads a result file or an upload (`ContainerDir::open_written_file`),
//! not when it chowns (`lchown`).
//! Permission bits are kept (setuid, setgid and sticky bits are dropped).
//!
//! Extraction is blocking IO; callers run it in `spawn_blocking`.

use kiln_model::bbs::ArtifactKind;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsafe archive entry {entry:?}: {why}")]
    Unsafe { entry: String, why: &'static str },
    #[error("extracting {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid zip archive: {0}")]
    Zip(String),
    #[error("invalid tar.gz archive: {0}")]
    Tar(io::Error),
}

/// What an extraction wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub bytes: u64,
}

/// Extracts `archive` into `dest` (created if missing).
pub fn extract(
    archive: &Path,
    kind: ArtifactKind,
    dest: &Path,
) -> Result<ExtractStats, ExtractError> {
    fs::create_dir_all(dest).map_err(io_at(dest))?;
    let mut writer = Writer::new(dest);
    let file = File::open(archive).map_err(io_at(archive))?;
    match kind {
        ArtifactKind::Zip => extract_zip(file, &mut writer)?,
        ArtifactKind::Tgz => extract_tgz(file, &mut writer)?,
    }
    writer.finish()
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn extract_zip(file: File, writer: &mut Writer) -> Result<(), ExtractError> {
    let zip_err = |e: zip::result::ZipError| ExtractError::Zip(e.to_string());
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let name = entry.name().map_err(zip_err)?.into_owned();
        let mode = entry.unix_mode();
        let file_type = mode.map_or(0, |m| m & S_IFMT);
        if matches!(file_type, S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK) {
            return Err(unsafe_entry(&name, "device, fifo or socket"));
        }
        let Some(rel) = entry_path(Path::new(&name))? else {
            continue;
        };
        if entry.is_dir() {
            writer.dir(&name, &rel, mode.unwrap_or(0o755))?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .map_err(|e| ExtractError::Zip(format!("symlink {name:?}: {e}")))?;
            writer.symlink(&name, &rel, Path::new(&target))?;
        } else {
            writer.file(&name, &rel, mode.unwrap_or(0o644), &mut entry, None)?;
        }
    }
    Ok(())
}

fn extract_tgz(file: File, writer: &mut Writer) -> Result<(), ExtractError> {
    use tar::EntryType;
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries().map_err(ExtractError::Tar)? {
        let mut entry = entry.map_err(ExtractError::Tar)?;
        let raw = entry.path().map_err(ExtractError::Tar)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let header = entry.header();
        let entry_type = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header
            .mtime()
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        if matches!(
            entry_type,
            EntryType::Char | EntryType::Block | EntryType::Fifo
        ) {
            return Err(unsafe_entry(&name, "device, fifo or socket"));
        }
        let is_content = matches!(
            entry_type,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link
        );
        if !is_content {
            // Pax and GNU extension headers are metadata, already applied
            // by the tar reader to the entries they describe.
            continue;
        }
        let Some(rel) = entry_path(&raw)? else {
            continue;
        };
        match entry_type {
            EntryType::Directory => writer.dir(&name, &rel, mode)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ExtractError::Tar)?
                    .ok_or_else(|| unsafe_entry(&name, "symlink without target"))?
                    .into_owned();
                writer.symlink(&name, &rel, &target)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ExtractError::Tar)?
                    .ok_or_else(|| unsafe_entry(&name, "hard link without target"))?
                    .into_owned();
                writer.hardlink(&name, &rel, &target)?;
            }
            _ => writer.file(&name, &rel, mode, &mut entry, mtime)?,
        }
    }
    Ok(())
}

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFBLK: u32 = 0o060000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

fn unsafe_entry(name: &str, why: &'static str) -> ExtractError {
    ExtractError::Unsafe {
        entry: name.into(),
        why,
    }
}

/// The entry's path relative to the destination, or `None` for the
/// destination itself (`./`).
fn entry_path(raw: &Path) -> Result<Option<PathBuf>, ExtractError> {
    let name = raw.to_string_lossy();
    let mut rel = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(&name, "path contains ..")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(&name, "absolute path"));
            }
        }
    }
    if name.contains('\0') {
        return Err(unsafe_entry(&name, "path contains a nul byte"));
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

struct Writer {
    dest: PathBuf,
    /// Directory modes are applied last, so a read-only directory does not
    /// stop the entries inside it from being written.
    dir_modes: Vec<(PathBuf, u32)>,
    stats: ExtractStats,
}

impl Writer {
    fn new(dest: &Path) -> Writer {
        Writer {
            dest: dest.to_path_buf(),
            dir_modes: Vec::new(),
            stats: ExtractStats::default(),
        }
    }

    /// Makes every parent of `rel` a real directory under `dest` (creating
    /// missing ones) and returns the entry's absolute path. A symlink or a
    /// file in the way is refused: writing through it could leave `dest`.
    fn prepare(&self, name: &str, rel: &Path) -> Result<PathBuf, ExtractError> {
        let mut at = self.dest.clone();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for component in parents {
            at.push(component);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(unsafe_entry(name, "parent is a symlink or a file")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(io_at(&at))?;
                }
                Err(e) => return Err(io_at(&at)(e)),
            }
        }
        Ok(self.dest.join(rel))
    }

    /// Clears the way for a new non-directory entry at `path`: an existing
    /// file or symlink is removed (never followed), a directory is refused.
    fn replace(&self, name: &str, path: &Path) -> Result<(), ExtractError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(unsafe_entry(name, "replaces a directory")),
            Ok(_) => fs::remove_file(path).map_err(io_at(path)),
            Err(_) => Ok(()),
        }
    }

    fn dir(&mut self, name: &str, rel: &Path, mode: u32) -> Result<(), ExtractError> {
        let path = self.prepare(name, rel)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&path).map_err(io_at(&path))?;
                fs::create_dir(&path).map_err(io_at(&path))?;
            }
            Err(_) => fs::create_dir(&path).map_err(io_at(&path))?,
        }
        self.dir_modes.push((path, mode & 0o777));
        Ok(())
    }

    fn file(
        &mut self,
        name: &str,
        rel: &Path,
        mode: u32,
        content: &mut dyn Read,
        mtime: Option<SystemTime>,
    ) -> Result<(), ExtractError> {
        let path = self.prepare(name, rel)?;
        self.replace(name, &path)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let written = io::copy(content, &mut out).map_err(io_at(&path))?;
        out.set_permissions(fs::Permissions::from_mode(mode & 0o777))
            .map_err(io_at(&path))?;
        if let Some(mtime) = mtime {
            // Best effort: a build cache keyed on mtimes benefits, nothing
            // depends on it.
            let _ = out.set_modified(mtime);
        }
        self.stats.files += 1;
        self.stats.bytes += written;
        Ok(())
    }

    fn symlink(&mut self, name: &str, rel: &Path, target: &Path) -> Result<(), ExtractError> {
        if !self.symlink_target_is_inside(rel, target) {
            return Err(unsafe_entry(name, "symlink points outside the destination"));
        }
        let path = self.prepare(name, rel)?;
        self.replace(name, &path)?;
        symlink(target, &path).map_err(io_at(&path))
    }

    fn symlink_target_is_inside(&self, rel: &Path, target: &Path) -> bool {
        if target.as_os_str().is_empty() {
            return false;
        }
        if target.is_absolute() {
            // Resolved inside the container only (see the module comment).
            return true;
        }
        // Relative: climbs only at the start, through the entry's real
        // parent directories, never above the destination. A `..` after a
        // name could climb out of a symlinked directory, so it is refused.
        let depth = rel.components().count() - 1;
        let mut climbs = 0;
        let mut seen_name = false;
        for component in target.components() {
            match component {
                Component::ParentDir if seen_name => return false,
                Component::ParentDir => climbs += 1,
                Component::Normal(_) => seen_name = true,
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        climbs <= depth
    }

    fn hardlink(&mut self, name: &str, rel: &Path, target: &Path) -> Result<(), ExtractError> {
        let Some(target_rel) = entry_path(target)? else {
            return Err(unsafe_entry(name, "hard link to the destination itself"));
        };
        // The target must be a regular file already extracted, reached
        // through real directories only.
        let mut at = self.dest.clone();
        let n = target_rel.components().count();
        for (i, component) in target_rel.components().enumerate() {
            at.push(component);
            let meta = fs::symlink_metadata(&at)
                .map_err(|_| unsafe_entry(name, "hard link to a missing entry"))?;
            let ok = if i + 1 == n {
                meta.is_file()
            } else {
                meta.is_dir()
            };
            if !ok {
                return Err(unsafe_entry(
                    name,
                    "hard link to something other than a file",
                ));
            }
        }
        let path = self.prepare(name, rel)?;
        self.replace(name, &path)?;
        fs::hard_link(&at, &path).map_err(io_at(&path))?;
        self.stats.files += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<ExtractStats, ExtractError> {
        // Deepest first, so a read-only parent is set after its children.
        self.dir_modes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, mode) in &self.dir_modes {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(io_at(path))?;
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct TarEntry<'a> {
        path: &'a str,
        kind: tar::EntryType,
        mode: u32,
        data: &'a [u8],
        link: Option<&'a str>,
    }

    fn file<'a>(path: &'a str, data: &'a [u8]) -> TarEntry<'a> {
        TarEntry {
            path,
            kind: tar::EntryType::Regular,
            mode: 0o644,
            data,
            link: None,
        }
    }

    fn link<'a>(path: &'a str, kind: tar::EntryType, target: &'a str) -> TarEntry<'a> {
        TarEntry {
            path,
            kind,
            mode: 0o777,
            data: b"",
            link: Some(target),
        }
    }

    /// Writes a tar.gz with raw header paths, bypassing the tar crate's own
    /// path checks, as a hostile archive would.
    fn tgz(dir: &Path, entries: &[TarEntry]) -> PathBuf {
        let path = dir.join("archive.tgz");
        let gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), Default::default());
        let mut builder = tar::Builder::new(gz);
        for e in entries {
            let mut header = tar::Header::new_old();
            let name = e.path.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_entry_type(e.kind);
            header.set_mode(e.mode);
            header.set_size(e.data.len() as u64);
            if let Some(target) = e.link {
                let t = target.as_bytes();
                header.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            }
            header.set_cksum();
            builder.append(&header, e.data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    fn zip_archive(dir: &Path, build: impl FnOnce(&mut zip::ZipWriter<File>)) -> PathBuf {
        let path = dir.join("archive.zip");
        let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
        build(&mut w);
        w.finish().unwrap();
        path
    }

    fn opts(mode: u32) -> zip::write::SimpleFileOptions {
        zip::write::SimpleFileOptions::default().unix_permissions(mode)
    }

    fn assert_unsafe(result: Result<ExtractStats, ExtractError>, case: &str) {
        assert!(
            matches!(result, Err(ExtractError::Unsafe { .. })),
            "{case}: expected refusal, got {result:?}"
        );
    }

    #[test]
    fn extracts_a_zip_keeping_modes_and_inner_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = zip_archive(tmp.path(), |w| {
            w.add_directory("bin/", opts(0o755)).unwrap();
            w.start_file("bin/detect", opts(0o755)).unwrap();
            w.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
            w.start_file("README", opts(0o644)).unwrap();
            w.write_all(b"hello").unwrap();
            w.add_symlink("bin/readme", "../README", opts(0o777))
                .unwrap();
        });
        let dest = tmp.path().join("out");
        let stats = extract(&archive, ArtifactKind::Zip, &dest).unwrap();
        assert_eq!(stats.files, 2);
        let mode = fs::metadata(dest.join("bin/detect"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_to_string(dest.join("bin/readme")).unwrap(),
            "hello"
        );
    }

    #[test]
    fn extracts_a_tgz_with_hardlinks_and_container_absolute_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tgz(
            tmp.path(),
            &[
                TarEntry {
                    path: "./app/",
                    kind: tar::EntryType::Directory,
                    mode: 0o755,
                    data: b"",
                    link: None,
                },
                file("./app/server.sh", b"echo hi"),
                link("./app/copy.sh", tar::EntryType::Link, "./app/server.sh"),
                link("./deps-link", tar::EntryType::Symlink, "/home/vcap/app"),
            ],
        );
        let dest = tmp.path().join("out");
        extract(&archive, ArtifactKind::Tgz, &dest).unwrap();
        assert_eq!(
            fs::read_to_string(dest.join("app/copy.sh")).unwrap(),
            "echo hi"
        );
        assert_eq!(
            fs::read_link(dest.join("deps-link")).unwrap(),
            Path::new("/home/vcap/app")
        );
    }

    #[test]
    fn refuses_unsafe_tar_entries() {
        use tar::EntryType::*;
        let cases: Vec<(&str, Vec<TarEntry>)> = vec![
            ("dot-dot path", vec![file("../evil", b"x")]),
            ("nested dot-dot", vec![file("a/../../evil", b"x")]),
            ("absolute path", vec![file("/etc/evil", b"x")]),
            ("escaping symlink", vec![link("l", Symlink, "../../etc")]),
            (
                "write through an absolute symlink",
                vec![link("l", Symlink, "/etc"), file("l/passwd", b"x")],
            ),
            (
                "symlink climbing after a name",
                vec![link("v", Symlink, "."), link("u", Symlink, "v/..")],
            ),
            (
                "write through a symlink",
                vec![link("l", Symlink, "sub"), file("l/evil", b"x")],
            ),
            (
                "escaping hard link",
                vec![link("h", Link, "../../etc/passwd")],
            ),
            ("absolute hard link", vec![link("h", Link, "/etc/passwd")]),
            (
                "hard link to a symlink",
                vec![link("s", Symlink, "x"), link("h", Link, "s")],
            ),
            (
                "device file",
                vec![TarEntry {
                    path: "dev",
                    kind: Char,
                    mode: 0o600,
                    data: b"",
                    link: None,
                }],
            ),
            (
                "fifo",
                vec![TarEntry {
                    path: "fifo",
                    kind: Fifo,
                    mode: 0o600,
                    data: b"",
                    link: None,
                }],
            ),
        ];
        for (case, entries) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let archive = tgz(tmp.path(), &entries);
            let dest = tmp.path().join("root/out");
            assert_unsafe(extract(&archive, ArtifactKind::Tgz, &dest), case);
            assert!(!tmp.path().join("root/evil").exists(), "{case}");
            assert!(!tmp.path().join("evil").exists(), "{case}");
        }
    }

    #[test]
    fn refuses_unsafe_zip_entries() {
        type Build = Box<dyn FnOnce(&mut zip::ZipWriter<File>)>;
        let cases: Vec<(&str, Build)> = vec![
            (
                "dot-dot path",
                Box::new(|w| {
                    w.start_file("../evil", opts(0o644)).unwrap();
                    w.write_all(b"x").unwrap();
                }),
            ),
            (
                "absolute path",
                Box::new(|w| {
                    w.start_file("/tmp/evil", opts(0o644)).unwrap();
                    w.write_all(b"x").unwrap();
                }),
            ),
            (
                "escaping symlink",
                Box::new(|w| {
                    w.add_symlink("link", "../../../etc", opts(0o777)).unwrap();
                }),
            ),
            (
                "write through a symlink",
                Box::new(|w| {
                    w.add_symlink("link", ".", opts(0o777)).unwrap();
                    w.start_file("link/evil", opts(0o644)).unwrap();
                    w.write_all(b"x").unwrap();
                }),
            ),
        ];
        for (case, build) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let archive = zip_archive(tmp.path(), build);
            let dest = tmp.path().join("root/out");
            assert_unsafe(extract(&archive, ArtifactKind::Zip, &dest), case);
            assert!(!tmp.path().join("root/evil").exists(), "{case}");
        }
    }
}
