//! Kiln's two storage seams.
//!
//! - [`open`]: a SQL pool ([`Pool`]) for one component's database (Cloud
//!   Controller's CCDB and Diego's BBS each own one, as in Cloud Foundry),
//!   with that component's migrations applied. SQLite is the embedded
//!   default, PostgreSQL the shared one; the component owns its schema and
//!   queries, written once for both engines.
//! - [`Blobstore`]: packages, droplets, buildpacks and the resource cache,
//!   addressed by key. [`FsBlobstore`] keeps them in a directory (the
//!   default), [`S3Blobstore`] in an S3-compatible bucket; [`open_blobstore`]
//!   picks one from `--blobstore-url`.
//!
//! Architecture invariant: this crate knows nothing about HTTP, apps or
//! scheduling. It stores rows and bytes for the crates that do.

mod blobstore;
pub mod copy;
mod db;
mod s3;
mod sql;
#[cfg(feature = "test-support")]
pub mod testing;

pub(crate) use blobstore::valid_key;
pub use blobstore::{Access, BlobInfo, BlobStat, Blobstore, FsBlobstore};
pub use s3::{MULTIPART_THRESHOLD, S3Blobstore, S3Location};

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use db::{
    Connection, DEFAULT_MAX_CONNECTIONS, Database, DatabaseUrl, Db, Durability, Engine, Executor,
    MigrationStep, OpenOptions, Pool, Row, connect, connection_engine, engine, engine_specific,
    is_unavailable, migrator, open, open_database,
};
pub use sql::{Arg, Query, Separated, Sql, Sql as QueryBuilder};
pub use sqlx::migrate::Migrator;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {key} not found")]
    BlobNotFound { key: String },
    #[error("invalid blob key {key:?}")]
    InvalidKey { key: String },
    #[error("blobstore io on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blobstore URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("database URL {url:?}: {reason}")]
    InvalidDatabaseUrl { url: String, reason: String },
    #[error("blobstore: could not {op} {key}: {message}")]
    ObjectStore {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("copying {what}: {reason}")]
    Copy { what: String, reason: String },
    #[error("database {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating database {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// The blobstore a `--blobstore-url` names: `s3://BUCKET?endpoint=URL&region=R`,
/// `file:///PATH` or a plain path; `None` is the embedded default,
/// `<data_dir>/blobs`.
pub async fn open_blobstore(
    url: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn Blobstore>, StoreError> {
    Ok(match url {
        None => Arc::new(FsBlobstore::new(data_dir.join("blobs")).await?),
        Some(u) if u.starts_with("s3:") => {
            let location = S3Location::parse(u)?;
            Arc::new(S3Blobstore::new(&location, data_dir.join("blob-scratch")).await?)
        }
        Some(u) if u.starts_with("file://") => {
            let path = url::Url::parse(u)
                .ok()
                .filter(|p| p.host_str().is_none_or(str::is_empty))
                .and_then(|p| p.to_file_path().ok())
                .ok_or_else(|| StoreError::InvalidUrl {
                    url: u.to_string(),
                    reason: "a file URL is file:///ABSOLUTE/PATH".to_string(),
                })?;
            Arc::new(FsBlobstore::new(path).await?)
        }
        Some(u) if u.contains("://") => {
            return Err(StoreError::InvalidUrl {
                url: u.to_string(),
                reason: "Kiln keeps blobs in a directory (file:// or a path) or S3 (s3://)"
                    .to_string(),
            });
        }
        Some(path) => Arc::new(FsBlobstore::new(path).await?),
    })
}
