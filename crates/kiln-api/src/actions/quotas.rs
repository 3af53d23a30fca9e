//! Organization quotas (Cloud Controller's `OrganizationQuotasCreate`,
//! `OrganizationQuotasUpdate`, `OrganizationQuotaApply`,
//! `OrganizationQuotaDelete`, and the process and route quota policies):
//! every org has one quota (`default`, CF's default limits, unless another
//! is applied); starting or scaling an app and creating a route are
//! refused with CC's words when they would pass the org's limits. The
//! check reads the org's use and then writes, without holding a lock
//! across both (as CC's validations do): two racing starts may both pass.
//! User-provided service instances count against no quota (as in CC).
//! Space quotas ([`super::space_quotas`]) are checked here too.

use crate::context::Ctx;
use crate::db::{self, App, Organization, OrganizationQuota, Process, QuotaAssignment, Space};
use crate::error::{ApiError, ApiResult};
use crate::messages::quotas::{ApplyQuota, OrgQuotaBody, unlimited};
use crate::util;
use serde_json::{Value, json};

pub const DEFAULT_QUOTA: &str = "default";

/// CF's default quota (capi-release's `default_quota_definition`): 10 GB of
/// memory, 1,000 routes, 100 service instances.
fn default_limits() -> Value {
    let mut limits = unlimited();
    limits["apps"]["total_memory_in_mb"] = json!(10240);
    limits["routes"]["total_routes"] = json!(1000);
    limits["services"]["total_service_instances"] = json!(100);
    limits
}

/// Gives `org` the quota `quota_guid` (its only one).
pub async fn assign(
    conn: &mut kiln_store::Connection,
    org: &str,
    quota_guid: &str,
) -> ApiResult<()> {
    db::assign_quota::<QuotaAssignment>(conn, org, quota_guid).await
}

pub async fn default_quota(ctx: &Ctx) -> ApiResult<OrganizationQuota> {
    db::first_where::<OrganizationQuota>(&ctx.pool, &[("name", DEFAULT_QUOTA)])
        .await?
        .ok_or_else(|| ApiError::not_found("Organization quota"))
}

/// First start (and every start): the default quota exists and every org
/// without a quota has it.
pub async fn ensure_default(ctx: &Ctx) -> ApiResult<()> {
    let now = util::now();
    db::insert_if_absent::<OrganizationQuota>(
        &ctx.pool,
        vec![
            ("guid", util::new_guid().into()),
            ("name", DEFAULT_QUOTA.into()),
            ("limits", db::json_text(&default_limits())),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    let default = default_quota(ctx).await?;
    let assigned = db::all::<QuotaAssignment>(&ctx.pool).await?;
    for org in db::all::<Organization>(&ctx.pool).await? {
        if !assigned.iter().any(|a| a.guid == org.guid) {
            let mut conn = ctx.pool.acquire().await?;
            assign(&mut conn, &org.guid, &default.guid).await?;
        }
    }
    Ok(())
}

/// The quota an org has.
pub async fn quota_of(ctx: &Ctx, org: &str) -> ApiResult<OrganizationQuota> {
    match db::find::<QuotaAssignment>(&ctx.pool, org).await? {
        Some(a) => db::get::<OrganizationQuota>(&ctx.pool, &a.quota_guid).await,
        None => default_quota(ctx).await,
    }
}

/// The orgs that have a quota.
pub async fn orgs_of(ctx: &Ctx, quota_guid: &str) -> ApiResult<Vec<String>> {
    db::quota_holders::<QuotaAssignment>(&ctx.pool, quota_guid).await
}

fn taken(name: &str) -> String {
    format!("Organization Quota '{name}' already exists.")
}

/// `POST /v3/organization_quotas`.
pub async fn create(ctx: &Ctx, body: OrgQuotaBody) -> ApiResult<OrganizationQuota> {
    body.validate_name(true)?;
    let limits = body.limits_over(unlimited())?;
    let name = body.name.clone().unwrap_or_default();
    let orgs = requested_orgs(ctx, &body).await?;
    let guid = util::new_guid();
    let now = util::now();
    let mut tx = ctx.pool.begin().await?;
    let inserted = db::insert::<OrganizationQuota>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", name.as_str().into()),
            ("limits", db::json_text(&limits)),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, || taken(&name))?;
    for org in &orgs {
        assign(&mut tx, org, &guid).await?;
    }
    tx.commit().await?;
    tracing::info!(quota_guid = %guid, name, "organization quota created");
    db::get::<OrganizationQuota>(&ctx.pool, &guid).await
}

/// The orgs a body's relationships name; each must exist.
async fn requested_orgs(ctx: &Ctx, body: &OrgQuotaBody) -> ApiResult<Vec<String>> {
    let Some(data) = body
        .relationships
        .as_ref()
        .and_then(|r| r.organizations.as_ref())
    else {
        return Ok(Vec::new());
    };
    existing_orgs(ctx, data).await
}

async fn existing_orgs(ctx: &Ctx, data: &ApplyQuota) -> ApiResult<Vec<String>> {
    let guids: Vec<String> = data.data.iter().map(|g| g.guid.clone()).collect();
    let found = db::list::<Organization>(&ctx.pool, &[db::Cond::In("guid", guids.clone())]).await?;
    all_found(
        &guids,
        |g| found.iter().any(|o| &o.guid == g),
        |missing| {
            format!(
                "Organizations with guids {missing:?} do not exist, or you do not have access to them."
            )
        },
    )?;
    Ok(guids)
}

/// CC's 422 naming every one of `guids` that is not `found` (`words` puts
/// them in CC's sentence), else nothing.
pub(super) fn all_found(
    guids: &[String],
    found: impl Fn(&String) -> bool,
    words: impl FnOnce(&[&String]) -> String,
) -> ApiResult<()> {
    let missing: Vec<&String> = guids.iter().filter(|g| !found(g)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(words(&missing)))
    }
}

