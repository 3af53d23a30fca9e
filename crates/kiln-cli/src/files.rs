//! The app's files as a push sees them: the directory walked with
//! `.cfignore` applied, each file's SHA-1, size and mode for resource
//! matching (`POST /v3/resource_matches`), and a zip of what the platform
//! does not have yet, keeping unix modes so scripts stay executable.
//!
//! Symbolic links are stored as the files they point to, and only when the
//! target stays inside the pushed directory: a link out of it would upload
//! files the user did not mean to publish, so it is refused.

use anyhow::{Context, bail};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One entry of a resource match request or answer, and of the upload's
/// `resources` field: `{"checksum":{"value":sha1},"size_in_bytes":n,"path":p,"mode":"644"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub checksum: Checksum,
    pub size_in_bytes: u64,
    pub path: String,
    /// Permission bits, an octal string on the wire.
    #[serde(with = "octal_mode")]
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub value: String,
}

/// `POST /v3/resource_matches` request and answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceList {
    #[serde(default)]
    pub resources: Vec<Resource>,
}

mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:o}"))
    }

    /// An octal string as Cloud Controller sends it; a bare number is read
    /// as octal digits too, to be lenient.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(D::Error::custom(format!("mode {other} is not octal"))),
        };
        u32::from_str_radix(&text, 8)
            .map_err(|_| D::Error::custom(format!("mode {text:?} is not octal")))
    }
}

/// One file of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFile {
    /// Relative to the app root, `/`-separated.
    pub path: String,
    pub sha1: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Where the content is read from (the target, for a symbolic link).
    pub source: PathBuf,
}

impl AppFile {
    pub fn resource(&self) -> Resource {
        Resource {
            checksum: Checksum {
                value: self.sha1.clone(),
            },
            size_in_bytes: self.size,
            path: self.path.clone(),
            mode: self.mode,
        }
    }
}

/// A walked directory: its subdirectories (so empty ones survive the zip)
/// and its files, both sorted by path.
#[derive(Debug, Clone, Default)]
pub struct AppTree {
    pub dirs: Vec<String>,
    pub files: Vec<AppFile>,
}

/// The cf CLI's default ignore list, applied before the app's `.cfignore`
/// (whose `!` lines can bring an entry back). The manifests are ignored
/// only at the app's root.
const DEFAULT_IGNORES: &[&str] = &[
    ".cfignore",
    ".git",
    ".gitignore",
    ".hg",
    ".svn",
    "_darcs",
    ".DS_Store",
    "/manifest.yml",
    "/manifest.yaml",
];

/// `.cfignore` rules in gitignore's syntax (comments, `!` negation, a
/// trailing `/` for directories, anchoring `/`, `*`, `?`, `**`, classes),
/// matched by the `ignore` crate's gitignore engine. The last matching rule
/// decides; files inside an ignored directory are never reached.
#[derive(Debug)]
pub struct IgnoreRules {
    matcher: Gitignore,
}

impl IgnoreRules {
    /// Nothing ignored (buildpack directories are zipped whole).
    pub fn none() -> IgnoreRules {
        IgnoreRules {
            matcher: Gitignore::empty(),
        }
    }

    /// The default ignores followed by the lines of a `.cfignore`. A line
    /// that is not a valid pattern is an error naming it.
    pub fn for_app(cfignore: &str) -> anyhow::Result<IgnoreRules> {
        // Matching is on relative paths, so the root is only a label.
        let mut builder = GitignoreBuilder::new("/");
        for line in DEFAULT_IGNORES.iter().copied() {
            builder.add_line(None, line)?;
        }
        for (number, line) in cfignore.lines().enumerate() {
            builder
                .add_line(None, line.trim_end_matches('\r'))
                .map_err(|e| anyhow::anyhow!(".cfignore line {}: {e}", number + 1))?;
        }
        Ok(IgnoreRules {
            matcher: builder.build()?,
        })
    }

    /// Whether `path` (relative, `/`-separated) is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        self.matcher
            .matched_path_or_any_parents(path, is_dir)
            .is_ignore()
    }
}

/// Walks an app directory with its `.cfignore` applied.
pub fn scan_app(root: &Path) -> anyhow::Result<AppTree> {
    let cfignore = match std::fs::read_to_string(root.join(".cfignore")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}/.cfignore", root.display())),
    };
    scan(root, &IgnoreRules::for_app(&cfignore)?)
}

