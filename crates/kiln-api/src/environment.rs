//! The one place an app's environment is built: `VCAP_APPLICATION`,
//! `VCAP_SERVICES`, the environment variable groups and the app's own
//! variables, for staging Tasks, DesiredLrps and `GET /v3/apps/:guid/env`
//! alike (Cloud Controller's `environment_variable_group`, `vcap_services`
//! and `app_model_environment` helpers).

use crate::context::Ctx;
use crate::db::{
    self, App, Destination, Domain, Organization, Process, Route, ServiceBinding, ServiceInstance,
    Space,
};
use crate::error::ApiResult;
use crate::presenters::route_url;
use kiln_model::bbs::EnvVar;
use kiln_model::bbs::HttpRoute;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `VCAP_SERVICES`: the app's service bindings by label, in the order they
/// were made (CC's `SystemEnvPresenter`). Kiln's instances are all
/// user-provided, so the one label is `user-provided`; each entry is CC's
/// binding hash over its instance hash (the binding's name, when it has
/// one, is the entry's `name`). No bindings: `{}`.
pub async fn vcap_services(ctx: &Ctx, app: &App) -> ApiResult<Value> {
    let bindings = db::where_eq::<ServiceBinding>(&ctx.pool, "app_guid", &app.guid).await?;
    if bindings.is_empty() {
        return Ok(json!({}));
    }
    let guids = bindings
        .iter()
        .map(|b| b.service_instance_guid.clone())
        .collect();
    let instances = db::list::<ServiceInstance>(&ctx.pool, &[db::Cond::In("guid", guids)]).await?;
    let entries: Vec<Value> = bindings
        .iter()
        .filter_map(|b| {
            let si = instances
                .iter()
                .find(|i| i.guid == b.service_instance_guid)?;
            Some(service_entry(b, si))
        })
        .collect();
    let mut by_label = serde_json::Map::new();
    by_label.insert(USER_PROVIDED.into(), Value::Array(entries));
    Ok(Value::Object(by_label))
}

/// The label CC gives every user-provided instance.
const USER_PROVIDED: &str = "user-provided";

fn service_entry(b: &ServiceBinding, si: &ServiceInstance) -> Value {
    json!({
        "label": USER_PROVIDED,
        "name": b.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| si.name.clone()),
        "tags": si.tags,
        "instance_guid": si.guid,
        "instance_name": si.name,
        "binding_guid": b.guid,
        "binding_name": b.name,
        "credentials": b.credentials,
        "syslog_drain_url": b.syslog_drain_url,
        "volume_mounts": [],
    })
}

/// The running and staging environment variable groups: platform-wide
/// variables every app gets, set by an admin.
pub async fn running_group(ctx: &Ctx) -> ApiResult<BTreeMap<String, String>> {
    Ok(db::settings::env_group(&ctx.pool, "running").await?.vars)
}

pub async fn staging_group(ctx: &Ctx) -> ApiResult<BTreeMap<String, String>> {
    Ok(db::settings::env_group(&ctx.pool, "staging").await?.vars)
}

