//! The launcher: starts an app instance from an extracted droplet the way
//! buildpackapplifecycle's launcher does. It derives the instance's
//! environment (`HOME`, `TMPDIR`, `DEPS_DIR`, instance fields in
//! `VCAP_APPLICATION`, `DATABASE_URL`), then replaces itself with bash,
//! which sources the buildpacks' and the app's profile scripts and execs
//! the start command.
//!
//! [`command`] builds that bash invocation without running it, so tests can
//! spawn it; [`launch`] execs it.

use crate::env::{database_url, vcap_application};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `kiln lifecycle launcher`, as Diego passes them to CF's
/// launcher: `app "<start command or empty>" "<execution metadata>"`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LauncherArgs {
    /// The app directory inside the extracted droplet (relative to the cwd)
    pub app_dir: PathBuf,
    /// The start command; empty means the droplet's staged `web` command
    #[arg(default_value = "", allow_hyphen_values = true)]
    pub start_command: String,
    /// Unused (buildpack droplets carry none); accepted for Diego's argv
    #[arg(default_value = "", allow_hyphen_values = true)]
    pub execution_metadata: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("reading {}: {source}", path.display())]
    ReadStagingInfo { path: PathBuf, source: io::Error },
    #[error("invalid staging info {}: {detail}", path.display())]
    InvalidStagingInfo { path: PathBuf, detail: String },
    #[error("no start command specified or detected in droplet")]
    NoStartCommand,
    #[error("resolving the app directory {}: {source}", path.display())]
    AppDir { path: PathBuf, source: io::Error },
    #[error("starting bash: {0}")]
    Exec(io::Error),
}

impl LauncherError {
    /// Exit codes of CF's launcher: 1 before the environment is computed,
    /// 4 when the exec itself fails.
    pub fn exit_code(&self) -> i32 {
        match self {
            LauncherError::Exec(_) => 4,
            _ => 1,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct StagingInfo {
    #[serde(default)]
    start_command: Option<String>,
    #[serde(default)]
    config: Option<StagingInfoConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct StagingInfoConfig {
    #[serde(default)]
    entrypoint_prefix: Option<String>,
}

/// Runs in `bash -c SCRIPT kiln-launcher APP_DIR START_COMMAND ENTRYPOINT`.
/// The start command arrives as a positional argument and is only ever
/// expanded inside double quotes, so whatever quoting and `$` it contains
/// reach the inner `bash -c` untouched. It is saved before the profile
/// scripts run because they are sourced in this shell and share its
/// positional parameters.
const LAUNCH_SCRIPT: &str = r#"
cd "$1" || exit 1
__kiln_start_command=$2
__kiln_entrypoint=$3
set --

echo 'Invoking pre-start scripts.'

for __kiln_env_file in ../profile.d/*.sh; do
  if [ -f "$__kiln_env_file" ]; then
    source "$__kiln_env_file"
  fi
done

for __kiln_env_file in .profile.d/*.sh; do
  if [ -f "$__kiln_env_file" ]; then
    source "$__kiln_env_file"
  fi
done

if [ -f .profile ]; then
  source .profile
fi

echo 'Invoking start command.'

exec $__kiln_entrypoint "$__kiln_start_command"
"#;

/// The process that runs the instance: bash with [`LAUNCH_SCRIPT`] and the
/// derived environment. `env` is the environment the launcher was given (the
/// cell's), `cwd` what relative app dirs are resolved against.
pub fn command(
    args: &LauncherArgs,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    cwd: &Path,
) -> Result<Command, LauncherError> {
    let app_dir = absolute_app_dir(&args.app_dir, cwd)?;
    let droplet_dir = app_dir.parent().unwrap_or(Path::new("/")).to_path_buf();

    let staging_info = read_staging_info(&droplet_dir.join("staging_info.yml"))?;
    let start_command = if args.start_command.is_empty() {
        staging_info.start_command.unwrap_or_default()
    } else {
        args.start_command.clone()
    };
    if start_command.trim().is_empty() {
        return Err(LauncherError::NoStartCommand);
    }
    let entrypoint = staging_info
        .config
        .and_then(|config| config.entrypoint_prefix)
        .filter(|prefix| !prefix.trim().is_empty())
        // `--` so that a command starting with `-` is not taken for an
        // option of bash.
        .unwrap_or_else(|| "bash -c --".into());

    let mut env: BTreeMap<OsString, OsString> = env.into_iter().collect();
    env.insert("HOME".into(), app_dir.clone().into());
    env.insert("TMPDIR".into(), droplet_dir.join("tmp").into());
    env.insert("DEPS_DIR".into(), droplet_dir.join("deps").into());
    let text = |name: &str| {
        env.get(&OsString::from(name))
            .and_then(|value| value.to_str())
            .map(str::to_owned)
    };
    let rewritten_vcap_application = text("VCAP_APPLICATION").and_then(|vcap| {
        vcap_application(
            &vcap,
            text("INSTANCE_GUID").as_deref().unwrap_or(""),
            text("INSTANCE_INDEX").as_deref(),
            text("PORT").as_deref(),
        )
    });
    let derived_database_url = text("VCAP_SERVICES").and_then(|services| database_url(&services));
    if let Some(rewritten) = rewritten_vcap_application {
        env.insert("VCAP_APPLICATION".into(), rewritten.into());
    }
    if let Some(url) = derived_database_url {
        env.insert("DATABASE_URL".into(), url.into());
    }
    env.remove(&OsString::from("VCAP_PLATFORM_OPTIONS"));

    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(LAUNCH_SCRIPT)
        .arg("kiln-launcher")
        .arg(&app_dir)
        .arg(start_command)
        .arg(entrypoint)
        .env_clear()
        .envs(env);
    Ok(command)
}

/// Build the command from this process's environment and exec it. Returns
/// only on failure.
pub fn launch(args: &LauncherArgs) -> LauncherError {
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(source) => {
            return LauncherError::AppDir {
                path: args.app_dir.clone(),
                source,
            };
        }
    };
    match command(args, std::env::vars_os(), &cwd) {
        Ok(mut command) => LauncherError::Exec(command.exec()),
        Err(error) => error,
    }
}

fn absolute_app_dir(app_dir: &Path, cwd: &Path) -> Result<PathBuf, LauncherError> {
    let joined = cwd.join(app_dir);
    // Lexically, like Go's filepath.Abs: the dir need not exist yet for the
    // error to come from bash's `cd`, which names it.
    std::path::absolute(&joined).map_err(|source| LauncherError::AppDir {
        path: joined.clone(),
        source,
    })
}

fn read_staging_info(path: &Path) -> Result<StagingInfo, LauncherError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(StagingInfo::default()),
        Err(source) => {
            return Err(LauncherError::ReadStagingInfo {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(StagingInfo::default());
    }
    // The builder writes JSON; older droplets may hold YAML, and JSON is
    // YAML, so the YAML parser reads both.
    serde_saphyr::from_str(&text).map_err(|error| LauncherError::InvalidStagingInfo {
        path: path.to_path_buf(),
        detail: error.to_string(),
    })
}