/// Walks `root`, hashing every file that `rules` does not ignore.
pub fn scan(root: &Path, rules: &IgnoreRules) -> anyhow::Result<AppTree> {
    let root = root
        .canonicalize()
        .with_context(|| format!("reading {}", root.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let mut tree = AppTree::default();
    // (relative path, real directory, real directories above it): the
    // chain catches links that would make the walk go round forever.
    let mut stack: Vec<(String, PathBuf, Vec<PathBuf>)> =
        vec![(String::new(), root.clone(), Vec::new())];
    while let Some((prefix, real_dir, mut chain)) = stack.pop() {
        chain.push(real_dir.clone());
        let entries = std::fs::read_dir(&real_dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading {}", real_dir.display()))?;
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let file_type = entry
                .file_type()
                .with_context(|| format!("reading {}", path.display()))?;
            let (source, meta) = if file_type.is_symlink() {
                // Ignored links are skipped before they are judged.
                let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
                if rules.is_ignored(&relative, is_dir) {
                    continue;
                }
                let target = path.canonicalize().with_context(|| {
                    format!("{relative} is a symbolic link whose target cannot be read")
                })?;
                if !target.starts_with(&root) {
                    bail!(
                        "{relative} is a symbolic link to {}, outside {}; refusing to push it \
                         (copy the file in, or list the link in .cfignore)",
                        target.display(),
                        root.display()
                    );
                }
                let meta = std::fs::metadata(&target)
                    .with_context(|| format!("reading {}", target.display()))?;
                (target, meta)
            } else {
                let meta = entry
                    .metadata()
                    .with_context(|| format!("reading {}", path.display()))?;
                (path, meta)
            };
            if meta.is_dir() {
                if rules.is_ignored(&relative, true) {
                    continue;
                }
                if chain.iter().any(|above| above.starts_with(&source)) {
                    bail!(
                        "{relative} is a symbolic link to {}, which contains it; refusing to push a loop",
                        source.display()
                    );
                }
                tree.dirs.push(relative.clone());
                stack.push((relative, source, chain.clone()));
            } else if meta.is_file() {
                if rules.is_ignored(&relative, false) {
                    continue;
                }
                use std::os::unix::fs::PermissionsExt;
                tree.files.push(AppFile {
                    sha1: sha1_of(&source)?,
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o777,
                    path: relative,
                    source,
                });
            }
            // Sockets, fifos and devices are not app files.
        }
    }
    tree.dirs.sort();
    tree.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(tree)
}

fn sha1_of(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A zip of `dirs` (mode 0755) and `files` (their own modes).
pub fn zip_tree(dirs: &[String], files: &[&AppFile]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for dir in dirs {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        zip.add_directory(format!("{dir}/"), options)
            .with_context(|| format!("zipping {dir}"))?;
    }
    for file in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(file.mode)
            .large_file(file.size >= u64::from(u32::MAX));
        zip.start_file(file.path.as_str(), options)
            .with_context(|| format!("zipping {}", file.path))?;
        let mut source = std::fs::File::open(&file.source)
            .with_context(|| format!("reading {}", file.source.display()))?;
        std::io::copy(&mut source, &mut zip).with_context(|| format!("zipping {}", file.path))?;
    }
    Ok(zip.finish().context("finishing the zip")?.into_inner())
}

/// A zip of a whole directory (a buildpack), nothing ignored, modes kept.
pub fn zip_dir(root: &Path) -> anyhow::Result<Vec<u8>> {
    let tree = scan(root, &IgnoreRules::none())?;
    let files: Vec<&AppFile> = tree.files.iter().collect();
    zip_tree(&tree.dirs, &files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cfignore_rules() {
        let rules = IgnoreRules::for_app(
            "# comment\n*.log\ntmp/\n/secret.txt\n!keep.log\ndocs/**/*.md\nvendor/cache\r\n!_darcs\nlib[0-9].so\n",
        )
        .unwrap();
        let table = [
            ("app.py", false, false),
            ("debug.log", false, true),
            ("sub/debug.log", false, true),
            ("keep.log", false, false),
            ("tmp", true, true),
            ("tmp", false, false),
            ("sub/tmp", true, true),
            ("secret.txt", false, true),
            ("sub/secret.txt", false, false),
            ("docs/a/b/readme.md", false, true),
            ("docs/readme.md", false, true),
            ("docs/readme.txt", false, false),
            ("vendor/cache", true, true),
            ("x/vendor/cache", true, false),
            (".git", true, true),
            (".git", false, true),
            ("sub/.svn", true, true),
            (".DS_Store", false, true),
            (".cfignore", false, true),
            ("_darcs", true, false),
            ("manifest.yml", false, true),
            ("manifest.yaml", false, true),
            ("sub/manifest.yml", false, false),
            (".gitignore", false, true),
            (".hg", true, true),
            ("a/.hg/store", false, true),
            ("lib[0-9].so", false, false),
            ("lib7.so", false, true),
            ("tmp/inner.txt", false, true),
        ];
        for (path, is_dir, expected) in table {
            assert_eq!(
                rules.is_ignored(path, is_dir),
                expected,
                "{path} (dir: {is_dir})"
            );
        }
        assert!(!IgnoreRules::none().is_ignored(".git", true));
    }

    #[test]
    fn resources_serialise_as_cloud_controller_expects() {
        let resource = AppFile {
            path: "bin/run".into(),
            sha1: "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(),
            size: 12,
            mode: 0o755,
            source: PathBuf::from("/x"),
        }
        .resource();
        let request = ResourceList {
            resources: vec![resource.clone()],
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({"resources": [{
                "checksum": {"value": "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
                "size_in_bytes": 12, "path": "bin/run", "mode": "755"
            }]})
        );
        let answer: ResourceList = serde_json::from_str(
            r#"{"resources":[{"checksum":{"value":"da39a3ee5e6b4b0d3255bfef95601890afd80709"},
                "size_in_bytes":12,"path":"bin/run","mode":"755"}]}"#,
        )
        .unwrap();
        assert_eq!(answer, request);
        let empty: ResourceList = serde_json::from_str("{}").unwrap();
        assert!(empty.resources.is_empty());
        let bad =
            r#"{"resources":[{"checksum":{"value":"x"},"size_in_bytes":1,"path":"a","mode":"9"}]}"#;
        assert!(serde_json::from_str::<ResourceList>(bad).is_err());
    }

    fn app_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join("hello.txt"), "hello").unwrap();
        std::fs::write(root.join("manifest.yml"), "applications: []\n").unwrap();
        std::fs::write(root.join("bin/manifest.yml"), "not the app's manifest\n").unwrap();
        std::fs::write(root.join("bin/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("bin/run"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(root.join("x.log"), "noise").unwrap();
        std::fs::write(root.join(".cfignore"), "*.log\nignored-link\n").unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink("bin", root.join("tools")).unwrap();
        // Ignored, so never judged even though it leaves the app.
        std::os::unix::fs::symlink("/etc/hostname", root.join("ignored-link")).unwrap();
        (dir, root)
    }

    #[test]
    fn scan_hashes_ignores_and_follows_inner_links() {
        let (_dir, root) = app_dir();
        let tree = scan_app(&root).unwrap();
        let paths: Vec<_> = tree.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "alias.txt",
                "bin/manifest.yml",
                "bin/run",
                "hello.txt",
                "tools/manifest.yml",
                "tools/run"
            ]
        );
        assert_eq!(tree.dirs, ["bin", "empty", "tools"]);
        let hello = tree.files.iter().find(|f| f.path == "hello.txt").unwrap();
        assert_eq!(hello.sha1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        assert_eq!(hello.size, 5);
        let alias = tree.files.iter().find(|f| f.path == "alias.txt").unwrap();
        assert_eq!(alias.sha1, hello.sha1);
        let tool = tree.files.iter().find(|f| f.path == "tools/run").unwrap();
        assert_eq!(tool.mode, 0o755);
    }

    #[test]
    fn zips_keep_modes_directories_and_link_contents() {
        let (_dir, root) = app_dir();
        let tree = scan_app(&root).unwrap();
        let files: Vec<&AppFile> = tree.files.iter().collect();
        let bytes = zip_tree(&tree.dirs, &files).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mode = |archive: &mut zip::ZipArchive<_>, name: &str| {
            archive.by_name(name).unwrap().unix_mode().unwrap() & 0o777
        };
        assert_eq!(mode(&mut archive, "bin/run"), 0o755);
        assert_eq!(mode(&mut archive, "tools/run"), 0o755);
        assert_eq!(mode(&mut archive, "hello.txt") & 0o600, 0o600);
        assert!(archive.by_name("empty/").unwrap().is_dir());
        let mut content = String::new();
        archive
            .by_name("alias.txt")
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "hello");
        assert!(archive.by_name("x.log").is_err());
        assert!(archive.by_name(".git/HEAD").is_err());

        // A buildpack directory is zipped whole.
        let whole = zip_dir(&root.join("bin")).unwrap();
        let archive = zip::ZipArchive::new(std::io::Cursor::new(whole)).unwrap();
        assert_eq!(archive.len(), 2, "bin/run and bin/manifest.yml");
    }

    #[test]
    fn refuses_links_out_of_the_app_and_loops() {
        let (_dir, root) = app_dir();
        std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).unwrap();
        let error = scan_app(&root).unwrap_err().to_string();
        assert!(
            error.contains("escape is a symbolic link to") && error.contains("outside"),
            "{error}"
        );
        std::fs::remove_file(root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../app", root.join("bin/up")).unwrap();
        let error = scan_app(&root).unwrap_err().to_string();
        assert!(error.contains("refusing to push a loop"), "{error}");
        std::fs::remove_file(root.join("bin/up")).unwrap();
        std::os::unix::fs::symlink("missing", root.join("dangling")).unwrap();
        let error = format!("{:#}", scan_app(&root).unwrap_err());
        assert!(error.contains("dangling"), "{error}");
    }
}
