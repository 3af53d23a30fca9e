//! apply_manifest (`cf push`'s first call): apps are found or created
//! synchronously (as Cloud Controller does before answering 202), then each
//! app's manifest is applied through the same actions the app, process and
//! route endpoints use, so the BBS sees exactly what those would do. The job
//! is recorded finished. Service instances a manifest names are looked up
//! before anything changes, so an unknown one fails the request whole.

use super::{apps, jobs, processes, routes, service_bindings, sidecars};
use crate::context::Ctx;
use crate::db::{self, App, Destination, Domain, Route, ServiceBinding, ServiceInstance, Space};
use crate::error::{ApiError, ApiResult};
use crate::messages::manifest::{AppManifest, ManifestService, random_words, split_route};
use crate::messages::services::{BindingRelationships, CreateBinding};
use crate::messages::{
    AddDestinations, CreateApp, CreateRoute, NewDestination, PatchEnv, RouteRelationships,
    SpaceRelationship, ToOne, UpdateApp,
};
use crate::permissions::Permissions;
use crate::presenters::route_url;
use serde_json::{Value, json};

/// Applies a parsed manifest to a space; returns the job guid.
pub async fn apply(
    ctx: &Ctx,
    perms: &Permissions,
    space: &Space,
    manifests: Vec<AppManifest>,
) -> ApiResult<String> {
    let mut instances = Vec::new();
    for m in &manifests {
        instances.push(service_instances(ctx, space, m).await?);
    }
    // Find or create every app first: creation errors are the request's.
    let mut apps = Vec::new();
    for m in &manifests {
        apps.push(find_or_create(ctx, space, m).await?);
    }
    let mut errors = Vec::new();
    for ((m, app), instances) in manifests.iter().zip(&apps).zip(&instances) {
        let applied = match apply_app(ctx, space, app, m).await {
            Ok(()) => bind_services(ctx, perms, app, instances).await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            tracing::warn!(app_guid = %app.guid, error = %e, "applying manifest failed");
            errors.push(job_error(e));
            break;
        }
    }
    jobs::finished(ctx, "space.apply_manifest", "space", &space.guid, &errors).await
}

fn job_error(e: ApiError) -> Value {
    match e {
        ApiError::Cf {
            code,
            title,
            detail,
            ..
        } => json!({"code": code, "title": title, "detail": detail}),
        other => {
            tracing::error!(error = %other, "apply_manifest failed");
            json!({"code": 10001, "title": "UnknownError", "detail": "An unknown error occurred."})
        }
    }
}

async fn find_or_create(ctx: &Ctx, space: &Space, m: &AppManifest) -> ApiResult<App> {
    let existing =
        db::first_where::<App>(&ctx.pool, &[("space_guid", &space.guid), ("name", &m.name)])
            .await?;
    if let Some(app) = existing {
        return Ok(app);
    }
    let msg = CreateApp {
        name: m.name.clone(),
        relationships: SpaceRelationship {
            space: ToOne::to(&space.guid),
        },
        lifecycle: m.lifecycle(),
        environment_variables: None,
        metadata: None,
    };
    apps::create(ctx, msg).await
}

async fn apply_app(ctx: &Ctx, space: &Space, app: &App, m: &AppManifest) -> ApiResult<()> {
    if let Some(lifecycle) = m.lifecycle() {
        let msg = UpdateApp {
            lifecycle: Some(lifecycle),
            ..UpdateApp::default()
        };
        apps::update(ctx, &app.guid, msg).await?;
    }
    if let Some(env) = &m.env {
        let msg = PatchEnv {
            var: Some(env.clone()),
        };
        apps::merge_env_vars(ctx, &app.guid, msg).await?;
    }
    apply_process(ctx, &app.guid, "web", m).await?;
    for (ptype, p) in &m.other_processes {
        apply_process(ctx, &app.guid, ptype, p).await?;
    }
    // After the processes: a sidecar's memory is checked against theirs.
    for s in &m.sidecars {
        sidecars::apply_manifest(ctx, &app.guid, s.clone()).await?;
    }
    apply_routes(ctx, space, app, m).await
}

/// The space's instances a manifest's `services:` names, checked as
/// `app_apply_manifest.rb` checks them (an unknown name is an error naming
/// it; user-provided instances take no parameters), before anything changes.
async fn service_instances(
    ctx: &Ctx,
    space: &Space,
    m: &AppManifest,
) -> ApiResult<Vec<(ServiceInstance, ManifestService)>> {
    let mut found = Vec::new();
    for s in &m.services {
        let si = db::first_where::<ServiceInstance>(
            &ctx.pool,
            &[("space_guid", &space.guid), ("name", &s.name)],
        )
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "For application '{}': Service instance '{}' not found",
                m.name, s.name
            ))
        })?;
        if s.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(ApiError::unprocessable(format!(
                "For application '{}': Binding parameters are not supported for user-provided service instances",
                m.name
            )));
        }
        found.push((si, s.clone()));
    }
    Ok(found)
}

