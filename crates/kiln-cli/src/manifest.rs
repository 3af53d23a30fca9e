//! App manifests as `kiln push` reads them: the cf CLI v8's `manifest.yml`
//! with `((var))` variables, several applications, and flags that override
//! one application's attributes.
//!
//! Three stages, each plain data: [`interpolate`] fills variables into the
//! text (so YAML errors keep their line numbers), [`parse`] checks every
//! documented attribute's type and warns about unknown ones, and
//! [`Manifest::override_app`] applies the command line. What is sent to
//! `apply_manifest` is the checked document itself, as JSON (a YAML
//! subset), so the server sees exactly what was validated here.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Larger manifests are refused before they are parsed (the cf CLI reads
/// whole files; a manifest of a thousand apps is a few hundred KB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The file names `kiln push` looks for in the current directory.
pub const DEFAULT_NAMES: [&str; 2] = ["manifest.yml", "manifest.yaml"];

/// A checked manifest and the directory its `path`s are relative to.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub dir: PathBuf,
    pub doc: Map<String, Value>,
}

/// The attributes one application may override from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub buildpacks: Vec<String>,
    pub command: Option<String>,
    pub instances: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    pub path: Option<PathBuf>,
    pub stack: Option<String>,
    pub health_check_type: Option<String>,
    pub health_check_endpoint: Option<String>,
    pub timeout: Option<u32>,
    pub no_route: bool,
    pub random_route: bool,
    pub docker_image: Option<String>,
    pub docker_username: Option<String>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.buildpacks.is_empty()
            && self.command.is_none()
            && self.instances.is_none()
            && self.memory_mb.is_none()
            && self.disk_mb.is_none()
            && self.path.is_none()
            && self.stack.is_none()
            && self.health_check_type.is_none()
            && self.health_check_endpoint.is_none()
            && self.timeout.is_none()
            && !self.no_route
            && !self.random_route
            && self.docker_image.is_none()
    }
}

/// Finds `manifest.yml` (or `.yaml`) in `dir`.
pub fn find_default(dir: &Path) -> Option<PathBuf> {
    DEFAULT_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Reads, interpolates and checks a manifest file. `-f` may also name the
/// directory that holds `manifest.yml`.
pub fn load(path: &Path, vars_files: &[PathBuf], vars: &[String]) -> anyhow::Result<Manifest> {
    let file = if path.is_dir() {
        find_default(path).with_context(|| format!("{} holds no manifest.yml", path.display()))?
    } else {
        path.to_path_buf()
    };
    let size = std::fs::metadata(&file)
        .with_context(|| format!("reading manifest {}", file.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_MANIFEST_BYTES,
        "manifest {} is {size} bytes; the limit is {MAX_MANIFEST_BYTES}",
        file.display()
    );
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading manifest {}", file.display()))?;
    let vars = load_vars(vars_files, vars)?;
    let text = interpolate(&text, &vars)?;
    let doc = parse(&text).with_context(|| format!("manifest {}", file.display()))?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Manifest { dir, doc })
}

/// `--vars-file` files (later ones win) then `--var NAME=VALUE` pairs.
pub fn load_vars(files: &[PathBuf], pairs: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut vars = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading vars file {}", file.display()))?;
        let map: BTreeMap<String, Value> = serde_saphyr::from_str(&text).with_context(|| {
            format!(
                "vars file {} must be a map of names to values",
                file.display()
            )
        })?;
        vars.extend(map);
    }
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--var {pair:?} must be NAME=VALUE"))?;
        vars.insert(name.to_string(), Value::String(value.to_string()));
    }
    Ok(vars)
}

