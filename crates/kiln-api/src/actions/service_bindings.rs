//! App credential bindings to user-provided instances (Cloud Controller's
//! `ServiceCredentialBindingAppCreate` and `ServiceCredentialBindingDelete`):
//! made at once (201, no job) with a copy of the instance's credentials and
//! syslog drain, CC's rules and words (same space, one binding per app and
//! instance, binding names unique per app), and their audit events. A
//! binding reaches the app's environment when it next stages or starts.

use crate::audit::{self, Event, Target, types};
use crate::context::Ctx;
use crate::db::{self, App, ServiceBinding, ServiceInstance};
use crate::error::{ApiError, ApiResult};
use crate::messages::services::CreateBinding;
use crate::permissions::Permissions;
use crate::util;
use serde_json::json;

fn target(b_guid: &str, name: Option<&str>) -> Target {
    Target {
        guid: b_guid.into(),
        kind: "service_binding",
        name: name.unwrap_or_default().into(),
    }
}

/// The instance a binding names, if the caller sees it (CC cannot tell a
/// hidden instance from a missing one).
async fn visible_instance(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
) -> ApiResult<ServiceInstance> {
    db::find::<ServiceInstance>(&ctx.pool, guid)
        .await?
        .filter(|si| perms.can_read_space(&si.space_guid))
        .ok_or_else(|| {
            ApiError::unprocessable(format!("The service instance could not be found: '{guid}'"))
        })
}

/// CC's checks against the bindings the app has.
async fn check_unique(
    ctx: &Ctx,
    app: &App,
    si: &ServiceInstance,
    name: Option<&str>,
) -> ApiResult<()> {
    let existing = db::where_eq::<ServiceBinding>(&ctx.pool, "app_guid", &app.guid).await?;
    if existing.iter().any(|b| b.service_instance_guid == si.guid) {
        return Err(ApiError::unprocessable(
            "The app is already bound to the service instance",
        ));
    }
    if let Some(name) = name
        && existing.iter().any(|b| b.name.as_deref() == Some(name))
    {
        return Err(ApiError::unprocessable(format!(
            "The binding name is invalid. Binding names must be unique for a given service instance and app. The app already has a binding with name '{name}'."
        )));
    }
    Ok(())
}

/// `POST /v3/service_credential_bindings` with `type: app` (the app was
/// checked: the caller develops in its space).
pub async fn create(
    ctx: &Ctx,
    perms: &Permissions,
    msg: CreateBinding,
) -> ApiResult<ServiceBinding> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let app_guid = msg.validate()?;
    let si = visible_instance(ctx, perms, &msg.relationships.service_instance.data.guid).await?;
    if msg.parameters.is_some() {
        return Err(ApiError::unprocessable(
            "Binding parameters are not supported for user-provided service instances",
        ));
    }
    let app = db::find::<App>(&ctx.pool, &app_guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(format!("The app could not be found: '{app_guid}'"))
        })?;
    if app.space_guid != si.space_guid {
        return Err(ApiError::unprocessable(
            "The service instance and the app are in different spaces",
        ));
    }
    let name = msg.name.as_deref().filter(|n| !n.is_empty());
    check_unique(ctx, &app, &si, name).await?;
    let guid = util::new_guid();
    let now = util::now();
    let event = audit::in_space_event(
        &ctx.pool,
        &si.space_guid,
        types::SERVICE_BINDING_CREATE,
        target(&guid, name),
        json!({"request": {
            "type": "app", "name": name,
            "relationships": {
                "app": {"data": {"guid": app.guid}},
                "service_instance": {"data": {"guid": si.guid}},
            },
        }}),
    )
    .await?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<ServiceBinding>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", name.into()),
            ("type", "app".into()),
            ("app_guid", app.guid.as_str().into()),
            ("service_instance_guid", si.guid.as_str().into()),
            ("credentials", db::json_text(&si.credentials)),
            ("syslog_drain_url", si.syslog_drain_url.clone().into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    // A concurrent bind of the same pair loses here.
    db::unique_or_taken(inserted, || {
        "The app is already bound to the service instance".into()
    })?;
    audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    super::metadata::apply(ctx, &guid, &meta).await?;
    tracing::info!(binding_guid = %guid, app_guid = %app.guid, service_instance_guid = %si.guid, "service binding created");
    db::get::<ServiceBinding>(&ctx.pool, &guid).await
}

/// The `audit.service_binding.delete` of a binding.
pub async fn delete_event(ctx: &Ctx, b: &ServiceBinding) -> ApiResult<Event> {
    let app = db::get::<App>(&ctx.pool, &b.app_guid).await?;
    audit::in_space_event(
        &ctx.pool,
        &app.space_guid,
        types::SERVICE_BINDING_DELETE,
        target(&b.guid, b.name.as_deref()),
        json!({"request": {
            "app_guid": b.app_guid, "route_guid": null,
            "service_instance_guid": b.service_instance_guid,
        }}),
    )
    .await
}

/// `DELETE /v3/service_credential_bindings/:guid` (204: a user-provided
/// binding goes at once).
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let b = db::get::<ServiceBinding>(&ctx.pool, guid).await?;
    let event = delete_event(ctx, &b).await?;
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<ServiceBinding>(&mut *tx, "guid", guid).await?;
    audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    tracing::info!(binding_guid = guid, "service binding deleted");
    Ok(())
}
