//! Fetchers: what a list or a read returns, with the list's filters turned
//! into SQL conditions (Cloud Controller's `app/fetchers`) instead of rows
//! filtered in memory. Every list takes the caller's [`Permissions`] and
//! narrows to what it may see in the same SQL ([`in_visible_spaces`],
//! [`of_visible_apps`]); a single resource was checked by `auth::authorize`
//! before its handler ran.

use crate::context::Ctx;
use crate::db::{
    self, App, AuditEvent, Build, Buildpack, Cond, Destination, Domain, DomainShare, Droplet,
    Organization, Package, Process, Route, Space, Stack, Task,
};
use crate::error::{ApiError, ApiResult};
use crate::permissions::Permissions;
use crate::web::ListParams;

/// One page of a list, and how many rows match in all (the page was cut
/// in SQL: LIMIT/OFFSET, and a COUNT with the same conditions).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: usize,
}

impl<T> Page<T> {
    /// The same page with each row carrying what its JSON shows.
    fn with<U>(&self, items: Vec<U>) -> Page<U> {
        Page {
            items,
            total: self.total,
        }
    }
}

/// CC's `order_by` fields of most lists.
const TIMES: &[&str] = &["created_at", "updated_at"];
/// ... and of lists of named resources.
const NAMED: &[&str] = &["created_at", "updated_at", "name"];