/// `PATCH /v3/organization_quotas/:guid`: the limits given replace those
/// stored.
pub async fn update(ctx: &Ctx, guid: &str, body: OrgQuotaBody) -> ApiResult<OrganizationQuota> {
    let q = db::get::<OrganizationQuota>(&ctx.pool, guid).await?;
    body.validate_name(false)?;
    if body.relationships.is_some() {
        return Err(ApiError::unprocessable("Unknown field(s): 'relationships'"));
    }
    let limits = body.limits_over(q.limits.clone())?;
    let name = body.name.clone().unwrap_or(q.name);
    let updated = db::update::<OrganizationQuota>(
        &ctx.pool,
        guid,
        vec![
            ("name", name.as_str().into()),
            ("limits", db::json_text(&limits)),
        ],
    )
    .await;
    db::unique_or_taken(updated, || taken(&name))?;
    db::get::<OrganizationQuota>(&ctx.pool, guid).await
}

/// `POST /v3/organization_quotas/:guid/relationships/organizations`.
pub async fn apply(ctx: &Ctx, guid: &str, data: ApplyQuota) -> ApiResult<Vec<String>> {
    db::get::<OrganizationQuota>(&ctx.pool, guid).await?;
    let orgs = existing_orgs(ctx, &data).await?;
    let mut tx = ctx.pool.begin().await?;
    for org in &orgs {
        assign(&mut tx, org, guid).await?;
    }
    tx.commit().await?;
    orgs_of(ctx, guid).await
}

/// `DELETE /v3/organization_quotas/:guid`: only a quota no org has.
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    db::get::<OrganizationQuota>(&ctx.pool, guid).await?;
    if !orgs_of(ctx, guid).await?.is_empty() {
        return Err(ApiError::unprocessable(
            "This quota is applied to one or more organizations. Remove this quota from all organizations before deleting.",
        ));
    }
    db::delete_where::<OrganizationQuota>(&ctx.pool, "guid", guid).await?;
    Ok(())
}

fn limit(limits: &Value, group: &str, key: &str) -> Option<i64> {
    limits[group][key].as_i64()
}

async fn org_of_space(ctx: &Ctx, space: &str) -> ApiResult<Space> {
    db::get::<Space>(&ctx.pool, space).await
}

/// What a set of processes would run: total memory, instances, and
/// whether any running instance has more memory than `per_process`.
struct Want<'a>(&'a [(i64, i64)]);

impl Want<'_> {
    fn memory(&self) -> i64 {
        self.0.iter().map(|(n, mb)| n * mb).sum()
    }
    fn instances(&self) -> i64 {
        self.0.iter().map(|(n, _)| n).sum()
    }
    fn over_per_process(&self, limits: &Value) -> bool {
        limit(limits, "apps", "per_process_memory_in_mb")
            .is_some_and(|max| self.0.iter().any(|(n, mb)| *n > 0 && *mb > max))
    }
}

