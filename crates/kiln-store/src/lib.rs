//! Kiln's two storage seams.
//!
//! - [`open_database`]: a SQL pool for one component's database (Cloud
//!   Controller's CCDB and Diego's BBS each own one, as in Cloud Foundry),
//!   with that component's migrations applied. SQLite is the embedded
//!   default; the component owns its schema and queries.
//! - [`Blobstore`]: packages, droplets, buildpacks and the resource cache,
//!   addressed by key. [`FsBlobstore`] keeps them in a directory (the
//!   default), [`S3Blobstore`] in an S3-compatible bucket; [`open_blobstore`]
//!   picks one from `--blobstore-url`.
//!
//! Architecture invariant: this crate knows nothing about HTTP, apps or
//! scheduling. It stores rows and bytes for the crates that do.

mod blobstore;
mod s3;
#[cfg(feature = "test-support")]
pub mod testing;

pub(crate) use blobstore::valid_key;
pub use blobstore::{BlobInfo, Blobstore, FsBlobstore};
pub use s3::{MULTIPART_THRESHOLD, S3Blobstore, S3Location};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use sqlx::SqlitePool;
pub use sqlx::migrate::Migrator;

/// One schema step: version, description, SQL (embedded with `include_str!`).
pub type MigrationStep = (i64, &'static str, &'static str);

/// Builds a migrator from SQL embedded in the binary, so the one `kiln`
/// binary carries every component's schema and needs no files beside it.
pub fn migrator(steps: &[MigrationStep]) -> Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};
    Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

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
    #[error("blobstore: could not {op} {key}: {message}")]
    ObjectStore {
        op: &'static str,
        key: String,
        message: String,
    },
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

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a committed row survives `kill -9` and power loss.
    Full,
    /// `synchronous=NORMAL` (in WAL mode): a committed row survives `kill -9`;
    /// the last commits may be lost on power loss, and the database stays
    /// consistent. For state that is rebuilt from its owners when lost.
    Normal,
}

/// Opens (creating if needed) the SQLite database at `path` and applies
/// `migrations`. WAL mode with `synchronous=FULL`: a committed row survives
/// `kill -9` and power loss, and readers do not block the writer.
pub async fn open_database(path: &Path, migrations: &Migrator) -> Result<SqlitePool, StoreError> {
    open_database_with(path, migrations, Durability::Full).await
}

/// [`open_database`] with a choice of [`Durability`].
pub async fn open_database_with(
    path: &Path,
    migrations: &Migrator,
    durability: Durability,
) -> Result<SqlitePool, StoreError> {
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|source| StoreError::Database {
            url: url.clone(),
            source,
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Database {
            url: url.clone(),
            source,
        })?;
    migrations
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate { url, source })?;
    Ok(pool)
}
