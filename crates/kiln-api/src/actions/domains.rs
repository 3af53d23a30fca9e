//! Domain actions (Cloud Controller's `DomainCreate`, `DomainDelete`,
//! `DomainUpdateSharedOrgs`, `DomainDeleteSharedOrg`): shared domains are
//! an admin's, private ones belong to an org, which may share them with
//! other orgs. Routes on a private domain live only in the spaces of the
//! orgs that may use it.

use crate::context::Ctx;
use crate::db::{self, Destination, Domain, DomainShare, Organization, Route, Space};
use crate::error::{ApiError, ApiResult};
use crate::messages::domains::{DomainCreate, parents};
use crate::permissions::Permissions;
use crate::util;

fn org_unknown(guid: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "Organization with guid '{guid}' does not exist or you do not have access to it."
    ))
}

/// The orgs a private domain is shared with.
pub async fn shared_with(ctx: &Ctx, domain_guid: &str) -> ApiResult<Vec<String>> {
    let shares: Vec<DomainShare> = db::where_eq(&ctx.pool, "domain_guid", domain_guid).await?;
    Ok(shares.into_iter().map(|s| s.organization_guid).collect())
}

/// The domain if the caller sees it, else `Domain not found` (CC finds a
/// domain through the caller's visible orgs).
pub async fn visible(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
) -> ApiResult<(Domain, Vec<String>)> {
    let not_found = || ApiError::not_found("Domain");
    let d = db::find::<Domain>(&ctx.pool, guid)
        .await?
        .ok_or_else(not_found)?;
    let shared = shared_with(ctx, guid).await?;
    if !perms.can_read_domain(d.owning_organization_guid.as_deref(), &shared) {
        return Err(not_found());
    }
    Ok((d, shared))
}

