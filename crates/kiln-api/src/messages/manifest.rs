//! The space manifest `cf push` sends to apply_manifest, parsed and
//! validated whole before anything changes, and turned into the same
//! request messages the single-resource endpoints take.

use super::sidecars::SidecarBody;
use super::{
    HealthCheckBody, HealthCheckData, Lifecycle, LifecycleData, ScaleProcess, UpdateProcess,
};
use crate::db::{Domain, Process};
use crate::error::{ApiError, ApiResult};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Rails' `:yaml` MIME type: `application/x-yaml` or `text/yaml`.
pub fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| m == "application/x-yaml" || m == "text/yaml")
}

/// One application of a manifest, validated.
#[derive(Debug, Default, PartialEq)]
pub struct AppManifest {
    pub name: String,
    /// `Some` when `buildpacks` or `buildpack` was given (empty = detect).
    pub buildpacks: Option<Vec<String>>,
    pub stack: Option<String>,
    pub docker: bool,
    pub env: Option<BTreeMap<String, Value>>,
    pub instances: Option<i64>,
    pub memory_mb: Option<i64>,
    pub disk_mb: Option<i64>,
    pub command: Option<String>,
    pub health_check_type: Option<String>,
    pub health_check_endpoint: Option<String>,
    pub timeout: Option<i64>,
    pub routes: Option<Vec<String>>,
    pub no_route: bool,
    pub default_route: bool,
    pub random_route: bool,
    /// The `processes:` entries other than `web`, by type, each read as the
    /// web process is (only its process attributes are set).
    pub other_processes: Vec<(String, AppManifest)>,
    /// `services:`, the existing instances (by name) to bind.
    pub services: Vec<ManifestService>,
    /// `sidecars:`, each made or updated by name, checked as the sidecar
    /// endpoints check them.
    pub sidecars: Vec<SidecarBody>,
}

/// One `services:` entry: a name, or `{name, parameters, binding_name}`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ManifestService {
    pub name: String,
    pub binding_name: Option<String>,
    pub parameters: Option<Map<String, Value>>,
}

pub fn parse_manifest(body: &[u8]) -> ApiResult<Vec<AppManifest>> {
    let doc: Value = serde_saphyr::from_slice(body).map_err(|e| {
        ApiError::cf(
            StatusCode::BAD_REQUEST,
            1001,
            "CF-MessageParseError",
            format!("Request invalid due to parse error: {e}"),
        )
    })?;
    let Value::Object(doc) = doc else {
        return Err(ApiError::parse_error());
    };
    match doc.get("version") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_i64() == Some(1) => {}
        Some(_) => {
            return Err(ApiError::unprocessable(
                "Unsupported manifest schema version. Currently supported versions: [1].",
            ));
        }
    }
    let Some(Value::Array(apps)) = doc.get("applications") else {
        return Err(ApiError::unprocessable(
            "Applications must be a list of applications",
        ));
    };
    apps.iter().map(parse_app).collect()
}

/// Manifest keys use dashes; Cloud Controller reads them with underscores.
fn underscored(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.replace('-', "_"), v.clone()))
        .collect()
}

