//! The CLI's HTTP client: bearer tokens refreshed shortly before they expire
//! (and saved), Cloud Foundry's error envelope turned into an error carrying
//! its `detail`, paginated lists followed to the end, and `KILN_TRACE=true`
//! to print every exchange on stderr with credentials masked (like
//! `CF_TRACE`).

use crate::config::Config;
use crate::resources::{CfError, Job, Page};
use anyhow::{Context, bail};
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Refresh the access token when it expires within this many seconds.
const REFRESH_MARGIN_SECS: i64 = 60;
const HIDDEN: &str = "[PRIVATE DATA HIDDEN]";

/// A failed API call: the HTTP status and the API's error entries.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<CfError>,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, body: &str) -> ApiError {
        let errors = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|json| serde_json::from_value(json.get("errors")?.clone()).ok())
            .unwrap_or_default();
        ApiError {
            status,
            message: error_message(status, body),
            errors,
        }
    }

    /// The first error's `detail`, if the body had the v3 envelope.
    pub fn detail(&self) -> Option<&str> {
        self.errors.first().map(|e| e.detail.as_str())
    }
}

/// The message of a failed response: CF's `errors[].detail` (v3), UAA's
/// `error_description`, or the body itself. Server errors also name the
/// status, since their detail alone rarely says what failed.
pub fn error_message(status: StatusCode, body: &str) -> String {
    let code = status.as_u16();
    let json = serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    let details: Vec<&str> = json["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["detail"].as_str()).collect())
        .unwrap_or_default();
    let mut message = if !details.is_empty() {
        // The title (`CF-RouteHostTaken`) names the error class; server
        // errors also name the status, since their detail rarely says much.
        let mut message = details.join("\n");
        let title = json["errors"][0]["title"].as_str().unwrap_or("");
        if status.is_server_error() {
            message.push_str(&format!(" (HTTP {code} {title})"));
        } else if !title.is_empty() {
            message.push_str(&format!(" ({title})"));
        }
        message
    } else if let Some(description) = json["error_description"].as_str() {
        format!("{description} (HTTP {code})")
    } else {
        let mut text = body.trim().to_string();
        if text.len() > 500 {
            let cut = (0..=500)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        format!("HTTP {code}: {text}")
    };
    if status == StatusCode::UNAUTHORIZED {
        message.push_str("\nLog in again with 'kiln login'.");
    }
    message
}

/// The `exp` claim of a JWT, read without verifying it (the server does).
pub fn token_expiry(jwt: &str) -> Option<i64> {
    claims(jwt)?.get("exp")?.as_i64()
}

/// The payload of a JWT, decoded but not verified.
pub fn claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether a token with expiry `exp` must be refreshed at `now` (seconds).
pub fn needs_refresh(exp: Option<i64>, now: i64) -> bool {
    exp.is_none_or(|exp| exp - now <= REFRESH_MARGIN_SECS)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

/// A request body.
pub enum Body {
    Empty,
    Json(Value),
    /// `application/x-www-form-urlencoded` (token grants).
    Form(Vec<(&'static str, String)>),
    /// `multipart/form-data` (uploads); traced as a summary only.
    Multipart(reqwest::multipart::Form),
    /// Bytes sent as they are (`kiln curl -d`).
    Raw(Vec<u8>),
    /// A manifest for `apply_manifest`, which takes only YAML.
    Yaml(String),
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `GET /` and the log-cache info: public.
    None,
    /// API calls: `bearer <access token>`, refreshed first when due.
    Bearer,
    /// Token grants: the cf CLI's client `cf` with an empty secret.
    ClientCf,
}

/// An answer of any status.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        if self.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body).context("the API answered with invalid JSON")
    }
}

pub struct Client {
    http: reqwest::Client,
    pub config: Config,
    home: PathBuf,
    trace: bool,
}

/// Whether every endpoint the CLI talks to is known and `http://` (at
/// login, the login endpoint is not known yet).
fn plain_http_only(config: &Config) -> bool {
    [&config.api, &config.login, &config.log_cache]
        .iter()
        .all(|url| url.starts_with("http://"))
}

impl Client {
    pub fn new(config: Config, home: PathBuf) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
        if plain_http_only(&config) {
            // Loading the system's certificate roots is most of the
            // client's start; a platform spoken to over plain HTTP never
            // needs them.
            builder = builder.tls_certs_only([]);
        }
        let http = builder.build().context("building the HTTP client")?;
        let trace = std::env::var("KILN_TRACE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        Ok(Client {
            http,
            config,
            home,
            trace,
        })
    }

    /// A client sharing this one's connections and session, for requests
    /// made side by side. Call [`Client::ensure_fresh_token`] first: a
    /// refresh the copy makes is not kept.
    pub fn fork(&self) -> Client {
        Client {
            http: self.http.clone(),
            config: self.config.clone(),
            home: self.home.clone(),
            trace: self.trace,
        }
    }

    pub fn save_config(&self) -> anyhow::Result<()> {
        self.config.save(&self.home)
    }

    /// `path` on the API, or `path` itself when it is already a URL (the
    /// `next` links of lists and job `Location`s are absolute).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.config.api.trim_end_matches('/'))
        }
    }

    /// One HTTP exchange; any status is returned as it is.
    pub async fn exchange(
        &mut self,
        method: Method,
        url: &str,
        auth: Auth,
        body: Body,
        headers: &[(String, String)],
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(reqwest::header::ACCEPT, "application/json");
        match auth {
            Auth::None => {}
            Auth::Bearer => {
                self.ensure_fresh_token().await?;
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("bearer {}", self.config.access_token),
                );
            }
            Auth::ClientCf => request = request.basic_auth("cf", Some("")),
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let traced_body = match &body {
            Body::Empty => String::new(),
            Body::Json(json) => serde_json::to_string_pretty(json).unwrap_or_default(),
            Body::Form(pairs) => pairs
                .iter()
                .map(|(k, v)| {
                    let secret = matches!(*k, "password" | "refresh_token" | "passcode");
                    format!("{k}={}", if secret { HIDDEN } else { v })
                })
                .collect::<Vec<_>>()
                .join("&"),
            Body::Multipart(_) => "[MULTIPART/FORM-DATA CONTENT HIDDEN]".to_string(),
            Body::Raw(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Body::Yaml(text) => text.clone(),
        };
        request = match body {
            Body::Empty => request,
            Body::Json(json) => request.json(&json),
            Body::Form(pairs) => request.form(&pairs),
            Body::Multipart(form) => request.multipart(form),
            Body::Raw(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes),
            Body::Yaml(text) => request
                .header(reqwest::header::CONTENT_TYPE, "application/x-yaml")
                .body(text),
        };
        if self.trace {
            let mut text = format!("REQUEST: [{}] {method} {url}\n", now_rfc3339());
            match auth {
                Auth::None => {}
                Auth::Bearer => text.push_str(&format!("Authorization: bearer {HIDDEN}\n")),
                Auth::ClientCf => text.push_str(&format!("Authorization: basic {HIDDEN}\n")),
            }
            for (name, value) in headers {
                text.push_str(&format!("{name}: {value}\n"));
            }
            eprintln!("{text}{traced_body}\n");
        }
        let started = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url} failed"))?;
        let status = response.status();
        let response_headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if self.trace {
            let mut text = format!(
                "RESPONSE: [{}] {status} ({} ms)\n",
                now_rfc3339(),
                started.elapsed().as_millis()
            );
            for (name, value) in &response_headers {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            eprintln!("{text}{}\n", mask_secrets(&body));
        }
        Ok(Reply {
            status,
            headers: response_headers,
            body,
        })
    }

    /// An authenticated call; a non-2xx answer becomes an [`ApiError`].
    pub async fn call(&mut self, method: Method, path: &str, body: Body) -> anyhow::Result<Reply> {
        let url = self.url(path);
        let reply = self.exchange(method, &url, Auth::Bearer, body, &[]).await?;
        if !reply.status.is_success() {
            return Err(ApiError::new(reply.status, &reply.body).into());
        }
        Ok(reply)
    }

    /// A GET with `Prefer: wait=secs`: Kiln holds the answer until the
    /// resource changes (or `secs` pass). Returns whether it did
    /// (`Preference-Applied`); a server that did not (any other Cloud
    /// Foundry) answered at once, so the caller paces its next poll itself.
    pub async fn get_waiting<T: DeserializeOwned>(
        &mut self,
        path: &str,
        secs: u64,
    ) -> anyhow::Result<(T, bool)> {
        let url = self.url(path);
        let prefer = [("Prefer".to_string(), format!("wait={secs}"))];
        let reply = self
            .exchange(Method::GET, &url, Auth::Bearer, Body::Empty, &prefer)
            .await?;
        if !reply.status.is_success() {
            return Err(ApiError::new(reply.status, &reply.body).into());
        }
        let applied = reply.headers.contains_key("preference-applied");
        Ok((decode(&reply, path)?, applied))
    }

    pub async fn get<T: DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<T> {
        let reply = self.call(Method::GET, path, Body::Empty).await?;
        decode(&reply, path)
    }

    pub async fn post<T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: Value,
    ) -> anyhow::Result<T> {
        let reply = self.call(Method::POST, path, Body::Json(body)).await?;
        decode(&reply, path)
    }

    pub async fn patch<T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: Value,
    ) -> anyhow::Result<T> {
        let reply = self.call(Method::PATCH, path, Body::Json(body)).await?;
        decode(&reply, path)
    }

    /// A DELETE, followed to its end when the API answers with a job
    /// (`202` and a `Location`).
    pub async fn delete_and_wait(&mut self, path: &str) -> anyhow::Result<()> {
        let reply = self.call(Method::DELETE, path, Body::Empty).await?;
        if let Some(job) = reply.location() {
            self.wait_for_job(&job).await?;
        }
        Ok(())
    }

    /// Streams `path` into the file `dest` as bytes (`call`'s answer is
    /// text), returning its size; a non-2xx answer is an [`ApiError`].
    pub async fn download_to(&mut self, path: &str, dest: &std::path::Path) -> anyhow::Result<u64> {
        use std::io::Write;
        self.ensure_fresh_token().await?;
        let url = self.url(path);
        let mut response = self
            .http
            .get(&url)
            .bearer_auth(&self.config.access_token)
            .send()
            .await
            .with_context(|| format!("GET {url} failed"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ApiError::new(status, &body).into());
        }
        let mut file =
            std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut size = 0u64;
        while let Some(chunk) = response.chunk().await.context("reading the download")? {
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", dest.display()))?;
            size += chunk.len() as u64;
        }
        Ok(size)
    }

    /// Every resource of a paginated list, following `pagination.next`.
    pub async fn list<T: DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<Vec<T>> {
        let mut resources = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(page_path) = next {
            let page: Page<T> = self.get(&page_path).await?;
            resources.extend(page.resources);
            next = page.pagination.next.map(|link| link.href);
        }
        Ok(resources)
    }

    /// Password or refresh-token grant against the login server; stores the
    /// tokens in the config (the caller saves).
    pub async fn token_grant(&mut self, form: Vec<(&'static str, String)>) -> anyhow::Result<()> {
        let url = format!("{}/oauth/token", self.config.login.trim_end_matches('/'));
        let reply = self
            .exchange(Method::POST, &url, Auth::ClientCf, Body::Form(form), &[])
            .await?;
        if !reply.status.is_success() {
            bail!("{}", error_message(reply.status, &reply.body));
        }
        let json = reply.json().context("decoding the token response")?;
        self.config.access_token = json["access_token"]
            .as_str()
            .context("the token response has no access_token")?
            .to_string();
        if let Some(refresh) = json["refresh_token"].as_str() {
            self.config.refresh_token = refresh.to_string();
        }
        Ok(())
    }

    /// Refreshes the access token when it expires within a minute, and saves.
    pub(crate) async fn ensure_fresh_token(&mut self) -> anyhow::Result<()> {
        self.config.require_login()?;
        if !needs_refresh(token_expiry(&self.config.access_token), unix_now()) {
            return Ok(());
        }
        anyhow::ensure!(
            !self.config.refresh_token.is_empty(),
            "your session has expired; log in again with 'kiln login'"
        );
        let refresh = self.config.refresh_token.clone();
        Box::pin(self.token_grant(vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh),
        ]))
        .await
        .context("refreshing the session failed; log in again with 'kiln login'")?;
        self.save_config()
    }

    /// Follows an asynchronous job until it is COMPLETE; FAILED is an error
    /// with the job's first error.
    pub async fn wait_for_job(&mut self, location: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15 * 60);
        let mut pace = Pace::up_to(Duration::from_millis(500));
        loop {
            let job: Job = self.get(location).await?;
            match job.state.as_str() {
                "COMPLETE" => return Ok(()),
                "FAILED" => match job.errors.first() {
                    Some(error) => bail!("{}", error.detail),
                    None => bail!("job {location} failed with no error"),
                },
                _ if Instant::now() > deadline => {
                    bail!("job {location} did not finish within 15 minutes")
                }
                _ => pace.wait().await,
            }
        }
    }
}

