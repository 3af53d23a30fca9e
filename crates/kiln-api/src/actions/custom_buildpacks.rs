//! Custom buildpacks from git (`https://…/repo.git#branch`, `file://…#tag`):
//! the API clones them with the host's `git` at build create and stores
//! the checkout as a zip blob the staging task downloads like an admin
//! buildpack. Cloning here rather than in the container means neither the
//! stack nor the container's network needs to reach the repository, and a
//! `file://` repository on the API's host works.

use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::uploads::custom_buildpack_key;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

/// A clone that takes longer than this fails the build; it stays below
/// the time a STAGING build may go without its Task
/// (`diego::staging::LOST_TASK_GRACE_SECS`).
const CLONE_TIMEOUT: Duration = Duration::from_secs(45);

/// Clones `url` (`#ref` picks a branch or tag) into a zip blob under `id`;
/// returns the blob's sha256, or why it could not be fetched (the build's
/// error).
pub async fn fetch_git(ctx: &Ctx, url: &str, id: &str) -> ApiResult<Result<String, String>> {
    let scratch = tempdir_in(ctx.blobstore.scratch_dir()).await?;
    let outcome = clone_and_archive(url, &scratch.join("checkout"), &scratch.join("bp.zip")).await;
    let stored = match outcome {
        Ok(zip) => Ok(ctx
            .blobstore
            .put_file(&custom_buildpack_key(id), &zip)
            .await?
            .sha256),
        Err(why) => Err(format!(
            "BuildpackCompileFailed - Failed to clone git repository at {url}: {why}"
        )),
    };
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    Ok(stored)
}

async fn tempdir_in(dir: &Path) -> ApiResult<std::path::PathBuf> {
    let path = dir.join(format!("git-{}", crate::util::new_guid()));
    tokio::fs::create_dir_all(&path)
        .await
        .map_err(|e| ApiError::io(format!("creating {}", path.display()), e))?;
    Ok(path)
}

/// `git clone --depth 1 [--branch REF] -- URL DIR`, then `git archive` of
/// HEAD as a zip (file modes and links kept, `.git` left out).
async fn clone_and_archive(
    url: &str,
    checkout: &Path,
    zip: &Path,
) -> Result<std::path::PathBuf, String> {
    let (repo, reference) = match url.split_once('#') {
        Some((repo, r)) if !r.is_empty() => (repo, Some(r)),
        Some((repo, _)) => (repo, None),
        None => (url, None),
    };
    let mut clone = git();
    clone.args(["clone", "--quiet", "--depth", "1"]);
    if let Some(r) = reference {
        clone.args(["--branch", r]);
    }
    clone.arg("--").arg(repo).arg(checkout);
    run(clone).await?;
    let mut archive = git();
    archive
        .arg("-C")
        .arg(checkout)
        .args(["archive", "--format=zip", "-o"])
        .arg(zip)
        .arg("HEAD");
    run(archive).await?;
    Ok(zip.to_path_buf())
}

/// git with nothing from the user's config and only plain transports
/// (no `ext::` commands), never asking for credentials.
fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_ALLOW_PROTOCOL", "http:https:git:file")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs git; its last line of stderr is the reason when it fails.
async fn run(mut command: Command) -> Result<(), String> {
    let output = match tokio::time::timeout(CLONE_TIMEOUT, command.output()).await {
        Err(_) => return Err(format!("git took longer than {}s", CLONE_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run git: {e}")),
        Ok(Ok(o)) => o,
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("git failed")
        .trim()
        .to_string();
    Err(why)
}