/// Replaces every `((name))` in `text`. A placeholder that is a whole YAML
/// value takes the variable's value with its type (a number stays a
/// number); one inside a longer value takes its text, if that cannot change
/// the YAML around it. Every missing variable is named in one error.
pub fn interpolate(text: &str, vars: &BTreeMap<String, Value>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut missing = BTreeSet::new();
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("((") {
            let Some(len) = rest[start + 2..].find("))") else {
                break;
            };
            let name = &rest[start + 2..start + 2 + len];
            if !is_var_name(name) {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                continue;
            }
            let before = &rest[..start];
            let after = &rest[start + 4 + len..];
            out.push_str(before);
            match vars.get(name) {
                None => {
                    missing.insert(name.to_string());
                }
                Some(value) => {
                    let whole = is_whole_value(&out, after);
                    out.push_str(&render(value, whole).with_context(|| {
                        format!("manifest line {}: variable (({name}))", number + 1)
                    })?);
                }
            }
            rest = after;
        }
        out.push_str(rest);
    }
    if !missing.is_empty() {
        let names: Vec<_> = missing.into_iter().collect();
        bail!("Expected to find variables: {}", names.join(", "));
    }
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// Whether a placeholder stands alone as a value: after `key:` or `- ` on
/// its line, with nothing but a comment after it.
fn is_whole_value(written: &str, after: &str) -> bool {
    let line_start = written.rfind('\n').map_or(0, |i| i + 1);
    let before = written[line_start..].trim();
    let after = after.trim();
    (before.ends_with(':') || before == "-" || before.ends_with(" -") || before.is_empty())
        && (after.is_empty() || after.starts_with('#'))
}

fn render(value: &Value, whole: bool) -> anyhow::Result<String> {
    match value {
        // JSON is YAML: a whole value keeps its type and any characters.
        _ if whole => Ok(value.to_string()),
        Value::String(s) => {
            let harmless = !s.contains(['\n', '\r', '"', '\'', '#', '{', '}', '[', ']', ','])
                && !s.contains(": ");
            anyhow::ensure!(
                harmless,
                "its value {s:?} has characters that YAML reads specially; \
                 use the variable as a whole value"
            );
            Ok(s.clone())
        }
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        _ => bail!("a list or map can only be a whole value"),
    }
}

/// Parses and checks a manifest: YAML errors and wrong types with the line
/// and the reason; unknown attributes are warned about on stderr.
pub fn parse(text: &str) -> anyhow::Result<Map<String, Value>> {
    // Typed first: serde-saphyr reports the line and column of a bad value,
    // and its default budget refuses alias bombs.
    let typed: ManifestDoc = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Value::Object(doc) = doc else {
        bail!("a manifest is a map with an `applications` list");
    };
    if let Some(version) = typed.version {
        anyhow::ensure!(
            version == 1,
            "unsupported manifest schema version {version}; the supported version is 1"
        );
    }
    let apps = typed
        .applications
        .context("the manifest has no `applications` list")?;
    anyhow::ensure!(
        !apps.is_empty(),
        "the manifest's `applications` list is empty"
    );
    let mut names = BTreeSet::new();
    for app in &apps {
        app.check()?;
        anyhow::ensure!(
            names.insert(app.name.clone()),
            "application {:?} appears twice in the manifest",
            app.name
        );
    }
    for warning in unknown_attributes(&doc) {
        eprintln!("Warning: {warning}");
    }
    Ok(doc)
}

const TOP_LEVEL: &[&str] = &["version", "applications"];
const APP_ATTRIBUTES: &[&str] = &[
    "name",
    "path",
    "buildpack",
    "buildpacks",
    "command",
    "disk-quota",
    "disk_quota",
    "docker",
    "env",
    "health-check-type",
    "health-check-http-endpoint",
    "health-check-invocation-timeout",
    "health-check-interval",
    "instances",
    "memory",
    "log-rate-limit-per-second",
    "metadata",
    "no-route",
    "default-route",
    "processes",
    "random-route",
    "readiness-health-check-type",
    "readiness-health-check-http-endpoint",
    "readiness-health-check-invocation-timeout",
    "readiness-health-check-interval",
    "routes",
    "services",
    "sidecars",
    "stack",
    "timeout",
];
const PROCESS_ATTRIBUTES: &[&str] = &[
    "type",
    "command",
    "disk-quota",
    "disk_quota",
    "health-check-type",
    "health-check-http-endpoint",
    "health-check-invocation-timeout",
    "health-check-interval",
    "instances",
    "memory",
    "log-rate-limit-per-second",
    "readiness-health-check-type",
    "readiness-health-check-http-endpoint",
    "readiness-health-check-invocation-timeout",
    "readiness-health-check-interval",
    "timeout",
];