/// The domain if the caller sees and may change it (403 when it only
/// sees it).
async fn writable(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<(Domain, Vec<String>)> {
    let (d, shared) = visible(ctx, perms, guid).await?;
    if !perms.can_write_domain(d.owning_organization_guid.as_deref()) {
        return Err(ApiError::not_authorized());
    }
    Ok((d, shared))
}

/// Whether `org` may put routes on the domain (it is shared, or the org
/// owns it or has it shared).
pub async fn usable_by(ctx: &Ctx, domain: &Domain, org: &str) -> ApiResult<bool> {
    let Some(owner) = &domain.owning_organization_guid else {
        return Ok(true);
    };
    Ok(owner == org
        || shared_with(ctx, &domain.guid)
            .await?
            .iter()
            .any(|o| o == org))
}

/// Every domain `org` may use, oldest first.
pub async fn usable_domains(ctx: &Ctx, org: &str) -> ApiResult<Vec<Domain>> {
    db::list(&ctx.pool, &[db::domains_of_orgs(vec![org.to_string()])]).await
}

/// CC's `verify_shared_organizations_guids!`: each org exists, the caller
/// sees and manages it, and none is the owner.
async fn check_share_targets(
    ctx: &Ctx,
    perms: &Permissions,
    owner: &str,
    orgs: &[String],
) -> ApiResult<()> {
    for guid in orgs {
        let org = db::find::<Organization>(&ctx.pool, guid).await?;
        let Some(org) = org.filter(|_| perms.can_read_org(guid)) else {
            return Err(ApiError::unprocessable(format!(
                "Organization with guid '{guid}' does not exist, or you do not have access to it."
            )));
        };
        if !perms.can_manage_org(guid) {
            return Err(ApiError::unprocessable(format!(
                "You do not have sufficient permissions for organization '{}' to share domain.",
                org.name
            )));
        }
        if org.suspended {
            return Err(ApiError::unprocessable(format!(
                "Organization '{}' is suspended.",
                org.name
            )));
        }
    }
    if orgs.iter().any(|o| o == owner) {
        return Err(ApiError::unprocessable(
            "Domain cannot be shared with owning organization.",
        ));
    }
    Ok(())
}

/// CC's name collisions (`Domain#validate`, `PrivateDomain#validate`): a
/// parent domain that another org owns, for a private domain a subdomain
/// that is shared or another org's, and a route that already is the name.
async fn check_collisions(ctx: &Ctx, name: &str, owner: Option<&str>) -> ApiResult<()> {
    let domains = db::all::<Domain>(&ctx.pool).await?;
    let reserved = |other: &str| {
        ApiError::unprocessable(format!(
            "The domain name \"{name}\" cannot be created because \"{other}\" is already reserved by another domain"
        ))
    };
    for parent in parents(name) {
        let taken = domains.iter().find(|d| d.name == parent);
        if let Some(d) = taken
            && d.owning_organization_guid.is_some()
            && d.owning_organization_guid.as_deref() != owner
        {
            return Err(reserved(&d.name));
        }
    }
    if owner.is_some() {
        let suffix = format!(".{name}");
        let below = domains
            .iter()
            .find(|d| d.name.ends_with(&suffix) && d.owning_organization_guid.as_deref() != owner);
        if let Some(d) = below {
            return Err(reserved(&d.name));
        }
    }
    // `host.parent` as a route: the name would shadow it.
    if let Some((host, parent)) = name.split_once('.')
        && let Some(d) = domains.iter().find(|d| d.name == parent)
        && db::first_where::<Route>(&ctx.pool, &[("domain_guid", &d.guid), ("host", host)])
            .await?
            .is_some()
    {
        return Err(ApiError::unprocessable(format!(
            "The domain name \"{name}\" cannot be created because \"{name}\" is already reserved by a route"
        )));
    }
    Ok(())
}

/// `POST /v3/domains`. The owning org was checked by the route's rule (a
/// manager of it, or an admin); a shared domain is for admins only.
pub async fn create(ctx: &Ctx, perms: &Permissions, msg: DomainCreate) -> ApiResult<Domain> {
    match &msg.organization {
        None if !perms.is_admin() => return Err(ApiError::not_authorized()),
        None => {}
        Some(org) => {
            let o = db::find::<Organization>(&ctx.pool, org)
                .await?
                .ok_or_else(|| org_unknown(org))?;
            if o.suspended && !perms.is_admin() {
                return Err(ApiError::not_authorized());
            }
            // Admins create private domains whatever the flag says (CC).
            if !perms.is_admin() {
                super::settings::require(ctx, Some(perms), "private_domain_creation").await?;
            }
            check_share_targets(ctx, perms, org, &msg.shared_organizations).await?;
            if crate::messages::domains::is_public_suffix(&msg.name) {
                return Err(crate::messages::domains::reserved(&msg.name));
            }
        }
    }
    check_collisions(ctx, &msg.name, msg.organization.as_deref()).await?;
    let guid = util::new_guid();
    let now = util::now();
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<Domain>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", msg.name.as_str().into()),
            ("owning_organization_guid", msg.organization.clone().into()),
            ("internal", i64::from(msg.internal).into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || {
        format!("The domain name \"{}\" is already in use", msg.name)
    })?;
    for org in &msg.shared_organizations {
        share_row(&mut tx, &guid, org, &now).await?;
    }
    db::metadata::apply(&mut tx, &guid, &msg.metadata).await?;
    tx.commit().await?;
    tracing::info!(domain_guid = %guid, name = %msg.name, owner = ?msg.organization, "domain created");
    db::get::<Domain>(&ctx.pool, &guid).await
}

async fn share_row(
    tx: &mut kiln_store::Connection,
    domain: &str,
    org: &str,
    now: &str,
) -> ApiResult<()> {
    db::insert_if_absent::<DomainShare>(
        &mut *tx,
        vec![
            ("domain_guid", domain.into()),
            ("organization_guid", org.into()),
            ("created_at", now.into()),
        ],
    )
    .await?;
    Ok(())
}

/// `DELETE /v3/domains/:guid`: refused while shared with other orgs (CC's
/// words); the domain goes with its routes, as CC's `DomainDelete` destroys
/// them, and the apps that had them lose those routes.
pub async fn delete(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<()> {
    let (d, shared) = writable(ctx, perms, guid).await?;
    if !shared.is_empty() {
        return Err(ApiError::unprocessable(
            "This domain is shared with other organizations. Unshare before deleting.",
        ));
    }
    remove(ctx, &d).await?;
    crate::diego::sync::reconcile(ctx).await
}

/// Deletes a domain, its routes and their destinations, and its shares in
/// one transaction.
async fn remove(ctx: &Ctx, d: &Domain) -> ApiResult<()> {
    let routes: Vec<Route> = db::where_eq(&ctx.pool, "domain_guid", &d.guid).await?;
    let mut tx = ctx.pool.begin().await?;
    for r in &routes {
        db::delete_where::<Destination>(&mut *tx, "route_guid", &r.guid).await?;
    }
    db::delete_where::<Route>(&mut *tx, "domain_guid", &d.guid).await?;
    db::delete_where::<DomainShare>(&mut *tx, "domain_guid", &d.guid).await?;
    db::delete_where::<Domain>(&mut *tx, "guid", &d.guid).await?;
    tx.commit().await?;
    tracing::info!(domain_guid = %d.guid, name = %d.name, routes = routes.len(), "domain deleted");
    Ok(())
}

/// An org being deleted takes the private domains it owns (CC's
/// `owned_private_domains: :destroy`) and its shares of others'.
pub async fn remove_org(ctx: &Ctx, org: &str) -> ApiResult<()> {
    for d in db::where_eq::<Domain>(&ctx.pool, "owning_organization_guid", org).await? {
        remove(ctx, &d).await?;
    }
    db::delete_where::<DomainShare>(&ctx.pool, "organization_guid", org).await?;
    Ok(())
}

/// Whether the caller may change the domain (its metadata: CC's
/// `can_write_to_active_org` on its owner, admins for a shared one; 404
/// unseen, 403 seen only).
pub async fn may_change(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<()> {
    writable(ctx, perms, guid).await.map(|_| ())
}

/// Whether the caller may share the domain (404 unseen, 403 seen only).
pub async fn may_share(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<()> {
    writable(ctx, perms, guid).await.map(|_| ())
}

/// `POST /v3/domains/:guid/relationships/shared_organizations`: shares a
/// private domain with more orgs; returns every org it is shared with.
pub async fn share(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
    orgs: Vec<String>,
) -> ApiResult<Vec<String>> {
    let (d, _) = writable(ctx, perms, guid).await?;
    let Some(owner) = d.owning_organization_guid.as_deref() else {
        return Err(ApiError::unprocessable(
            "Domains cannot be shared with other organizations unless they are scoped to an organization.",
        ));
    };
    check_share_targets(ctx, perms, owner, &orgs).await?;
    let now = util::now();
    let mut tx = ctx.pool.begin().await?;
    for org in &orgs {
        share_row(&mut tx, guid, org, &now).await?;
    }
    tx.commit().await?;
    shared_with(ctx, guid).await
}

/// `DELETE /v3/domains/:guid/relationships/shared_organizations/:org_guid`:
/// the owner's managers or the shared org's may unshare; refused while the
/// org has routes on the domain.
pub async fn unshare(ctx: &Ctx, perms: &Permissions, guid: &str, org_guid: &str) -> ApiResult<()> {
    let (d, shared) = visible(ctx, perms, guid).await?;
    let org = db::find::<Organization>(&ctx.pool, org_guid)
        .await?
        .ok_or_else(|| org_unknown(org_guid))?;
    let owner = d.owning_organization_guid.as_deref();
    if !perms.can_write_domain(owner) && !perms.can_manage_org(org_guid) {
        return Err(ApiError::not_authorized());
    }
    if !perms.can_read_org(org_guid) {
        return Err(org_unknown(org_guid));
    }
    if owner.is_none() || !shared.iter().any(|o| o == org_guid) {
        return Err(ApiError::unprocessable(format!(
            "Unable to unshare domain from organization with name '{}'. Ensure the domain is shared to this organization.",
            org.name
        )));
    }
    let spaces: Vec<String> = db::where_eq::<Space>(&ctx.pool, "organization_guid", org_guid)
        .await?
        .into_iter()
        .map(|s| s.guid)
        .collect();
    let in_org: Vec<Route> = db::list(
        &ctx.pool,
        &[
            db::Cond::In("domain_guid", vec![guid.to_string()]),
            db::Cond::In("space_guid", spaces),
        ],
    )
    .await?;
    if !in_org.is_empty() {
        return Err(ApiError::unprocessable(
            "This domain has associated routes in this organization. Delete the routes before unsharing.",
        ));
    }
    db::delete_share(&ctx.pool, guid, org_guid).await
}
