//! Presenters: every v3 JSON document the API answers, built from rows
//! (as Cloud Controller's `app/presenters`). No IO here.

use crate::db::{
    App, AuditEvent, Build, Buildpack, Deployment, Destination, Domain, Droplet, Job, Organization,
    OrganizationQuota, Package, Process, Revision, Role, Route, ServiceBinding, ServiceInstance,
    Space, SpaceQuota, Stack, Task, User,
};
use crate::util::{link, link_method};
use kiln_model::bbs::ActualLrp;
use kiln_model::logs::ContainerMetric;
use kiln_model::{ActualLrpState, BuildState, DeploymentState, DropletState};
use serde_json::{Value, json};

pub mod manifest;
pub mod settings;
pub mod sidecar;

pub const API_VERSION: &str = "3.180.0";

/// Labels and annotations: the empty shape every resource has here;
/// `controllers::metadata::present` fills it from the metadata tables.
pub fn metadata() -> Value {
    json!({"labels": {}, "annotations": {}})
}

pub fn root(b: &str) -> Value {
    json!({
        "links": {
            "self": {"href": b},
            "cloud_controller_v3": {"href": format!("{b}/v3"), "meta": {"version": API_VERSION}},
            "network_policy_v0": null,
            "network_policy_v1": null,
            "login": {"href": b},
            "uaa": {"href": b},
            "credhub": null,
            "routing": null,
            "logging": null,
            "log_cache": {"href": b},
            "log_stream": null,
            "app_ssh": null,
        }
    })
}

pub fn v3_root(b: &str) -> Value {
    let mut links = serde_json::Map::new();
    links.insert("self".into(), link(b, "/v3"));
    for name in [
        "apps",
        "audit_events",
        "buildpacks",
        "builds",
        "deployments",
        "domains",
        "droplets",
        "feature_flags",
        "info",
        "organizations",
        "packages",
        "processes",
        "resource_matches",
        "routes",
        "spaces",
        "roles",
        "stacks",
        "tasks",
        "users",
    ] {
        links.insert(name.into(), link(b, &format!("/v3/{name}")));
    }
    json!({ "links": links })
}

pub fn info(b: &str) -> Value {
    json!({
        "build": "",
        "cli_version": {"minimum": "", "recommended": ""},
        "custom": {},
        "description": "Kiln, a Cloud Foundry-compatible platform in one binary",
        "name": "kiln",
        "version": 0,
        "osbapi_version": "2.15",
        "rate_limits": {"enabled": false, "general_limit": "", "reset_interval_in_minutes": ""},
        "links": {"self": link(b, "/v3/info"), "support": {"href": ""}},
    })
}

/// An org; `quota` is the guid of its organization quota.
pub fn org_json(b: &str, o: &Organization, quota: Option<&String>) -> Value {
    let mut v = json!({
        "guid": o.guid, "created_at": o.created_at, "updated_at": o.updated_at,
        "name": o.name, "suspended": o.suspended,
        "relationships": {"quota": {"data": quota.map(|q| json!({ "guid": q }))}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/organizations/{}", o.guid)),
            "domains": link(b, &format!("/v3/organizations/{}/domains", o.guid)),
            "default_domain": link(b, &format!("/v3/organizations/{}/domains/default", o.guid)),
        },
    });
    if let Some(q) = quota {
        v["links"]["quota"] = link(b, &format!("/v3/organization_quotas/{q}"));
    }
    v
}

/// A space; `quota` is the guid of its space quota, if it has one.
pub fn space_json(b: &str, s: &Space, quota: Option<&String>) -> Value {
    let mut v = json!({
        "guid": s.guid, "created_at": s.created_at, "updated_at": s.updated_at,
        "name": s.name, "suspended": s.suspended,
        "relationships": {
            "organization": {"data": {"guid": s.organization_guid}},
            "quota": {"data": quota.map(|q| json!({ "guid": q }))},
        },
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/spaces/{}", s.guid)),
            "organization": link(b, &format!("/v3/organizations/{}", s.organization_guid)),
            "features": link(b, &format!("/v3/spaces/{}/features", s.guid)),
            "apply_manifest": link_method(b, &format!("/v3/spaces/{}/actions/apply_manifest", s.guid), "POST"),
        },
    });
    if let Some(q) = quota {
        v["links"]["quota"] = link(b, &format!("/v3/space_quotas/{q}"));
    }
    v
}

