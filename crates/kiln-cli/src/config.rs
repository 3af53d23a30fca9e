//! The CLI's saved state, like the cf CLI's `CF_HOME/.cf/config.json`: the
//! target API, its links, tokens and the targeted org and space, in
//! `$KILN_HOME/config.json` (default `~/.kiln`), readable by its owner only.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Named {
    pub guid: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub api: String,
    #[serde(default)]
    pub login: String,
    #[serde(default)]
    pub log_cache: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub org: Option<Named>,
    #[serde(default)]
    pub space: Option<Named>,
}

pub fn home() -> PathBuf {
    match std::env::var_os("KILN_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".kiln"),
            |h| PathBuf::from(h).join(".kiln"),
        ),
    }
}

impl Config {
    pub fn path() -> PathBuf {
        home().join("config.json")
    }

    /// The saved config, or an empty one when there is none yet.
    pub fn load() -> anyhow::Result<Config> {
        let path = Config::path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config with mode 0600: it holds tokens.
    pub fn save(&self) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Config::path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn require_target(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.api.is_empty(),
            "no API targeted; use 'kiln login -a URL -u USER -p PASSWORD'"
        );
        anyhow::ensure!(
            !self.access_token.is_empty(),
            "not logged in; use 'kiln login'"
        );
        Ok(())
    }

    pub fn require_space(&self) -> anyhow::Result<&Named> {
        self.space
            .as_ref()
            .context("no space targeted; use 'kiln target -o ORG -s SPACE'")
    }
}