/// `host.domain[/path]` of the routes mapped to an app (optionally to one
/// of its process types).
pub async fn app_uris(
    ctx: &Ctx,
    app_guid: &str,
    process_type: Option<&str>,
) -> ApiResult<Vec<String>> {
    Ok(app_routes(ctx, app_guid, process_type)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// The routes mapped to an app (optionally to one of its process types) as
/// the router takes them: the host (`host.domain`) and the path apart.
/// Routes on internal domains too (CC lists them in `application_uris`).
pub async fn app_routes(
    ctx: &Ctx,
    app_guid: &str,
    process_type: Option<&str>,
) -> ApiResult<Vec<HttpRoute>> {
    let all = mapped_routes(ctx, app_guid, process_type).await?;
    Ok(all.into_iter().map(|(r, _)| r).collect())
}

/// The routes the router serves for an app's process type: not those on
/// an internal domain, which CF registers only for container-to-container
/// DNS (CC's RoutingInfo puts them under `internal_routes`, apart from the
/// Gorouter's `http_routes`).
pub async fn router_routes(
    ctx: &Ctx,
    app_guid: &str,
    process_type: &str,
) -> ApiResult<Vec<HttpRoute>> {
    let all = mapped_routes(ctx, app_guid, Some(process_type)).await?;
    Ok(all
        .into_iter()
        .filter(|(_, internal)| !internal)
        .map(|(r, _)| r)
        .collect())
}

/// Each mapped route, and whether its domain is internal.
async fn mapped_routes(
    ctx: &Ctx,
    app_guid: &str,
    process_type: Option<&str>,
) -> ApiResult<Vec<(HttpRoute, bool)>> {
    let dests = db::where_eq::<Destination>(&ctx.pool, "app_guid", app_guid).await?;
    let route_guids: Vec<String> = dests
        .iter()
        .filter(|d| process_type.is_none_or(|t| d.process_type == t))
        .map(|d| d.route_guid.clone())
        .collect();
    if route_guids.is_empty() {
        return Ok(Vec::new());
    }
    let routes = db::list::<Route>(&ctx.pool, &[db::Cond::In("guid", route_guids)]).await?;
    let domains = db::all::<Domain>(&ctx.pool).await?;
    let mut mapped: Vec<(HttpRoute, bool)> = routes
        .iter()
        .filter_map(|r| {
            let domain = domains.iter().find(|d| d.guid == r.domain_guid)?;
            let route = HttpRoute {
                host: route_url(&r.host, &domain.name, ""),
                path: r.path.clone(),
            };
            Some((route, domain.internal))
        })
        .collect();
    mapped.dedup();
    Ok(mapped)
}

/// The app-level VCAP_APPLICATION (CC's AppModel variant: no process
/// fields), with the URIs of `process_type`'s routes, or all the app's.
pub async fn vcap_application(
    ctx: &Ctx,
    app: &App,
    process_type: Option<&str>,
) -> ApiResult<Value> {
    let space = db::get::<Space>(&ctx.pool, &app.space_guid).await?;
    let org = db::get::<Organization>(&ctx.pool, &space.organization_guid).await?;
    let uris = app_uris(ctx, &app.guid, process_type).await?;
    Ok(json!({
        "cf_api": ctx.base,
        "limits": {"fds": 16384},
        "application_name": app.name,
        "application_uris": uris,
        "name": app.name,
        "space_name": space.name,
        "space_id": space.guid,
        "organization_id": org.guid,
        "organization_name": org.name,
        "uris": uris,
        "users": null,
        "application_id": app.guid,
    }))
}

/// The platform's variables, then the group's and the app's: an app
/// variable overrides the group's (CC's precedence). Later variables win in
/// the container, so a user variable may replace `LANG` as in CF, but never
/// a `VCAP_` one (refused on input too; this guards rows older than that).
fn with_app_vars(mut env: Vec<EnvVar>, app: &App, group: BTreeMap<String, String>) -> Vec<EnvVar> {
    let mut user = group;
    user.extend(app.environment_variables.clone());
    env.extend(
        user.iter()
            .filter(|(k, _)| !k.to_ascii_uppercase().starts_with("VCAP_"))
            .map(|(k, v)| EnvVar::new(k, v)),
    );
    env
}

/// The environment of a staging Task.
pub async fn staging_env(
    ctx: &Ctx,
    app: &App,
    stack: &str,
    memory_mb: i64,
    disk_mb: i64,
) -> ApiResult<Vec<EnvVar>> {
    let mut vcap = vcap_application(ctx, app, None).await?;
    vcap["limits"] = json!({"fds": 16384, "mem": memory_mb, "disk": disk_mb});
    // As Cloud Controller's staging environment: a version of its own,
    // under both names buildpacks read.
    let version = crate::util::new_guid();
    vcap["version"] = json!(version);
    vcap["application_version"] = json!(version);
    let env = vec![
        EnvVar::new("CF_STACK", stack),
        EnvVar::new("VCAP_APPLICATION", vcap.to_string()),
        EnvVar::new("VCAP_SERVICES", vcap_services(ctx, app).await?.to_string()),
        EnvVar::new("MEMORY_LIMIT", format!("{memory_mb}m")),
        EnvVar::new("LANG", "en_US.UTF-8"),
    ];
    Ok(with_app_vars(env, app, staging_group(ctx).await?))
}

/// The environment of one process's instances: the app-level
/// VCAP_APPLICATION (as `/v3/apps/:guid/env` shows it) narrowed to this
/// process's routes, plus what an instance also gets.
pub async fn running_env(ctx: &Ctx, app: &App, p: &Process) -> ApiResult<Vec<EnvVar>> {
    let mut vcap = vcap_application(ctx, app, Some(&p.r#type)).await?;
    vcap["limits"] = json!({"fds": 16384, "mem": p.memory_in_mb, "disk": p.disk_in_mb});
    vcap["process_id"] = json!(p.guid);
    vcap["process_type"] = json!(p.r#type);
    vcap["version"] = json!(p.version);
    vcap["application_version"] = json!(p.version);
    let env = vec![
        EnvVar::new("VCAP_APPLICATION", vcap.to_string()),
        EnvVar::new("MEMORY_LIMIT", format!("{}m", p.memory_in_mb)),
        EnvVar::new("VCAP_SERVICES", vcap_services(ctx, app).await?.to_string()),
        EnvVar::new("LANG", "en_US.UTF-8"),
        EnvVar::new("VCAP_APP_HOST", "0.0.0.0"),
    ];
    Ok(with_app_vars(env, app, running_group(ctx).await?))
}

/// `GET /v3/apps/:guid/env`.
pub async fn env_document(ctx: &Ctx, app: &App) -> ApiResult<Value> {
    Ok(json!({
        "environment_variables": app.environment_variables,
        "staging_env_json": staging_group(ctx).await?,
        "running_env_json": running_group(ctx).await?,
        "system_env_json": {"VCAP_SERVICES": vcap_services(ctx, app).await?},
        "application_env_json": {"VCAP_APPLICATION": vcap_application(ctx, app, None).await?},
    }))
}
