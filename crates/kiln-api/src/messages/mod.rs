//! Request messages: the shape of every JSON body the API takes (unknown
//! fields refused) and the checks that need nothing but the message, as
//! Cloud Controller's `app/messages`. Actions take these types; apply_manifest
//! builds them directly from the manifest.

mod app_feature;
mod buildpack_update;
pub mod domains;
pub mod droplets;
pub mod manifest;
pub mod manifest_diff;
pub mod metadata;
pub mod quotas;
pub mod services;
pub mod sidecars;

pub use app_feature::UpdateAppFeature;
pub use buildpack_update::UpdateBuildpack;

use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidRef {
    pub guid: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToOne {
    pub data: GuidRef,
}

impl ToOne {
    pub fn to(guid: &str) -> ToOne {
        ToOne {
            data: GuidRef {
                guid: guid.to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceRelationship {
    pub space: ToOne,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LifecycleData {
    #[serde(default)]
    pub buildpacks: Option<Vec<String>>,
    #[serde(default)]
    pub stack: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Option<LifecycleData>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: String,
    pub relationships: SpaceRelationship,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default)]
    pub environment_variables: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

impl CreateApp {
    pub fn validate(&self) -> ApiResult<()> {
        if self.name.trim().is_empty() {
            return Err(ApiError::unprocessable("Name can't be blank"));
        }
        let keys = self.environment_variables.iter().flat_map(|v| v.keys());
        metadata::env_keys_error("Environment variables", keys)
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDroplet {
    pub data: Option<GuidRef>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchEnv {
    #[serde(default)]
    pub var: Option<BTreeMap<String, Value>>,
}

impl PatchEnv {
    /// CC's variable name rules; `attribute` starts the message ("Var" for
    /// the PATCH, "Env" for a manifest).
    pub fn validate(&self, attribute: &str) -> ApiResult<()> {
        metadata::env_keys_error(attribute, self.var.iter().flat_map(|v| v.keys()))
    }
}

/// `PATCH /v3/environment_variable_groups/:name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvGroup {
    #[serde(default)]
    pub var: Option<BTreeMap<String, Value>>,
}

impl UpdateEnvGroup {
    /// The changes (`None` removes), or CC's 422: names as for apps, and
    /// only string or null values.
    pub fn validate(self) -> ApiResult<Vec<(String, Option<String>)>> {
        let var = self.var.unwrap_or_default();
        metadata::env_keys_error("Var", var.keys())?;
        var.into_iter()
            .map(|(k, v)| match v {
                Value::Null => Ok((k, None)),
                Value::String(s) => Ok((k, Some(s))),
                other => Err(ApiError::unprocessable(format!(
                    "Non-string value in environment variable for key '{k}', value '{other}'"
                ))),
            })
            .collect()
    }
}

/// `PATCH /v3/feature_flags/:name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFeatureFlag {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Absent: unchanged; null: cleared.
    #[serde(default, deserialize_with = "present")]
    pub custom_error_message: Option<Option<String>>,
}

/// A field given, even as `null` (`Some(None)`), apart from one left out
/// (`None`): CC's `requested?`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl UpdateFeatureFlag {
    pub fn validate(&self) -> ApiResult<()> {
        if let Some(Some(m)) = &self.custom_error_message
            && m.trim().is_empty()
        {
            return Err(ApiError::unprocessable(
                "Custom error message is too short (minimum is 1 character)",
            ));
        }
        Ok(())
    }
}

/// An environment variable's value as stored: strings as they are, other
/// JSON as its text; `None` (JSON null) removes the variable.
pub fn env_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRelationship {
    pub app: ToOne,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePackage {
    #[serde(rename = "type")]
    pub kind: String,
    pub relationships: AppRelationship,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

/// A docker package's `data` (Cloud Controller's `PackageCreateMessage`):
/// the image, and registry credentials given both or neither.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerData {
    pub image: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<kiln_model::rootfs::Secret>,
}

impl CreatePackage {
    pub fn validate(&self) -> ApiResult<()> {
        if self.kind != "bits" && self.kind != "docker" {
            return Err(ApiError::unprocessable(format!(
                "Type must be one of 'bits', 'docker', not '{}'",
                self.kind
            )));
        }
        if self.kind == "bits" && self.data.as_ref().is_some_and(|d| !d.is_null()) {
            return Err(ApiError::unprocessable(
                "Data must be empty if provided for bits packages",
            ));
        }
        Ok(())
    }

    /// The docker data of a docker package, checked.
    pub fn docker_data(&self) -> ApiResult<Option<DockerData>> {
        if self.kind != "docker" {
            return Ok(None);
        }
        let data = self.data.clone().unwrap_or(Value::Null);
        let data: DockerData = serde_json::from_value(data).map_err(|e| {
            ApiError::unprocessable(format!("Data is invalid for a docker package: {e}"))
        })?;
        if data.image.trim().is_empty() {
            return Err(ApiError::unprocessable("Image required"));
        }
        if data
            .image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::unprocessable(format!(
                "Image '{}' is not a valid image reference",
                data.image
            )));
        }
        let has_user = data.username.as_deref().is_some_and(|u| !u.is_empty());
        let has_password = data.password.as_ref().is_some_and(|p| !p.is_empty());
        if has_user != has_password {
            return Err(ApiError::unprocessable(
                "Username and password must both be given for a private registry, or neither",
            ));
        }
        Ok(Some(data))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchBody {
    pub resources: Vec<Value>,
}

/// One entry of a `resources` list (v3 shape, or the legacy v2 one).
#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub sha1: String,
    pub path: String,
    pub mode: u32,
    /// `size_in_bytes` (`size` in the legacy shape), when given.
    pub size: Option<u64>,
    pub original: Value,
}

pub fn parse_resource(v: &Value) -> ApiResult<ResourceEntry> {
    let bad = || {
        ApiError::unprocessable(
            "Resources must be objects with checksum.value, size_in_bytes, path and mode",
        )
    };
    let sha1 = v["checksum"]["value"]
        .as_str()
        .or_else(|| v["sha1"].as_str())
        .ok_or_else(bad)?
        .to_ascii_lowercase();
    if sha1.len() != 40 || !sha1.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::unprocessable(format!(
            "Resource checksum '{sha1}' is not a sha1"
        )));
    }
    let path = v["path"]
        .as_str()
        .or_else(|| v["fn"].as_str())
        .unwrap_or("")
        .to_string();
    let mode = match &v["mode"] {
        Value::String(s) if !s.is_empty() => u32::from_str_radix(s, 8)
            .map_err(|_| ApiError::unprocessable(format!("Resource mode '{s}' is not octal")))?,
        Value::Number(n) => n.as_u64().unwrap_or(0o644) as u32,
        _ => 0o644,
    };
    let size = v["size_in_bytes"].as_u64().or_else(|| v["size"].as_u64());
    Ok(ResourceEntry {
        sha1,
        path,
        mode: mode & 0o7777,
        size,
        original: v.clone(),
    })
}

pub fn parse_resources(value: &Value) -> ApiResult<Vec<ResourceEntry>> {
    match value {
        Value::Array(items) => items.iter().map(parse_resource).collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(ApiError::unprocessable("Resources must be an array")),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRef {
    pub guid: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBuild {
    pub package: PackageRef,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default)]
    pub staging_memory_in_mb: Option<i64>,
    #[serde(default)]
    pub staging_disk_in_mb: Option<i64>,
    #[serde(default)]
    pub staging_log_rate_limit_bytes_per_second: Option<i64>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckData {
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub invocation_timeout: Option<i64>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub interval: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Option<HealthCheckData>,
}

/// The health check types a process may have.
pub const HEALTH_CHECK_TYPES: [&str; 3] = ["port", "process", "http"];

pub fn health_check_type_error() -> ApiError {
    ApiError::unprocessable("Health check type must be \"port\", \"process\", or \"http\"")
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateProcess {
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckBody>,
    #[serde(default)]
    pub readiness_health_check: Option<Value>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

impl UpdateProcess {
    pub fn validate(&self) -> ApiResult<()> {
        match &self.health_check {
            Some(hc) if !HEALTH_CHECK_TYPES.contains(&hc.kind.as_str()) => {
                Err(health_check_type_error())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScaleProcess {
    #[serde(default)]
    pub instances: Option<i64>,
    #[serde(default)]
    pub memory_in_mb: Option<i64>,
    #[serde(default)]
    pub disk_in_mb: Option<i64>,
    #[serde(default)]
    pub log_rate_limit_in_bytes_per_second: Option<i64>,
}

impl ScaleProcess {
    pub fn validate(&self) -> ApiResult<()> {
        if self.instances.is_some_and(|i| i < 0) {
            return Err(ApiError::unprocessable(
                "Instances must be greater than or equal to 0",
            ));
        }
        if self.memory_in_mb.is_some_and(|m| m < 1) || self.disk_in_mb.is_some_and(|d| d < 1) {
            return Err(ApiError::unprocessable(
                "Memory and disk must be greater than 0MB",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRelationships {
    pub space: ToOne,
    pub domain: ToOne,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    pub relationships: RouteRelationships,
    #[serde(default)]
    pub options: Option<Value>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

fn valid_host(host: &str) -> bool {
    host.len() <= 63
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl CreateRoute {
    /// The checked (host, path): host lowercased, both defaulting to "".
    /// A route on a shared domain needs a host; on a private one it may be
    /// the bare domain.
    pub fn validate(&self, shared_domain: bool) -> ApiResult<(String, String)> {
        if self.port.is_some() {
            return Err(ApiError::unprocessable(
                "Ports are only supported on TCP domains; Kiln has none",
            ));
        }
        let host = self.host.clone().unwrap_or_default().to_ascii_lowercase();
        if host.is_empty() && shared_domain {
            return Err(ApiError::unprocessable(
                "Missing host. Routes in shared domains must have a host defined.",
            ));
        }
        if !host.is_empty() && !valid_host(&host) {
            return Err(ApiError::unprocessable(
                "Host must be a valid DNS label of letters, digits and hyphens",
            ));
        }
        let path = self.path.clone().unwrap_or_default();
        if !path.is_empty() && (!path.starts_with('/') || path == "/") {
            return Err(ApiError::unprocessable("Path must begin with /"));
        }
        Ok((host, path))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRef {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationApp {
    pub guid: String,
    #[serde(default)]
    pub process: Option<ProcessRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDestination {
    pub app: DestinationApp,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub weight: Option<Value>,
}

impl NewDestination {
    /// The web process of `app_guid` on the default port and protocol.
    pub fn web_of(app_guid: &str) -> NewDestination {
        NewDestination {
            app: DestinationApp {
                guid: app_guid.to_string(),
                process: Some(ProcessRef { kind: "web".into() }),
            },
            port: None,
            protocol: None,
            weight: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDestinations {
    pub destinations: Vec<NewDestination>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBuildpack {
    pub name: String,
    #[serde(default)]
    pub position: Option<i64>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub lifecycle: Option<String>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

impl CreateBuildpack {
    pub fn validate(&self) -> ApiResult<()> {
        if self.name.trim().is_empty() {
            return Err(ApiError::unprocessable("Name can't be blank"));
        }
        if self.lifecycle.as_deref().is_some_and(|l| l != "buildpack") {
            return Err(ApiError::unprocessable("Lifecycle must be 'buildpack'"));
        }
        Ok(())
    }
}

/// Cloud Controller's checks on an org or space name.
pub fn validate_name(name: &str) -> ApiResult<()> {
    if name.is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    if name.chars().count() > 255 {
        return Err(ApiError::unprocessable(
            "Name is too long (maximum is 255 characters)",
        ));
    }
    // CC's name format is printable characters only.
    if name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "Name must not contain escaped characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    pub name: String,
    #[serde(default)]
    pub suspended: Option<bool>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

/// `PATCH /v3/organizations/:guid` and `PATCH /v3/spaces/:guid`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateNamed {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub suspended: Option<bool>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

impl UpdateNamed {
    pub fn validate(&self) -> ApiResult<()> {
        self.name.as_deref().map_or(Ok(()), validate_name)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationRelationship {
    pub organization: ToOne,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSpace {
    pub name: String,
    pub relationships: OrganizationRelationship,
    #[serde(default)]
    pub suspended: Option<bool>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRelationships {
    pub app: ToOne,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeploymentOptions {
    #[serde(default)]
    pub max_in_flight: Option<i64>,
}

/// `POST /v3/deployments` (Cloud Controller's `DeploymentCreateMessage`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub relationships: DeploymentRelationships,
    #[serde(default)]
    pub droplet: Option<GuidRef>,
    #[serde(default)]
    pub revision: Option<GuidRef>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub options: Option<DeploymentOptions>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

/// The strategies Kiln deploys with.
pub const DEPLOYMENT_STRATEGIES: [&str; 2] = ["rolling", "canary"];

impl CreateDeployment {
    pub fn validate(&self) -> ApiResult<()> {
        if self.droplet.is_some() && self.revision.is_some() {
            return Err(ApiError::unprocessable(
                "Cannot set both fields 'droplet' and 'revision'",
            ));
        }
        if let Some(s) = &self.strategy
            && !DEPLOYMENT_STRATEGIES.contains(&s.as_str())
        {
            return Err(ApiError::unprocessable(format!(
                "Strategy '{s}' is not a supported deployment strategy; use 'rolling' or 'canary'"
            )));
        }
        if self.max_in_flight() < 1 {
            return Err(ApiError::unprocessable(
                "Max in flight must be an integer greater than 0",
            ));
        }
        Ok(())
    }

    pub fn strategy(&self) -> &str {
        self.strategy.as_deref().unwrap_or("rolling")
    }

    /// How many new instances start at once (CC's default is 1).
    pub fn max_in_flight(&self) -> i64 {
        self.options
            .as_ref()
            .and_then(|o| o.max_in_flight)
            .unwrap_or(1)
    }
}

/// `template` of a task: run as (a copy of) this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub process: GuidRef,
}

/// `POST /v3/apps/:guid/tasks` (Cloud Controller's `TaskCreateMessage`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub memory_in_mb: Option<i64>,
    #[serde(default)]
    pub disk_in_mb: Option<i64>,
    #[serde(default)]
    pub log_rate_limit_in_bytes_per_second: Option<i64>,
    #[serde(default)]
    pub droplet_guid: Option<String>,
    #[serde(default)]
    pub template: Option<TaskTemplate>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

/// Cloud Controller's `TaskModel::COMMAND_MAX_LENGTH`.
pub const TASK_COMMAND_MAX: usize = 4096;
/// Cloud Controller's default `maximum_app_disk_in_mb`.
pub const TASK_DISK_MAX_MB: i64 = 2048;

impl CreateTask {
    /// The checks Cloud Controller's message and model make, with its words.
    pub fn validate(&self) -> ApiResult<()> {
        if self.memory_in_mb.is_some_and(|m| m < 1) {
            return Err(ApiError::unprocessable(
                "Memory in mb must be greater than 0",
            ));
        }
        if self.disk_in_mb.is_some_and(|d| d < 1) {
            return Err(ApiError::unprocessable("Disk in mb must be greater than 0"));
        }
        if self.disk_in_mb.is_some_and(|d| d > TASK_DISK_MAX_MB) {
            return Err(ApiError::unprocessable(format!(
                "Cannot request disk_in_mb greater than {TASK_DISK_MAX_MB}"
            )));
        }
        if self.command.is_none() && self.template.is_none() {
            return Err(ApiError::unprocessable(
                "Command No command or template provided",
            ));
        }
        if self.command.as_deref().is_some_and(str::is_empty) {
            return Err(ApiError::unprocessable(
                "The task request is invalid: command presence",
            ));
        }
        if self
            .command
            .as_ref()
            .is_some_and(|c| c.len() > TASK_COMMAND_MAX)
        {
            return Err(ApiError::unprocessable(format!(
                "The task request is invalid: command must be shorter than {} characters",
                TASK_COMMAND_MAX + 1
            )));
        }
        if let Some(name) = &self.name {
            let printable = !name.is_empty() && !name.chars().any(char::is_control);
            if !printable || name.len() > 255 {
                return Err(ApiError::unprocessable(
                    "The task request is invalid: name format",
                ));
            }
        }
        Ok(())
    }
}

/// One of a SCIM user's emails.
#[derive(Debug, Clone, Deserialize)]
pub struct ScimEmail {
    pub value: String,
    #[serde(default)]
    pub primary: Option<bool>,
}

/// UAA's `POST /Users` body (SCIM). UAA ignores the SCIM attributes it does
/// not store, so unknown fields are not refused here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimUser {
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub emails: Vec<ScimEmail>,
    #[serde(default)]
    pub origin: Option<String>,
}

impl ScimUser {
    /// UAA's checks, with its words; returns the email to keep.
    pub fn validate(&self) -> ApiResult<String> {
        let invalid = |d: &str| ApiError::Uaa {
            status: axum::http::StatusCode::BAD_REQUEST,
            error: "invalid_scim_resource",
            description: d.into(),
        };
        if self.user_name.trim().is_empty() {
            return Err(invalid("A username must be provided."));
        }
        if self.user_name.chars().count() > 255 || self.user_name.chars().any(char::is_control) {
            return Err(invalid(
                "Username must be at most 255 printable characters.",
            ));
        }
        if self.password.as_deref().unwrap_or("").is_empty() {
            return Err(invalid("A password must be provided."));
        }
        if self.origin.as_deref().is_some_and(|o| o != "uaa") {
            return Err(invalid("Only the uaa origin is supported."));
        }
        let email = self
            .emails
            .iter()
            .find(|e| e.primary == Some(true))
            .or(self.emails.first())
            .map(|e| e.value.clone())
            .unwrap_or_else(|| self.user_name.clone());
        Ok(email)
    }
}

/// UAA's `PUT /Users/:id/password`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScimPassword {
    #[serde(default)]
    pub old_password: Option<String>,
    pub password: String,
}

/// `POST /v3/users`: a UAA user id, or a username and origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[serde(default)]
    pub guid: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

impl CreateUser {
    pub fn validate(&self) -> ApiResult<()> {
        match (&self.guid, &self.username, &self.origin) {
            (Some(g), None, None) if !g.is_empty() && g.len() <= 250 => Ok(()),
            (Some(_), None, None) => Err(ApiError::unprocessable(
                "Guid must be between 1 and 250 characters",
            )),
            (None, Some(_), Some(_)) => Ok(()),
            (Some(_), _, _) => Err(ApiError::unprocessable(
                "'guid' cannot be provided with 'username' or 'origin'",
            )),
            _ => Err(ApiError::unprocessable(
                "'username' and 'origin' must be provided together, or 'guid' alone",
            )),
        }
    }
}

/// The user of a role: by guid, or by username (and origin).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleUserData {
    #[serde(default)]
    pub guid: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleUser {
    pub data: RoleUserData,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRelationships {
    pub user: RoleUser,
    #[serde(default)]
    pub organization: Option<ToOne>,
    #[serde(default)]
    pub space: Option<ToOne>,
}

/// Cloud Controller's role types: the org ones, then the space ones.
pub const ORG_ROLE_TYPES: [&str; 4] = [
    "organization_user",
    "organization_auditor",
    "organization_manager",
    "organization_billing_manager",
];
pub const SPACE_ROLE_TYPES: [&str; 4] = [
    "space_auditor",
    "space_developer",
    "space_manager",
    "space_supporter",
];

/// `POST /v3/roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    #[serde(rename = "type")]
    pub kind: String,
    pub relationships: RoleRelationships,
}

/// What a role is in, once the message is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleTarget {
    Organization(String),
    Space(String),
}

impl CreateRole {
    /// CC's RoleCreateMessage checks; returns what the role is in.
    pub fn validate(&self) -> ApiResult<RoleTarget> {
        let all: Vec<&str> = ORG_ROLE_TYPES
            .iter()
            .chain(SPACE_ROLE_TYPES.iter())
            .copied()
            .collect();
        if !all.contains(&self.kind.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "Type must be one of the allowed types {all:?}"
            )));
        }
        let r = &self.relationships;
        let user = &r.user.data;
        match (&user.guid, &user.username) {
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err(ApiError::unprocessable(
                    "User cannot pass both 'guid' and 'username'",
                ));
            }
            (None, None) => {
                return Err(ApiError::unprocessable(
                    "User must provide a 'guid' or a 'username'",
                ));
            }
        }
        let is_space = SPACE_ROLE_TYPES.contains(&self.kind.as_str());
        match (&r.organization, &r.space, is_space) {
            (Some(o), None, false) => Ok(RoleTarget::Organization(o.data.guid.clone())),
            (None, Some(s), true) => Ok(RoleTarget::Space(s.data.guid.clone())),
            (Some(_), Some(_), _) => Err(ApiError::unprocessable(
                "Relationships cannot contain both an organization and a space",
            )),
            (_, _, true) => Err(ApiError::unprocessable(
                "Relationships must contain a space for a space role",
            )),
            (_, _, false) => Err(ApiError::unprocessable(
                "Relationships must contain an organization for an organization role",
            )),
        }
    }
}

/// The body of a `PATCH` that changes only labels and annotations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMetadata {
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}
