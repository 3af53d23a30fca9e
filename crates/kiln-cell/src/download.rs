//! Diego's download step: fetch an artifact over HTTP, verify its sha256,
//! keep it in the cell's cache when it has a cache key, and extract it into
//! the container's writable directories.
//!
//! The cache is `<data_dir>/cache/<sha256 of the cache key>`, with the
//! verified checksum beside it (`.sha256`) so that a cache hit costs no
//! re-hashing. Files arrive under a unique temporary name and are renamed
//! into place, so concurrent downloads of one key cannot corrupt it.

use crate::container::ContainerDir;
use crate::extract::{self, ExtractError};
use futures_util::StreamExt;
use kiln_model::bbs::{Checksum, DownloadAction};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

/// Why a download failed; shown to users as
/// `Downloading <artifact> failed: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Destination(#[from] crate::container::PathError),
    #[error("unsupported checksum algorithm {0:?}")]
    Algorithm(String),
    #[error("GET {url}: {why}")]
    Http { url: String, why: String },
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("cache: {0}")]
    Cache(std::io::Error),
    #[error("{0}")]
    Extract(#[from] ExtractError),
}

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downloaded {
    /// Extracted; `size` is the archive's size, `cached` whether it came
    /// from the cell's cache.
    Extracted { size: u64, cached: bool },
    /// An optional artifact that does not exist (HTTP 404).
    Missing,
}

pub struct Downloader {
    client: reqwest::Client,
    cache_dir: PathBuf,
    /// One lock per cache key: concurrent instances of one app fetch its
    /// droplet once, the others wait and hit the cache.
    fetching: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{stem}.{}.{n}.part", std::process::id()))
}

/// A URL without its query, for messages: signed URLs carry their
/// signature in the query.
pub fn redact(url: &str) -> String {
    url.split_once('?')
        .map_or(url, |(base, _)| base)
        .to_string()
}

impl Downloader {
    pub fn new(client: reqwest::Client, cache_dir: PathBuf) -> Downloader {
        Downloader {
            client,
            cache_dir,
            fetching: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn key_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds, so the map stays as small as the
        // number of downloads in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(name.to_string()).or_default().clone()
    }

    pub async fn run(
        &self,
        action: &DownloadAction,
        container: &ContainerDir,
    ) -> Result<Downloaded, DownloadError> {
        let dest = container.host_path(&action.to)?;
        let expected = action.checksum.as_ref().map(expected_sha256).transpose()?;
        let (archive, size, cached, temporary) = match &action.cache_key {
            Some(key) => {
                let name = hex::encode(Sha256::digest(key.as_bytes()));
                let lock = self.key_lock(&name);
                let _fetching = lock.lock().await;
                let path = self.cache_dir.join(&name);
                let sum_path = self.cache_dir.join(format!("{name}.sha256"));
                let recorded = tokio::fs::read_to_string(&sum_path).await.ok();
                let hit = path.is_file()
                    && recorded.is_some()
                    && expected
                        .as_ref()
                        .is_none_or(|e| recorded.as_deref() == Some(e));
                if hit {
                    let size = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
                    (path, size, true, false)
                } else {
                    tokio::fs::create_dir_all(&self.cache_dir)
                        .await
                        .map_err(DownloadError::Cache)?;
                    let temp = temp_name(&self.cache_dir, &name);
                    let fetched = self.fetch(&action.from, &temp, expected.as_deref()).await;
                    let (size, actual) = match fetched {
                        Ok(Some(ok)) => ok,
                        Ok(None) => return self.missing(action),
                        Err(e) => {
                            let _ = tokio::fs::remove_file(&temp).await;
                            return Err(e);
                        }
                    };
                    tokio::fs::rename(&temp, &path)
                        .await
                        .map_err(DownloadError::Cache)?;
                    tokio::fs::write(&sum_path, &actual)
                        .await
                        .map_err(DownloadError::Cache)?;
                    (path, size, false, false)
                }
            }
            None => {
                let scratch = container.scratch();
                tokio::fs::create_dir_all(&scratch)
                    .await
                    .map_err(DownloadError::Cache)?;
                let temp = temp_name(&scratch, "download");
                match self.fetch(&action.from, &temp, expected.as_deref()).await {
                    Ok(Some((size, _))) => (temp, size, false, true),
                    Ok(None) => return self.missing(action),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&temp).await;
                        return Err(e);
                    }
                }
            }
        };

        let kind = action.kind;
        let archive_for_task = archive.clone();
        let extracted =
            tokio::task::spawn_blocking(move || extract::extract(&archive_for_task, kind, &dest))
                .await
                .map_err(|e| DownloadError::Cache(std::io::Error::other(e)))?;
        if temporary {
            let _ = tokio::fs::remove_file(&archive).await;
        }
        extracted?;
        Ok(Downloaded::Extracted { size, cached })
    }

    fn missing(&self, action: &DownloadAction) -> Result<Downloaded, DownloadError> {
        if action.optional {
            Ok(Downloaded::Missing)
        } else {
            Err(DownloadError::Http {
                url: redact(&action.from),
                why: "404 Not Found".into(),
            })
        }
    }

    /// Streams `url` into `to`, hashing as it goes. `Ok(None)` is a 404.
    async fn fetch(
        &self,
        url: &str,
        to: &Path,
        expected: Option<&str>,
    ) -> Result<Option<(u64, String)>, DownloadError> {
        let http_err = |why: String| DownloadError::Http {
            url: redact(url),
            why,
        };
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| http_err(error_chain(&e.without_url())))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(http_err(status.to_string()));
        }
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(DownloadError::Cache)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| http_err(error_chain(&e.without_url())))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(DownloadError::Cache)?;
        }
        file.flush().await.map_err(DownloadError::Cache)?;
        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(DownloadError::Checksum {
                expected: expected.into(),
                actual,
            });
        }
        Ok(Some((size, actual)))
    }
}

fn expected_sha256(checksum: &Checksum) -> Result<String, DownloadError> {
    if !checksum.algorithm.eq_ignore_ascii_case("sha256") {
        return Err(DownloadError::Algorithm(checksum.algorithm.clone()));
    }
    Ok(checksum.value.to_ascii_lowercase())
}

/// reqwest's errors say little at the top level; the cause says why.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_signatures_from_urls() {
        assert_eq!(
            redact("http://127.0.0.1:9022/internal/v4/droplets/x/download?signature=abc&expires=1"),
            "http://127.0.0.1:9022/internal/v4/droplets/x/download"
        );
        assert_eq!(redact("http://h/p"), "http://h/p");
    }
}