fn unknown_attributes(doc: &Map<String, Value>) -> Vec<String> {
    let mut warnings = Vec::new();
    let unknown = |map: &Map<String, Value>, known: &[&str]| -> Vec<String> {
        map.keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    for key in unknown(doc, TOP_LEVEL) {
        warnings.push(format!("unknown manifest attribute {key:?} is ignored"));
    }
    for app in doc
        .get("applications")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let name = app.get("name").and_then(Value::as_str).unwrap_or("?");
        for key in unknown(app, APP_ATTRIBUTES) {
            warnings.push(format!(
                "unknown attribute {key:?} of application {name:?} is ignored"
            ));
        }
        for process in app
            .get("processes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
        {
            for key in unknown(process, PROCESS_ATTRIBUTES) {
                warnings.push(format!(
                    "unknown process attribute {key:?} of application {name:?} is ignored"
                ));
            }
        }
    }
    warnings
}

impl Manifest {
    pub fn apps(&self) -> Vec<&Map<String, Value>> {
        self.doc
            .get("applications")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect()
    }

    pub fn app_names(&self) -> Vec<String> {
        self.apps()
            .iter()
            .filter_map(|a| a.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// Keeps only the application `name` (`kiln push NAME` with a manifest).
    pub fn select(&mut self, name: &str) -> anyhow::Result<()> {
        let names = self.app_names();
        anyhow::ensure!(
            names.iter().any(|n| n == name),
            "Could not find app named '{name}' in manifest"
        );
        if let Some(Value::Array(apps)) = self.doc.get_mut("applications") {
            apps.retain(|a| a.get("name").and_then(Value::as_str) == Some(name));
        }
        Ok(())
    }

    /// The directory an application's files come from: its `path`,
    /// relative to the manifest, else the manifest's directory.
    pub fn app_path(&self, app: &Map<String, Value>) -> PathBuf {
        match app.get("path").and_then(Value::as_str) {
            Some(p) => self.dir.join(p),
            None => self.dir.clone(),
        }
    }

    /// Applies the command line to the only application, as the cf CLI
    /// does; flags with several applications are an error.
    pub fn override_app(&mut self, o: &Overrides) -> anyhow::Result<()> {
        if o.is_empty() {
            return Ok(());
        }
        let Some(Value::Array(apps)) = self.doc.get_mut("applications") else {
            bail!("the manifest has no applications");
        };
        anyhow::ensure!(
            apps.len() == 1,
            "Incorrect Usage: Command line flags (except -f and --no-start) cannot be applied \
             when pushing multiple apps from a manifest file."
        );
        let Some(app) = apps[0].as_object_mut() else {
            bail!("the manifest's application is not a map");
        };
        let mut set = |key: &str, value: Value| {
            app.insert(key.to_string(), value);
        };
        if !o.buildpacks.is_empty() {
            set("buildpacks", Value::from(o.buildpacks.clone()));
        }
        if let Some(c) = &o.command {
            set("command", Value::from(c.as_str()));
        }
        if let Some(i) = o.instances {
            set("instances", Value::from(i));
        }
        if let Some(m) = o.memory_mb {
            set("memory", Value::from(format!("{m}M")));
        }
        if let Some(k) = o.disk_mb {
            set("disk-quota", Value::from(format!("{k}M")));
        }
        if let Some(p) = &o.path {
            let absolute = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            set("path", Value::from(absolute.to_string_lossy().into_owned()));
        }
        if let Some(s) = &o.stack {
            set("stack", Value::from(s.as_str()));
        }
        if let Some(t) = &o.health_check_type {
            set("health-check-type", Value::from(t.as_str()));
        }
        if let Some(e) = &o.health_check_endpoint {
            set("health-check-http-endpoint", Value::from(e.as_str()));
        }
        if let Some(t) = o.timeout {
            set("timeout", Value::from(t));
        }
        if let Some(image) = &o.docker_image {
            let mut docker = Map::new();
            docker.insert("image".into(), Value::from(image.as_str()));
            if let Some(user) = &o.docker_username {
                docker.insert("username".into(), Value::from(user.as_str()));
            }
            set("docker", Value::Object(docker));
        }
        if o.random_route {
            set("random-route", Value::Bool(true));
        }
        if o.no_route {
            app.remove("routes");
            app.remove("random-route");
            app.insert("no-route".into(), Value::Bool(true));
        }
        // The flags were checked by clap; the whole app is checked again so
        // a flag cannot produce a manifest the server would refuse.
        serde_json::from_value::<AppSpec>(Value::Object(app.clone()))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .check()
    }

    /// Asks for the default route where an application names no route, as
    /// the cf CLI does before `apply_manifest`.
    pub fn request_default_routes(&mut self) {
        if let Some(Value::Array(apps)) = self.doc.get_mut("applications") {
            for app in apps.iter_mut().filter_map(Value::as_object_mut) {
                let routed = ["routes", "no-route", "random-route", "default-route"]
                    .iter()
                    .any(|k| app.get(*k).is_some_and(|v| !v.is_null()));
                if !routed {
                    app.insert("default-route".into(), Value::Bool(true));
                }
            }
        }
    }

    /// The body for `apply_manifest`: the checked document as JSON, which
    /// every YAML parser reads.
    pub fn body(&self) -> String {
        Value::Object(self.doc.clone()).to_string()
    }
}

/// The typed check: every documented attribute with its type. The values
/// are read only to be checked (what is sent is the document itself), so
/// most fields are never used after deserializing.
#[allow(dead_code)]
mod schema {
    use super::*;

    #[derive(Debug, Deserialize)]
    pub(super) struct ManifestDoc {
        pub(super) version: Option<u32>,
        pub(super) applications: Option<Vec<AppSpec>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub(super) struct AppSpec {
        pub(super) name: String,
        path: Option<String>,
        buildpack: Option<String>,
        buildpacks: Option<Vec<String>>,
        command: Option<String>,
        #[serde(alias = "disk_quota")]
        disk_quota: Option<Size>,
        docker: Option<Docker>,
        env: Option<BTreeMap<String, EnvValue>>,
        health_check_type: Option<HealthCheckType>,
        health_check_http_endpoint: Option<String>,
        health_check_invocation_timeout: Option<u32>,
        health_check_interval: Option<u32>,
        readiness_health_check_type: Option<HealthCheckType>,
        readiness_health_check_http_endpoint: Option<String>,
        readiness_health_check_invocation_timeout: Option<u32>,
        readiness_health_check_interval: Option<u32>,
        instances: Option<u32>,
        memory: Option<Size>,
        log_rate_limit_per_second: Option<Size>,
        timeout: Option<u32>,
        metadata: Option<Metadata>,
        no_route: Option<bool>,
        default_route: Option<bool>,
        random_route: Option<bool>,
        processes: Option<Vec<ProcessSpec>>,
        routes: Option<Vec<RouteSpec>>,
        services: Option<Vec<ServiceSpec>>,
        sidecars: Option<Vec<SidecarSpec>>,
        stack: Option<String>,
    }

    // The process attributes are listed in both structs rather than
    // flattened: serde's flatten buffers the map and loses the line of a
    // bad value.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct ProcessSpec {
        #[serde(rename = "type")]
        process_type: String,
        command: Option<String>,
        #[serde(alias = "disk_quota")]
        disk_quota: Option<Size>,
        health_check_type: Option<HealthCheckType>,
        health_check_http_endpoint: Option<String>,
        health_check_invocation_timeout: Option<u32>,
        health_check_interval: Option<u32>,
        readiness_health_check_type: Option<HealthCheckType>,
        readiness_health_check_http_endpoint: Option<String>,
        readiness_health_check_invocation_timeout: Option<u32>,
        readiness_health_check_interval: Option<u32>,
        instances: Option<u32>,
        memory: Option<Size>,
        log_rate_limit_per_second: Option<Size>,
        timeout: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum HealthCheckType {
        Port,
        Http,
        Process,
        None,
    }

    #[derive(Debug, Deserialize)]
    struct Docker {
        image: String,
        username: Option<String>,
    }

    /// Environment values are scalars; the server keeps their text.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    enum EnvValue {
        Text(String),
        Number(serde_json::Number),
        Flag(bool),
    }

    #[derive(Debug, Deserialize)]
    struct Metadata {
        labels: Option<BTreeMap<String, Option<String>>>,
        annotations: Option<BTreeMap<String, Option<String>>>,
    }

    #[derive(Debug, Deserialize)]
    struct RouteSpec {
        route: String,
        protocol: Option<RouteProtocol>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum RouteProtocol {
        Http1,
        Http2,
        Tcp,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    enum ServiceSpec {
        Name(String),
        Binding {
            name: String,
            #[allow(dead_code)]
            parameters: Option<BTreeMap<String, Value>>,
            #[allow(dead_code)]
            binding_name: Option<String>,
        },
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct SidecarSpec {
        name: String,
        #[serde(alias = "process_types")]
        process_types: Vec<String>,
        command: String,
        memory: Option<Size>,
    }

    /// A size with the cf CLI's units (`256M`, `1G`, `512MB`, `100K`; a bare
    /// number is megabytes), checked where it is read.
    #[derive(Debug)]
    struct Size;

    impl<'de> Deserialize<'de> for Size {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Raw {
                Number(u64),
                Text(String),
            }
            match Raw::deserialize(d)? {
                Raw::Number(_) => Ok(Size),
                Raw::Text(text) => parse_size(&text)
                    .map(|_| Size)
                    .map_err(serde::de::Error::custom),
            }
        }
    }

    /// `text` in bytes; `-1` (unlimited, for log rates) is accepted.
    pub fn parse_size(text: &str) -> Result<u64, String> {
        let upper = text.trim().to_ascii_uppercase();
        if upper == "-1" {
            return Ok(u64::MAX);
        }
        let split = upper
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(upper.len());
        let (digits, unit) = upper.split_at(split);
        let factor: u64 = match unit.trim() {
            "" | "M" | "MB" => 1 << 20,
            "B" => 1,
            "K" | "KB" => 1 << 10,
            "G" | "GB" => 1 << 30,
            "T" | "TB" => 1 << 40,
            _ => 0,
        };
        match digits.parse::<u64>() {
            Ok(n) if factor > 0 => n
                .checked_mul(factor)
                .ok_or_else(|| format!("size {text:?} is too large")),
            _ => Err(format!(
                "invalid size {text:?}: use a number with one of the units B, K, KB, M, MB, G, GB, T, TB"
            )),
        }
    }

    impl AppSpec {
        /// The rules that span attributes (types were checked while reading).
        pub(super) fn check(&self) -> anyhow::Result<()> {
            let name = &self.name;
            anyhow::ensure!(
                !name.trim().is_empty(),
                "an application's name must not be empty"
            );
            let routes = self.routes.as_ref().is_some_and(|r| !r.is_empty());
            if self.no_route == Some(true) {
                anyhow::ensure!(
                    !routes,
                    "application {name:?}: no-route and routes cannot be used together"
                );
                anyhow::ensure!(
                    self.random_route != Some(true),
                    "application {name:?}: no-route and random-route cannot be used together"
                );
            }
            if self.docker.is_some() {
                anyhow::ensure!(
                    self.buildpack.is_none() && self.buildpacks.is_none(),
                    "application {name:?}: docker and buildpacks cannot be used together"
                );
                anyhow::ensure!(
                    self.path.is_none(),
                    "application {name:?}: docker and path cannot be used together"
                );
            }
            anyhow::ensure!(
                !(self.buildpack.is_some() && self.buildpacks.is_some()),
                "application {name:?}: use buildpacks, not buildpack and buildpacks together"
            );
            for route in self.routes.iter().flatten() {
                anyhow::ensure!(
                    !route.route.trim().is_empty() && !route.route.contains(char::is_whitespace),
                    "application {name:?}: route {:?} is not a host name with an optional path",
                    route.route
                );
            }
            let mut types = BTreeSet::new();
            for process in self.processes.iter().flatten() {
                anyhow::ensure!(
                    !process.process_type.trim().is_empty(),
                    "application {name:?}: every process needs a type"
                );
                anyhow::ensure!(
                    types.insert(process.process_type.as_str()),
                    "application {name:?}: process type {:?} appears twice",
                    process.process_type
                );
            }
            for sidecar in self.sidecars.iter().flatten() {
                anyhow::ensure!(
                    !sidecar.name.trim().is_empty() && !sidecar.process_types.is_empty(),
                    "application {name:?}: a sidecar needs a name and process_types"
                );
            }
            for service in self.services.iter().flatten() {
                let service_name = match service {
                    ServiceSpec::Name(n) | ServiceSpec::Binding { name: n, .. } => n,
                };
                anyhow::ensure!(
                    !service_name.trim().is_empty(),
                    "application {name:?}: a service needs a name"
                );
            }
            if let Some(metadata) = &self.metadata {
                let keys = metadata
                    .labels
                    .iter()
                    .chain(metadata.annotations.iter())
                    .flat_map(|m| m.keys());
                for key in keys {
                    anyhow::ensure!(
                        !key.is_empty() && key.len() <= 317,
                        "application {name:?}: metadata key {key:?} is empty or too long"
                    );
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
use schema::parse_size;
use schema::{AppSpec, ManifestDoc};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn variables_keep_their_type_as_whole_values_and_their_text_inside_others() {
        let text = "applications:\n- name: ((app))\n  instances: ((n)) # two\n  routes:\n  - route: ((app))-web.((domain))\n  env:\n    GREETING: ((greeting))\n";
        let v = vars(&[
            ("app", json!("hello")),
            ("n", json!(2)),
            ("domain", json!("example.com")),
            ("greeting", json!("hi: there # not a comment")),
        ]);
        let out = interpolate(text, &v).unwrap();
        let doc = parse(&out).unwrap();
        let app = &doc["applications"][0];
        assert_eq!(app["name"], "hello");
        assert_eq!(app["instances"], 2);
        assert_eq!(app["routes"][0]["route"], "hello-web.example.com");
        assert_eq!(app["env"]["GREETING"], "hi: there # not a comment");
    }

    #[test]
    fn missing_variables_are_all_named() {
        let err = interpolate("a: ((x))\nb: ((y))\nc: ((x))\n", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "Expected to find variables: x, y");
    }

    #[test]
    fn a_variable_that_would_change_the_yaml_inside_a_value_is_refused() {
        let v = vars(&[("x", json!("a: b"))]);
        let err = interpolate("k: pre-((x))\n", &v).unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let err = parse("applications:\n- name: a\n  instances: many\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse("applications:\n- name: a\n  memory: 12Q\n").unwrap_err();
        assert!(err.to_string().contains("invalid size"), "{err}");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse("applications:\n- name: a\n  health-check-type: sometimes\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse("applications: [\n").unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn rules_across_attributes() {
        for (yaml, needle) in [
            (
                "applications:\n- name: a\n  no-route: true\n  routes:\n  - route: a.b\n",
                "no-route",
            ),
            ("applications:\n- name: a\n- name: a\n", "twice"),
            (
                "applications:\n- name: a\n  docker: {image: x}\n  buildpacks: [b]\n",
                "docker",
            ),
            ("applications:\n- name: ''\n", "name"),
            ("applications: []\n", "empty"),
            ("version: 2\napplications:\n- name: a\n", "version"),
            ("name: a\n", "applications"),
            (
                "applications:\n- name: a\n  processes:\n  - type: web\n  - type: web\n",
                "twice",
            ),
        ] {
            let err = parse(yaml).unwrap_err();
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut yaml =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for (i, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            yaml.push_str(&format!("{i}: &{i} [{refs}]\n"));
        }
        yaml.push_str("applications:\n- name: x\n");
        assert!(parse(&yaml).is_err());
    }

    #[test]
    fn every_documented_attribute_is_accepted() {
        let yaml = r#"
version: 1
applications:
- name: full
  path: app
  buildpacks: [python]
  command: run
  disk_quota: 1G
  env: {A: "1", B: 2, C: true}
  health-check-type: http
  health-check-http-endpoint: /health
  health-check-invocation-timeout: 5
  instances: 2
  memory: 256M
  log-rate-limit-per-second: 16K
  metadata: {labels: {team: a}, annotations: {note: b}}
  processes:
  - type: worker
    command: work
    instances: 1
    memory: 128M
    health-check-type: process
  random-route: false
  readiness-health-check-type: port
  routes:
  - route: full.example.com/api
    protocol: http1
  services: [db, {name: cache, parameters: {x: 1}}]
  sidecars:
  - name: side
    process_types: [web]
    command: side
    memory: 64M
  stack: cflinuxfs4
  timeout: 60
"#;
        let doc = parse(yaml).unwrap();
        assert!(unknown_attributes(&doc).is_empty());
        let doc = parse("applications:\n- name: a\n  colour: red\n").unwrap();
        assert_eq!(
            unknown_attributes(&doc),
            ["unknown attribute \"colour\" of application \"a\" is ignored"]
        );
    }

    #[test]
    fn flags_override_one_app_and_are_refused_with_several() {
        let mut m = Manifest {
            dir: PathBuf::from("/m"),
            doc: parse("applications:\n- name: a\n  path: sub\n  instances: 1\n  routes:\n  - route: a.example.com\n").unwrap(),
        };
        assert_eq!(m.app_path(m.apps()[0]), PathBuf::from("/m/sub"));
        m.override_app(&Overrides {
            instances: Some(3),
            memory_mb: Some(512),
            no_route: true,
            ..Overrides::default()
        })
        .unwrap();
        let app = m.apps()[0].clone();
        assert_eq!(app["instances"], 3);
        assert_eq!(app["memory"], "512M");
        assert_eq!(app["no-route"], true);
        assert!(app.get("routes").is_none());

        let mut two = Manifest {
            dir: PathBuf::from("."),
            doc: parse("applications:\n- name: a\n- name: b\n").unwrap(),
        };
        two.override_app(&Overrides::default()).unwrap();
        let err = two
            .override_app(&Overrides {
                instances: Some(2),
                ..Overrides::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("multiple apps"), "{err}");
        two.select("b").unwrap();
        assert_eq!(two.app_names(), ["b"]);
        assert!(two.select("zzz").is_err());
    }

    #[test]
    fn apps_without_routes_ask_for_the_default_route() {
        let mut m = Manifest {
            dir: PathBuf::from("."),
            doc: parse("applications:\n- name: a\n- name: b\n  no-route: true\n- name: c\n  routes: [{route: c.x}]\n").unwrap(),
        };
        m.request_default_routes();
        let apps = m.apps();
        assert_eq!(apps[0]["default-route"], true);
        assert!(apps[1].get("default-route").is_none());
        assert!(apps[2].get("default-route").is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512 << 20));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("lots").is_err());
    }
}
