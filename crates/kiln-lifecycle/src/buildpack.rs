//! One buildpack on disk: where its scripts are, which of them it has, and
//! the per-buildpack names the builder derives (deps index, cache dir).

use std::path::{Path, PathBuf};

/// A buildpack found under the buildpacks dir.
#[derive(Debug, Clone)]
pub struct Buildpack {
    /// The key it was named by (`--buildpack-order`), in Kiln its guid.
    pub key: String,
    /// The directory holding `bin/`.
    pub dir: PathBuf,
}

impl Buildpack {
    /// Find buildpack `key` in `buildpacks_dir`: `<dir>/<key>` if it holds
    /// `bin/`, else its single top-level directory if that does (zips made
    /// from a checkout often wrap everything in one directory).
    pub fn locate(buildpacks_dir: &Path, key: &str) -> Option<Buildpack> {
        let base = buildpacks_dir.join(key);
        if base.join("bin").is_dir() {
            return Some(Buildpack {
                key: key.to_owned(),
                dir: base,
            });
        }
        let entries = std::fs::read_dir(&base)
            .ok()?
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        match entries.as_slice() {
            [only] if only.path().join("bin").is_dir() => Some(Buildpack {
                key: key.to_owned(),
                dir: only.path(),
            }),
            _ => None,
        }
    }

    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    pub fn has_script(&self, name: &str) -> bool {
        self.script(name).exists()
    }
}

/// `deps/<index>` directory name: zero-padded to the width of the number of
/// buildpacks, as buildpackapplifecycle does (`0`…`9`, or `00`…`11`).
pub fn deps_index(index: usize, n_buildpacks: usize) -> String {
    let width = n_buildpacks.max(1).to_string().len();
    format!("{index:0width$}")
}

/// Cache directory name of a supply buildpack under the build-artifacts
/// cache. Cloud Foundry hashes the key with xxhash64; only Kiln's own
/// builder reads this cache back, so any stable 64-bit hash will do
/// (FNV-1a here), as long as it never changes.
pub fn supply_cache_name(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_index_is_padded_to_the_buildpack_count_width() {
        for (index, n, expected) in [
            (0, 1, "0"),
            (3, 9, "3"),
            (0, 10, "00"),
            (9, 10, "09"),
            (11, 12, "11"),
            (5, 100, "005"),
        ] {
            assert_eq!(deps_index(index, n), expected, "index {index} of {n}");
        }
    }

    #[test]
    fn supply_cache_name_is_stable_hex() {
        assert_eq!(supply_cache_name(""), "cbf29ce484222325");
        assert_eq!(supply_cache_name("a"), "af63dc4c8601ec8c");
        assert_ne!(supply_cache_name("bp-1"), supply_cache_name("bp-2"));
    }
}