/// One page of `T` matching `c`, ordered by the request's `order_by` (one
/// of `fields`, else CC's 400) or creation order.
async fn paged<T: db::Record>(
    ctx: &Ctx,
    params: &ListParams,
    fields: &[&'static str],
    c: &[Cond],
) -> ApiResult<Page<T>> {
    let order = sql_order(params, fields)?;
    paged_in(ctx, params, order, c).await
}

async fn paged_in<T: db::Record>(
    ctx: &Ctx,
    params: &ListParams,
    order: Option<db::Order>,
    c: &[Cond],
) -> ApiResult<Page<T>> {
    let (items, total) = db::page(&ctx.pool, c, order, params.page, params.per_page).await?;
    Ok(Page {
        items,
        total: usize::try_from(total).unwrap_or_default(),
    })
}

/// Rows whose `column` is a space the caller reads (`None`: it reads all).
/// Space-scoped resources list through this (tasks, audit events too).
pub fn in_visible_spaces(perms: &Permissions, column: &'static str) -> Option<Cond> {
    perms
        .readable_spaces()
        .map(|spaces| Cond::In(column, spaces))
}

/// `organization_guids` for rows that have a `space_guid`.
fn in_orgs(params: &ListParams) -> Option<Cond> {
    params.list("organization_guids").map(|orgs| Cond::Via {
        column: "space_guid",
        table: "spaces",
        pick: "guid",
        by: "organization_guid",
        values: orgs,
    })
}

/// Rows whose `app_guid` is an app in a space the caller reads.
pub fn of_visible_apps(perms: &Permissions) -> Option<Cond> {
    perms.readable_spaces().map(|spaces| Cond::Via {
        column: "app_guid",
        table: "apps",
        pick: "guid",
        by: "space_guid",
        values: spaces,
    })
}

/// `column IN (values)` for each of `filters` (query parameter → column)
/// the request gives, and its `label_selector` on the listed table (every
/// list goes through here, so every list takes a selector).
fn conds(params: &ListParams, filters: &[(&str, &'static str)]) -> ApiResult<Vec<Cond>> {
    let mut c: Vec<Cond> = filters
        .iter()
        .filter_map(|(param, column)| params.list(param).map(|v| Cond::In(column, v)))
        .collect();
    let selector = crate::messages::metadata::label_selector(params.get("label_selector"))?;
    c.extend(selector.into_iter().map(Cond::Label));
    Ok(c)
}

/// The filters only (a second set on a list that already has its
/// selector).
fn more_conds(params: &ListParams, filters: &[(&str, &'static str)]) -> Vec<Cond> {
    filters
        .iter()
        .filter_map(|(param, column)| params.list(param).map(|v| Cond::In(column, v)))
        .collect()
}

/// One row by guid, or `<Resource> not found`.
pub async fn one<T: db::Record>(ctx: &Ctx, guid: &str) -> ApiResult<T> {
    db::get::<T>(&ctx.pool, guid).await
}

pub async fn orgs(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<Organization>> {
    let mut c = conds(params, &[("names", "name"), ("guids", "guid")])?;
    c.extend(perms.readable_orgs().map(|orgs| Cond::In("guid", orgs)));
    paged(ctx, params, NAMED, &c).await
}

pub async fn spaces(ctx: &Ctx, perms: &Permissions, params: &ListParams) -> ApiResult<Page<Space>> {
    let mut c = conds(
        params,
        &[
            ("names", "name"),
            ("guids", "guid"),
            ("organization_guids", "organization_guid"),
        ],
    )?;
    c.extend(in_visible_spaces(perms, "guid"));
    paged(ctx, params, NAMED, &c).await
}

/// A domain with the orgs it is shared with that the caller sees (CC's
/// presenter shows only those).
pub type DomainView = (Domain, Vec<String>);

/// The shared orgs of each domain, narrowed to the orgs the caller reads.
async fn with_shares(
    ctx: &Ctx,
    perms: &Permissions,
    domains: Vec<Domain>,
) -> ApiResult<Vec<DomainView>> {
    let guids: Vec<String> = domains.iter().map(|d| d.guid.clone()).collect();
    let mut c = vec![Cond::In("domain_guid", guids)];
    c.extend(
        perms
            .readable_orgs()
            .map(|orgs| Cond::In("organization_guid", orgs)),
    );
    let shares: Vec<DomainShare> = db::list(&ctx.pool, &c).await?;
    Ok(domains
        .into_iter()
        .map(|d| {
            let orgs = shares
                .iter()
                .filter(|s| s.domain_guid == d.guid)
                .map(|s| s.organization_guid.clone())
                .collect();
            (d, orgs)
        })
        .collect())
}

/// Domains the caller sees: shared ones, and private ones of (or shared
/// with) the orgs it reads.
pub async fn domains(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<DomainView>> {
    let mut c = conds(
        params,
        &[
            ("names", "name"),
            ("guids", "guid"),
            ("organization_guids", "owning_organization_guid"),
        ],
    )?;
    c.extend(perms.readable_orgs().map(db::domains_of_orgs));
    let page: Page<Domain> = paged(ctx, params, TIMES, &c).await?;
    Ok(page.with(with_shares(ctx, perms, page.items.clone()).await?))
}

/// One domain the caller sees, else `Domain not found`.
pub async fn domain(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<DomainView> {
    let mut c = vec![Cond::In("guid", vec![guid.to_string()])];
    c.extend(perms.readable_orgs().map(db::domains_of_orgs));
    let found = with_shares(ctx, perms, db::list(&ctx.pool, &c).await?).await?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Domain"))
}

/// The orgs a domain the caller sees is shared with (those it reads).
pub async fn domain_shared_orgs(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
) -> ApiResult<Vec<String>> {
    Ok(domain(ctx, perms, guid).await?.1)
}

/// The domains an org may use: shared ones, its own and those shared
/// with it (the caller reads the org: the route's rule checked it).
pub async fn org_domains(
    ctx: &Ctx,
    perms: &Permissions,
    org_guid: &str,
    params: &ListParams,
) -> ApiResult<Page<DomainView>> {
    db::get::<Organization>(&ctx.pool, org_guid).await?;
    let mut c = conds(params, &[("names", "name"), ("guids", "guid")])?;
    c.push(db::domains_of_orgs(vec![org_guid.to_string()]));
    let page: Page<Domain> = paged(ctx, params, TIMES, &c).await?;
    Ok(page.with(with_shares(ctx, perms, page.items.clone()).await?))
}

/// The org's default domain: the oldest shared, non-internal domain, else
/// its oldest private one (CC's `Organization#default_domain`).
pub async fn org_default_domain(
    ctx: &Ctx,
    perms: &Permissions,
    org_guid: &str,
) -> ApiResult<DomainView> {
    db::get::<Organization>(&ctx.pool, org_guid).await?;
    let shared: Vec<Domain> = db::list(
        &ctx.pool,
        &[
            Cond::Null("owning_organization_guid"),
            Cond::In("internal", vec!["0".into()]),
        ],
    )
    .await?;
    let domain = match shared.into_iter().next() {
        Some(d) => d,
        None => db::where_eq::<Domain>(&ctx.pool, "owning_organization_guid", org_guid)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found("Domain"))?,
    };
    let mut found = with_shares(ctx, perms, vec![domain]).await?;
    Ok(found.remove(0))
}

pub async fn stacks(ctx: &Ctx, params: &ListParams) -> ApiResult<Page<Stack>> {
    let c = conds(params, &[("names", "name"), ("guids", "guid")])?;
    paged(ctx, params, NAMED, &c).await
}

/// Buildpacks, in position order unless `order_by` says otherwise.
pub async fn buildpacks(ctx: &Ctx, params: &ListParams) -> ApiResult<Page<Buildpack>> {
    let c = conds(
        params,
        &[("names", "name"), ("guids", "guid"), ("stacks", "stack")],
    )?;
    let fields = &["created_at", "updated_at", "position"];
    let order = sql_order(params, fields)?.or(Some(db::Order {
        column: "position",
        descending: false,
    }));
    paged_in(ctx, params, order, &c).await
}

/// The SQL order of a list's `order_by`, when it names one of `columns`
/// (presented field = column); `None` when absent. Another field is CC's
/// 400 naming the fields it takes.
fn sql_order(params: &ListParams, columns: &[&'static str]) -> ApiResult<Option<db::Order>> {
    let Some(order) = params.get("order_by") else {
        return Ok(None);
    };
    let (field, descending) = match order.strip_prefix('-') {
        Some(f) => (f, true),
        None => (order.strip_prefix('+').unwrap_or(order), false),
    };
    match columns.iter().find(|c| **c == field) {
        Some(column) => Ok(Some(db::Order { column, descending })),
        None => {
            let named: Vec<String> = columns.iter().map(|c| format!("'{c}'")).collect();
            Err(ApiError::bad_query(format!(
                "Order by can only be: {}",
                named.join(", ")
            )))
        }
    }
}

/// One page of apps (`GET /v3/apps`) and how many match: filters,
/// visibility, label selector, order and paging all in SQL.
pub async fn apps_page(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<App>> {
    let c = app_conds(perms, params)?;
    paged(
        ctx,
        params,
        &["created_at", "updated_at", "name", "state"],
        &c,
    )
    .await
}

fn app_conds(perms: &Permissions, params: &ListParams) -> ApiResult<Vec<Cond>> {
    let mut c = conds(
        params,
        &[
            ("names", "name"),
            ("guids", "guid"),
            ("space_guids", "space_guid"),
            ("stacks", "stack"),
        ],
    )?;
    c.extend(in_orgs(params));
    c.extend(in_visible_spaces(perms, "space_guid"));
    Ok(c)
}

/// Processes with their apps (a process's JSON links its app's space).
pub async fn processes(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<(App, Process)>> {
    let mut c = conds(
        params,
        &[
            ("app_guids", "app_guid"),
            ("guids", "guid"),
            ("types", "type"),
        ],
    )?;
    if let Some(spaces) = params.list("space_guids") {
        c.push(Cond::Via {
            column: "app_guid",
            table: "apps",
            pick: "guid",
            by: "space_guid",
            values: spaces,
        });
    }
    c.extend(of_visible_apps(perms));
    let page: Page<Process> = paged(ctx, params, TIMES, &c).await?;
    Ok(page.with(with_apps(ctx, page.items.clone()).await?))
}

async fn with_apps(ctx: &Ctx, processes: Vec<Process>) -> ApiResult<Vec<(App, Process)>> {
    let mut guids: Vec<String> = processes.iter().map(|p| p.app_guid.clone()).collect();
    guids.sort();
    guids.dedup();
    let apps: Vec<App> = db::list(&ctx.pool, &[Cond::In("guid", guids)]).await?;
    Ok(processes
        .into_iter()
        .filter_map(|p| {
            let app = apps.iter().find(|a| a.guid == p.app_guid)?.clone();
            Some((app, p))
        })
        .collect())
}

/// An app's processes.
pub async fn app_processes(
    ctx: &Ctx,
    app_guid: &str,
    params: &ListParams,
) -> ApiResult<(App, Page<Process>)> {
    let app = db::get::<App>(&ctx.pool, app_guid).await?;
    let mut c = conds(params, &[("types", "type"), ("guids", "guid")])?;
    c.push(Cond::In("app_guid", vec![app_guid.to_string()]));
    Ok((app, paged(ctx, params, TIMES, &c).await?))
}

/// An app's sidecars (the app must exist).
pub async fn app_sidecars(
    ctx: &Ctx,
    app_guid: &str,
    params: &ListParams,
) -> ApiResult<Page<db::Sidecar>> {
    db::get::<App>(&ctx.pool, app_guid).await?;
    let c = [Cond::In("app_guid", vec![app_guid.to_string()])];
    paged(ctx, params, TIMES, &c).await
}

/// A process with its app.
pub async fn process(ctx: &Ctx, guid: &str) -> ApiResult<(App, Process)> {
    let p = db::get::<Process>(&ctx.pool, guid).await?;
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    Ok((app, p))
}

/// An app's process of one type.
pub async fn process_by_type(ctx: &Ctx, app_guid: &str, ptype: &str) -> ApiResult<(App, Process)> {
    let app = db::get::<App>(&ctx.pool, app_guid).await?;
    let p = db::first_where::<Process>(&ctx.pool, &[("app_guid", app_guid), ("type", ptype)])
        .await?
        .ok_or_else(|| ApiError::not_found("Process"))?;
    Ok((app, p))
}

/// Packages, optionally of one app (which must exist).
pub async fn packages(
    ctx: &Ctx,
    perms: &Permissions,
    app_guid: Option<&str>,
    params: &ListParams,
) -> ApiResult<Page<Package>> {
    let mut c = conds(params, &[("states", "state"), ("types", "type")])?;
    let across = [("app_guids", "app_guid"), ("guids", "guid")];
    of_app_or_across(ctx, params, app_guid, &across, &mut c).await?;
    c.extend(of_visible_apps(perms));
    paged(ctx, params, TIMES, &c).await
}

/// A staging artifact's filters across apps (builds, droplets).
const ACROSS_APPS: &[(&str, &str)] = &[
    ("app_guids", "app_guid"),
    ("guids", "guid"),
    ("package_guids", "package_guid"),
];

/// Narrows `c` to one app's rows (the app must exist; it is returned) or,
/// with no app, by the `across` filters the request gives.
async fn of_app_or_across(
    ctx: &Ctx,
    params: &ListParams,
    app_guid: Option<&str>,
    across: &[(&str, &'static str)],
    c: &mut Vec<Cond>,
) -> ApiResult<Option<App>> {
    let Some(guid) = app_guid else {
        c.extend(more_conds(params, across));
        return Ok(None);
    };
    let app = db::get::<App>(&ctx.pool, guid).await?;
    c.push(Cond::In("app_guid", vec![guid.to_string()]));
    Ok(Some(app))
}

/// Builds, optionally of one app (which must exist).
pub async fn builds(
    ctx: &Ctx,
    perms: &Permissions,
    app_guid: Option<&str>,
    params: &ListParams,
) -> ApiResult<Page<Build>> {
    let mut c = conds(params, &[("states", "state")])?;
    of_app_or_across(ctx, params, app_guid, ACROSS_APPS, &mut c).await?;
    c.extend(of_visible_apps(perms));
    paged(ctx, params, TIMES, &c).await
}

/// Droplets, optionally of one app (which must exist; `current=true`
/// keeps only its current droplet).
pub async fn droplets(
    ctx: &Ctx,
    perms: &Permissions,
    app_guid: Option<&str>,
    params: &ListParams,
) -> ApiResult<Page<Droplet>> {
    let mut c = conds(params, &[("states", "state")])?;
    if let Some(app) = of_app_or_across(ctx, params, app_guid, ACROSS_APPS, &mut c).await?
        && params.get("current").is_some_and(|v| v == "true")
    {
        c.push(Cond::In("guid", app.droplet_guid.into_iter().collect()));
    }
    c.extend(of_visible_apps(perms));
    paged(ctx, params, TIMES, &c).await
}

/// The droplets staged from a package (which must exist and be visible:
/// its route's rule checked that): `GET /v3/packages/:guid/droplets`,
/// filters `guids` and `states`.
pub async fn package_droplets(
    ctx: &Ctx,
    package_guid: &str,
    params: &ListParams,
) -> ApiResult<Page<Droplet>> {
    db::get::<Package>(&ctx.pool, package_guid).await?;
    let mut c = conds(params, &[("states", "state"), ("guids", "guid")])?;
    c.push(Cond::In("package_guid", vec![package_guid.to_string()]));
    paged(ctx, params, TIMES, &c).await
}

/// An app's current droplet.
pub async fn current_droplet(ctx: &Ctx, app_guid: &str) -> ApiResult<Droplet> {
    let app = db::get::<App>(&ctx.pool, app_guid).await?;
    let droplet_guid = app
        .droplet_guid
        .ok_or_else(|| ApiError::not_found("Droplet"))?;
    db::get::<Droplet>(&ctx.pool, &droplet_guid).await
}

/// A route with what its JSON shows.
pub type RouteView = (Route, Domain, Vec<Destination>);

/// Routes with their domains and destinations, optionally only those
/// mapped to one app (which must exist).
pub async fn routes(
    ctx: &Ctx,
    perms: &Permissions,
    app_guid: Option<&str>,
    params: &ListParams,
) -> ApiResult<Page<RouteView>> {
    let mut c = conds(
        params,
        &[
            ("hosts", "host"),
            ("paths", "path"),
            ("guids", "guid"),
            ("domain_guids", "domain_guid"),
            ("space_guids", "space_guid"),
        ],
    )?;
    let mapped_to = |values: Vec<String>| Cond::Via {
        column: "guid",
        table: "route_destinations",
        pick: "route_guid",
        by: "app_guid",
        values,
    };
    if let Some(app) = app_guid {
        db::get::<App>(&ctx.pool, app).await?;
        c.push(mapped_to(vec![app.to_string()]));
    }
    if let Some(apps) = params.list("app_guids") {
        c.push(mapped_to(apps));
    }
    c.extend(in_visible_spaces(perms, "space_guid"));
    let page: Page<Route> = paged(ctx, params, TIMES, &c).await?;
    Ok(page.with(with_destinations(ctx, page.items.clone()).await?))
}

async fn with_destinations(ctx: &Ctx, routes: Vec<Route>) -> ApiResult<Vec<RouteView>> {
    let guids: Vec<String> = routes.iter().map(|r| r.guid.clone()).collect();
    let dests: Vec<Destination> = db::list(&ctx.pool, &[Cond::In("route_guid", guids)]).await?;
    let domains = db::all::<Domain>(&ctx.pool).await?;
    Ok(routes
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

/// One route with its domain and destinations.
pub async fn route(ctx: &Ctx, guid: &str) -> ApiResult<RouteView> {
    let r = db::get::<Route>(&ctx.pool, guid).await?;
    let domain = db::get::<Domain>(&ctx.pool, &r.domain_guid).await?;
    let dests = db::where_eq::<Destination>(&ctx.pool, "route_guid", guid).await?;
    Ok((r, domain, dests))
}

/// A route's destinations (the route must exist).
pub async fn destinations(ctx: &Ctx, route_guid: &str) -> ApiResult<Vec<Destination>> {
    db::get::<Route>(&ctx.pool, route_guid).await?;
    db::where_eq::<Destination>(&ctx.pool, "route_guid", route_guid).await
}

/// The ActualLrps of a process's current DesiredLrp (none unless its app
/// runs).
pub async fn instances(
    ctx: &Ctx,
    app: &App,
    p: &Process,
) -> ApiResult<Vec<kiln_model::bbs::ActualLrp>> {
    let running = app.state == kiln_model::AppState::Started && app.droplet_guid.is_some();
    if !running {
        return Ok(Vec::new());
    }
    Ok(ctx
        .bbs
        .actual_lrps(kiln_bbs::ActualLrpFilter {
            process_guid: Some(crate::diego::lrp_guid(p)),
            ..kiln_bbs::ActualLrpFilter::default()
        })
        .await?)
}

/// The cells' latest container metric of each instance of `p`, as Cloud
/// Controller reads them from log cache.
pub fn container_metrics(
    ctx: &Ctx,
    app: &App,
    p: &Process,
) -> Vec<kiln_model::logs::ContainerMetric> {
    ctx.logs
        .container_metrics(&app.guid, &crate::diego::lrp_guid(p))
}

/// Deployments with their revisions, filtered as `GET /v3/deployments`.
pub async fn deployments(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<(db::Deployment, Option<db::Revision>)>> {
    let mut c = conds(
        params,
        &[
            ("app_guids", "app_guid"),
            ("guids", "guid"),
            ("states", "state"),
            ("status_reasons", "status_reason"),
        ],
    )?;
    // A status value is a set of states.
    if let Some(values) = params.list("status_values") {
        let states = values
            .iter()
            .flat_map(|v| match v.as_str() {
                "ACTIVE" => &["DEPLOYING", "PAUSED", "CANCELING"][..],
                "FINALIZED" => &["DEPLOYED", "CANCELED"][..],
                _ => &[][..],
            })
            .map(|s| s.to_string())
            .collect();
        c.push(Cond::In("state", states));
    }
    c.extend(of_visible_apps(perms));
    let page: Page<db::Deployment> = paged(ctx, params, TIMES, &c).await?;
    let mut out = Vec::with_capacity(page.items.len());
    for d in page.items.iter().cloned() {
        out.push(deployment_revision(ctx, d).await?);
    }
    Ok(page.with(out))
}

/// One deployment with its revision.
pub async fn deployment(
    ctx: &Ctx,
    guid: &str,
) -> ApiResult<(db::Deployment, Option<db::Revision>)> {
    let d = db::get::<db::Deployment>(&ctx.pool, guid).await?;
    deployment_revision(ctx, d).await
}

async fn deployment_revision(
    ctx: &Ctx,
    d: db::Deployment,
) -> ApiResult<(db::Deployment, Option<db::Revision>)> {
    let rev = match &d.revision_guid {
        Some(g) => db::find::<db::Revision>(&ctx.pool, g).await?,
        None => None,
    };
    Ok((d, rev))
}

/// An app's revisions (`versions` filter), each with its droplet.
pub async fn app_revisions(
    ctx: &Ctx,
    app_guid: &str,
    params: &ListParams,
) -> ApiResult<Page<(db::Revision, Option<Droplet>)>> {
    db::get::<App>(&ctx.pool, app_guid).await?;
    let mut c = conds(params, &[("versions", "version")])?;
    c.push(Cond::In("app_guid", vec![app_guid.to_string()]));
    let page: Page<db::Revision> = paged(ctx, params, TIMES, &c).await?;
    let mut out = Vec::with_capacity(page.items.len());
    for r in page.items.iter().cloned() {
        out.push(revision_droplet(ctx, r).await?);
    }
    Ok(page.with(out))
}

/// One revision with its droplet.
pub async fn revision(ctx: &Ctx, guid: &str) -> ApiResult<(db::Revision, Option<Droplet>)> {
    let r = db::get::<db::Revision>(&ctx.pool, guid).await?;
    revision_droplet(ctx, r).await
}

async fn revision_droplet(
    ctx: &Ctx,
    r: db::Revision,
) -> ApiResult<(db::Revision, Option<Droplet>)> {
    let d = db::find::<Droplet>(&ctx.pool, &r.droplet_guid).await?;
    Ok((r, d))
}

/// A build, held while it is STAGING until its staging Task is gone (the
/// result is recorded before the Task is deleted) or `wait` passed.
pub async fn build_when_staged(
    ctx: &Ctx,
    guid: &str,
    wait: std::time::Duration,
) -> ApiResult<Build> {
    let events = ctx.bbs.subscribe();
    let build = db::get::<Build>(&ctx.pool, guid).await?;
    if build.state != kiln_model::BuildState::Staging {
        return Ok(build);
    }
    crate::diego::waits::until(
        events,
        wait,
        |e| matches!(e, kiln_model::bbs::BbsEvent::TaskRemoved { task_guid } if task_guid == guid),
    )
    .await;
    db::get::<Build>(&ctx.pool, guid).await
}

/// A process's instances, held while none is RUNNING until one of them
/// changes state or `wait` passed (a client waiting for a start).
pub async fn instances_when_changed(
    ctx: &Ctx,
    app: &App,
    p: &Process,
    wait: std::time::Duration,
) -> ApiResult<Vec<kiln_model::bbs::ActualLrp>> {
    use kiln_model::bbs::BbsEvent;
    let events = ctx.bbs.subscribe();
    let now = instances(ctx, app, p).await?;
    let running = now
        .iter()
        .any(|a| a.state == kiln_model::ActualLrpState::Running);
    if running || app.state != kiln_model::AppState::Started {
        return Ok(now);
    }
    let lrp = crate::diego::lrp_guid(p);
    crate::diego::waits::until(events, wait, |e| match e {
        BbsEvent::ActualLrpChanged { actual_lrp } => actual_lrp.key.process_guid == lrp,
        BbsEvent::ActualLrpRemoved { key } => key.process_guid == lrp,
        _ => false,
    })
    .await;
    instances(ctx, app, p).await
}

/// Conditions through an app's space and org, for resources that belong
/// to an app (`space_guids`, `organization_guids`).
async fn app_scope(ctx: &Ctx, params: &ListParams, c: &mut Vec<Cond>) -> ApiResult<()> {
    let in_spaces = |values| Cond::Via {
        column: "app_guid",
        table: "apps",
        pick: "guid",
        by: "space_guid",
        values,
    };
    if let Some(spaces) = params.list("space_guids") {
        c.push(in_spaces(spaces));
    }
    if let Some(orgs) = params.list("organization_guids") {
        let spaces = db::list::<Space>(&ctx.pool, &[Cond::In("organization_guid", orgs)]).await?;
        c.push(in_spaces(spaces.into_iter().map(|s| s.guid).collect()));
    }
    Ok(())
}

/// Tasks (`GET /v3/tasks`, and of one app when `app_guid` is given, which
/// must exist): `guids`, `names`, `states`, `app_guids`, `space_guids`,
/// `organization_guids`, and `sequence_ids` on an app's list.
pub async fn tasks(
    ctx: &Ctx,
    perms: &Permissions,
    app_guid: Option<&str>,
    params: &ListParams,
) -> ApiResult<Page<Task>> {
    let mut c = conds(
        params,
        &[("guids", "guid"), ("names", "name"), ("states", "state")],
    )?;
    c.extend(of_visible_apps(perms));
    match app_guid {
        Some(app) => {
            db::get::<App>(&ctx.pool, app).await?;
            c.push(Cond::In("app_guid", vec![app.to_string()]));
            c.extend(more_conds(params, &[("sequence_ids", "sequence_id")]));
        }
        None => {
            c.extend(more_conds(params, &[("app_guids", "app_guid")]));
            app_scope(ctx, params, &mut c).await?;
        }
    }
    paged(ctx, params, TIMES, &c).await
}

/// `created_ats` and its `[lt]`, `[lte]`, `[gt]`, `[gte]` forms, as Cloud
/// Controller filters timestamps.
fn created_ats(params: &ListParams, c: &mut Vec<Cond>) -> ApiResult<()> {
    if let Some(values) = params.list("created_ats") {
        c.push(Cond::In("created_at", values));
    }
    for (suffix, op) in [("lt", "<"), ("lte", "<="), ("gt", ">"), ("gte", ">=")] {
        if let Some(value) = params.get(&format!("created_ats[{suffix}]")) {
            if crate::util::parse_time(value).is_none() {
                return Err(ApiError::bad_query(format!(
                    "created_ats[{suffix}] must be a timestamp such as 2026-01-02T03:04:05Z"
                )));
            }
            c.push(Cond::Cmp("created_at", op, value.to_string()));
        }
    }
    Ok(())
}

/// Audit events (`GET /v3/audit_events`): `types`, `target_guids`,
/// `space_guids`, `organization_guids`, `created_ats`. A user who is not
/// an admin reads the events of the spaces it reads.
pub async fn audit_events(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<AuditEvent>> {
    let mut c = conds(
        params,
        &[
            ("types", "type"),
            ("target_guids", "target_guid"),
            ("space_guids", "space_guid"),
            ("organization_guids", "organization_guid"),
        ],
    )?;
    created_ats(params, &mut c)?;
    c.extend(in_visible_spaces(perms, "space_guid"));
    paged(ctx, params, TIMES, &c).await
}

/// Roles the caller sees (those in orgs and spaces it reads), filtered as
/// `GET /v3/roles`.
pub async fn roles(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<db::Role>> {
    let mut c = conds(
        params,
        &[
            ("guids", "guid"),
            ("types", "type"),
            ("user_guids", "user_guid"),
            ("space_guids", "space_guid"),
            ("organization_guids", "organization_guid"),
        ],
    )?;
    // A role's scope is its space or its org (guids never collide).
    if let (Some(spaces), Some(orgs)) = (perms.readable_spaces(), perms.readable_orgs()) {
        c.push(Cond::In(
            "scope_guid",
            spaces.into_iter().chain(orgs).collect(),
        ));
    }
    paged(ctx, params, TIMES, &c).await
}

/// The guids of the users the caller sees: itself and those with a role in
/// an org it reads (`None`: all).
async fn visible_user_guids(ctx: &Ctx, perms: &Permissions) -> ApiResult<Option<Vec<String>>> {
    let Some(orgs) = perms.readable_orgs() else {
        return Ok(None);
    };
    let roles: Vec<db::Role> = db::list(&ctx.pool, &[Cond::In("organization_guid", orgs)]).await?;
    let mut guids: Vec<String> = roles.into_iter().map(|r| r.user_guid).collect();
    guids.push(perms.user_guid.clone());
    guids.sort();
    guids.dedup();
    Ok(Some(guids))
}

/// A CC user with its UAA user (when UAA knows the guid).
pub type UserView = (db::CcUser, Option<db::User>);

async fn with_uaa(ctx: &Ctx, users: Vec<db::CcUser>) -> ApiResult<Vec<UserView>> {
    let guids = users.iter().map(|u| u.guid.clone()).collect();
    let uaa: Vec<db::User> = db::list(&ctx.pool, &[Cond::In("guid", guids)]).await?;
    Ok(users
        .into_iter()
        .map(|u| {
            let found = uaa.iter().find(|x| x.guid == u.guid).cloned();
            (u, found)
        })
        .collect())
}

/// `GET /v3/users` (filters `guids`, `usernames`).
pub async fn users(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<UserView>> {
    let mut c = conds(params, &[("guids", "guid")])?;
    if let Some(names) = params.list("usernames") {
        c.push(Cond::Via {
            column: "guid",
            table: "users",
            pick: "guid",
            by: "username",
            values: names,
        });
    }
    if let Some(visible) = visible_user_guids(ctx, perms).await? {
        c.push(Cond::In("guid", visible));
    }
    let page: Page<db::CcUser> = paged(ctx, params, TIMES, &c).await?;
    Ok(page.with(with_uaa(ctx, page.items.clone()).await?))
}

/// `GET /v3/users/:guid`: 404 unless the caller sees the user.
pub async fn user(ctx: &Ctx, perms: &Permissions, guid: &str) -> ApiResult<UserView> {
    let visible = visible_user_guids(ctx, perms).await?;
    if visible.is_some_and(|v| !v.iter().any(|g| g == guid)) {
        return Err(ApiError::not_found("User"));
    }
    let user = db::get::<db::CcUser>(&ctx.pool, guid).await?;
    Ok(with_uaa(ctx, vec![user]).await?.remove(0))
}

/// What `include=user,space,organization` adds to a list of roles.
pub async fn role_includes(
    ctx: &Ctx,
    roles: &[db::Role],
    include: &[String],
) -> ApiResult<(Vec<UserView>, Vec<Space>, Vec<Organization>)> {
    let wants = |k: &str| include.iter().any(|i| i == k);
    let pick = |f: fn(&db::Role) -> Option<String>| {
        let mut v: Vec<String> = roles.iter().filter_map(f).collect();
        v.sort();
        v.dedup();
        v
    };
    let users = if wants("user") {
        let guids = pick(|r| Some(r.user_guid.clone()));
        with_uaa(ctx, db::list(&ctx.pool, &[Cond::In("guid", guids)]).await?).await?
    } else {
        Vec::new()
    };
    let spaces = if wants("space") {
        db::list(
            &ctx.pool,
            &[Cond::In("guid", pick(|r| r.space_guid.clone()))],
        )
        .await?
    } else {
        Vec::new()
    };
    let orgs = if wants("organization") {
        let guids = pick(|r| r.space_guid.is_none().then(|| r.organization_guid.clone()));
        db::list(&ctx.pool, &[Cond::In("guid", guids)]).await?
    } else {
        Vec::new()
    };
    Ok((users, spaces, orgs))
}

/// Service instances the caller sees (`GET /v3/service_instances`):
/// `names`, `guids`, `space_guids`, `organization_guids`, `type`.
pub async fn service_instances(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<db::ServiceInstance>> {
    if let Some(t) = params.get("type")
        && t != "managed"
        && t != "user-provided"
    {
        return Err(ApiError::bad_query(
            "Type must be one of 'managed', 'user-provided'",
        ));
    }
    let mut c = conds(
        params,
        &[
            ("names", "name"),
            ("guids", "guid"),
            ("space_guids", "space_guid"),
            ("type", "type"),
        ],
    )?;
    c.extend(in_orgs(params));
    c.extend(in_visible_spaces(perms, "space_guid"));
    paged(ctx, params, NAMED, &c).await
}

/// Credential bindings the caller sees (those of apps it sees), filtered
/// as `GET /v3/service_credential_bindings`: `names`, `guids`, `type`,
/// `app_guids`, `app_names`, `service_instance_guids`,
/// `service_instance_names`.
pub async fn service_bindings(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<db::ServiceBinding>> {
    if let Some(t) = params.get("type")
        && t != "app"
        && t != "key"
    {
        return Err(ApiError::bad_query("Type must be one of 'app', 'key'"));
    }
    let mut c = conds(
        params,
        &[
            ("names", "name"),
            ("guids", "guid"),
            ("type", "type"),
            ("app_guids", "app_guid"),
            ("service_instance_guids", "service_instance_guid"),
        ],
    )?;
    let by_name = |column, table, values| Cond::Via {
        column,
        table,
        pick: "guid",
        by: "name",
        values,
    };
    if let Some(names) = params.list("service_instance_names") {
        c.push(by_name("service_instance_guid", "service_instances", names));
    }
    if let Some(names) = params.list("app_names") {
        c.push(by_name("app_guid", "apps", names));
    }
    c.extend(of_visible_apps(perms));
    paged(ctx, params, NAMED, &c).await
}

/// Organization quotas (`GET /v3/organization_quotas`): `names`, `guids`,
/// `organization_guids`; with the orgs each is applied to, narrowed to
/// the orgs the caller sees.
pub async fn org_quotas(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<(db::OrganizationQuota, Vec<String>)>> {
    let mut c = conds(params, &[("names", "name"), ("guids", "guid")])?;
    if let Some(orgs) = params.list("organization_guids") {
        c.push(Cond::Via {
            column: "guid",
            table: "organization_quota_assignments",
            pick: "quota_guid",
            by: "guid",
            values: orgs,
        });
    }
    let page: Page<db::OrganizationQuota> = paged(ctx, params, NAMED, &c).await?;
    with_seen_holders::<_, db::QuotaAssignment>(ctx, page, |q| &q.guid, |o| perms.can_read_org(o))
        .await
}

/// The orgs a quota is applied to that the caller sees.
pub async fn org_quota_orgs(ctx: &Ctx, perms: &Permissions, quota: &str) -> ApiResult<Vec<String>> {
    seen_holders::<db::QuotaAssignment>(ctx, quota, |o| perms.can_read_org(o)).await
}

/// The orgs or spaces (as `A` says) quota `quota` is applied to that the
/// caller sees.
async fn seen_holders<A: db::QuotaHolding>(
    ctx: &Ctx,
    quota: &str,
    sees: impl Fn(&str) -> bool,
) -> ApiResult<Vec<String>> {
    let all = db::quota_holders::<A>(&ctx.pool, quota).await?;
    Ok(all.into_iter().filter(|h| sees(h)).collect())
}

/// A page of org or space quotas, each with the holders of it the caller
/// sees.
async fn with_seen_holders<Q: Clone, A: db::QuotaHolding>(
    ctx: &Ctx,
    page: Page<Q>,
    guid: impl Fn(&Q) -> &str,
    sees: impl Fn(&str) -> bool,
) -> ApiResult<Page<(Q, Vec<String>)>> {
    let mut out = Vec::with_capacity(page.items.len());
    for q in page.items.iter().cloned() {
        let holders = seen_holders::<A>(ctx, guid(&q), &sees).await?;
        out.push((q, holders));
    }
    Ok(page.with(out))
}

/// Space quotas (`GET /v3/space_quotas`): `names`, `guids`,
/// `organization_guids`, `space_guids`; only those the caller sees (its
/// managed orgs' and those on a space it reads, in SQL), each with the
/// spaces it is applied to that the caller sees.
pub async fn space_quotas(
    ctx: &Ctx,
    perms: &Permissions,
    params: &ListParams,
) -> ApiResult<Page<(db::SpaceQuota, Vec<String>)>> {
    let mut c = conds(
        params,
        &[
            ("names", "name"),
            ("guids", "guid"),
            ("organization_guids", "organization_guid"),
        ],
    )?;
    let via_spaces = |values| Cond::Via {
        column: "guid",
        table: "space_quota_assignments",
        pick: "quota_guid",
        by: "guid",
        values,
    };
    if let Some(spaces) = params.list("space_guids") {
        c.push(via_spaces(spaces));
    }
    if let (Some(managed), Some(spaces)) = (perms.managed_orgs(), perms.readable_spaces()) {
        c.push(Cond::Any(vec![
            Cond::In("organization_guid", managed),
            via_spaces(spaces),
        ]));
    }
    let page: Page<db::SpaceQuota> = paged(ctx, params, NAMED, &c).await?;
    with_seen_holders::<_, db::SpaceQuotaAssignment>(
        ctx,
        page,
        |q| &q.guid,
        |s| perms.can_read_space(s),
    )
    .await
}

/// One space quota the caller sees (CC's 404 otherwise), with the spaces
/// it is applied to that the caller sees.
pub async fn space_quota(
    ctx: &Ctx,
    perms: &Permissions,
    guid: &str,
) -> ApiResult<(db::SpaceQuota, Vec<String>)> {
    let found = db::find::<db::SpaceQuota>(&ctx.pool, guid).await?;
    let all = db::quota_holders::<db::SpaceQuotaAssignment>(&ctx.pool, guid).await?;
    match found {
        Some(q) if perms.can_read_space_quota(&q.organization_guid, &all) => {
            let seen = all
                .into_iter()
                .filter(|s| perms.can_read_space(s))
                .collect();
            Ok((q, seen))
        }
        _ => Err(ApiError::not_found("Space quota")),
    }
}

/// The quota of each of `holders` that has one (holder → quota): orgs'
/// organization quotas for `A` = [`db::QuotaAssignment`], spaces' space
/// quotas for [`db::SpaceQuotaAssignment`].
pub async fn quota_guids<A: db::QuotaHolding>(
    ctx: &Ctx,
    holders: &[String],
) -> ApiResult<std::collections::HashMap<String, String>> {
    db::quotas_of::<A>(&ctx.pool, holders).await
}

/// The spaces a space quota is applied to that the caller sees.
pub async fn space_quota_spaces(
    ctx: &Ctx,
    perms: &Permissions,
    quota: &str,
) -> ApiResult<Vec<String>> {
    seen_holders::<db::SpaceQuotaAssignment>(ctx, quota, |s| perms.can_read_space(s)).await
}

/// The labels and annotations of each of `guids` that has any.
pub async fn metadata(
    ctx: &Ctx,
    guids: &[String],
) -> ApiResult<std::collections::HashMap<String, db::metadata::Metadata>> {
    db::metadata::read(&ctx.pool, guids).await
}

/// What is in use, platform-wide or in one org (which must exist).
pub async fn usage(ctx: &Ctx, org: Option<&str>) -> ApiResult<db::settings::Usage> {
    if let Some(org) = org {
        db::get::<Organization>(&ctx.pool, org).await?;
    }
    db::settings::usage(&ctx.pool, org).await
}

/// Whether the domain (which must exist) has a route with the `host` and
/// `path` the query gives (CC's check-route).
pub async fn route_reserved(
    ctx: &Ctx,
    perms: &Permissions,
    domain_guid: &str,
    params: &ListParams,
) -> ApiResult<bool> {
    domain(ctx, perms, domain_guid).await?;
    let mut c = vec![Cond::In("domain_guid", vec![domain_guid.to_string()])];
    for (param, column) in [("host", "host"), ("path", "path")] {
        if let Some(v) = params.get(param) {
            c.push(Cond::In(column, vec![v.to_string()]));
        }
    }
    Ok(!db::list::<Route>(&ctx.pool, &c).await?.is_empty())
}

/// A package whose bits can be downloaded: a READY bits package.
pub async fn downloadable_package(ctx: &Ctx, guid: &str) -> ApiResult<Package> {
    let p = db::get::<Package>(&ctx.pool, guid).await?;
    if p.state != kiln_model::PackageState::Ready || p.r#type != "bits" {
        return Err(ApiError::unprocessable(
            "Package type must be bits and its state READY to download it.",
        ));
    }
    Ok(p)
}

/// A droplet whose bits may be downloaded (CC's checks and words).
pub async fn downloadable_droplet(ctx: &Ctx, guid: &str) -> ApiResult<Droplet> {
    let d = db::get::<Droplet>(&ctx.pool, guid).await?;
    if d.lifecycle_type == "docker" {
        return Err(ApiError::unprocessable(
            "Cannot download droplets with 'docker' lifecycle.",
        ));
    }
    if d.state != kiln_model::DropletState::Staged {
        return Err(ApiError::unprocessable(
            "Only staged droplets can be downloaded.",
        ));
    }
    Ok(d)
}

/// The revisions an app (which must exist) runs: while started, the newest
/// revision of its current droplet.
pub async fn deployed_revisions(
    ctx: &Ctx,
    app_guid: &str,
) -> ApiResult<Vec<(db::Revision, Option<Droplet>)>> {
    let app = db::get::<App>(&ctx.pool, app_guid).await?;
    let Some(droplet) = app
        .droplet_guid
        .filter(|_| app.state == kiln_model::AppState::Started)
    else {
        return Ok(Vec::new());
    };
    let revs: Vec<db::Revision> = db::list(
        &ctx.pool,
        &[
            Cond::In("app_guid", vec![app_guid.to_string()]),
            Cond::In("droplet_guid", vec![droplet]),
        ],
    )
    .await?;
    match revs.into_iter().last() {
        Some(r) => Ok(vec![revision_droplet(ctx, r).await?]),
        None => Ok(Vec::new()),
    }
}

/// An app (which must exist) as a manifest entry.
pub async fn app_manifest(ctx: &Ctx, app_guid: &str) -> ApiResult<serde_json::Value> {
    let app = db::get::<App>(&ctx.pool, app_guid).await?;
    let processes: Vec<Process> =
        db::list(&ctx.pool, &[Cond::In("app_guid", vec![app.guid.clone()])]).await?;
    let uris = crate::environment::app_uris(ctx, &app.guid, None).await?;
    let image = match &app.droplet_guid {
        Some(d) => db::find::<Droplet>(&ctx.pool, d)
            .await?
            .and_then(|d| d.docker_image),
        None => None,
    };
    let meta = db::metadata::read(&ctx.pool, std::slice::from_ref(&app.guid)).await?;
    Ok(crate::presenters::manifest::app_manifest(
        &app,
        &processes,
        &uris,
        image.as_deref(),
        meta.get(&app.guid),
    ))
}

/// The manifest entries of the space's apps named `names` (absent: none).
pub async fn space_app_manifests(
    ctx: &Ctx,
    space_guid: &str,
    names: Vec<String>,
) -> ApiResult<std::collections::HashMap<String, serde_json::Value>> {
    let apps: Vec<App> = db::list(
        &ctx.pool,
        &[
            Cond::In("space_guid", vec![space_guid.to_string()]),
            Cond::In("name", names),
        ],
    )
    .await?;
    let mut out = std::collections::HashMap::new();
    for a in apps {
        out.insert(a.name.clone(), app_manifest(ctx, &a.guid).await?);
    }
    Ok(out)
}