/// A domain; `shared` are the orgs it is shared with that the caller
/// sees. A private domain links its org and its shared orgs, as CC's.
pub fn domain_json(b: &str, d: &Domain, shared: &[String]) -> Value {
    let org = d
        .owning_organization_guid
        .as_ref()
        .map(|o| json!({ "guid": o }));
    let mut links = json!({
        "self": link(b, &format!("/v3/domains/{}", d.guid)),
        "route_reservations": link(b, &format!("/v3/domains/{}/route_reservations", d.guid)),
    });
    if let Some(o) = &d.owning_organization_guid {
        links["organization"] = link(b, &format!("/v3/organizations/{o}"));
        links["shared_organizations"] = link(
            b,
            &format!("/v3/domains/{}/relationships/shared_organizations", d.guid),
        );
    }
    json!({
        "guid": d.guid, "created_at": d.created_at, "updated_at": d.updated_at,
        "name": d.name, "internal": d.internal, "router_group": null,
        "supported_protocols": ["http"],
        "relationships": {
            "organization": {"data": org},
            "shared_organizations": {"data": guid_refs(shared)},
        },
        "metadata": metadata(),
        "links": links,
    })
}

/// `[{"guid": …}, …]`, a to-many relationship's data.
pub fn guid_refs(guids: &[String]) -> Value {
    guids.iter().map(|g| json!({ "guid": g })).collect()
}

pub fn stack_json(b: &str, s: &Stack) -> Value {
    json!({
        "guid": s.guid, "created_at": s.created_at, "updated_at": s.updated_at,
        "name": s.name, "description": s.description, "state": "ACTIVE", "state_reason": null,
        "run_rootfs_image": format!("preloaded:{}", s.name),
        "build_rootfs_image": format!("preloaded:{}", s.name),
        "default": s.is_default,
        "metadata": metadata(),
        "links": {"self": link(b, &format!("/v3/stacks/{}", s.guid))},
    })
}

pub fn job_json(b: &str, j: &Job) -> Value {
    let mut links = serde_json::Map::new();
    links.insert("self".into(), link(b, &format!("/v3/jobs/{}", j.guid)));
    if !j.resource_type.is_empty() {
        links.insert(
            j.resource_type.clone(),
            link(b, &format!("/v3/{}s/{}", j.resource_type, j.resource_guid)),
        );
    }
    json!({
        "guid": j.guid, "created_at": j.created_at, "updated_at": j.updated_at,
        "operation": j.operation, "state": j.state,
        "errors": j.errors, "warnings": [],
        "links": links,
    })
}

pub fn job_location(b: &str, job_guid: &str) -> String {
    format!("{b}/v3/jobs/{job_guid}")
}

pub fn buildpack_json(b: &str, bp: &Buildpack) -> Value {
    json!({
        "guid": bp.guid, "created_at": bp.created_at, "updated_at": bp.updated_at,
        "name": bp.name, "stack": bp.stack, "state": bp.state, "lifecycle": "buildpack",
        "filename": bp.filename, "position": bp.position, "enabled": bp.enabled, "locked": bp.locked,
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/buildpacks/{}", bp.guid)),
            "upload": link_method(b, &format!("/v3/buildpacks/{}/upload", bp.guid), "POST"),
        },
    })
}

/// An app's or a build's `lifecycle`: a docker one has empty data.
fn lifecycle_json(kind: &str, buildpacks: &[String], stack: &str) -> Value {
    if kind == "docker" {
        json!({"type": "docker", "data": {}})
    } else {
        json!({"type": "buildpack", "data": {"buildpacks": buildpacks, "stack": stack}})
    }
}

/// A package's `data`: a docker package's image and user, its password
/// never (`***` when there is one, as Cloud Controller shows it).
fn package_data(p: &Package) -> Value {
    if p.r#type == "docker" {
        json!({
            "image": p.docker_image,
            "username": p.docker_username,
            "password": p.docker_password.as_ref().map(|_| "***"),
        })
    } else {
        json!({"error": p.error, "checksum": {"type": "sha256", "value": p.sha256}})
    }
}

