//! Routes and their destinations (which app process a host name reaches).
//! A change to destinations updates the routes of the affected DesiredLrps.

use crate::apps::ToOne;
use crate::catalog::{completed_job, job_location, metadata};
use crate::db::{self, App, Destination, Domain, Route, Space};
use crate::error::{ApiError, ApiResult};
use crate::util::{self, link};
use crate::web::{CfJson, ListParams, paginate};
use crate::{Ctx, Shared};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_model::bbs::HttpRoute;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn url(host: &str, domain: &str, path: &str) -> String {
    if host.is_empty() {
        format!("{domain}{path}")
    } else {
        format!("{host}.{domain}{path}")
    }
}

fn destination_json(d: &Destination) -> Value {
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
        "url": url(&r.host, &domain.name, &r.path),
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

/// Every route with its domain and destinations.
pub async fn routes_with_destinations(
    ctx: &Ctx,
) -> ApiResult<Vec<(Route, Domain, Vec<Destination>)>> {
    let domains = db::all::<Domain>(&ctx.pool).await?;
    let dests = db::all::<Destination>(&ctx.pool).await?;
    Ok(db::all::<Route>(&ctx.pool)
        .await?
        .into_iter()
        .filter_map(|r| {
            let domain = domains.iter().find(|d| d.guid == r.domain_guid)?.clone();
            let mine = dests
                .iter()
                .filter(|d| d.route_guid == r.guid)
                .cloned()
                .collect();
            Some((r, domain, mine))
        })
        .collect())
}

/// Route JSON for routes passing `keep` and the standard list filters.
pub async fn route_jsons(
    ctx: &Ctx,
    keep: impl Fn(&Route, &[Destination]) -> bool,
    params: &ListParams,
) -> ApiResult<Vec<Value>> {
    let app_filter = params.list("app_guids");
    Ok(routes_with_destinations(ctx)
        .await?
        .into_iter()
        .filter(|(r, _, dests)| {
            keep(r, dests)
                && params.matches("hosts", &r.host)
                && params.matches("paths", &r.path)
                && params.matches("guids", &r.guid)
                && params.matches("domain_guids", &r.domain_guid)
                && params.matches("space_guids", &r.space_guid)
                && app_filter
                    .as_ref()
                    .is_none_or(|apps| dests.iter().any(|d| apps.contains(&d.app_guid)))
        })
        .map(|(r, domain, dests)| route_json(&ctx.base, &r, &domain, &dests))
        .collect())
}

/// `host.domain/path` of the routes mapped to an app (optionally one process type).
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

/// The routes mapped to an app (optionally one process type) as the router
/// gets them: host (`host.domain`) and path apart.
pub async fn app_routes(
    ctx: &Ctx,
    app_guid: &str,
    process_type: Option<&str>,
) -> ApiResult<Vec<HttpRoute>> {
    let mut routes: Vec<HttpRoute> = routes_with_destinations(ctx)
        .await?
        .into_iter()
        .filter(|(_, _, dests)| {
            dests
                .iter()
                .any(|d| d.app_guid == app_guid && process_type.is_none_or(|t| d.process_type == t))
        })
        .map(|(r, domain, _)| HttpRoute {
            host: url(&r.host, &domain.name, ""),
            path: r.path,
        })
        .collect();
    routes.dedup();
    Ok(routes)
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = route_jsons(&ctx, |_, _| true, &params).await?;
    Ok(Json(paginate(
        &format!("{}/v3/routes", ctx.base),
        &params,
        items,
    )))
}

async fn one(ctx: &Ctx, guid: &str) -> ApiResult<Value> {
    let r = db::get::<Route>(&ctx.pool, guid).await?;
    let domain = db::get::<Domain>(&ctx.pool, &r.domain_guid).await?;
    let dests = db::where_eq::<Destination>(&ctx.pool, "route_guid", guid).await?;
    Ok(route_json(&ctx.base, &r, &domain, &dests))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(one(&ctx, &guid).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRelationships {
    space: ToOne,
    domain: ToOne,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    relationships: RouteRelationships,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

fn valid_host(host: &str) -> bool {
    host.len() <= 63
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(body): CfJson<CreateRoute>,
) -> ApiResult<Response> {
    let guid = create_route(&ctx, body).await?;
    Ok((StatusCode::CREATED, Json(one(&ctx, &guid).await?)).into_response())
}

/// Creates a route (`POST /v3/routes`, and apply_manifest); returns its guid.
pub async fn create_route(ctx: &Ctx, body: CreateRoute) -> ApiResult<String> {
    let _ = (&body.options, &body.metadata);
    if body.port.is_some() {
        return Err(ApiError::unprocessable(
            "Ports are only supported on TCP domains; Kiln has none",
        ));
    }
    let host = body.host.unwrap_or_default().to_ascii_lowercase();
    // Every Kiln domain is shared, and CC requires a host on shared domains.
    if host.is_empty() {
        return Err(ApiError::unprocessable(
            "Missing host. Routes in shared domains must have a host defined.",
        ));
    }
    if !valid_host(&host) {
        return Err(ApiError::unprocessable(
            "Host must be a valid DNS label of letters, digits and hyphens",
        ));
    }
    let path = body.path.unwrap_or_default();
    if !path.is_empty() && (!path.starts_with('/') || path == "/") {
        return Err(ApiError::unprocessable("Path must begin with /"));
    }
    let space = db::find::<Space>(&ctx.pool, &body.relationships.space.data.guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    let domain = db::find::<Domain>(&ctx.pool, &body.relationships.domain.data.guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Invalid domain. Ensure that the domain exists and you have access to it.",
            )
        })?;
    let guid = util::new_guid();
    let now = util::now();
    let inserted = sqlx::query("INSERT INTO routes (guid, host, path, domain_guid, space_guid, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(&guid)
        .bind(&host)
        .bind(&path)
        .bind(&domain.guid)
        .bind(&space.guid)
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await;
    db::unique_or_taken(inserted, || {
        format!(
            "Route already exists with host '{host}' for domain '{}'.",
            domain.name
        )
    })?;
    Ok(guid)
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    db::get::<Route>(&ctx.pool, &guid).await?;
    sqlx::query("DELETE FROM route_destinations WHERE route_guid = ?")
        .bind(&guid)
        .execute(&ctx.pool)
        .await?;
    sqlx::query("DELETE FROM routes WHERE guid = ?")
        .bind(&guid)
        .execute(&ctx.pool)
        .await?;
    crate::sync::refresh_all_routes(&ctx).await?;
    let job = completed_job(&ctx, "route.delete", "route", &guid).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(http::header::LOCATION, job_location(&ctx, &job))],
    )
        .into_response())
}

async fn destinations_json(ctx: &Ctx, route_guid: &str) -> ApiResult<Value> {
    let dests = db::where_eq::<Destination>(&ctx.pool, "route_guid", route_guid).await?;
    Ok(json!({
        "destinations": dests.iter().map(destination_json).collect::<Vec<_>>(),
        "links": {
            "self": link(&ctx.base, &format!("/v3/routes/{route_guid}/destinations")),
            "route": link(&ctx.base, &format!("/v3/routes/{route_guid}")),
        },
    }))
}

pub async fn destinations(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    db::get::<Route>(&ctx.pool, &guid).await?;
    Ok(Json(destinations_json(&ctx, &guid).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRef {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationApp {
    guid: String,
    #[serde(default)]
    process: Option<ProcessRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDestination {
    app: DestinationApp,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    weight: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDestinations {
    destinations: Vec<NewDestination>,
}

pub async fn add_destinations(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<AddDestinations>,
) -> ApiResult<Json<Value>> {
    insert_destinations(&ctx, &guid, body).await?;
    Ok(Json(destinations_json(&ctx, &guid).await?))
}

/// Maps app processes to a route and updates their DesiredLrps' routes
/// (`POST /v3/routes/:guid/destinations`, and apply_manifest).
pub async fn insert_destinations(ctx: &Ctx, guid: &str, body: AddDestinations) -> ApiResult<()> {
    let route = db::get::<Route>(&ctx.pool, guid).await?;
    let mut touched = Vec::new();
    for d in body.destinations {
        let _ = d.weight;
        let app = db::find::<App>(&ctx.pool, &d.app.guid)
            .await?
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "App with guid '{}' does not exist or you do not have access to it.",
                    d.app.guid
                ))
            })?;
        if app.space_guid != route.space_guid {
            return Err(ApiError::unprocessable(
                "Routes cannot be mapped to destinations in different spaces.",
            ));
        }
        let ptype = d.app.process.map_or_else(|| "web".to_string(), |p| p.kind);
        let protocol = d.protocol.unwrap_or_else(|| "http1".into());
        if protocol != "http1" && protocol != "http2" {
            return Err(ApiError::unprocessable(
                "Destinations protocol must be 'http1' or 'http2'",
            ));
        }
        let port = d.port.unwrap_or(8080);
        let existing = db::where_eq::<Destination>(&ctx.pool, "route_guid", guid).await?;
        if existing
            .iter()
            .any(|e| e.app_guid == app.guid && e.process_type == ptype && e.port == port)
        {
            continue;
        }
        let now = util::now();
        sqlx::query("INSERT INTO route_destinations (guid, route_guid, app_guid, process_type, port, protocol, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(util::new_guid())
            .bind(guid)
            .bind(&app.guid)
            .bind(&ptype)
            .bind(port)
            .bind(&protocol)
            .bind(&now)
            .bind(&now)
            .execute(&ctx.pool)
            .await?;
        touched.push(app.guid);
    }
    for app_guid in touched {
        crate::sync::refresh_routes(ctx, &app_guid).await?;
    }
    Ok(())
}

pub async fn remove_destination(
    State(ctx): State<Shared>,
    Path((guid, dguid)): Path<(String, String)>,
) -> ApiResult<Response> {
    delete_destination(&ctx, &guid, &dguid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Unmaps one destination from a route and updates the app's DesiredLrps
/// (`DELETE /v3/routes/:guid/destinations/:guid`, and apply_manifest).
pub async fn delete_destination(ctx: &Ctx, guid: &str, dguid: &str) -> ApiResult<()> {
    db::get::<Route>(&ctx.pool, guid).await?;
    let d = db::find::<Destination>(&ctx.pool, dguid)
        .await?
        .filter(|d| d.route_guid == guid)
        .ok_or_else(|| ApiError::not_found("Destination"))?;
    sqlx::query("DELETE FROM route_destinations WHERE guid = ?")
        .bind(dguid)
        .execute(&ctx.pool)
        .await?;
    crate::sync::refresh_routes(ctx, &d.app_guid).await
}
