//! `kiln curl`: one authenticated request to the API, its body printed as
//! it came (JSON pretty-printed). Like `cf curl`, an error status is still
//! printed and exits 0 unless `--fail` is given.

use crate::client::{Auth, Body, Client, error_message};
use anyhow::{Context, bail};
use reqwest::Method;

#[derive(clap::Args, Debug, Clone)]
pub struct CurlArgs {
    /// An API path such as /v3/apps
    pub path: String,
    /// HTTP method (default GET, or POST when -d is given)
    #[arg(short = 'X')]
    pub method: Option<String>,
    /// Request header `Name: value`; repeatable
    #[arg(short = 'H')]
    pub headers: Vec<String>,
    /// Request body, or @FILE to read it from a file
    #[arg(short = 'd')]
    pub data: Option<String>,
    /// Print the response status and headers too
    #[arg(short = 'i')]
    pub include: bool,
    /// Exit non-zero when the API answers an error status
    #[arg(short = 'f', long = "fail")]
    pub fail: bool,
}

pub async fn curl(client: &mut Client, args: CurlArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("invalid HTTP method {m:?}"))?,
        None if args.data.is_some() => Method::POST,
        None => Method::GET,
    };
    let body = match &args.data {
        Some(data) => match data.strip_prefix('@') {
            Some(file) => {
                Body::Raw(std::fs::read(file).with_context(|| format!("reading {file}"))?)
            }
            None => Body::Raw(data.clone().into_bytes()),
        },
        None => Body::Empty,
    };
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("header {header:?} is not 'Name: value'"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let url = client.url(&path);
    let reply = client
        .exchange(method, &url, Auth::Bearer, body, &headers)
        .await?;
    if args.include {
        println!("HTTP/1.1 {}", reply.status);
        for (name, value) in &reply.headers {
            println!("{name}: {}", value.to_str().unwrap_or("?"));
        }
        println!();
    }
    match serde_json::from_str::<serde_json::Value>(&reply.body) {
        Ok(json) => println!("{}", serde_json::to_string_pretty(&json)?),
        Err(_) if reply.body.is_empty() => {}
        Err(_) => println!("{}", reply.body),
    }
    if args.fail && !reply.status.is_success() {
        bail!("{}", error_message(reply.status, &reply.body));
    }
    Ok(())
}