pub fn app_json(b: &str, a: &App) -> Value {
    let p = format!("/v3/apps/{}", a.guid);
    json!({
        "guid": a.guid, "created_at": a.created_at, "updated_at": a.updated_at,
        "name": a.name, "state": a.state,
        "lifecycle": lifecycle_json(&a.lifecycle_type, &a.buildpacks, &a.stack),
        "relationships": {
            "space": {"data": {"guid": a.space_guid}},
            "current_droplet": {"data": {"guid": a.droplet_guid}},
        },
        "metadata": metadata(),
        "links": {
            "self": link(b, &p),
            "environment_variables": link(b, &format!("{p}/environment_variables")),
            "space": link(b, &format!("/v3/spaces/{}", a.space_guid)),
            "processes": link(b, &format!("{p}/processes")),
            "packages": link(b, &format!("{p}/packages")),
            "current_droplet": link(b, &format!("{p}/droplets/current")),
            "droplets": link(b, &format!("{p}/droplets")),
            "tasks": link(b, &format!("{p}/tasks")),
            "start": link_method(b, &format!("{p}/actions/start"), "POST"),
            "stop": link_method(b, &format!("{p}/actions/stop"), "POST"),
            "clear_buildpack_cache": link_method(b, &format!("{p}/actions/clear_buildpack_cache"), "POST"),
            "revisions": link(b, &format!("{p}/revisions")),
            "deployed_revisions": link(b, &format!("{p}/revisions/deployed")),
            "features": link(b, &format!("{p}/features")),
        },
    })
}

pub fn droplet_rel_json(b: &str, app_guid: &str, droplet_guid: Option<&str>) -> Value {
    json!({
        "data": droplet_guid.map(|g| json!({"guid": g})),
        "links": {
            "self": link(b, &format!("/v3/apps/{app_guid}/relationships/current_droplet")),
            "related": link(b, &format!("/v3/apps/{app_guid}/droplets/current")),
        },
    })
}

pub fn env_vars_json(b: &str, app: &App) -> Value {
    json!({
        "var": app.environment_variables,
        "links": {
            "self": link(b, &format!("/v3/apps/{}/environment_variables", app.guid)),
            "app": link(b, &format!("/v3/apps/{}", app.guid)),
        },
    })
}

pub fn health_check_json(p: &Process) -> Value {
    let mut data = json!({
        "timeout": p.health_check_timeout,
        "invocation_timeout": p.health_check_invocation_timeout,
    });
    if p.health_check_type == "http" {
        data["endpoint"] = json!(
            p.health_check_endpoint
                .clone()
                .unwrap_or_else(|| "/".into())
        );
    }
    json!({"type": p.health_check_type, "data": data})
}

pub fn process_json(b: &str, app: &App, p: &Process) -> Value {
    let path = format!("/v3/processes/{}", p.guid);
    json!({
        "guid": p.guid, "created_at": p.created_at, "updated_at": p.updated_at,
        "version": p.version, "type": p.r#type, "command": p.command, "user": "vcap",
        "instances": p.instances, "memory_in_mb": p.memory_in_mb, "disk_in_mb": p.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": -1,
        "health_check": health_check_json(p),
        "readiness_health_check": {"type": "process", "data": {"invocation_timeout": null, "interval": null}},
        "relationships": {"app": {"data": {"guid": p.app_guid}}, "revision": null},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "scale": link_method(b, &format!("{path}/actions/scale"), "POST"),
            "app": link(b, &format!("/v3/apps/{}", p.app_guid)),
            "space": link(b, &format!("/v3/spaces/{}", app.space_guid)),
            "stats": link(b, &format!("{path}/stats")),
        },
    })
}

