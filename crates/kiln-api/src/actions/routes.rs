//! Route actions: create, delete, and mapping app processes to routes
//! (destinations). A change to destinations updates the routes of the
//! affected DesiredLrps.

use crate::audit;
use crate::context::Ctx;
use crate::db::{self, App, Destination, Domain, Route, Space};
use crate::diego;
use crate::error::{ApiError, ApiResult};
use crate::messages::{AddDestinations, CreateRoute};
use crate::util;
use serde_json::{Value, json};

/// Creates a route (`POST /v3/routes`, and apply_manifest); returns it.
pub async fn create(ctx: &Ctx, msg: CreateRoute) -> ApiResult<Route> {
    let _ = &msg.options;
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let space = db::find::<Space>(&ctx.pool, &msg.relationships.space.data.guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    // A private domain the space's org may not use is answered as one that
    // does not exist, so its name does not leak to other orgs.
    let invalid_domain = || {
        ApiError::unprocessable(
            "Invalid domain. Ensure that the domain exists and you have access to it.",
        )
    };
    let domain = db::find::<Domain>(&ctx.pool, &msg.relationships.domain.data.guid)
        .await?
        .ok_or_else(invalid_domain)?;
    if !super::domains::usable_by(ctx, &domain, &space.organization_guid).await? {
        return Err(invalid_domain());
    }
    let (host, path) = msg.validate(domain.owning_organization_guid.is_none())?;
    super::quotas::check_route(ctx, &space).await?;
    let guid = util::new_guid();
    let now = util::now();
    let inserted = db::insert::<Route>(
        &ctx.pool,
        vec![
            ("guid", guid.as_str().into()),
            ("host", host.as_str().into()),
            ("path", path.into()),
            ("domain_guid", domain.guid.as_str().into()),
            ("space_guid", space.guid.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || {
        format!(
            "Route already exists with host '{host}' for domain '{}'.",
            domain.name
        )
    })?;
    super::metadata::apply(ctx, &guid, &meta).await?;
    db::get::<Route>(&ctx.pool, &guid).await
}

/// Deletes a route and its destinations.
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    db::get::<Route>(&ctx.pool, guid).await?;
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<Destination>(&mut *tx, "route_guid", guid).await?;
    db::delete_where::<Route>(&mut *tx, "guid", guid).await?;
    tx.commit().await?;
    diego::sync::reconcile(ctx).await
}

/// A map-route or unmap-route event's data (CC's `record_map_route`).
fn destination_data(route: &str, dguid: &str, ptype: &str, port: i64, protocol: &str) -> Value {
    json!({
        "route_guid": route, "app_port": port, "route_mapping_guid": dguid,
        "destination_guid": dguid, "process_type": ptype, "weight": null, "protocol": protocol,
    })
}

/// Maps app processes to a route and updates their DesiredLrps' routes
/// (`POST /v3/routes/:guid/destinations`, and apply_manifest).
pub async fn add_destinations(ctx: &Ctx, guid: &str, msg: AddDestinations) -> ApiResult<()> {
    let route = db::get::<Route>(&ctx.pool, guid).await?;
    let mut touched = Vec::new();
    for d in msg.destinations {
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
        let dguid = util::new_guid();
        let data = destination_data(guid, &dguid, &ptype, port, &protocol);
        let event = audit::app_event(&ctx.pool, &app, audit::types::APP_MAP_ROUTE, data).await?;
        let mut tx = ctx.pool.begin().await?;
        db::insert::<Destination>(
            &mut *tx,
            vec![
                ("guid", dguid.as_str().into()),
                ("route_guid", guid.into()),
                ("app_guid", app.guid.as_str().into()),
                ("process_type", ptype.into()),
                ("port", port.into()),
                ("protocol", protocol.into()),
                ("created_at", now.as_str().into()),
                ("updated_at", now.into()),
            ],
        )
        .await?;
        audit::record(&mut *tx, event).await?;
        tx.commit().await?;
        touched.push(app.guid);
    }
    for app_guid in touched {
        diego::sync::sync_app(ctx, &app_guid).await?;
    }
    Ok(())
}

/// Unmaps one destination from a route and updates the app's DesiredLrps
/// (`DELETE /v3/routes/:guid/destinations/:guid`, and apply_manifest).
pub async fn remove_destination(ctx: &Ctx, guid: &str, dguid: &str) -> ApiResult<()> {
    db::get::<Route>(&ctx.pool, guid).await?;
    let d = db::find::<Destination>(&ctx.pool, dguid)
        .await?
        .filter(|d| d.route_guid == guid)
        .ok_or_else(|| ApiError::not_found("Destination"))?;
    let event = match db::find::<App>(&ctx.pool, &d.app_guid).await? {
        Some(app) => {
            let data = destination_data(guid, dguid, &d.process_type, d.port, &d.protocol);
            Some(audit::app_event(&ctx.pool, &app, audit::types::APP_UNMAP_ROUTE, data).await?)
        }
        None => None,
    };
    let mut tx = ctx.pool.begin().await?;
    if let Some(event) = event {
        audit::record(&mut *tx, event).await?;
    }
    db::delete_where::<Destination>(&mut *tx, "guid", dguid).await?;
    tx.commit().await?;
    diego::sync::sync_app(ctx, &d.app_guid).await
}
