//! The state every handler, action and loop shares.

use crate::config::ApiConfig;
use crate::error::ApiError;
use kiln_bbs::BbsClient;
use kiln_logs::LogStore;
use kiln_store::Blobstore;
use kiln_store::Pool;
use std::path::Path;
use std::sync::Arc;

/// Everything a handler or loop needs.
pub struct Ctx {
    pub config: ApiConfig,
    /// `external_url` without a trailing slash.
    pub base: String,
    pub pool: Pool,
    pub bbs: Arc<dyn BbsClient>,
    pub blobstore: Arc<dyn Blobstore>,
    pub logs: Arc<LogStore>,
    /// HS256 key for tokens and signed URLs.
    pub signing_key: Vec<u8>,
    /// Seals and opens the CCDB's secrets (docker passwords).
    pub cipher: crate::encryption::DbCipher,
    /// Serialises process sync (handlers and the reconcile loop).
    pub sync_lock: tokio::sync::Mutex<()>,
    /// Builds that were STAGING when this Api opened: if their Task is
    /// gone, the restart interrupted them.
    pub inherited_staging: std::collections::HashSet<String>,
}

pub type Shared = Arc<Ctx>;

/// The authenticated caller, put into request extensions by `auth::require_token`.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub guid: String,
    pub name: String,
    pub email: String,
    /// The token's scopes (`cloud_controller.admin` makes an admin).
    pub scopes: Vec<String>,
}

tokio::task_local! {
    /// The caller of the request being served, set around each
    /// authenticated request by `auth::require_token`. Audit events name
    /// their actor from it, so actions deep in a chain (apply_manifest →
    /// app update → scale) need not each carry the user; outside a request
    /// (the loops) it is unset and the actor is the system.
    pub static REQUEST_USER: CurrentUser;
}

/// Reads a secret file, or writes a new one with mode 0600. Returns the
/// secret and whether it was created now.
pub async fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), ApiError> {
    match tokio::fs::read_to_string(path).await {
        Ok(s) if !s.trim().is_empty() => Ok((s.trim().to_string(), false)),
        Ok(_) | Err(_) => {
            let secret = make();
            write_private(path, &secret).await?;
            Ok((secret, true))
        }
    }
}

pub async fn write_private(path: &Path, content: &str) -> Result<(), ApiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.to_path_buf();
    let content = content.to_string();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::io("writing a secret file", e))
}

impl Ctx {
    /// Emits an `API` log line for an app (what `cf logs` shows as `API`).
    pub fn api_log(&self, app_guid: &str, message: &str) {
        use kiln_logs::LogSink;
        use kiln_model::logs::{LogEnvelope, MessageType};
        self.logs.emit(LogEnvelope {
            timestamp: crate::util::now_nanos(),
            source_id: app_guid.to_string(),
            instance_id: String::new(),
            source_type: kiln_model::LOG_SOURCE_API.into(),
            message_type: MessageType::Out,
            message: message.to_string(),
        });
    }
}