fn parse_app(v: &Value) -> ApiResult<AppManifest> {
    let Value::Object(raw) = v else {
        return Err(ApiError::unprocessable(
            "Applications must be a list of maps, each with a name",
        ));
    };
    let a = underscored(raw);
    let name = match a.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err(ApiError::unprocessable("Name must not be empty")),
    };
    let mut m = AppManifest {
        name,
        ..AppManifest::default()
    };
    let field = |key: &str| a.get(key).filter(|v| !v.is_null());
    if let Some(v) = field("buildpacks") {
        let list = v
            .as_array()
            .filter(|l| l.iter().all(Value::is_string))
            .ok_or_else(|| ApiError::unprocessable("Buildpacks must be a list of strings"))?;
        m.buildpacks = Some(
            list.iter()
                .filter_map(|b| b.as_str())
                .map(str::to_string)
                .collect(),
        );
    } else if let Some(v) = field("buildpack") {
        // The legacy single buildpack; "default"/"null" mean auto-detect.
        let b = v
            .as_str()
            .ok_or_else(|| ApiError::unprocessable("Buildpack must be a string"))?;
        m.buildpacks = Some(if b == "default" || b == "null" || b.is_empty() {
            Vec::new()
        } else {
            vec![b.to_string()]
        });
    }
    m.stack = field("stack").map(|v| string_of(v, "Stack")).transpose()?;
    m.docker = field("docker").is_some();
    if let Some(v) = field("env") {
        let env = v
            .as_object()
            .ok_or_else(|| ApiError::unprocessable("Env must be an object of keys and values"))?;
        super::metadata::env_keys_error("Env", env.keys())?;
        m.env = Some(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    }
    read_process(&a, &mut m)?;
    // A `web` entry of `processes` fills what the top level leaves out.
    if let Some(Value::Array(processes)) = field("processes") {
        for p in processes.iter().filter_map(Value::as_object) {
            let p = underscored(p);
            match p.get("type").and_then(Value::as_str).map(str::trim) {
                Some("web") => read_process(&p, &mut m)?,
                Some(kind) if !kind.is_empty() => {
                    let mut other = AppManifest {
                        name: m.name.clone(),
                        ..AppManifest::default()
                    };
                    read_process(&p, &mut other)?;
                    m.other_processes.push((kind.to_string(), other));
                }
                _ => {
                    return Err(ApiError::unprocessable(
                        "Processes must each have a type, a string",
                    ));
                }
            }
        }
    }
    if let Some(v) = field("routes") {
        let list = v
            .as_array()
            .ok_or_else(|| ApiError::unprocessable("Routes must be a list of route objects"))?;
        let mut routes = Vec::new();
        for r in list {
            match r.get("route").and_then(Value::as_str) {
                Some(s) if !s.trim().is_empty() => routes.push(s.trim().to_ascii_lowercase()),
                _ => {
                    return Err(ApiError::unprocessable(
                        "Routes must be a list of route objects, each with a route",
                    ));
                }
            }
        }
        m.routes = Some(routes);
    }
    if let Some(v) = field("services") {
        m.services = services(v)?;
    }
    if let Some(v) = field("sidecars") {
        m.sidecars = sidecars(v)?;
    }
    m.no_route = flag(&a, "no_route")?;
    m.default_route = flag(&a, "default_route")?;
    m.random_route = flag(&a, "random_route")?;
    if m.no_route && m.routes.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::unprocessable(
            "Cannot use the combination of properties: no-route, routes",
        ));
    }
    Ok(m)
}

/// `ManifestServiceBindingCreateMessage`'s shape: a list of instance
/// names or of maps with a name.
fn services(v: &Value) -> ApiResult<Vec<ManifestService>> {
    let invalid = || {
        ApiError::unprocessable(
            "Services must be a list of service instance names or of objects, each with a name",
        )
    };
    let list = v.as_array().ok_or_else(invalid)?;
    let mut out = Vec::new();
    for entry in list {
        let service = match entry {
            Value::String(name) => ManifestService {
                name: name.clone(),
                ..ManifestService::default()
            },
            Value::Object(o) => {
                let o = underscored(o);
                let name = o.get("name").and_then(Value::as_str).ok_or_else(invalid)?;
                let binding_name = match o.get("binding_name") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(b)) => Some(b.clone()),
                    Some(_) => {
                        return Err(ApiError::unprocessable("Binding name must be a string"));
                    }
                };
                let parameters = match o.get("parameters") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(p)) => Some(p.clone()),
                    Some(_) => {
                        return Err(ApiError::unprocessable(
                            "Service parameters must be an object",
                        ));
                    }
                };
                ManifestService {
                    name: name.to_string(),
                    binding_name,
                    parameters,
                }
            }
            _ => return Err(invalid()),
        };
        if service.name.trim().is_empty() {
            return Err(invalid());
        }
        out.push(service);
    }
    Ok(out)
}

