//! Diego's upload step: POST a file the container wrote as the raw request
//! body (`application/octet-stream`), streamed from disk. Any 2xx means
//! stored. The file is opened without following symlinks (see
//! [`ContainerDir::open_written_file`]).

use crate::container::{ContainerDir, OpenError};
use crate::download::{error_chain, redact};
use kiln_model::bbs::UploadAction;
use tokio_util::io::ReaderStream;

/// Why an upload failed; shown as `Uploading <artifact> failed: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{path}: {source}")]
    Source {
        path: String,
        #[source]
        source: OpenError,
    },
    #[error("POST {url}: {why}")]
    Http { url: String, why: String },
}

/// Uploads `action.from`, returning the bytes sent.
pub async fn upload(
    client: &reqwest::Client,
    action: &UploadAction,
    container: &ContainerDir,
) -> Result<u64, UploadError> {
    let file = container
        .open_written_file(&action.from)
        .map_err(|source| UploadError::Source {
            path: action.from.clone(),
            source,
        })?;
    let size = file
        .metadata()
        .map_err(|e| UploadError::Source {
            path: action.from.clone(),
            source: e.into(),
        })?
        .len();
    let body = reqwest::Body::wrap_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
    let http_err = |why: String| UploadError::Http {
        url: redact(&action.to),
        why,
    };
    let response = client
        .post(&action.to)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body)
        .send()
        .await
        .map_err(|e| http_err(error_chain(&e.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(http_err(status.to_string()));
    }
    Ok(size)
}
