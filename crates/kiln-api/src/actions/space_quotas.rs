//! Space quotas (Cloud Controller's `SpaceQuotasCreate`, `SpaceQuotaUpdate`,
//! `SpaceQuotaApply`, `SpaceQuotaUnapply`, `SpaceQuotaDeleteAction`): an
//! org's named limits, made and changed by its managers (and admins), a
//! space having at most one. They are enforced beside the org's quota by
//! the checks in [`super::quotas`].

use super::quotas::all_found;
use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, Organization, Space, SpaceQuota, SpaceQuotaAssignment};
use crate::error::{ApiError, ApiResult};
use crate::messages::quotas::{ApplySpaceQuota, SpaceQuotaBody};
use crate::permissions::Permissions;
use crate::util;
use serde_json::{Value, json};

/// The spaces a quota is applied to.
pub async fn spaces_of(ctx: &Ctx, quota_guid: &str) -> ApiResult<Vec<String>> {
    db::quota_holders::<SpaceQuotaAssignment>(&ctx.pool, quota_guid).await
}

/// The space quota a space has, if any.
pub async fn quota_of(ctx: &Ctx, space: &str) -> ApiResult<Option<SpaceQuota>> {
    match db::find::<SpaceQuotaAssignment>(&ctx.pool, space).await? {
        Some(a) => db::find::<SpaceQuota>(&ctx.pool, &a.quota_guid).await,
        None => Ok(None),
    }
}