/// `ManifestSidecarsMessage`: a list of `{name, command, process_types,
/// memory}`, names unique.
fn sidecars(v: &Value) -> ApiResult<Vec<SidecarBody>> {
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::unprocessable("Sidecars must be a list of sidecar objects"))?;
    let mut out: Vec<SidecarBody> = Vec::new();
    for entry in list {
        let Value::Object(o) = entry else {
            return Err(ApiError::unprocessable(
                "Sidecars must be a list of sidecar objects",
            ));
        };
        let o = underscored(o);
        let text = |key: &str, what: &str| -> ApiResult<Option<String>> {
            o.get(key)
                .filter(|v| !v.is_null())
                .map(|v| string_of(v, what))
                .transpose()
        };
        let process_types = match o.get("process_types") {
            None | Some(Value::Null) => None,
            Some(Value::Array(types)) if types.iter().all(Value::is_string) => Some(
                types
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "Sidecar process types must be a list of strings",
                ));
            }
        };
        let sidecar = SidecarBody {
            name: text("name", "Sidecar name")?,
            command: text("command", "Sidecar command")?,
            process_types,
            memory_in_mb: o
                .get("memory")
                .filter(|v| !v.is_null())
                .map(|v| megabytes(v, "Sidecar memory"))
                .transpose()?,
        };
        sidecar.validate_create().map_err(|e| match e {
            ApiError::Cf { detail, .. } => ApiError::unprocessable(format!("Sidecar: {detail}")),
            other => other,
        })?;
        if out.iter().any(|s| s.name == sidecar.name) {
            return Err(ApiError::unprocessable(format!(
                "Sidecar names must be unique: {:?} appears twice",
                sidecar.name.unwrap_or_default()
            )));
        }
        out.push(sidecar);
    }
    Ok(out)
}

/// The web process attributes, from the app's top level or a `web` entry;
/// values already set win.
fn read_process(a: &Map<String, Value>, m: &mut AppManifest) -> ApiResult<()> {
    let field = |key: &str| a.get(key).filter(|v| !v.is_null());
    if m.instances.is_none()
        && let Some(v) = field("instances")
    {
        m.instances = Some(v.as_i64().filter(|i| *i >= 0).ok_or_else(|| {
            ApiError::unprocessable("Instances must be greater than or equal to 0")
        })?);
    }
    if m.memory_mb.is_none()
        && let Some(v) = field("memory")
    {
        m.memory_mb = Some(megabytes(v, "Memory")?);
    }
    if m.disk_mb.is_none()
        && let Some(v) = field("disk_quota")
    {
        m.disk_mb = Some(megabytes(v, "Disk quota")?);
    }
    if m.command.is_none()
        && let Some(v) = field("command")
    {
        m.command = Some(string_of(v, "Command")?);
    }
    if m.health_check_type.is_none()
        && let Some(v) = field("health_check_type")
    {
        let t = string_of(v, "Health check type")?;
        m.health_check_type = Some(match t.as_str() {
            "port" | "http" | "process" => t,
            "none" => "process".to_string(),
            _ => {
                return Err(ApiError::unprocessable(
                    "Health check type must be \"port\", \"process\", or \"http\"",
                ));
            }
        });
    }
    if m.health_check_endpoint.is_none()
        && let Some(v) = field("health_check_http_endpoint")
    {
        m.health_check_endpoint = Some(string_of(v, "Health check http endpoint")?);
    }
    if m.timeout.is_none()
        && let Some(v) = field("timeout")
    {
        m.timeout = Some(
            v.as_i64()
                .filter(|t| *t > 0)
                .ok_or_else(|| ApiError::unprocessable("Timeout must be greater than 0"))?,
        );
    }
    Ok(())
}

fn string_of(v: &Value, what: &str) -> ApiResult<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::unprocessable(format!("{what} must be a string")))
}

fn flag(a: &Map<String, Value>, key: &str) -> ApiResult<bool> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::unprocessable(format!(
            "{} must be a boolean",
            key.replace('_', "-")
        ))),
    }
}

/// A manifest size (`256M`, `1G`, `1024MB`, `512` = megabytes) in megabytes.
pub(super) fn megabytes(v: &Value, what: &str) -> ApiResult<i64> {
    let invalid = || {
        ApiError::unprocessable(format!(
            "{what} must use a supported unit: B, K, KB, M, MB, G, GB, T, or TB (got {v})"
        ))
    };
    let mb = match v {
        Value::Number(n) => n.as_i64().ok_or_else(invalid)?,
        Value::String(s) => {
            let s = s.trim().to_ascii_uppercase();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: i64 = digits.parse().map_err(|_| invalid())?;
            let bytes_per: i64 = match unit.trim() {
                "" | "M" | "MB" => return positive(n, what),
                "B" => 1,
                "K" | "KB" => 1 << 10,
                "G" | "GB" => 1 << 30,
                "T" | "TB" => 1 << 40,
                _ => return Err(invalid()),
            };
            n.checked_mul(bytes_per).ok_or_else(invalid)? / (1 << 20)
        }
        _ => return Err(invalid()),
    };
    positive(mb, what)
}

