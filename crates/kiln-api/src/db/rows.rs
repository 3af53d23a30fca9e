//! One row type per CCDB table. State columns decode into `kiln-model`'s
//! enums here, once: a stored value no enum knows is a decode error, never
//! a string compared later.

use super::{Record, StateMachine, Stateful};
use kiln_model::{AppState, AppTaskState, BuildState, DeploymentState, DropletState, PackageState};
use kiln_store::Row;
use serde::Serialize;
use sqlx::Row as _;
use std::collections::BTreeMap;
use std::str::FromStr;

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, col: &str) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A flag: an integer 0/1 on both engines.
fn flag_col(row: &Row, col: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = row.try_get(col)?;
    Ok(n != 0)
}

fn enum_col<T: FromStr>(row: &Row, col: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.try_get(col)?;
    text.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

macro_rules! record {
    ($ty:ident, $table:literal, $resource:literal { $($field:ident : $kind:tt),+ $(,)? }) => {
        #[derive(Debug, Clone)]
        #[allow(dead_code)] // rows mirror their tables whole
        pub struct $ty { $(pub $field: record!(@ty $kind)),+ }
        impl Record for $ty {
            const TABLE: &'static str = $table;
            const RESOURCE: &'static str = $resource;
            fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
                Ok($ty { $($field: record!(@get row, $field, $kind)),+ })
            }
        }
    };
    (@ty str) => { String };
    (@ty opt) => { Option<String> };
    (@ty int) => { i64 };
    (@ty optint) => { Option<i64> };
    (@ty bool) => { bool };
    (@ty list) => { Vec<String> };
    (@ty map) => { BTreeMap<String, String> };
    (@ty value) => { serde_json::Value };
    (@ty secret) => { Option<kiln_model::rootfs::Secret> };
    (@ty $state:ident) => { $state };
    (@get $row:ident, $field:ident, list) => { json_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, map) => { json_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, value) => { json_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, secret) => { $row.try_get::<Option<String>, _>(stringify!($field))?.map(kiln_model::rootfs::Secret) };
    (@get $row:ident, $field:ident, str) => { $row.try_get(stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, opt) => { $row.try_get(stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, int) => { $row.try_get(stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, optint) => { $row.try_get(stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, bool) => { flag_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, $state:ident) => { enum_col::<$state>($row, stringify!($field))? };
}

/// An admin buildpack's state: created, then READY once its zip is stored
/// (a new zip may replace the old one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BuildpackState {
    #[serde(rename = "AWAITING_UPLOAD")]
    AwaitingUpload,
    #[serde(rename = "READY")]
    Ready,
}

impl FromStr for BuildpackState {
    type Err = kiln_model::TransitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "AWAITING_UPLOAD" => Ok(BuildpackState::AwaitingUpload),
            "READY" => Ok(BuildpackState::Ready),
            other => Err(kiln_model::TransitionError::Unknown {
                resource: "buildpack",
                value: other.to_string(),
            }),
        }
    }
}

impl StateMachine for BuildpackState {
    fn as_str(self) -> &'static str {
        match self {
            BuildpackState::AwaitingUpload => "AWAITING_UPLOAD",
            BuildpackState::Ready => "READY",
        }
    }
    fn check(self, to: Self) -> Result<Self, kiln_model::TransitionError> {
        match to {
            BuildpackState::Ready => Ok(to),
            BuildpackState::AwaitingUpload => Err(kiln_model::TransitionError::Illegal {
                resource: "buildpack",
                from: self.as_str(),
                to: to.as_str(),
            }),
        }
    }
}

