//! Fixtures: a staging layout in a temp dir, bash buildpacks written into
//! it, a console that captures what the cell would see, and readers for the
//! archives the builder writes.

use kiln_lifecycle::{BuilderArgs, BuilderError, Console};
use kiln_model::staging::StagingResult;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A writer tests can read back while it is still being written to.
#[derive(Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A staging container's `/tmp`, in a temp dir.
pub struct Staging {
    pub root: tempfile::TempDir,
}

pub struct Outcome {
    pub result: Result<StagingResult, BuilderError>,
    pub stdout: String,
    pub stderr: String,
}

impl Staging {
    pub fn new() -> Self {
        let staging = Staging {
            root: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(staging.build_dir()).unwrap();
        fs::create_dir_all(staging.path("buildpacks")).unwrap();
        staging
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    pub fn build_dir(&self) -> PathBuf {
        self.path("app")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    /// Write `<buildpacks>/<dir>/bin/<name>` for each script: bash, `set -e`,
    /// executable.
    pub fn buildpack(&self, dir: &str, scripts: &[(&str, &str)]) {
        for (name, body) in scripts {
            write_executable(
                &self.path("buildpacks").join(dir).join("bin").join(name),
                &format!("#!/bin/bash\nset -e\n{body}\n"),
            );
        }
    }

    pub fn app_file(&self, name: &str, content: &str) {
        let path = self.build_dir().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub fn args(&self, order: &[&str], skip_detect: bool) -> BuilderArgs {
        BuilderArgs {
            build_dir: self.build_dir(),
            buildpacks_dir: self.path("buildpacks"),
            buildpack_order: order.iter().map(|key| key.to_string()).collect(),
            skip_detect,
            output_droplet: self.path("droplet"),
            output_metadata: self.path("result.json"),
            build_artifacts_cache_dir: self.cache_dir(),
            output_build_artifacts_cache: self.path("output-cache"),
        }
    }

    pub fn stage(&self, order: &[&str], skip_detect: bool) -> Outcome {
        let (stdout, stderr) = (SharedBuf::default(), SharedBuf::default());
        let console = Console::new(stdout.clone(), stderr.clone());
        let result = kiln_lifecycle::builder::build(&self.args(order, skip_detect), &console);
        Outcome {
            result,
            stdout: stdout.text(),
            stderr: stderr.text(),
        }
    }

    pub fn result_json(&self) -> StagingResult {
        let text = fs::read_to_string(self.path("result.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

pub fn write_executable(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// One archive entry, as far as tests care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { mode: u32, content: String },
    Symlink(String),
}

/// Entries of a `tar.gz`, by path without any leading `./`.
pub fn read_tar_gz(path: &Path) -> BTreeMap<String, Entry> {
    let file = fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let header = entry.header().clone();
        let value = match header.entry_type() {
            tar::EntryType::Directory => Entry::Dir,
            tar::EntryType::Symlink => Entry::Symlink(
                entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            ),
            tar::EntryType::Regular => {
                let mut content = String::new();
                entry.read_to_string(&mut content).unwrap();
                Entry::File {
                    mode: header.mode().unwrap() & 0o777,
                    content,
                }
            }
            other => panic!("unexpected entry type {other:?} for {name}"),
        };
        assert!(
            entries.insert(name.clone(), value).is_none(),
            "{name} twice"
        );
    }
    entries
}

pub fn file_content(entries: &BTreeMap<String, Entry>, name: &str) -> String {
    match entries.get(name) {
        Some(Entry::File { content, .. }) => content.clone(),
        other => panic!("{name} is not a file in the archive: {other:?}"),
    }
}

/// Poll `condition` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