fn positive(mb: i64, what: &str) -> ApiResult<i64> {
    if mb < 1 {
        return Err(ApiError::unprocessable(format!(
            "{what} must be greater than 0MB"
        )));
    }
    Ok(mb)
}

impl AppManifest {
    /// The lifecycle to create or update the app with, if the manifest sets one.
    pub fn lifecycle(&self) -> Option<Lifecycle> {
        if self.docker {
            return Some(Lifecycle {
                kind: "docker".into(),
                data: None,
            });
        }
        if self.buildpacks.is_none() && self.stack.is_none() {
            return None;
        }
        Some(Lifecycle {
            kind: "buildpack".into(),
            data: Some(LifecycleData {
                buildpacks: self.buildpacks.clone(),
                stack: self.stack.clone(),
            }),
        })
    }

    /// The web process's scale, if the manifest sets any of it.
    pub fn scale(&self) -> Option<ScaleProcess> {
        let any = self.instances.is_some() || self.memory_mb.is_some() || self.disk_mb.is_some();
        any.then_some(ScaleProcess {
            instances: self.instances,
            memory_in_mb: self.memory_mb,
            disk_in_mb: self.disk_mb,
            log_rate_limit_in_bytes_per_second: None,
        })
    }

    /// The web process's command and health check, if the manifest sets
    /// any; what it leaves out keeps `web`'s current values.
    pub fn process_update(&self, web: &Process) -> Option<UpdateProcess> {
        let mut update = UpdateProcess::default();
        if let Some(c) = &self.command {
            // "null" and "default" reset to the droplet's start command.
            let c = if c == "null" || c == "default" { "" } else { c };
            update.command = Some(c.to_string());
        }
        if self.health_check_type.is_some()
            || self.health_check_endpoint.is_some()
            || self.timeout.is_some()
        {
            let kind = self
                .health_check_type
                .clone()
                .unwrap_or_else(|| web.health_check_type.clone());
            let endpoint = self.health_check_endpoint.clone().or_else(|| {
                (kind == web.health_check_type)
                    .then(|| web.health_check_endpoint.clone())
                    .flatten()
            });
            update.health_check = Some(HealthCheckBody {
                kind,
                data: Some(HealthCheckData {
                    endpoint,
                    timeout: self.timeout.or(web.health_check_timeout),
                    invocation_timeout: web.health_check_invocation_timeout,
                    interval: None,
                }),
            });
        }
        (update.command.is_some() || update.health_check.is_some()).then_some(update)
    }
}

/// `host.domain[/path]` → (host, the longest matching domain, path).
pub fn split_route<'d>(
    route: &str,
    domains: &'d [Domain],
) -> ApiResult<(String, &'d Domain, String)> {
    let (hostname, path) = match route.find('/') {
        Some(i) => (&route[..i], route[i..].to_string()),
        None => (route, String::new()),
    };
    let domain = domains
        .iter()
        .filter(|d| hostname == d.name || hostname.ends_with(&format!(".{}", d.name)))
        .max_by_key(|d| d.name.len())
        .ok_or_else(|| ApiError::unprocessable(format!("No domains exist for route {route}")))?;
    let host = hostname
        .strip_suffix(&domain.name)
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_string();
    Ok((host, domain, path))
}

/// Two random words for `random-route`, as the CLI's word generator makes.
pub fn random_words() -> String {
    const ADJECTIVES: &[&str] = &[
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "nice",
        "proud", "quiet", "shiny", "silly", "smart", "sunny", "swift", "witty", "zany", "bold",
    ];
    const NOUNS: &[&str] = &[
        "badger", "bear", "cat", "dingo", "eagle", "fox", "gecko", "hare", "ibis", "jackal",
        "koala", "lynx", "mole", "newt", "otter", "panda", "quail", "raven", "seal", "wombat",
    ];
    let r = crate::util::random_bytes(2);
    format!(
        "{}-{}",
        ADJECTIVES[r[0] as usize % ADJECTIVES.len()],
        NOUNS[r[1] as usize % NOUNS.len()]
    )
}

