//! What the API is started with: its configuration and the components it
//! talks to.

use kiln_bbs::BbsClient;
use kiln_logs::LogStore;
use kiln_store::Blobstore;
use std::path::PathBuf;
use std::sync::Arc;

/// Cloud Controller's default `max_package_size`: 1 GiB.
pub const DEFAULT_MAX_PACKAGE_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub data_dir: PathBuf,
    /// How clients reach this API, e.g. `http://127.0.0.1:9022`; every
    /// link and signed URL is absolute on it.
    pub external_url: String,
    /// The shared domain app routes live under.
    pub domain: String,
    /// The one stack (`<id><version>-host`).
    pub stack: String,
    /// The admin password; `None` generates one on first start.
    pub admin_password: Option<String>,
    /// Largest app package (uploaded zip, and all its files unpacked
    /// together) and buildpack zip; [`DEFAULT_MAX_PACKAGE_BYTES`] normally.
    pub max_package_bytes: u64,
    /// The staging Task's `timeout_ms`; 0 means
    /// [`kiln_model::DEFAULT_STAGING_TIMEOUT_MS`] (15 minutes).
    pub staging_timeout_ms: u64,
    /// Cloud Controller's `db_encryption_key`: a file whose content keys
    /// the CCDB's secrets at rest; `None` uses `<data_dir>/db-encryption-key`,
    /// generated (0600) on first start.
    pub db_encryption_key_file: Option<PathBuf>,
}

pub fn staging_timeout_ms(config: &ApiConfig) -> u64 {
    if config.staging_timeout_ms == 0 {
        kiln_model::DEFAULT_STAGING_TIMEOUT_MS
    } else {
        config.staging_timeout_ms
    }
}

#[derive(Clone)]
pub struct ApiDeps {
    pub bbs: Arc<dyn BbsClient>,
    pub blobstore: Arc<dyn Blobstore>,
    pub logs: Arc<LogStore>,
}
