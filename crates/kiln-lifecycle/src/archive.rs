//! Writing `tar.gz` archives of directories the way `tar -czf OUT -C DIR .`
//! would: file modes, owners and times kept, symlinks stored as symlinks
//! (never followed), entries in a stable (sorted) order.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// An archive being written; add directory trees, then [`TarGz::finish`].
pub struct TarGz {
    builder: tar::Builder<GzEncoder<BufWriter<File>>>,
    path: PathBuf,
    /// Paths skipped because tar cannot hold them (sockets, devices, fifos).
    pub skipped: Vec<PathBuf>,
}

impl TarGz {
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = File::create(path)?;
        // Level 1: blobs only travel between processes on one host, and the
        // CPU spent compressing is staging time the user waits for.
        let mut builder =
            tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::fast()));
        builder.follow_symlinks(false);
        builder.sparse(false);
        Ok(TarGz {
            builder,
            path: path.to_path_buf(),
            skipped: Vec::new(),
        })
    }

    /// Add everything below `dir` (not `dir` itself) under `prefix`
    /// (`""` for the archive root).
    pub fn append_dir_contents(&mut self, dir: &Path, prefix: &Path) -> io::Result<()> {
        for entry in sorted_entries(dir)? {
            self.append_tree(&dir.join(&entry), &prefix.join(&entry))?;
        }
        Ok(())
    }

    /// Add `path` as `name`, and if it is a real directory, all below it.
    pub fn append_tree(&mut self, path: &Path, name: &Path) -> io::Result<()> {
        let metadata = fs::symlink_metadata(path)?;
        let file_type = metadata.file_type();
        if !(file_type.is_file() || file_type.is_dir() || file_type.is_symlink()) {
            self.skipped.push(path.to_path_buf());
            return Ok(());
        }
        self.builder
            .append_path_with_name(path, name)
            .map_err(|error| {
                io::Error::new(error.kind(), format!("{}: {error}", path.display()))
            })?;
        if file_type.is_dir() {
            for entry in sorted_entries(path)? {
                self.append_tree(&path.join(&entry), &name.join(&entry))?;
            }
        }
        Ok(())
    }

    pub fn finish(self) -> io::Result<()> {
        let encoder = self.builder.into_inner()?;
        let mut writer = encoder.finish()?;
        writer.flush()?;
        writer
            .into_inner()
            .map_err(|error| error.into_error())?
            .sync_all()
            .map_err(|error| {
                io::Error::new(error.kind(), format!("{}: {error}", self.path.display()))
            })
    }
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| PathBuf::from(entry.file_name())))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Write `dir`'s contents as a `tar.gz` at `output`, with `extra` trees
/// (source path, name in the archive) appended after them.
pub fn write_tar_gz(
    output: &Path,
    dir: &Path,
    extra: &[(&Path, &Path)],
) -> io::Result<Vec<PathBuf>> {
    let mut archive = TarGz::create(output)?;
    archive.append_dir_contents(dir, Path::new(""))?;
    for (path, name) in extra {
        archive.append_tree(path, name)?;
    }
    let skipped = std::mem::take(&mut archive.skipped);
    archive.finish()?;
    Ok(skipped)
}