/// Whether `app` may run `processes` (its processes with their new
/// instances and memory) beside what its space and org run already: CC's
/// AppMaxMemoryPolicy, AppMaxInstanceMemoryPolicy and MaxAppInstancesPolicy
/// on the space's and the org's quota, every failed one in CC's words and
/// order, joined as CC joins a process's validation errors.
pub async fn check_processes(ctx: &Ctx, app: &App, processes: &[(i64, i64)]) -> ApiResult<()> {
    let space = org_of_space(ctx, &app.space_guid).await?;
    let org_q = quota_of(ctx, &space.organization_guid).await?.limits;
    let space_q = super::space_quotas::quota_of(ctx, &space.guid)
        .await?
        .map_or(Value::Null, |q| q.limits);
    let want = Want(processes);
    let (org_mem, org_inst) = db::org_usage(&ctx.pool, &space.organization_guid, &app.guid).await?;
    let (space_mem, space_inst) = db::space_usage(&ctx.pool, &space.guid, &app.guid).await?;
    let over = |limits: &Value, key: &str, used: i64, wanted: i64| {
        limit(limits, "apps", key).is_some_and(|max| used + wanted > max)
    };
    let failures = [
        (
            over(&space_q, "total_memory_in_mb", space_mem, want.memory()),
            "memory space_quota_exceeded",
        ),
        (
            over(&org_q, "total_memory_in_mb", org_mem, want.memory()),
            "memory quota_exceeded",
        ),
        (
            want.over_per_process(&org_q),
            "memory instance_memory_limit_exceeded",
        ),
        (
            want.over_per_process(&space_q),
            "memory space_instance_memory_limit_exceeded",
        ),
        (
            over(&org_q, "total_instances", org_inst, want.instances()),
            "app_instance_limit app_instance_limit_exceeded",
        ),
        (
            over(&space_q, "total_instances", space_inst, want.instances()),
            "app_instance_limit space_app_instance_limit_exceeded",
        ),
    ];
    let failed: Vec<&str> = failures
        .iter()
        .filter(|(failed, _)| *failed)
        .map(|(_, words)| *words)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(failed.join(", ")))
    }
}

/// Starting `app` (all its processes as they are).
pub async fn check_start(ctx: &Ctx, app: &App) -> ApiResult<()> {
    let processes: Vec<(i64, i64)> = db::where_eq::<Process>(&ctx.pool, "app_guid", &app.guid)
        .await?
        .iter()
        .map(|p| (p.instances, p.memory_in_mb))
        .collect();
    check_processes(ctx, app, &processes).await
}

/// Scaling process `p` of a started app to `instances` × `memory`.
pub async fn check_scale(ctx: &Ctx, p: &Process, instances: i64, memory: i64) -> ApiResult<()> {
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    if app.state != kiln_model::AppState::Started {
        return Ok(());
    }
    let processes: Vec<(i64, i64)> = db::where_eq::<Process>(&ctx.pool, "app_guid", &app.guid)
        .await?
        .iter()
        .map(|o| {
            if o.guid == p.guid {
                (instances, memory)
            } else {
                (o.instances, o.memory_in_mb)
            }
        })
        .collect();
    check_processes(ctx, &app, &processes).await
}

/// A new task of `app` (CC's MaxAppTasksPolicy: `per_app_tasks` is how
/// many tasks may be pending or running in the org, and in the space, at
/// once), org first as CC validates, in CC's words.
pub async fn check_task(ctx: &Ctx, app: &App) -> ApiResult<()> {
    let space = org_of_space(ctx, &app.space_guid).await?;
    let org_q = quota_of(ctx, &space.organization_guid).await?.limits;
    let space_q = super::space_quotas::quota_of(ctx, &space.guid)
        .await?
        .map_or(Value::Null, |q| q.limits);
    let (in_space, in_org) =
        db::live_tasks(&ctx.pool, &space.guid, &space.organization_guid).await?;
    let full = |limits: &Value, live: i64| {
        limit(limits, "apps", "per_app_tasks").is_some_and(|max| max <= live)
    };
    let failed: Vec<&str> = [full(&org_q, in_org), full(&space_q, in_space)]
        .into_iter()
        .filter(|f| *f)
        .map(|_| "app_task_limit quota exceeded")
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(failed.join(", ")))
    }
}

/// A new route in `space` (CC's MaxRoutesPolicy on the space's quota,
/// then on the org's).
pub async fn check_route(ctx: &Ctx, space: &Space) -> ApiResult<()> {
    if let Some(q) = super::space_quotas::quota_of(ctx, &space.guid).await?
        && let Some(max) = limit(&q.limits, "routes", "total_routes")
        && db::space_routes(&ctx.pool, &space.guid).await? + 1 > max
    {
        return Err(ApiError::unprocessable(format!(
            "Routes quota exceeded for space '{}'.",
            space.name
        )));
    }
    let q = quota_of(ctx, &space.organization_guid).await?;
    let Some(max) = limit(&q.limits, "routes", "total_routes") else {
        return Ok(());
    };
    if db::org_routes(&ctx.pool, &space.organization_guid).await? + 1 > max {
        let org = db::get::<Organization>(&ctx.pool, &space.organization_guid).await?;
        return Err(ApiError::unprocessable(format!(
            "Routes quota exceeded for organization '{}'.",
            org.name
        )));
    }
    Ok(())
}