/// `GET /v3/processes/:guid/stats`: one entry per desired instance, from
/// the process's ActualLrps with Cloud Controller's state mapping. The one
/// place instance stats are shaped (`usage` included, from the latest
/// container metric of each RUNNING instance).
pub fn process_stats(
    p: &Process,
    actuals: &[ActualLrp],
    metrics: &[ContainerMetric],
    now_nanos: i64,
    now: &str,
) -> Value {
    let instances = p.instances.max(0) as u32;
    let down = |index: u32, details: Value| {
        json!({"type": p.r#type, "index": index, "state": "DOWN", "routable": false, "uptime": 0,
               "isolation_segment": null, "details": details})
    };
    let mut resources = Vec::new();
    for index in 0..instances {
        let Some(a) = actuals.iter().find(|a| a.key.index == index) else {
            resources.push(down(index, Value::Null));
            continue;
        };
        let (state, details) = match a.state {
            ActualLrpState::Running => ("RUNNING", Value::Null),
            ActualLrpState::Claimed => ("STARTING", Value::Null),
            ActualLrpState::Unclaimed if !a.placement_error.is_empty() => {
                resources.push(down(index, json!(a.placement_error)));
                continue;
            }
            ActualLrpState::Unclaimed => ("STARTING", Value::Null),
            ActualLrpState::Crashed => (
                "CRASHED",
                if a.crash_reason.is_empty() {
                    Value::Null
                } else {
                    json!(a.crash_reason)
                },
            ),
        };
        let (host, internal_ip, ports) = match &a.net_info {
            Some(n) => (
                json!(n.address),
                json!(n.instance_address),
                json!(
                    n.ports
                        .iter()
                        .map(|m| json!({"external": m.host_port, "internal": m.container_port}))
                        .collect::<Vec<_>>()
                ),
            ),
            None => (json!(""), json!(""), json!([])),
        };
        let uptime = if a.state == ActualLrpState::Running {
            ((now_nanos - a.since).max(0) / 1_000_000_000) as u64
        } else {
            0
        };
        resources.push(json!({
            "type": p.r#type, "index": index,
            "instance_guid": a.instance_key.as_ref().map(|k| k.instance_guid.clone()).unwrap_or_default(),
            "state": state, "routable": state == "RUNNING",
            "host": host, "instance_internal_ip": internal_ip,
            "instance_ports": ports,
            "uptime": uptime,
            "mem_quota": p.memory_in_mb * 1024 * 1024,
            "disk_quota": p.disk_in_mb * 1024 * 1024,
            "log_rate_limit": -1,
            "fds_quota": 16384,
            "isolation_segment": null,
            "details": details,
            "usage": usage_json(instance_metric(metrics, a, index), now),
        }));
    }
    json!({"resources": resources})
}

/// The latest container metric of this very instance (not of the one an
/// index had before a crash), while it runs.
fn instance_metric<'m>(
    metrics: &'m [ContainerMetric],
    actual: &ActualLrp,
    index: u32,
) -> Option<&'m ContainerMetric> {
    let guid = &actual.instance_key.as_ref()?.instance_guid;
    if actual.state != ActualLrpState::Running {
        return None;
    }
    metrics
        .iter()
        .find(|m| m.instance_id == index.to_string() && &m.instance_guid == guid)
}

/// Cloud Controller's `usage`: `cpu` as a fraction of one core (the gauge
/// is a percentage), `mem` and `disk` in bytes, `time` of the measurement.
/// Zeros until the cell has measured the instance.
fn usage_json(metric: Option<&ContainerMetric>, now: &str) -> Value {
    let Some(m) = metric else {
        return json!({"time": now, "cpu": 0, "cpu_entitlement": 0, "mem": 0, "disk": 0, "log_rate": 0});
    };
    let time = time::OffsetDateTime::from_unix_timestamp(m.timestamp / 1_000_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| now.to_string());
    json!({"time": time, "cpu": m.cpu_percentage / 100.0, "cpu_entitlement": 0,
           "mem": m.memory_bytes, "disk": m.disk_bytes, "log_rate": 0})
}

