//! The CLI's saved state, like the cf CLI's `~/.cf/config.json`: the target
//! API, the links it advertised at `GET /`, the tokens, and the targeted org
//! and space, in `<home>/config.json` (home = `$KILN_HOME`, default
//! `~/.kiln`), readable by its owner only because it holds tokens.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A targeted org or space.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Named {
    pub guid: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// The API endpoint, e.g. `http://127.0.0.1:9022` (no trailing slash).
    pub api: String,
    /// `links.cloud_controller_v3.meta.version` of `GET /`.
    pub api_version: String,
    /// `links.login.href`: where `/oauth/token` lives.
    pub login: String,
    /// `links.log_cache.href`: where `/api/v1/read/<app guid>` lives.
    pub log_cache: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The user name, from the token's `user_name` claim.
    pub user: String,
    pub org: Option<Named>,
    pub space: Option<Named>,
}

/// `$KILN_HOME`, else `~/.kiln`.
pub fn default_home() -> PathBuf {
    match std::env::var_os("KILN_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".kiln"),
            |h| PathBuf::from(h).join(".kiln"),
        ),
    }
}

impl Config {
    pub fn path(home: &Path) -> PathBuf {
        home.join("config.json")
    }

    /// The saved config, or an empty one when there is none yet.
    pub fn load(home: &Path) -> anyhow::Result<Config> {
        let path = Config::path(home);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config atomically with mode 0600 (the directory 0700).
    pub fn save(&self, home: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .with_context(|| format!("creating {}", home.display()))?;
        let path = Config::path(home);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // `mode` only applies when the file is created; a leftover
            // temporary file keeps whatever mode it had.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("writing {}", path.display()))
    }

    pub fn require_login(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.api.is_empty(),
            "no API endpoint set; use 'kiln login -a URL -u USER -p PASSWORD'"
        );
        anyhow::ensure!(
            !self.access_token.is_empty(),
            "not logged in; use 'kiln login -u USER -p PASSWORD'"
        );
        Ok(())
    }

    pub fn require_space(&self) -> anyhow::Result<&Named> {
        self.space
            .as_ref()
            .context("no space targeted; use 'kiln target -o ORG -s SPACE'")
    }

    pub fn org_name(&self) -> &str {
        self.org.as_ref().map_or("", |o| o.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saves_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("kiln-home");
        assert_eq!(Config::load(&home).unwrap(), Config::default());
        let config = Config {
            api: "http://127.0.0.1:9022".into(),
            access_token: "secret".into(),
            space: Some(Named {
                guid: "s".into(),
                name: "dev".into(),
            }),
            ..Config::default()
        };
        config.save(&home).unwrap();
        config.save(&home).unwrap();
        let mode = std::fs::metadata(Config::path(&home))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Config::load(&home).unwrap(), config);
        // Fields added later default when an older file lacks them.
        std::fs::write(Config::path(&home), r#"{"api":"http://x"}"#).unwrap();
        assert_eq!(Config::load(&home).unwrap().api, "http://x");
    }
}