/// Binds what is not bound yet (an existing binding is left as it is,
/// whatever its name), through the bind endpoint's action.
async fn bind_services(
    ctx: &Ctx,
    perms: &Permissions,
    app: &App,
    instances: &[(ServiceInstance, ManifestService)],
) -> ApiResult<()> {
    let bound = db::where_eq::<ServiceBinding>(&ctx.pool, "app_guid", &app.guid).await?;
    for (si, s) in instances {
        if bound.iter().any(|b| b.service_instance_guid == si.guid) {
            continue;
        }
        let msg = CreateBinding {
            kind: "app".into(),
            name: s.binding_name.clone(),
            relationships: BindingRelationships {
                service_instance: ToOne::to(&si.guid),
                app: Some(ToOne::to(&app.guid)),
            },
            parameters: None,
            strategy: None,
            metadata: None,
        };
        service_bindings::create(ctx, perms, msg).await?;
    }
    Ok(())
}

/// One process's scale, command and health check from the manifest.
async fn apply_process(ctx: &Ctx, app_guid: &str, ptype: &str, m: &AppManifest) -> ApiResult<()> {
    let process = processes::process_of_type(ctx, app_guid, ptype).await?;
    if let Some(scale) = m.scale() {
        processes::scale(ctx, &process, scale).await?;
    }
    if let Some(update) = m.process_update(&process) {
        processes::update(ctx, &process.guid, update).await?;
    }
    Ok(())
}

/// `app_apply_manifest.rb#update_routes`: no-route unmaps all; routes are
/// found or created and mapped; else default/random route when unrouted.
async fn apply_routes(ctx: &Ctx, space: &Space, app: &App, m: &AppManifest) -> ApiResult<()> {
    let mapped = db::where_eq::<Destination>(&ctx.pool, "app_guid", &app.guid).await?;
    if m.no_route {
        for d in mapped {
            routes::remove_destination(ctx, &d.route_guid, &d.guid).await?;
        }
        return Ok(());
    }
    let domains = super::domains::usable_domains(ctx, &space.organization_guid).await?;
    if let Some(wanted) = &m.routes {
        for r in wanted {
            let (host, domain, path) = split_route(r, &domains)?;
            map_route(ctx, space, app, &host, domain, &path).await?;
        }
        return Ok(());
    }
    if mapped.is_empty() && (m.default_route || m.random_route) {
        // The org's default domain: the oldest shared one, else its oldest
        // private one (CC's `Organization#default_domain`).
        let shared = domains
            .iter()
            .find(|d| d.owning_organization_guid.is_none() && !d.internal);
        let domain = shared
            .or(domains.first())
            .ok_or_else(|| ApiError::unprocessable("No default domains available"))?;
        let host = if m.random_route {
            format!("{}-{}", app.name, random_words())
        } else {
            app.name.clone()
        };
        map_route(ctx, space, app, &host.to_ascii_lowercase(), domain, "").await?;
    }
    Ok(())
}

async fn map_route(
    ctx: &Ctx,
    space: &Space,
    app: &App,
    host: &str,
    domain: &Domain,
    path: &str,
) -> ApiResult<()> {
    let existing = db::first_where::<Route>(
        &ctx.pool,
        &[
            ("domain_guid", &domain.guid),
            ("host", host),
            ("path", path),
        ],
    )
    .await?;
    let route_guid = match existing {
        Some(r) if r.space_guid != space.guid => {
            return Err(ApiError::unprocessable(format!(
                "The route '{}' is already in use by another space",
                route_url(host, &domain.name, path)
            )));
        }
        Some(r) => r.guid,
        None => {
            let msg = CreateRoute {
                host: Some(host.to_string()),
                path: Some(path.to_string()),
                port: None,
                relationships: RouteRelationships {
                    space: ToOne::to(&space.guid),
                    domain: ToOne::to(&domain.guid),
                },
                options: None,
                metadata: None,
            };
            routes::create(ctx, msg).await?.guid
        }
    };
    let msg = AddDestinations {
        destinations: vec![NewDestination::web_of(&app.guid)],
    };
    routes::add_destinations(ctx, &route_guid, msg).await
}
