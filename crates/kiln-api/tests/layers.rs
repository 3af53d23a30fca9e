//! kiln-api's layering, checked from its source: every `crate::<module>`
//! path in a module names a module of a lower layer (so no module cycle can
//! form), every module has a layer, and SQL text appears only in `db`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first (ARCHITECTURE.md shows the same order).
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["config", "util", "encryption"],
    &["context"],
    &["signing", "uploads", "web"],
    &["db"],
    &["audit", "messages", "presenters"],
    &["environment"],
    &["diego"],
    &["permissions"],
    &["actions", "fetchers"],
    &["auth", "controllers"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib").then_some(name)
}

/// The modules named by `crate::<module>` paths in `text`.
fn crate_edges(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .collect()
}

fn src_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn every_module_uses_only_lower_layers() {
    let (src, files) = src_files();
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        let from_layer = layer_of(&from)
            .unwrap_or_else(|| panic!("module `{from}` has no layer in tests/layers.rs"));
        let text = std::fs::read_to_string(file).unwrap();
        for to in crate_edges(&text) {
            if to == from {
                continue;
            }
            match layer_of(&to) {
                Some(to_layer) if to_layer < from_layer => {
                    edges.entry(from.clone()).or_default().push(to);
                }
                _ => violations.push(format!("{} uses crate::{to}", file.display())),
            }
        }
    }
    assert!(violations.is_empty(), "layer violations:\n{violations:#?}");
    // The check has something to check.
    assert!(edges["controllers"].iter().any(|m| m == "actions"));
    assert!(edges["actions"].iter().any(|m| m == "db"));
}

#[test]
fn sql_lives_only_in_db() {
    let (src, files) = src_files();
    let sql = [
        "sqlx::query",
        "QueryBuilder",
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "UPDATE ",
        "rowid",
        "INSERT OR",
    ];
    let mut found = Vec::new();
    for file in &files {
        if module_of(&src, file).as_deref() == Some("db") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for needle in sql {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "SQL outside db:\n{found:#?}");
}

#[test]
fn the_edge_reader_sees_paths_and_uses() {
    let edges = crate_edges("use crate::db::{self, App};\nlet x = crate::diego::sync::go();");
    assert_eq!(edges, ["db", "diego"]);
}
