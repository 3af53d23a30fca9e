//! The CLI's HTTP client: bearer tokens refreshed before they expire, Cloud
//! Foundry's error envelope turned into readable errors, and
//! `KILN_TRACE=true` to show every exchange (tokens masked), like `CF_TRACE`.

use crate::config::Config;
use anyhow::{Context, bail};
use base64::Engine;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Client {
    pub http: reqwest::Client,
    pub config: Config,
    trace: bool,
}

/// The `exp` claim of a JWT, read without verifying it (the server does).
pub fn token_expiry(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The message of a failed response: CF's `errors[].detail` (v3), UAA's
/// `error_description`, or the body itself.
pub fn error_message(status: StatusCode, body: &str) -> String {
    if let Ok(json) = serde_json::from_str::<Value>(body) {
        if let Some(errors) = json.get("errors").and_then(Value::as_array) {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let detail = e.get("detail").and_then(Value::as_str).unwrap_or("");
                    let title = e.get("title").and_then(Value::as_str).unwrap_or("");
                    let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
                    format!("{detail}\n{title} (code {code}, HTTP {})", status.as_u16())
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("\n");
            }
        }
        if let Some(description) = json.get("error_description").and_then(Value::as_str) {
            return format!("{description} (HTTP {})", status.as_u16());
        }
    }
    format!("HTTP {}: {}", status.as_u16(), body.trim())
}

impl Client {
    pub fn new(config: Config) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        let trace = std::env::var("KILN_TRACE").is_ok_and(|v| v == "true" || v == "1");
        Client {
            http,
            config,
            trace,
        }
    }

    pub fn api_url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.config.api.trim_end_matches('/'), path)
        }
    }

    fn log_request(&self, method: &Method, url: &str) {
        if self.trace {
            eprintln!("REQUEST: {method} {url}\nAuthorization: bearer [PRIVATE DATA HIDDEN]");
        }
    }

    async fn log_response(
        &self,
        response: Response,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, String)> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.context("reading the response")?;
        if self.trace {
            eprintln!("RESPONSE: {}\n{}\n", status.as_u16(), body);
        }
        Ok((status, headers, body))
    }

    /// Password or refresh-token grant against the login server.
    pub async fn token_grant(&mut self, form: &[(&str, &str)]) -> anyhow::Result<()> {
        let url = format!("{}/oauth/token", self.config.login.trim_end_matches('/'));
        self.log_request(&Method::POST, &url);
        let response = self
            .http
            .post(&url)
            .basic_auth("cf", Some(""))
            .header("Accept", "application/json")
            .form(form)
            .send()
            .await
            .with_context(|| format!("reaching {url}"))?;
        let (status, _, body) = self.log_response(response).await?;
        if !status.is_success() {
            bail!("{}", error_message(status, &body));
        }
        let json: Value = serde_json::from_str(&body).context("decoding the token response")?;
        self.config.access_token = json["access_token"]
            .as_str()
            .context("no access_token in the token response")?
            .to_string();
        self.config.refresh_token = json["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(())
    }

    /// Refreshes the access token when it expires within a minute.
    async fn ensure_fresh_token(&mut self) -> anyhow::Result<()> {
        self.config.require_target()?;
        let expires = token_expiry(&self.config.access_token).unwrap_or(0);
        if expires - now() > 60 {
            return Ok(());
        }
        anyhow::ensure!(
            !self.config.refresh_token.is_empty(),
            "your session expired; use 'kiln login'"
        );
        let refresh = self.config.refresh_token.clone();
        self.token_grant(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .await
            .context("refreshing the session; use 'kiln login' if it has expired")?;
        self.config.save()
    }

    async fn authed(&mut self, method: Method, url: &str) -> anyhow::Result<RequestBuilder> {
        self.ensure_fresh_token().await?;
        self.log_request(&method, url);
        Ok(self.http.request(method, url).header(
            "Authorization",
            format!("bearer {}", self.config.access_token),
        ))
    }

    /// Sends an authenticated request; a non-2xx answer becomes an error with
    /// the API's message. Returns the body as JSON (Null when empty) and the
    /// `Location` header if any.
    pub async fn send(
        &mut self,
        builder: RequestBuilder,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let response = builder.send().await.context("reaching the API")?;
        let (status, headers, body) = self.log_response(response).await?;
        if !status.is_success() {
            bail!("{}", error_message(status, &body));
        }
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let json = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        Ok((json, location))
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let url = self.api_url(path);
        let mut builder = self.authed(method, &url).await?;
        if let Some(body) = body {
            builder = builder.json(body);
        }
        self.send(builder).await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Value> {
        Ok(self.request(Method::GET, path, None).await?.0)
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self.request(Method::POST, path, Some(body)).await?.0)
    }

    pub async fn patch(&mut self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self.request(Method::PATCH, path, Some(body)).await?.0)
    }

    /// Every resource of a paginated list, following `pagination.next`.
    pub async fn list(&mut self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut resources = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(page) = next {
            let json = self.get(&page).await?;
            resources.extend(json["resources"].as_array().cloned().unwrap_or_default());
            next = json["pagination"]["next"]["href"]
                .as_str()
                .map(str::to_string);
        }
        Ok(resources)
    }

    /// A multipart POST (uploads), authenticated.
    pub async fn post_multipart(
        &mut self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let url = self.api_url(path);
        let builder = self.authed(Method::POST, &url).await?.multipart(form);
        self.send(builder).await
    }

    /// Follows an asynchronous job until it is COMPLETE; FAILED is an error
    /// with the job's first error.
    pub async fn wait_for_job(&mut self, location: &str) -> anyhow::Result<()> {
        loop {
            let job = self.get(location).await?;
            match job["state"].as_str() {
                Some("COMPLETE") => return Ok(()),
                Some("FAILED") => {
                    let detail = job["errors"][0]["detail"]
                        .as_str()
                        .unwrap_or("the job failed with no error");
                    bail!("{detail}");
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    }
}

/// Percent-encodes a query value (names may hold any character).
pub fn q(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":1700000000,"user_name":"admin"}"#);
        assert_eq!(
            token_expiry(&format!("e30.{payload}.sig")),
            Some(1_700_000_000)
        );
        assert_eq!(token_expiry("not a token"), None);
    }

    #[test]
    fn cf_error_envelopes_become_their_detail() {
        let body =
            r#"{"errors":[{"code":10010,"title":"CF-ResourceNotFound","detail":"App not found"}]}"#;
        let message = error_message(StatusCode::NOT_FOUND, body);
        assert!(
            message.starts_with("App not found\nCF-ResourceNotFound (code 10010, HTTP 404)"),
            "{message}"
        );
        let uaa = r#"{"error":"unauthorized","error_description":"Bad credentials"}"#;
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, uaa),
            "Bad credentials (HTTP 401)"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, "oops\n"),
            "HTTP 502: oops"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(q("my app,x"), "my%20app%2Cx");
        assert_eq!(q("hello-1.2_~"), "hello-1.2_~");
    }
}