record!(User, "users", "User" {
    guid: str, username: str, email: str, password_hash: str, origin: str, scopes: str,
    token_generation: int, created_at: str, updated_at: str,
});
record!(CcUser, "cc_users", "User" {
    guid: str, created_at: str, updated_at: str,
});
record!(Role, "roles", "Role" {
    guid: str, r#type: str, user_guid: str, organization_guid: str, space_guid: opt,
    scope_guid: str, created_at: str, updated_at: str,
});
record!(Organization, "organizations", "Organization" {
    guid: str, name: str, suspended: bool, created_at: str, updated_at: str,
});
record!(Space, "spaces", "Space" {
    guid: str, name: str, organization_guid: str, suspended: bool, created_at: str,
    updated_at: str, allow_ssh: bool,
});
record!(Domain, "domains", "Domain" {
    guid: str, name: str, created_at: str, updated_at: str, owning_organization_guid: opt,
    internal: bool,
});
// An org a private domain is shared with.
record!(DomainShare, "domain_shared_organizations", "Domain" {
    domain_guid: str, organization_guid: str, created_at: str,
});
record!(Stack, "stacks", "Stack" {
    guid: str, name: str, description: str, is_default: bool, created_at: str, updated_at: str,
});
record!(Buildpack, "buildpacks", "Buildpack" {
    guid: str, name: str, stack: opt, position: int, enabled: bool, locked: bool,
    state: BuildpackState, filename: opt, sha256: opt, created_at: str, updated_at: str,
});
record!(Job, "jobs", "Job" {
    guid: str, operation: str, state: str, resource_type: str, resource_guid: str, errors: value,
    created_at: str, updated_at: str,
});
record!(App, "apps", "App" {
    guid: str, name: str, space_guid: str, state: AppState, buildpacks: list, stack: str,
    environment_variables: map, droplet_guid: opt, created_at: str, updated_at: str,
    lifecycle_type: str,
});
record!(Process, "processes", "Process" {
    guid: str, app_guid: str, r#type: str, command: opt, instances: int, memory_in_mb: int,
    disk_in_mb: int, health_check_type: str, health_check_endpoint: opt,
    health_check_timeout: optint, health_check_invocation_timeout: optint, version: str,
    created_at: str, updated_at: str,
});
record!(Package, "packages", "Package" {
    guid: str, app_guid: str, r#type: str, state: PackageState, sha256: opt, error: opt,
    created_at: str, updated_at: str, docker_image: opt, docker_username: opt,
    docker_password: secret,
});
record!(Build, "builds", "Build" {
    guid: str, app_guid: str, package_guid: str, droplet_guid: opt, state: BuildState,
    error: opt, buildpacks: list, stack: str, staging_memory_in_mb: int,
    staging_disk_in_mb: int, created_by_guid: str, created_by_name: str,
    created_by_email: str, created_at: str, updated_at: str, lifecycle_type: str,
});
record!(Droplet, "droplets", "Droplet" {
    guid: str, app_guid: str, package_guid: str, build_guid: str, state: DropletState,
    error: opt, process_types: map, buildpacks: value, execution_metadata: str, sha256: opt,
    stack: str, created_at: str, updated_at: str, lifecycle_type: str, docker_image: opt,
    sidecars: value, blob_size: optint, blob_etag: opt,
});
record!(Route, "routes", "Route" {
    guid: str, host: str, path: str, domain_guid: str, space_guid: str,
    created_at: str, updated_at: str,
});
record!(Destination, "route_destinations", "Destination" {
    guid: str, route_guid: str, app_guid: str, process_type: str, port: int, protocol: str,
    created_at: str, updated_at: str,
});
record!(Deployment, "deployments", "Deployment" {
    guid: str, app_guid: str, state: DeploymentState, status_reason: str, strategy: str,
    max_in_flight: int, continued: bool, droplet_guid: str, previous_droplet_guid: opt,
    revision_guid: opt, process_guid: str, old_version: str, new_version: str,
    target_instances: int, old_instances: int, new_instances: int, created_at: str,
    updated_at: str,
});
record!(Revision, "revisions", "Revision" {
    guid: str, app_guid: str, version: int, droplet_guid: str, environment_variables: map,
    description: str, created_at: str, updated_at: str,
});

record!(Task, "tasks", "Task" {
    guid: str, app_guid: str, name: str, command: str, state: AppTaskState, memory_in_mb: int,
    disk_in_mb: int, droplet_guid: str, sequence_id: int, failure_reason: opt, created_at: str,
    updated_at: str,
});
record!(AuditEvent, "audit_events", "Event" {
    guid: str, r#type: str, actor_guid: opt, actor_type: opt, actor_name: opt, target_guid: opt,
    target_type: opt, target_name: opt, space_guid: opt, organization_guid: opt, data: value,
    dedup_key: opt, created_at: str, updated_at: str,
});

// Services: user-provided instances and their app bindings.
record!(ServiceInstance, "service_instances", "Service instance" {
    guid: str, name: str, r#type: str, space_guid: str, credentials: value,
    syslog_drain_url: opt, route_service_url: opt, tags: list, last_operation_type: str,
    created_at: str, updated_at: str,
});
record!(ServiceBinding, "service_bindings", "Service credential binding" {
    guid: str, name: opt, r#type: str, app_guid: str, service_instance_guid: str,
    credentials: value, syslog_drain_url: opt, created_at: str, updated_at: str,
});
// Sidecars: extra commands in the containers of an app's processes.
record!(Sidecar, "sidecars", "Sidecar" {
    guid: str, name: str, command: str, app_guid: str, process_types: list,
    memory_in_mb: optint, origin: str, created_at: str, updated_at: str,
});
// Organization quotas and which org has which (`guid` = the org's).
record!(OrganizationQuota, "organization_quotas", "Organization quota" {
    guid: str, name: str, limits: value, created_at: str, updated_at: str,
});
record!(QuotaAssignment, "organization_quota_assignments", "Organization quota" {
    guid: str, quota_guid: str, created_at: str, updated_at: str,
});
// Space quotas (an org's) and which space has which (`guid` = the space's).
record!(SpaceQuota, "space_quotas", "Space quota" {
    guid: str, name: str, organization_guid: str, limits: value, created_at: str, updated_at: str,
});
record!(SpaceQuotaAssignment, "space_quota_assignments", "Space quota" {
    guid: str, quota_guid: str, created_at: str, updated_at: str,
});

impl super::QuotaHolding for QuotaAssignment {
    fn into_pair(self) -> (String, String) {
        (self.guid, self.quota_guid)
    }
}
impl super::QuotaHolding for SpaceQuotaAssignment {
    fn into_pair(self) -> (String, String) {
        (self.guid, self.quota_guid)
    }
}

/// Each row with a state column, and the enum its state is.
macro_rules! stateful {
    ($($row:ty => $state:ty),+ $(,)?) => {$(
        impl Stateful for $row {
            type State = $state;
        }
    )+};
}
stateful!(
    Task => AppTaskState,
    Deployment => DeploymentState,
    App => AppState,
    Package => PackageState,
    Build => BuildState,
    Droplet => DropletState,
    Buildpack => BuildpackState,
);