/// A quota the caller sees, else CC's 404.
pub async fn visible(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<SpaceQuota> {
    let q = db::find::<SpaceQuota>(&ctx.pool, guid).await?;
    match q {
        Some(q)
            if perms.can_read_space_quota(&q.organization_guid, &spaces_of(ctx, guid).await?) =>
        {
            Ok(q)
        }
        _ => Err(ApiError::not_found("Space quota")),
    }
}

/// A quota the caller may change: 404 if unseen, 403 if seen only.
pub async fn writable(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<SpaceQuota> {
    let q = visible(ctx, perms, guid).await?;
    if !perms.can_manage_org(&q.organization_guid) {
        return Err(ApiError::not_authorized());
    }
    Ok(q)
}

fn taken(name: &str) -> String {
    format!("Space Quota '{name}' already exists.")
}

fn event(q: &SpaceQuota, kind: &'static str, space: Option<&Space>, data: Value) -> audit::Event {
    audit::Event {
        kind,
        actor: audit::Actor::current(),
        target: audit::Target {
            guid: q.guid.clone(),
            kind: "space_quota",
            name: q.name.clone(),
        },
        space_guid: space.map(|s| s.guid.clone()),
        organization_guid: Some(q.organization_guid.clone()),
        data,
        dedup_key: None,
    }
}

async fn assign(conn: &mut kiln_store::Connection, space: &str, quota_guid: &str) -> ApiResult<()> {
    db::assign_quota::<SpaceQuotaAssignment>(conn, space, quota_guid).await
}

/// `POST /v3/space_quotas`: `authorize` has already held the caller to
/// managing the named org when it exists.
pub async fn create(ctx: &Ctx, body: SpaceQuotaBody) -> ApiResult<SpaceQuota> {
    let msg = body.for_create()?;
    if db::find::<Organization>(&ctx.pool, &msg.organization_guid)
        .await?
        .is_none()
    {
        return Err(ApiError::unprocessable(format!(
            "Organization with guid '{}' does not exist, or you do not have access to it.",
            msg.organization_guid
        )));
    }
    let spaces = spaces_in_org(ctx, &msg.space_guids, &msg.organization_guid).await?;
    let q = SpaceQuota {
        guid: util::new_guid(),
        name: msg.name.clone(),
        organization_guid: msg.organization_guid.clone(),
        limits: msg.limits.clone(),
        created_at: util::now(),
        updated_at: String::new(),
    };
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<SpaceQuota>(
        &mut *tx,
        vec![
            ("guid", q.guid.as_str().into()),
            ("name", q.name.as_str().into()),
            ("organization_guid", q.organization_guid.as_str().into()),
            ("limits", db::json_text(&q.limits)),
            ("created_at", q.created_at.as_str().into()),
            ("updated_at", q.created_at.as_str().into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || taken(&q.name))?;
    for space in &spaces {
        assign(&mut tx, &space.guid, &q.guid).await?;
    }
    let data = json!({"request": body.request()});
    audit::record(&mut *tx, event(&q, types::SPACE_QUOTA_CREATE, None, data)).await?;
    tx.commit().await?;
    tracing::info!(quota_guid = %q.guid, name = %q.name, "space quota created");
    db::get::<SpaceQuota>(&ctx.pool, &q.guid).await
}

/// A create's spaces: each must exist in the quota's org.
async fn spaces_in_org(ctx: &Ctx, guids: &[String], org: &str) -> ApiResult<Vec<Space>> {
    let found = db::list::<Space>(
        &ctx.pool,
        &[
            db::Cond::In("guid", guids.to_vec()),
            db::Cond::In("organization_guid", vec![org.to_string()]),
        ],
    )
    .await?;
    all_found(
        guids,
        |g| found.iter().any(|s| &s.guid == g),
        |missing| {
            format!(
                "Spaces with guids {missing:?} do not exist within the organization specified, or you do not have access to them."
            )
        },
    )?;
    Ok(found)
}

/// `PATCH /v3/space_quotas/:guid`: the limits given replace those stored
/// (null: unlimited).
pub async fn update(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
    body: SpaceQuotaBody,
) -> ApiResult<SpaceQuota> {
    let q = writable(ctx, perms, guid).await?;
    let (name, limits) = body.for_update(q.limits.clone())?;
    let name = name.unwrap_or(q.name.clone());
    let mut tx = ctx.pool.begin().await?;
    let updated = db::update::<SpaceQuota>(
        &mut *tx,
        guid,
        vec![
            ("name", name.as_str().into()),
            ("limits", db::json_text(&limits)),
        ],
    )
    .await;
    db::unique_or_taken(updated, || taken(&name))?;
    let renamed = SpaceQuota { name, ..q };
    let data = json!({"request": body.request()});
    audit::record(
        &mut *tx,
        event(&renamed, types::SPACE_QUOTA_UPDATE, None, data),
    )
    .await?;
    tx.commit().await?;
    db::get::<SpaceQuota>(&ctx.pool, guid).await
}

/// `POST /v3/space_quotas/:guid/relationships/spaces`: answers every space
/// that has the quota.
pub async fn apply(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
    data: ApplySpaceQuota,
) -> ApiResult<Vec<String>> {
    let q = writable(ctx, perms, guid).await?;
    let guids: Vec<String> = data.data.iter().map(|g| g.guid.clone()).collect();
    let found = db::list::<Space>(&ctx.pool, &[db::Cond::In("guid", guids.clone())]).await?;
    all_found(
        &guids,
        |g| {
            found
                .iter()
                .any(|s| &s.guid == g && perms.can_read_space(g))
        },
        |invalid| {
            format!(
                "Spaces with guids {invalid:?} do not exist, or you do not have access to them."
            )
        },
    )?;
    if found
        .iter()
        .any(|s| s.organization_guid != q.organization_guid)
    {
        return Err(ApiError::unprocessable(
            "Space quotas cannot be applied outside of their owning organization.",
        ));
    }
    let mut tx = ctx.pool.begin().await?;
    for space in &found {
        assign(&mut tx, &space.guid, guid).await?;
        let data = json!({"space_guid": space.guid, "space_name": space.name});
        audit::record(
            &mut *tx,
            event(&q, types::SPACE_QUOTA_APPLY, Some(space), data),
        )
        .await?;
    }
    tx.commit().await?;
    spaces_of(ctx, guid).await
}

/// `DELETE /v3/space_quotas/:guid/relationships/spaces/:space_guid`.
pub async fn remove(ctx: &Ctx, perms: &Permissions, guid: &str, space_guid: &str) -> ApiResult<()> {
    let q = writable(ctx, perms, guid).await?;
    let applied = db::find::<SpaceQuotaAssignment>(&ctx.pool, space_guid)
        .await?
        .is_some_and(|a| a.quota_guid == guid);
    let space = db::find::<Space>(&ctx.pool, space_guid).await?;
    let (true, Some(space)) = (applied, space) else {
        return Err(ApiError::unprocessable(format!(
            "Unable to remove quota from space with guid '{space_guid}'. Ensure the space quota is applied to this space."
        )));
    };
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<SpaceQuotaAssignment>(&mut *tx, "guid", space_guid).await?;
    let data = json!({"space_guid": space.guid, "space_name": space.name});
    audit::record(
        &mut *tx,
        event(&q, types::SPACE_QUOTA_REMOVE, Some(&space), data),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `DELETE /v3/space_quotas/:guid`: only a quota no space has.
pub async fn delete(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<()> {
    let q = writable(ctx, perms, guid).await?;
    if !spaces_of(ctx, guid).await?.is_empty() {
        return Err(ApiError::unprocessable(
            "This quota is applied to one or more spaces. Remove this quota from all spaces before deleting.",
        ));
    }
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<SpaceQuota>(&mut *tx, "guid", guid).await?;
    audit::record(
        &mut *tx,
        event(&q, types::SPACE_QUOTA_DELETE, None, json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An org delete takes the space quotas it owns.
pub async fn delete_of_org(ctx: &Ctx, org: &str) -> ApiResult<()> {
    for q in db::where_eq::<SpaceQuota>(&ctx.pool, "organization_guid", org).await? {
        db::delete_where::<SpaceQuotaAssignment>(&ctx.pool, "quota_guid", &q.guid).await?;
        db::delete_where::<SpaceQuota>(&ctx.pool, "guid", &q.guid).await?;
    }
    Ok(())
}
