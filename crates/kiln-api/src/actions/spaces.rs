//! Organization and space actions: create, rename (and suspend), and
//! delete with everything they contain, with Cloud Controller's rules and
//! error texts (`organization_create.rb`, `space_create.rb`,
//! `organization_update.rb`, `space_update.rb`, `space_delete.rb`).

use super::{apps, routes};
use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, App, Organization, Role, Route, Space, Val};
use crate::error::{ApiError, ApiResult};
use crate::messages::{CreateOrganization, CreateSpace, UpdateNamed, validate_name};
use crate::util;
use serde_json::{Value, json};

/// The request an org or space event keeps.
fn named_request(name: Option<&str>, suspended: Option<bool>) -> Value {
    let mut request = json!({});
    if let Some(name) = name {
        request["name"] = json!(name);
    }
    if let Some(suspended) = suspended {
        request["suspended"] = json!(suspended);
    }
    json!({ "request": request })
}

pub async fn create_org(ctx: &Ctx, msg: CreateOrganization) -> ApiResult<Organization> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    validate_name(&msg.name)?;
    let guid = util::new_guid();
    let now = util::now();
    let data = named_request(Some(&msg.name), msg.suspended);
    let event = audit::org_event(&guid, &msg.name, types::ORGANIZATION_CREATE, data);
    // Read before the transaction: a second pool connection taken while
    // holding one can exhaust the pool under concurrent creates.
    let quota = super::quotas::default_quota(ctx).await?;
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<Organization>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", msg.name.as_str().into()),
            ("suspended", msg.suspended.unwrap_or(false).into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || {
        format!("Organization '{}' already exists.", msg.name)
    })?;
    // A new org has the default quota, as in CC.
    super::quotas::assign(&mut tx, &guid, &quota.guid).await?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    tracing::info!(org_guid = %guid, name = %msg.name, "organization created");
    db::get::<Organization>(&ctx.pool, &guid).await
}

fn named_sets(msg: &UpdateNamed) -> Vec<(&'static str, Val)> {
    let mut sets = Vec::new();
    if let Some(name) = &msg.name {
        sets.push(("name", name.as_str().into()));
    }
    if let Some(suspended) = msg.suspended {
        sets.push(("suspended", suspended.into()));
    }
    sets
}

pub async fn update_org(ctx: &Ctx, guid: &str, msg: UpdateNamed) -> ApiResult<Organization> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let org = db::get::<Organization>(&ctx.pool, guid).await?;
    msg.validate()?;
    let data = named_request(msg.name.as_deref(), msg.suspended);
    let name = msg.name.as_deref().unwrap_or(&org.name);
    let event = audit::org_event(guid, name, types::ORGANIZATION_UPDATE, data);
    let mut tx = ctx.pool.begin().await?;
    let updated = db::update::<Organization>(&mut *tx, guid, named_sets(&msg)).await;
    db::unique_or_taken(updated, || {
        format!(
            "Organization name '{}' is already taken.",
            msg.name.clone().unwrap_or_default()
        )
    })?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, guid, &meta).await?;
    tx.commit().await?;
    db::get::<Organization>(&ctx.pool, guid).await
}

/// Deletes an organization and every space in it.
pub async fn delete_org(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let org = db::get::<Organization>(&ctx.pool, guid).await?;
    let data = json!({"request": {"recursive": true}});
    let event = audit::org_event(guid, &org.name, types::ORGANIZATION_DELETE_REQUEST, data);
    audit::record(&ctx.pool, event).await?;
    for space in db::where_eq::<Space>(&ctx.pool, "organization_guid", guid).await? {
        delete_space(ctx, &space.guid).await?;
    }
    super::domains::remove_org(ctx, guid).await?;
    super::space_quotas::delete_of_org(ctx, guid).await?;
    // Its roles go with it (a role names the org it is in).
    db::delete_where::<Role>(&ctx.pool, "organization_guid", guid).await?;
    db::delete_where::<db::QuotaAssignment>(&ctx.pool, "guid", guid).await?;
    db::delete_where::<Organization>(&ctx.pool, "guid", guid).await?;
    tracing::info!(org_guid = %guid, name = %org.name, "organization deleted");
    Ok(())
}

pub async fn create_space(ctx: &Ctx, msg: CreateSpace) -> ApiResult<Space> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    validate_name(&msg.name)?;
    let org_guid = msg.relationships.organization.data.guid;
    db::find::<Organization>(&ctx.pool, &org_guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Invalid organization. Ensure the organization exists and you have access to it.",
            )
        })?;
    let guid = util::new_guid();
    let now = util::now();
    let target = Space {
        guid: guid.clone(),
        name: msg.name.clone(),
        organization_guid: org_guid.clone(),
        suspended: false,
        created_at: String::new(),
        updated_at: String::new(),
        allow_ssh: true,
    };
    let data = named_request(Some(&msg.name), msg.suspended);
    let event = audit::space_event(&target, types::SPACE_CREATE, data);
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<Space>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", msg.name.as_str().into()),
            ("organization_guid", org_guid.into()),
            ("suspended", msg.suspended.unwrap_or(false).into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || "Name must be unique per organization".into())?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    tracing::info!(space_guid = %guid, name = %msg.name, "space created");
    db::get::<Space>(&ctx.pool, &guid).await
}

pub async fn update_space(ctx: &Ctx, guid: &str, msg: UpdateNamed) -> ApiResult<Space> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let space = db::get::<Space>(&ctx.pool, guid).await?;
    msg.validate()?;
    let org = db::get::<Organization>(&ctx.pool, &space.organization_guid).await?;
    let data = named_request(msg.name.as_deref(), msg.suspended);
    let renamed = Space {
        name: msg.name.clone().unwrap_or(space.name.clone()),
        ..space
    };
    let event = audit::space_event(&renamed, types::SPACE_UPDATE, data);
    let mut tx = ctx.pool.begin().await?;
    let updated = db::update::<Space>(&mut *tx, guid, named_sets(&msg)).await;
    db::unique_or_taken(updated, || {
        format!(
            "Organization '{}' already contains a space with name '{}'.",
            org.name,
            msg.name.clone().unwrap_or_default()
        )
    })?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, guid, &meta).await?;
    tx.commit().await?;
    db::get::<Space>(&ctx.pool, guid).await
}

/// Deletes a space with its apps (their processes, packages, droplets,
/// DesiredLrps, service bindings), routes and service instances.
pub async fn delete_space(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let space = db::get::<Space>(&ctx.pool, guid).await?;
    let data = json!({"request": {"recursive": true}});
    let event = audit::space_event(&space, types::SPACE_DELETE_REQUEST, data);
    audit::record(&ctx.pool, event).await?;
    for app in db::where_eq::<App>(&ctx.pool, "space_guid", guid).await? {
        apps::delete(ctx, &app.guid).await?;
    }
    for route in db::where_eq::<Route>(&ctx.pool, "space_guid", guid).await? {
        routes::delete(ctx, &route.guid).await?;
    }
    for si in db::where_eq::<db::ServiceInstance>(&ctx.pool, "space_guid", guid).await? {
        super::service_instances::delete(ctx, &si.guid).await?;
    }
    db::delete_where::<Role>(&ctx.pool, "space_guid", guid).await?;
    db::delete_where::<db::SpaceQuotaAssignment>(&ctx.pool, "guid", guid).await?;
    db::delete_where::<Space>(&ctx.pool, "guid", guid).await?;
    tracing::info!(space_guid = %guid, name = %space.name, "space deleted");
    Ok(())
}