/// The pause between two polls of something that usually finishes soon
/// (a job, a build, an instance start): 50 ms at first, growing by half
/// each time up to `max`, so a quick result is seen quickly and a slow one
/// costs few requests.
#[derive(Debug)]
pub struct Pace {
    next: Duration,
    max: Duration,
}

impl Pace {
    pub fn up_to(max: Duration) -> Pace {
        Pace {
            next: Duration::from_millis(50).min(max),
            max,
        }
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 3 / 2).min(self.max);
    }
}

fn decode<T: DeserializeOwned>(reply: &Reply, path: &str) -> anyhow::Result<T> {
    let json = reply.json()?;
    serde_json::from_value(json).with_context(|| format!("unexpected answer to {path}"))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Tokens in a traced JSON body are replaced, as the cf CLI does.
fn mask_secrets(body: &str) -> String {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if matches!(
                        key.as_str(),
                        "access_token" | "refresh_token" | "id_token" | "password" | "token"
                    ) && v.is_string()
                    {
                        *v = Value::String(HIDDEN.to_string());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(body) {
        Ok(mut json) => {
            walk(&mut json);
            serde_json::to_string_pretty(&json).unwrap_or_default()
        }
        Err(_) => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn polls_start_quick_and_slow_down_to_a_ceiling() {
        let mut pace = Pace::up_to(Duration::from_millis(300));
        let mut pauses = Vec::new();
        for _ in 0..7 {
            pauses.push(pace.next.as_millis());
            pace.wait().await;
        }
        assert_eq!(pauses, [50, 75, 112, 168, 253, 300, 300]);
    }

    fn jwt(payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"HS256"}"#),
            b64.encode(payload)
        )
    }

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        let token = jwt(r#"{"exp":1700000000,"user_name":"admin"}"#);
        assert_eq!(token_expiry(&token), Some(1_700_000_000));
        assert_eq!(claims(&token).unwrap()["user_name"], "admin");
        assert_eq!(token_expiry("not a token"), None);
        assert_eq!(token_expiry(&jwt(r#"{"user_name":"admin"}"#)), None);
        // Padded base64 (some issuers keep it) decodes too.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":5}"#)
        );
        assert_eq!(token_expiry(&padded), Some(5));
    }

    #[test]
    fn refreshes_within_a_minute_of_expiry() {
        assert!(!needs_refresh(Some(1_000), 900));
        assert!(needs_refresh(Some(1_000), 940));
        assert!(needs_refresh(Some(1_000), 2_000));
        assert!(needs_refresh(None, 0), "a token without exp is refreshed");
    }

    #[test]
    fn cf_error_envelopes_become_their_detail() {
        let body =
            r#"{"errors":[{"code":10010,"title":"CF-ResourceNotFound","detail":"App not found"}]}"#;
        let error = ApiError::new(StatusCode::NOT_FOUND, body);
        assert_eq!(error.to_string(), "App not found (CF-ResourceNotFound)");
        assert_eq!(error.detail(), Some("App not found"));
        assert_eq!(error.errors[0].title, "CF-ResourceNotFound");
        let server = r#"{"errors":[{"code":10001,"title":"UnknownError","detail":"boom"}]}"#;
        assert_eq!(
            error_message(StatusCode::INTERNAL_SERVER_ERROR, server),
            "boom (HTTP 500 UnknownError)"
        );
        let uaa = r#"{"error":"unauthorized","error_description":"Bad credentials"}"#;
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, uaa),
            "Bad credentials (HTTP 401)\nLog in again with 'kiln login'."
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, "oops\n"),
            "HTTP 502: oops"
        );
    }

    #[test]
    fn traces_hide_tokens() {
        let masked = mask_secrets(r#"{"access_token":"a.b.c","nested":[{"refresh_token":"r"}]}"#);
        assert!(
            !masked.contains("a.b.c") && !masked.contains("\"r\""),
            "{masked}"
        );
        assert!(masked.contains(HIDDEN));
        assert_eq!(mask_secrets("plain text"), "plain text");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(q("my app,x"), "my%20app%2Cx");
        assert_eq!(q("hello-1.2_~"), "hello-1.2_~");
    }
}
