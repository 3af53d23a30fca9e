//! Blobs by key. Writers hand over a finished local file, so a blob is
//! either absent or whole: nothing half-written is ever visible under a key.

use crate::StoreError;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// A stored blob's size and, where the store has one, its ETag (for an
/// object stored by one S3 `PUT`, the hex MD5 of its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobStat {
    pub size: u64,
    pub etag: Option<String>,
}

/// What a signed URL lets its holder do to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A plain `GET` of its bytes.
    Download,
    /// One plain `PUT` of its bytes.
    Upload,
}

#[async_trait]
pub trait Blobstore: Send + Sync {
    /// Moves the finished file at `src` under `key`, replacing any blob
    /// there, atomically. `src` must be on a path the store can take over
    /// (see [`Blobstore::scratch_dir`]); it is gone afterwards.
    async fn put_file(&self, key: &str, src: &Path) -> Result<BlobInfo, StoreError>;
    /// Opens the blob for reading.
    async fn open(&self, key: &str) -> Result<tokio::fs::File, StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// A URL that does `access` to the blob under `key` for `ttl`, signed
    /// by the store itself, so that a cell moves the bytes to or from the
    /// store and not through the API. `None`: the store cannot sign (a
    /// directory), and the API serves or takes the bytes. Signing checks
    /// nothing: a missing blob is the store's 404 when the URL is fetched.
    async fn signed_url(
        &self,
        access: Access,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        let _ = (access, key, ttl);
        Ok(None)
    }
    /// What the store says of the blob without reading it (S3's `HEAD`);
    /// `None` if absent.
    async fn stat(&self, key: &str) -> Result<Option<BlobStat>, StoreError>;
    /// A directory for temporary files that will later be `put_file`d
    /// (same filesystem, so the move is a rename).
    fn scratch_dir(&self) -> &Path;
}

/// Blobs as files under one directory: `<root>/<key>`, written by rename.
pub struct FsBlobstore {
    root: PathBuf,
    scratch: PathBuf,
}

impl FsBlobstore {
    pub async fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let scratch = root.join(".scratch");
        create_dir(&scratch).await?;
        Ok(FsBlobstore { root, scratch })
    }

    /// Every blob's key, sorted (hidden entries, the scratch directory
    /// among them, are not blobs).
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut dirs = vec![(self.root.clone(), String::new())];
        while let Some((dir, prefix)) = dirs.pop() {
            let mut entries = tokio::fs::read_dir(&dir).await.map_err(io(&dir))?;
            while let Some(entry) = entries.next_entry().await.map_err(io(&dir))? {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let key = format!("{prefix}{name}");
                let kind = entry.file_type().await.map_err(io(&entry.path()))?;
                if kind.is_dir() && !name.starts_with('.') {
                    dirs.push((entry.path(), format!("{key}/")));
                } else if kind.is_file() && valid_key(&key) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        if valid_key(key) {
            Ok(self.root.join(key))
        } else {
            Err(StoreError::InvalidKey {
                key: key.to_string(),
            })
        }
    }
}

pub(crate) async fn create_dir(path: &Path) -> Result<(), StoreError> {
    tokio::fs::create_dir_all(path).await.map_err(io(path))
}

/// An io error on `path`, as both stores report it.
pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        path: path.clone(),
        source,
    }
}

/// Keys are relative paths of plain segments (`droplets/<guid>`); anything
/// that could leave a directory root, or name a hidden file, is refused.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

async fn sha256_of(path: &Path) -> std::io::Result<BlobInfo> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(BlobInfo {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[async_trait]
impl Blobstore for FsBlobstore {
    async fn put_file(&self, key: &str, src: &Path) -> Result<BlobInfo, StoreError> {
        let dest = self.path_of(key)?;
        let info = sha256_of(src).await.map_err(io(src))?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(parent))?;
        }
        // fsync the content before the rename makes it visible, so a crash
        // never leaves a visible but truncated blob.
        let file = tokio::fs::File::open(src).await.map_err(io(src))?;
        file.sync_all().await.map_err(io(src))?;
        tokio::fs::rename(src, &dest).await.map_err(io(&dest))?;
        Ok(info)
    }

    async fn open(&self, key: &str) -> Result<tokio::fs::File, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                key: key.to_string(),
            }),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|source| StoreError::Io { path, source })
    }

    async fn stat(&self, key: &str) -> Result<Option<BlobStat>, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(BlobStat {
                size: m.len(),
                etag: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }
}
