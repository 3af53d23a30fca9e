//! User-provided service instances (Cloud Controller's
//! `ServiceInstanceCreateUserProvided`, `ServiceInstanceUpdateUserProvided`
//! and `ServiceInstanceDelete`): created, changed and deleted at once, each
//! with its audit event in the same transaction; a change of credentials
//! or syslog drain is copied to the instance's bindings, and a delete
//! takes its bindings with it. Managed (brokered) instances need a service
//! broker and plans, which Kiln has not: their creation is refused with
//! CC's answer for a plan that does not exist.

use crate::audit::{self, Target, types};
use crate::context::Ctx;
use crate::db::{self, ServiceBinding, ServiceInstance, Val};
use crate::error::{ApiError, ApiResult};
use crate::messages::services::{
    CreateServiceInstance, InstanceChanges, InstanceRequest, UpdateServiceInstance, UserProvided,
};
use crate::util;
use serde_json::{Value, json};

/// What CC's `type: user-provided` column is.
pub const USER_PROVIDED: &str = "user-provided";

fn name_taken(name: &str) -> String {
    format!("The service instance name is taken: {name}.")
}

fn target(guid: &str, name: &str) -> Target {
    Target {
        guid: guid.into(),
        kind: "user_provided_service_instance",
        name: name.into(),
    }
}

/// The request as an event keeps it (credentials are censored by `audit`).
fn audit_request(up: &UserProvided, space_guid: &str) -> Value {
    json!({"request": {
        "type": USER_PROVIDED, "name": up.name, "tags": up.tags,
        "credentials": up.credentials, "syslog_drain_url": up.syslog_drain_url,
        "route_service_url": up.route_service_url,
        "relationships": {"space": {"data": {"guid": space_guid}}},
    }})
}

/// `POST /v3/service_instances` (the space was checked: the caller
/// develops in it).
pub async fn create(ctx: &Ctx, msg: CreateServiceInstance) -> ApiResult<ServiceInstance> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let space_guid = msg.space_guid().to_string();
    let up = match msg.validate()? {
        InstanceRequest::UserProvided(up) => up,
        InstanceRequest::Managed => {
            return Err(ApiError::unprocessable(
                "Invalid service plan. Ensure that the service plan exists, is available, and you have access to it.",
            ));
        }
    };
    db::get::<db::Space>(&ctx.pool, &space_guid)
        .await
        .map_err(|_| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    let guid = util::new_guid();
    let now = util::now();
    let event = audit::in_space_event(
        &ctx.pool,
        &space_guid,
        types::USER_PROVIDED_SERVICE_INSTANCE_CREATE,
        target(&guid, &up.name),
        audit_request(&up, &space_guid),
    )
    .await?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<ServiceInstance>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", up.name.as_str().into()),
            ("type", USER_PROVIDED.into()),
            ("space_guid", space_guid.as_str().into()),
            ("credentials", db::json_text(&up.credentials)),
            ("syslog_drain_url", up.syslog_drain_url.clone().into()),
            ("route_service_url", up.route_service_url.clone().into()),
            ("tags", db::json_text(&up.tags)),
            ("last_operation_type", "create".into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || name_taken(&up.name))?;
    audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    super::metadata::apply(ctx, &guid, &meta).await?;
    tracing::info!(service_instance_guid = %guid, space_guid, "user-provided service instance created");
    db::get::<ServiceInstance>(&ctx.pool, &guid).await
}

/// The columns an update sets.
fn update_sets(c: &InstanceChanges) -> Vec<(&'static str, Val)> {
    let mut sets: Vec<(&'static str, Val)> = vec![("last_operation_type", "update".into())];
    if let Some(name) = &c.name {
        sets.push(("name", name.as_str().into()));
    }
    if let Some(tags) = &c.tags {
        sets.push(("tags", db::json_text(tags)));
    }
    if let Some(creds) = &c.credentials {
        sets.push(("credentials", db::json_text(creds)));
    }
    if let Some(url) = &c.syslog_drain_url {
        sets.push(("syslog_drain_url", url.clone().into()));
    }
    if let Some(url) = &c.route_service_url {
        sets.push(("route_service_url", url.clone().into()));
    }
    sets
}

/// What the instance's bindings copy of a change.
fn binding_sets(c: &InstanceChanges) -> Vec<(&'static str, Val)> {
    let mut sets = Vec::new();
    if let Some(creds) = &c.credentials {
        sets.push(("credentials", db::json_text(creds)));
    }
    if let Some(url) = &c.syslog_drain_url {
        sets.push(("syslog_drain_url", url.clone().into()));
    }
    sets
}

/// `PATCH /v3/service_instances/:guid`.
pub async fn update(
    ctx: &Ctx,
    guid: &str,
    msg: UpdateServiceInstance,
) -> ApiResult<ServiceInstance> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let si = db::get::<ServiceInstance>(&ctx.pool, guid).await?;
    let changes = msg.validate()?;
    let request = json!({"request": {
        "name": changes.name, "tags": changes.tags, "credentials": changes.credentials,
        "syslog_drain_url": changes.syslog_drain_url, "route_service_url": changes.route_service_url,
    }});
    // CC records the instance as it was before the change.
    let event = audit::in_space_event(
        &ctx.pool,
        &si.space_guid,
        types::USER_PROVIDED_SERVICE_INSTANCE_UPDATE,
        target(&si.guid, &si.name),
        request,
    )
    .await?;
    let mut tx = ctx.pool.begin().await?;
    let updated = db::update::<ServiceInstance>(&mut *tx, guid, update_sets(&changes)).await;
    let name = changes.name.clone().unwrap_or_default();
    db::unique_or_taken(updated, || name_taken(&name))?;
    let sets = binding_sets(&changes);
    if !sets.is_empty() {
        db::update_where::<ServiceBinding>(&mut *tx, "service_instance_guid", guid, sets).await?;
    }
    audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    super::metadata::apply(ctx, guid, &meta).await?;
    tracing::info!(
        service_instance_guid = guid,
        "user-provided service instance updated"
    );
    db::get::<ServiceInstance>(&ctx.pool, guid).await
}

/// `DELETE /v3/service_instances/:guid`: its bindings first (each with its
/// `audit.service_binding.delete`), then the instance, in one transaction.
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let si = db::get::<ServiceInstance>(&ctx.pool, guid).await?;
    let bindings = db::where_eq::<ServiceBinding>(&ctx.pool, "service_instance_guid", guid).await?;
    let mut events = Vec::new();
    for b in &bindings {
        events.push(super::service_bindings::delete_event(ctx, b).await?);
    }
    events.push(
        audit::in_space_event(
            &ctx.pool,
            &si.space_guid,
            types::USER_PROVIDED_SERVICE_INSTANCE_DELETE,
            target(&si.guid, &si.name),
            json!({"request": {}}),
        )
        .await?,
    );
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<ServiceBinding>(&mut *tx, "service_instance_guid", guid).await?;
    db::delete_where::<ServiceInstance>(&mut *tx, "guid", guid).await?;
    for e in events {
        audit::record(&mut *tx, e).await?;
    }
    tx.commit().await?;
    tracing::info!(
        service_instance_guid = guid,
        bindings = bindings.len(),
        "user-provided service instance deleted"
    );
    Ok(())
}
