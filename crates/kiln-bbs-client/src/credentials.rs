//! The credentials file: everything a joining node needs to reach the BBS.
//! The server writes it at `<data-dir>/bbs/credentials` (mode 0600) on
//! first start; an operator copies it to the node and names it with
//! `--bbs-credentials FILE`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Where the BBS listens, as its server saw it (a hint: `--bbs-url`
    /// wins, e.g. when the node reaches it through another address).
    pub bbs_url: String,
    /// The bearer token every request carries, signed by the BBS's key
    /// (`kbbs1.<expiry>.<signature>`).
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("Credentials")
            .field("bbs_url", &self.bbs_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading the bbs credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bbs credentials file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("writing the bbs credentials file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Credentials {
    pub fn read(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.into(),
            source,
        })?;
        let credentials: Credentials =
            serde_json::from_str(&text).map_err(|e| CredentialsError::Invalid {
                path: path.into(),
                message: e.to_string(),
            })?;
        if credentials.token.is_empty() || !credentials.bbs_url.starts_with("http") {
            return Err(CredentialsError::Invalid {
                path: path.into(),
                message: "it needs a bbs_url (http://…) and a token".into(),
            });
        }
        Ok(credentials)
    }

    /// Writes the file readable by its owner only, replacing any other.
    pub fn write(&self, path: &Path) -> Result<(), CredentialsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write_error = |source| CredentialsError::Write {
            path: path.into(),
            source,
        };
        let scratch = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&scratch)
            .map_err(write_error)?;
        let json = serde_json::to_string_pretty(self).expect("credentials serialize");
        file.write_all(json.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&scratch, path).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let c = Credentials {
            bbs_url: "http://127.0.0.1:8889".into(),
            token: "kbbs1.0.ab".into(),
        };
        c.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Credentials::read(&path).unwrap(), c);
        assert!(
            !format!("{c:?}").contains("kbbs1"),
            "the token stays out of logs"
        );
    }

    #[test]
    fn a_file_without_a_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, r#"{"bbs_url":"http://x","token":""}"#).unwrap();
        let err = Credentials::read(&path).unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
        let err = Credentials::read(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("reading"), "{err}");
    }
}
