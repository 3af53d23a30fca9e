//! The app's files as a push sees them: the directory walked with
//! `.cfignore` applied, each file's SHA-1, size and mode for resource
//! matching, and a zip of the files the platform does not have yet.

use anyhow::{Context, bail};
use sha1::{Digest, Sha1};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One file of the app, as `resource_matches` and the upload describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFile {
    /// Relative, `/`-separated.
    pub path: String,
    pub sha1: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Where the content is read from (the link target for symlinks).
    pub source: PathBuf,
}

impl AppFile {
    pub fn resource_json(&self) -> serde_json::Value {
        serde_json::json!({
            "checksum": {"value": self.sha1},
            "size_in_bytes": self.size,
            "path": self.path,
            "mode": format!("{:o}", self.mode),
        })
    }
}

/// What is never pushed, whatever `.cfignore` says (as the cf CLI does).
const ALWAYS_IGNORED: &[&str] = &[
    ".cfignore",
    ".git/",
    ".svn/",
    "_darcs/",
    ".DS_Store",
    ".hg/",
];

/// `.cfignore` rules, a subset of gitignore: `#` comments, `!` negation,
/// `dir/` for directories only, a leading or inner `/` anchors the pattern
/// to the app root, `*`, `?` and `**` globs.
#[derive(Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    pattern: String,
    negated: bool,
    dir_only: bool,
    anchored: bool,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> IgnoreRules {
        let lines = ALWAYS_IGNORED.iter().copied().chain(text.lines());
        let rules = lines
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (negated, line) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let dir_only = line.ends_with('/');
                let line = line.trim_end_matches('/');
                let anchored = line.contains('/');
                Rule {
                    pattern: line.trim_start_matches('/').to_string(),
                    negated,
                    dir_only,
                    anchored,
                }
            })
            .collect();
        IgnoreRules { rules }
    }

    /// Whether `path` (relative, `/`-separated) is ignored; the last rule
    /// that matches decides.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let mut ignored = false;
        for rule in &self.rules {
            if rule.dir_only && !is_dir {
                continue;
            }
            let matched = if rule.anchored {
                glob(&rule.pattern, path)
            } else {
                path.rsplit('/')
                    .next()
                    .is_some_and(|name| glob(&rule.pattern, name))
            };
            if matched {
                ignored = !rule.negated;
            }
        }
        ignored
    }
}

/// Shell-style matching: `*` and `?` stay within a path segment, `**`
/// crosses segments.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = rest[1..].strip_prefix(b"/").unwrap_or(&rest[1..]);
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some((b'*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(rest, &t[i..])),
            Some((b'?', rest)) => t.first().is_some_and(|&c| c != b'/') && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Walks `root`, applying `.cfignore`, hashing every file. Symlinks are
/// followed only when they stay inside `root`.
pub fn scan(root: &Path) -> anyhow::Result<Vec<AppFile>> {
    let root = root
        .canonicalize()
        .with_context(|| format!("reading app directory {}", root.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let rules =
        IgnoreRules::parse(&std::fs::read_to_string(root.join(".cfignore")).unwrap_or_default());
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let relative = path
                .strip_prefix(&root)?
                .to_string_lossy()
                .replace('\\', "/");
            let meta = std::fs::symlink_metadata(&path)?;
            let (source, meta) = if meta.file_type().is_symlink() {
                let target = path
                    .canonicalize()
                    .with_context(|| format!("following link {relative}"))?;
                if !target.starts_with(&root) {
                    bail!(
                        "{relative} links outside the app directory (to {}); refusing to push it",
                        target.display()
                    );
                }
                let target_meta = std::fs::metadata(&target)?;
                (target, target_meta)
            } else {
                (path.clone(), meta)
            };
            if meta.is_dir() {
                if !rules.is_ignored(&relative, true) {
                    stack.push(path);
                }
                continue;
            }
            if !meta.is_file() || rules.is_ignored(&relative, false) {
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            files.push(AppFile {
                sha1: sha1_of(&source)?,
                size: meta.len(),
                mode: meta.permissions().mode() & 0o777,
                path: relative,
                source,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn sha1_of(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A zip of `files`, keeping their unix modes (so scripts stay executable).
pub fn zip_files(files: &[&AppFile]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for file in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(file.mode);
        zip.start_file(file.path.as_str(), options)?;
        let mut source =
            std::fs::File::open(&file.source).with_context(|| format!("reading {}", file.path))?;
        std::io::copy(&mut source, &mut zip)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// A zip of a whole directory (a buildpack), modes kept.
pub fn zip_dir(root: &Path) -> anyhow::Result<Vec<u8>> {
    let files = scan(root)?;
    let refs: Vec<&AppFile> = files.iter().collect();
    zip_files(&refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cfignore_rules() {
        let rules =
            IgnoreRules::parse("# comment\n*.log\ntmp/\n/secret.txt\n!keep.log\ndocs/**/*.md\n");
        let table = [
            ("app.py", false, false),
            ("debug.log", false, true),
            ("sub/debug.log", false, true),
            ("keep.log", false, false),
            ("tmp", true, true),
            ("tmp", false, false),
            ("secret.txt", false, true),
            ("sub/secret.txt", false, false),
            ("docs/a/b/readme.md", false, true),
            ("docs/readme.md", false, true),
            (".git", true, true),
            (".cfignore", false, true),
            ("manifest.yml", false, false),
        ];
        for (path, is_dir, expected) in table {
            assert_eq!(
                rules.is_ignored(path, is_dir),
                expected,
                "{path} (dir: {is_dir})"
            );
        }
    }

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("*.py", "app.py", true),
            ("*.py", "dir/app.py", false),
            ("a?c", "abc", true),
            ("**/x", "a/b/x", true),
            ("a/**", "a/b/c", true),
            ("abc", "abd", false),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn scan_hashes_keeps_modes_ignores_and_refuses_escaping_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("hello.txt"), "hello").unwrap();
        std::fs::write(root.join("bin/run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("bin/run"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(root.join("x.log"), "noise").unwrap();
        std::fs::write(root.join(".cfignore"), "*.log\n").unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("alias.txt")).unwrap();

        let files = scan(&root).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["alias.txt", "bin/run", "hello.txt"]);
        let hello = files.iter().find(|f| f.path == "hello.txt").unwrap();
        assert_eq!(hello.sha1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        assert_eq!(hello.size, 5);
        assert_eq!(
            files.iter().find(|f| f.path == "bin/run").unwrap().mode,
            0o755
        );
        assert_eq!(hello.resource_json()["checksum"]["value"], hello.sha1);

        let refs: Vec<&AppFile> = files.iter().collect();
        let bytes = zip_files(&refs).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(
            archive.by_name("bin/run").unwrap().unix_mode().unwrap() & 0o777,
            0o755
        );
        let mut content = String::new();
        archive
            .by_name("alias.txt")
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "hello");

        std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).unwrap();
        let error = scan(&root).unwrap_err().to_string();
        assert!(error.contains("links outside the app directory"), "{error}");
    }
}
