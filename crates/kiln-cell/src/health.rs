//! Health checks of an instance, run from the host side against the
//! container's own address and port (the host's routes reach the cell's
//! bridge): `port` is a TCP connect, `http` a GET that
//! must answer 200, `process` no check at all. Error texts follow Diego's
//! healthcheck, since they end up in crash reasons.

use kiln_model::bbs::HealthCheck;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take (Diego's default invocation timeout).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe. `Ok` when healthy; `Err` says why not.
pub async fn probe(check: &HealthCheck, address: &str, port: u16) -> Result<(), String> {
    match check {
        HealthCheck::Process => Ok(()),
        HealthCheck::Port => tcp(address, port).await.map(drop),
        HealthCheck::Http { endpoint } => http(address, port, endpoint).await,
    }
}

async fn tcp(address: &str, port: u16) -> Result<TcpStream, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect((address, port))).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("failed to connect to port {port}: {e}")),
        Err(_) => Err(format!("failed to connect to port {port}: timed out")),
    }
}

/// A minimal HTTP/1.0 GET: only the status line matters, and an HTTP/1.0
/// request makes the server close the connection when done.
async fn http(address: &str, port: u16, endpoint: &str) -> Result<(), String> {
    let path = if endpoint.starts_with('/') {
        endpoint.to_string()
    } else {
        format!("/{endpoint}")
    };
    let attempt = async {
        let mut stream = tcp(address, port).await?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {address}:{port}\r\nUser-Agent: kiln-healthcheck\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("failed to send http request to port {port}: {e}"))?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 64];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("failed to read http response from port {port}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let status_line = String::from_utf8_lossy(&head);
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if code == "200" {
            Ok(())
        } else if code.is_empty() {
            Err(format!("no http response from port {port}"))
        } else {
            Err(format!("http health check of {path} got status {code}"))
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT * 2, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("http health check of {path} timed out")),
    }
}
