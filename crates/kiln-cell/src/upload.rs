//! Diego's upload step: POST a file the container wrote as the raw request
//! body (`application/octet-stream`), streamed from disk. Any 2xx means
//! stored. The file is opened without following symlinks (see
//! [`ContainerDir::open_written_file`]).
//!
//! With `method: put` the file goes to a blobstore's own signed URL in one
//! PUT (S3 takes up to [`SINGLE_PUT_LIMIT`] that way), hashed as it
//! streams; the cell then reports size, SHA-256 and MD5 to `report_to`, and
//! the upload counts only once the API has checked the stored object
//! against that report.

use crate::container::{ContainerDir, OpenError};
use crate::download::{error_chain, redact};
use futures_util::StreamExt;
use kiln_model::bbs::{SINGLE_PUT_LIMIT, UploadAction, UploadMethod, UploadReport};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
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
    #[error("{method} {url}: {why}")]
    Http {
        method: &'static str,
        url: String,
        why: String,
    },
    #[error(
        "it is {size} bytes, more than the {SINGLE_PUT_LIMIT} bytes one PUT to the blobstore takes"
    )]
    TooLarge { size: u64 },
}

/// Both digests, fed by the body stream as it is read.
#[derive(Default)]
struct Digests {
    sha256: Sha256,
    md5: Md5,
}

/// Uploads `action.from`, returning the bytes sent.
pub async fn upload(
    client: &reqwest::Client,
    action: &UploadAction,
    container: &ContainerDir,
) -> Result<u64, UploadError> {
    let (file, size) = open_source(action, container)?;
    match action.method {
        UploadMethod::Post => post(client, action, file, size).await,
        UploadMethod::Put => put_and_report(client, action, file, size).await,
    }
}

fn open_source(
    action: &UploadAction,
    container: &ContainerDir,
) -> Result<(tokio::fs::File, u64), UploadError> {
    let source = |source: OpenError| UploadError::Source {
        path: action.from.clone(),
        source,
    };
    let file = container.open_written_file(&action.from).map_err(source)?;
    let size = file.metadata().map_err(|e| source(e.into()))?.len();
    Ok((tokio::fs::File::from_std(file), size))
}

fn http_err(method: &'static str, url: &str) -> impl Fn(String) -> UploadError + use<> {
    let url = redact(url);
    move |why| UploadError::Http {
        method,
        url: url.clone(),
        why,
    }
}

async fn post(
    client: &reqwest::Client,
    action: &UploadAction,
    file: tokio::fs::File,
    size: u64,
) -> Result<u64, UploadError> {
    let request = client
        .post(&action.to)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(ReaderStream::new(file)));
    send(request, &http_err("POST", &action.to), |status, _| {
        status.to_string()
    })
    .await?;
    Ok(size)
}

/// Sends one request of the upload: a failure to send, or an answer other
/// than 2xx in the words `refused` makes of its status and body, is an
/// [`UploadError::Http`] (through `err`).
async fn send(
    request: reqwest::RequestBuilder,
    err: &impl Fn(String) -> UploadError,
    refused: fn(reqwest::StatusCode, String) -> String,
) -> Result<reqwest::Response, UploadError> {
    let response = request
        .send()
        .await
        .map_err(|e| err(error_chain(&e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(err(refused(status, text)))
}

/// PUT to the store, then the report to the API.
async fn put_and_report(
    client: &reqwest::Client,
    action: &UploadAction,
    file: tokio::fs::File,
    size: u64,
) -> Result<u64, UploadError> {
    if size > SINGLE_PUT_LIMIT {
        return Err(UploadError::TooLarge { size });
    }
    let report = put(client, action, file, size).await?;
    if let Some(report_to) = &action.report_to {
        send_report(client, report_to, &report).await?;
    }
    Ok(size)
}

async fn put(
    client: &reqwest::Client,
    action: &UploadAction,
    file: tokio::fs::File,
    size: u64,
) -> Result<UploadReport, UploadError> {
    let err = http_err("PUT", &action.to);
    let digests = Arc::new(Mutex::new(Digests::default()));
    let fed = digests.clone();
    let body = ReaderStream::new(file).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            let mut d = fed.lock().expect("digest lock");
            d.sha256.update(bytes);
            d.md5.update(bytes);
        }
    });
    // No Content-Type: the signed URL covers the host alone, and the
    // store keeps plain octets either way.
    let request = client
        .put(&action.to)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(body));
    let response = send(request, &err, |status, text| {
        format!("{status} {}", text.trim())
    })
    .await?;
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_ascii_lowercase());
    let d = std::mem::take(&mut *digests.lock().expect("digest lock"));
    let report = UploadReport {
        size,
        sha256: hex::encode(d.sha256.finalize()),
        md5: hex::encode(d.md5.finalize()),
    };
    // A single PUT's ETag is the MD5 of what the store kept.
    if let Some(etag) = etag
        && is_md5_hex(&etag)
        && etag != report.md5
    {
        return Err(err(format!(
            "the store kept other bytes (ETag {etag}, sent MD5 {})",
            report.md5
        )));
    }
    Ok(report)
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn send_report(
    client: &reqwest::Client,
    report_to: &str,
    report: &UploadReport,
) -> Result<(), UploadError> {
    let request = client.post(report_to).json(report);
    send(request, &http_err("POST", report_to), |status, text| {
        // The API's refusal says what did not match.
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["errors"][0]["detail"].as_str().map(str::to_string))
            .unwrap_or(text);
        format!("{status}: {}", detail.trim())
    })
    .await?;
    Ok(())
}