pub fn package_json(b: &str, p: &Package) -> Value {
    let path = format!("/v3/packages/{}", p.guid);
    json!({
        "guid": p.guid, "created_at": p.created_at, "updated_at": p.updated_at,
        "type": p.r#type,
        "data": package_data(p),
        "state": p.state,
        "relationships": {"app": {"data": {"guid": p.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "upload": link_method(b, &format!("{path}/upload"), "POST"),
            "download": link(b, &format!("{path}/download")),
            "app": link(b, &format!("/v3/apps/{}", p.app_guid)),
        },
    })
}

pub fn build_json(b: &str, build: &Build) -> Value {
    let staged = match (&build.droplet_guid, build.state) {
        (Some(d), BuildState::Staged) => Some(d),
        _ => None,
    };
    let mut links = json!({
        "self": link(b, &format!("/v3/builds/{}", build.guid)),
        "app": link(b, &format!("/v3/apps/{}", build.app_guid)),
    });
    if let Some(d) = staged {
        links["droplet"] = link(b, &format!("/v3/droplets/{d}"));
    }
    json!({
        "guid": build.guid, "created_at": build.created_at, "updated_at": build.updated_at,
        "state": build.state,
        "staging_memory_in_mb": build.staging_memory_in_mb,
        "staging_disk_in_mb": build.staging_disk_in_mb,
        "staging_log_rate_limit_bytes_per_second": -1,
        "error": build.error,
        "lifecycle": lifecycle_json(&build.lifecycle_type, &build.buildpacks, &build.stack),
        "package": {"guid": build.package_guid},
        "droplet": staged.map(|d| json!({"guid": d})),
        "created_by": {"guid": build.created_by_guid, "name": build.created_by_name, "email": build.created_by_email},
        "relationships": {"app": {"data": {"guid": build.app_guid}}},
        "metadata": metadata(),
        "links": links,
    })
}

pub fn droplet_json(b: &str, d: &Droplet) -> Value {
    // A docker droplet is its image: no checksum, buildpacks or stack.
    let docker = d.lifecycle_type == "docker";
    let staged = d.state == DropletState::Staged && !docker;
    json!({
        "guid": d.guid, "created_at": d.created_at, "updated_at": d.updated_at,
        "state": d.state, "error": d.error,
        "lifecycle": {"type": d.lifecycle_type, "data": {}},
        "checksum": if staged { json!({"type": "sha256", "value": d.sha256}) } else { Value::Null },
        "buildpacks": if docker { Value::Null } else { d.buildpacks.clone() },
        "stack": if docker { Value::Null } else { json!(d.stack) },
        "image": d.docker_image,
        "execution_metadata": d.execution_metadata,
        "process_types": d.process_types,
        "relationships": {"app": {"data": {"guid": d.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/droplets/{}", d.guid)),
            "app": link(b, &format!("/v3/apps/{}", d.app_guid)),
            "package": link(b, &format!("/v3/packages/{}", d.package_guid)),
            "assign_current_droplet": link_method(b, &format!("/v3/apps/{}/relationships/current_droplet", d.app_guid), "PATCH"),
            "download": link(b, &format!("/v3/droplets/{}/download", d.guid)),
        },
    })
}

/// `host.domain/path` of a route (no host on a bare domain).
pub fn route_url(host: &str, domain: &str, path: &str) -> String {
    if host.is_empty() {
        format!("{domain}{path}")
    } else {
        format!("{host}.{domain}{path}")
    }
}

pub fn destination_json(d: &Destination) -> Value {
    json!({
        "guid": d.guid,
        "app": {"guid": d.app_guid, "process": {"type": d.process_type}},
        "weight": null, "port": d.port, "protocol": d.protocol,
        "created_at": d.created_at, "updated_at": d.updated_at,
    })
}

pub fn route_json(b: &str, r: &Route, domain: &Domain, dests: &[Destination]) -> Value {
    json!({
        "guid": r.guid, "created_at": r.created_at, "updated_at": r.updated_at,
        "protocol": "http", "host": r.host, "path": r.path, "port": null,
        "url": route_url(&r.host, &domain.name, &r.path),
        "destinations": dests.iter().map(destination_json).collect::<Vec<_>>(),
        "metadata": metadata(),
        "relationships": {
            "space": {"data": {"guid": r.space_guid}},
            "domain": {"data": {"guid": r.domain_guid}},
        },
        "links": {
            "self": link(b, &format!("/v3/routes/{}", r.guid)),
            "space": link(b, &format!("/v3/spaces/{}", r.space_guid)),
            "destinations": link(b, &format!("/v3/routes/{}/destinations", r.guid)),
            "domain": link(b, &format!("/v3/domains/{}", r.domain_guid)),
        },
    })
}

pub fn destinations_json(b: &str, route_guid: &str, dests: &[Destination]) -> Value {
    json!({
        "destinations": dests.iter().map(destination_json).collect::<Vec<_>>(),
        "links": {
            "self": link(b, &format!("/v3/routes/{route_guid}/destinations")),
            "route": link(b, &format!("/v3/routes/{route_guid}")),
        },
    })
}

/// A deployment as Cloud Controller shows it: `state`, and `status` with
/// `value` ACTIVE (deploying, paused, canceling) or FINALIZED and the
/// `reason`.
pub fn deployment_json(b: &str, d: &Deployment, revision: Option<&Revision>) -> Value {
    let path = format!("/v3/deployments/{}", d.guid);
    let value = match d.state {
        DeploymentState::Deployed | DeploymentState::Canceled => "FINALIZED",
        _ => "ACTIVE",
    };
    let mut status = json!({
        "value": value, "reason": d.status_reason,
        "details": {"last_successful_healthcheck": d.updated_at, "last_status_change": d.updated_at},
    });
    if d.strategy == "canary" {
        let current = if d.continued || d.state == DeploymentState::Deployed {
            1
        } else {
            0
        };
        status["canary"] = json!({"steps": {"current": current, "total": 1}});
    }
    json!({
        "guid": d.guid, "created_at": d.created_at, "updated_at": d.updated_at,
        "state": d.state, "status": status, "strategy": d.strategy,
        "options": {"max_in_flight": d.max_in_flight},
        "droplet": {"guid": d.droplet_guid},
        "previous_droplet": {"guid": d.previous_droplet_guid},
        "new_processes": [{"guid": d.process_guid, "type": "web"}],
        "revision": revision.map(|r| json!({"guid": r.guid, "version": r.version})),
        "relationships": {"app": {"data": {"guid": d.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "app": link(b, &format!("/v3/apps/{}", d.app_guid)),
            "cancel": link_method(b, &format!("{path}/actions/cancel"), "POST"),
            "continue": link_method(b, &format!("{path}/actions/continue"), "POST"),
        },
    })
}

/// A revision: the droplet and environment one deploy ran with.
pub fn revision_json(b: &str, r: &Revision, process_types: Option<&Droplet>) -> Value {
    let path = format!("/v3/revisions/{}", r.guid);
    let processes: serde_json::Map<String, Value> = process_types
        .map(|d| {
            d.process_types
                .iter()
                .map(|(t, c)| (t.clone(), json!({"command": c})))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "guid": r.guid, "created_at": r.created_at, "updated_at": r.updated_at,
        "version": r.version, "droplet": {"guid": r.droplet_guid},
        "processes": processes, "sidecars": [], "description": r.description,
        "deployable": process_types.is_some_and(|d| d.state == DropletState::Staged),
        "relationships": {"app": {"data": {"guid": r.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "app": link(b, &format!("/v3/apps/{}", r.app_guid)),
            "environment_variables": link(b, &format!("{path}/environment_variables")),
        },
    })
}

pub fn revision_env_json(b: &str, r: &Revision) -> Value {
    json!({
        "var": r.environment_variables,
        "links": {
            "self": link(b, &format!("/v3/revisions/{}/environment_variables", r.guid)),
            "revision": link(b, &format!("/v3/revisions/{}", r.guid)),
            "app": link(b, &format!("/v3/apps/{}", r.app_guid)),
        },
    })
}

/// A task (Cloud Controller's `TaskPresenter`); `command` only for those
/// who may read the app's secrets (every Kiln user today).
pub fn task_json(b: &str, t: &Task) -> Value {
    let path = format!("/v3/tasks/{}", t.guid);
    json!({
        "guid": t.guid, "created_at": t.created_at, "updated_at": t.updated_at,
        "sequence_id": t.sequence_id, "name": t.name, "command": t.command, "user": "vcap",
        "state": t.state, "memory_in_mb": t.memory_in_mb, "disk_in_mb": t.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": -1,
        "result": {"failure_reason": t.failure_reason},
        "droplet_guid": t.droplet_guid,
        "relationships": {"app": {"data": {"guid": t.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "app": link(b, &format!("/v3/apps/{}", t.app_guid)),
            "cancel": link_method(b, &format!("{path}/actions/cancel"), "POST"),
            "droplet": link(b, &format!("/v3/droplets/{}", t.droplet_guid)),
        },
    })
}

/// An audit event (Cloud Controller's `EventPresenter`): actor, target,
/// space and organization are null when unknown.
pub fn audit_event_json(b: &str, e: &AuditEvent) -> Value {
    let party = |guid: &Option<String>, kind: &Option<String>, name: &Option<String>| {
        guid.as_ref()
            .map(|g| json!({"guid": g, "type": kind, "name": name}))
    };
    json!({
        "guid": e.guid, "created_at": e.created_at, "updated_at": e.updated_at,
        "type": e.r#type,
        "actor": party(&e.actor_guid, &e.actor_type, &e.actor_name),
        "target": party(&e.target_guid, &e.target_type, &e.target_name),
        "data": e.data,
        "space": e.space_guid.as_ref().map(|g| json!({"guid": g})),
        "organization": e.organization_guid.as_ref().map(|g| json!({"guid": g})),
        "links": {"self": link(b, &format!("/v3/audit_events/{}", e.guid))},
    })
}

/// UAA's SCIM user document.
pub fn scim_user_json(u: &User) -> Value {
    json!({
        "id": u.guid,
        "externalId": "",
        "meta": {"version": u.token_generation, "created": u.created_at, "lastModified": u.updated_at},
        "userName": u.username,
        "name": {},
        "emails": [{"value": u.email, "primary": false}],
        "groups": u.scopes.split_whitespace().map(|s| json!({"value": s, "display": s, "type": "DIRECT"})).collect::<Vec<_>>(),
        "approvals": [],
        "active": true,
        "verified": true,
        "origin": u.origin,
        "zoneId": "uaa",
        "passwordLastModified": u.updated_at,
        "schemas": ["urn:scim:schemas:core:1.0"],
    })
}

/// A Cloud Controller user; its name and origin come from UAA when UAA
/// knows the guid (CC shows the guid as the name otherwise).
pub fn user_json(
    b: &str,
    guid: &str,
    created_at: &str,
    updated_at: &str,
    uaa: Option<&User>,
) -> Value {
    json!({
        "guid": guid,
        "created_at": created_at,
        "updated_at": updated_at,
        "username": uaa.map(|u| u.username.as_str()),
        "presentation_name": uaa.map_or(guid, |u| u.username.as_str()),
        "origin": uaa.map(|u| u.origin.as_str()),
        "metadata": metadata(),
        "links": {"self": link(b, &format!("/v3/users/{guid}"))},
    })
}

pub fn role_json(b: &str, r: &Role) -> Value {
    let data = |g: Option<&str>| g.map_or(Value::Null, |g| json!({"guid": g}));
    let (org, space) = match &r.space_guid {
        Some(s) => (None, Some(s.as_str())),
        None => (Some(r.organization_guid.as_str()), None),
    };
    let mut links = json!({
        "self": link(b, &format!("/v3/roles/{}", r.guid)),
        "user": link(b, &format!("/v3/users/{}", r.user_guid)),
    });
    match (org, space) {
        (Some(o), _) => links["organization"] = link(b, &format!("/v3/organizations/{o}")),
        (_, Some(s)) => links["space"] = link(b, &format!("/v3/spaces/{s}")),
        _ => {}
    }
    json!({
        "guid": r.guid,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "type": r.r#type,
        "relationships": {
            "user": {"data": {"guid": r.user_guid}},
            "organization": {"data": data(org)},
            "space": {"data": data(space)},
        },
        "links": links,
    })
}

// Services: user-provided instances and their credential bindings (Cloud
// Controller's `ServiceInstancePresenter`, `ServiceCredentialBindingPresenter`
// and its details presenter). Credentials never appear here but in
// `binding_details_json`.

/// A user-provided instance's last operation: its create or update, which
/// succeeded at once.
fn succeeded_operation(kind: &str, created_at: &str, updated_at: &str) -> Value {
    json!({
        "type": kind, "state": "succeeded", "description": "Operation succeeded",
        "created_at": created_at, "updated_at": updated_at,
    })
}

pub fn service_instance_json(b: &str, si: &ServiceInstance) -> Value {
    let path = format!("/v3/service_instances/{}", si.guid);
    json!({
        "guid": si.guid, "created_at": si.created_at, "updated_at": si.updated_at,
        "name": si.name, "tags": si.tags,
        "last_operation": succeeded_operation(&si.last_operation_type, &si.created_at, &si.updated_at),
        "type": si.r#type,
        "syslog_drain_url": si.syslog_drain_url,
        "route_service_url": si.route_service_url,
        "relationships": {"space": {"data": {"guid": si.space_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "space": link(b, &format!("/v3/spaces/{}", si.space_guid)),
            "service_credential_bindings": link(b, &format!("/v3/service_credential_bindings?service_instance_guids={}", si.guid)),
            "service_route_bindings": link(b, &format!("/v3/service_route_bindings?service_instance_guids={}", si.guid)),
            "credentials": link(b, &format!("{path}/credentials")),
        },
    })
}

pub fn service_binding_json(b: &str, sb: &ServiceBinding) -> Value {
    let path = format!("/v3/service_credential_bindings/{}", sb.guid);
    json!({
        "guid": sb.guid, "created_at": sb.created_at, "updated_at": sb.updated_at,
        "name": sb.name, "type": sb.r#type,
        "last_operation": {
            "type": "create", "state": "succeeded", "description": "",
            "created_at": sb.created_at, "updated_at": sb.updated_at,
        },
        "metadata": metadata(),
        "relationships": {
            "service_instance": {"data": {"guid": sb.service_instance_guid}},
            "app": {"data": {"guid": sb.app_guid}},
        },
        "links": {
            "self": link(b, &path),
            "details": link(b, &format!("{path}/details")),
            "service_instance": link(b, &format!("/v3/service_instances/{}", sb.service_instance_guid)),
            "app": link(b, &format!("/v3/apps/{}", sb.app_guid)),
        },
    })
}

/// `GET /v3/service_credential_bindings/:guid/details`.
pub fn binding_details_json(sb: &ServiceBinding) -> Value {
    let mut details = json!({"credentials": sb.credentials});
    if let Some(url) = &sb.syslog_drain_url {
        details["syslog_drain_url"] = json!(url);
    }
    details["volume_mounts"] = json!([]);
    details
}

/// An organization quota (Cloud Controller's `OrganizationQuotaPresenter`):
/// its limits by group and the orgs that have it.
pub fn org_quota_json(b: &str, q: &OrganizationQuota, orgs: &[String]) -> Value {
    let mut doc = json!({
        "guid": q.guid, "created_at": q.created_at, "updated_at": q.updated_at, "name": q.name,
    });
    for group in ["apps", "services", "routes", "domains"] {
        doc[group] = q.limits[group].clone();
    }
    doc["relationships"] = json!({"organizations": {"data": orgs.iter().map(|g| json!({"guid": g})).collect::<Vec<_>>()}});
    doc["links"] = json!({"self": link(b, &format!("/v3/organization_quotas/{}", q.guid))});
    doc
}

/// A space quota (Cloud Controller's `SpaceQuotaPresenter`): its limits
/// by group, its org and the spaces that have it.
pub fn space_quota_json(b: &str, q: &SpaceQuota, spaces: &[String]) -> Value {
    let mut doc = json!({
        "guid": q.guid, "created_at": q.created_at, "updated_at": q.updated_at, "name": q.name,
    });
    for group in ["apps", "services", "routes"] {
        doc[group] = q.limits[group].clone();
    }
    doc["relationships"] = json!({
        "organization": {"data": {"guid": q.organization_guid}},
        "spaces": {"data": spaces.iter().map(|g| json!({"guid": g})).collect::<Vec<_>>()},
    });
    doc["links"] = json!({
        "self": link(b, &format!("/v3/space_quotas/{}", q.guid)),
        "organization": link(b, &format!("/v3/organizations/{}", q.organization_guid)),
    });
    doc
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn usage_is_cloud_controllers_shape_from_the_gauge() {
        let metric = ContainerMetric {
            timestamp: 1_700_000_000_500_000_000,
            source_id: "app".into(),
            process_id: "p".into(),
            instance_id: "0".into(),
            instance_guid: "i".into(),
            cpu_percentage: 25.0,
            memory_bytes: 1_000_000,
            disk_bytes: 2_000_000,
            memory_bytes_quota: 0,
            disk_bytes_quota: 0,
        };
        let u = usage_json(Some(&metric), "now");
        assert_eq!(u["cpu"], 0.25);
        assert_eq!(u["mem"], 1_000_000);
        assert_eq!(u["disk"], 2_000_000);
        assert_eq!(u["time"], "2023-11-14T22:13:20Z");
        assert_eq!(usage_json(None, "now")["mem"], 0);
    }

    #[test]
    fn usage_is_only_the_running_instances_own() {
        let metric = |index: &str, guid: &str| ContainerMetric {
            timestamp: 1,
            source_id: "app".into(),
            process_id: "p".into(),
            instance_id: index.into(),
            instance_guid: guid.into(),
            cpu_percentage: 0.0,
            memory_bytes: 7,
            disk_bytes: 0,
            memory_bytes_quota: 0,
            disk_bytes_quota: 0,
        };
        let metrics = [metric("0", "old"), metric("0", "new"), metric("1", "new")];
        let actual = |state: ActualLrpState| ActualLrp {
            key: kiln_model::bbs::ActualLrpKey {
                process_guid: "p".into(),
                index: 0,
                domain: "cf-apps".into(),
            },
            instance_key: Some(kiln_model::bbs::ActualLrpInstanceKey {
                instance_guid: "new".into(),
                cell_id: "cell".into(),
            }),
            net_info: None,
            state,
            crash_count: 0,
            crash_reason: String::new(),
            placement_error: String::new(),
            since: 0,
            presence: Default::default(),
        };
        let found = instance_metric(&metrics, &actual(ActualLrpState::Running), 0).unwrap();
        assert_eq!(
            (found.instance_id.as_str(), found.instance_guid.as_str()),
            ("0", "new")
        );
        assert!(instance_metric(&metrics, &actual(ActualLrpState::Crashed), 0).is_none());
        assert!(instance_metric(&metrics, &actual(ActualLrpState::Running), 2).is_none());
    }
}