/// The `applications` of a manifest that [`parse_manifest`] accepted, as
/// given (for `manifest_diff`).
pub fn applications(body: &[u8]) -> ApiResult<Vec<Value>> {
    parse_manifest(body)?;
    let doc: Value = serde_saphyr::from_slice(body).map_err(|_| ApiError::parse_error())?;
    Ok(doc["applications"].as_array().cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_in_megabytes() {
        for (v, mb) in [
            (json!("256M"), 256),
            (json!("1G"), 1024),
            (json!(512), 512),
            (json!("512"), 512),
            (json!("1024MB"), 1024),
            (json!("2gb"), 2048),
            (json!("2048K"), 2),
        ] {
            assert_eq!(megabytes(&v, "Memory").unwrap(), mb, "{v}");
        }
        for v in [
            json!("lots"),
            json!("12Q"),
            json!("0M"),
            json!(true),
            json!("-1G"),
        ] {
            assert!(megabytes(&v, "Memory").is_err(), "{v}");
        }
    }

    #[test]
    fn dashed_keys_and_legacy_values() {
        let apps = parse_manifest(
            b"applications:\n- name: a\n  buildpack: ruby_buildpack\n  health-check-type: none\n  disk-quota: 1G\n  no-route: true\n  processes:\n  - type: web\n    instances: 3\n",
        )
        .unwrap();
        let a = &apps[0];
        assert_eq!(a.buildpacks, Some(vec!["ruby_buildpack".to_string()]));
        assert_eq!(a.health_check_type.as_deref(), Some("process"));
        assert_eq!(a.disk_mb, Some(1024));
        assert_eq!(a.instances, Some(3));
        assert!(a.no_route);
    }

    #[test]
    fn services_are_names_or_maps_with_a_name() {
        let apps = parse_manifest(
            b"applications:\n- name: a\n  services:\n  - db\n  - name: cache\n    binding-name: c\n    parameters: {x: 1}\n",
        )
        .unwrap();
        let s = &apps[0].services;
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), &s[0].binding_name), ("db", &None));
        assert_eq!(
            (s[1].name.as_str(), s[1].binding_name.as_deref()),
            ("cache", Some("c"))
        );
        assert_eq!(s[1].parameters.as_ref().unwrap()["x"], 1);
        for bad in [
            "applications:\n- name: a\n  services: db\n",
            "applications:\n- name: a\n  services: [{binding_name: x}]\n",
            "applications:\n- name: a\n  services: [{name: db, parameters: [1]}]\n",
            "applications:\n- name: a\n  services: [\"\"]\n",
            "applications:\n- name: a\n  services: [3]\n",
        ] {
            assert!(parse_manifest(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sidecars_need_a_name_a_command_and_process_types() {
        let apps = parse_manifest(
            b"applications:\n- name: a\n  sidecars:\n  - name: s\n    process_types: [web]\n    command: ./s\n    memory: 64M\n",
        )
        .unwrap();
        let s = &apps[0].sidecars[0];
        assert_eq!((s.name.as_deref(), s.memory_in_mb), (Some("s"), Some(64)));
        for bad in [
            "applications:\n- name: a\n  sidecars: [{name: s, command: x}]\n",
            "applications:\n- name: a\n  sidecars: [{name: s, process_types: [web]}]\n",
            "applications:\n- name: a\n  sidecars: [{name: s, command: x, process_types: web}]\n",
            "applications:\n- name: a\n  sidecars: [{name: s, command: x, process_types: [web], memory: lots}]\n",
            "applications:\n- name: a\n  sidecars: [{name: s, command: x, process_types: [web]}, {name: s, command: y, process_types: [web]}]\n",
        ] {
            assert!(parse_manifest(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_split_on_the_longest_domain() {
        let d = |name: &str| Domain {
            guid: name.into(),
            name: name.into(),
            created_at: String::new(),
            updated_at: String::new(),
            owning_organization_guid: None,
            internal: false,
        };
        let domains = [d("localhost"), d("apps.localhost")];
        let (host, domain, path) = split_route("a.apps.localhost/x", &domains).unwrap();
        assert_eq!(
            (host.as_str(), domain.name.as_str(), path.as_str()),
            ("a", "apps.localhost", "/x")
        );
        let e = split_route("a.example.com", &domains).unwrap_err();
        assert!(e.to_string().contains("a.example.com"), "{e}");
    }
}
