//! Build create: checks the package, picks the buildpacks, records the
//! build and its droplet, and desires the staging Task; completion is
//! recorded by `diego::staging`.

use crate::context::Ctx;
use crate::context::CurrentUser;
use crate::db::{self, App, Build, Buildpack, BuildpackState, Droplet, Package, Process, Val};
use crate::diego::{
    self, CustomKind, LifecycleType, StagingBuildpack, StagingDetails, StagingLifecycle,
};
use crate::error::{ApiError, ApiResult};
use crate::messages::CreateBuild;
use crate::uploads::custom_buildpack_id;
use crate::util;
use axum::http::StatusCode;
use kiln_model::{BuildState, DropletState, PackageState, STAGING_DOMAIN};

pub const STAGING_MIN_MEMORY_MB: i64 = 1024;
pub const STAGING_MIN_DISK_MB: i64 = 4096;
pub const NO_BUILDPACKS: &str = "NoBuildpacksFound - There are no buildpacks available";

/// Admin buildpacks in position order.
pub async fn ordered_buildpacks(ctx: &Ctx) -> ApiResult<Vec<Buildpack>> {
    let mut all = db::all::<Buildpack>(&ctx.pool).await?;
    all.sort_by_key(|b| b.position);
    Ok(all)
}

/// The buildpacks a build uses, and whether detection is skipped: admin
/// buildpacks by name, custom ones by URL (git ones are cloned later, at
/// [`desire_staging`]).
async fn choose_buildpacks(
    ctx: &Ctx,
    named: &[String],
) -> ApiResult<(Vec<StagingBuildpack>, bool)> {
    let usable = |b: &Buildpack| b.enabled && b.state == BuildpackState::Ready;
    let all = ordered_buildpacks(ctx).await?;
    if named.is_empty() {
        let detect = all.into_iter().filter(usable).map(StagingBuildpack::Admin);
        return Ok((detect.collect(), false));
    }
    let mut chosen = Vec::new();
    for name in named {
        let bp = match diego::custom_buildpack_kind(name) {
            Some(CustomKind::Zip) => StagingBuildpack::Zip { url: name.clone() },
            Some(CustomKind::Git) => StagingBuildpack::Git {
                url: name.clone(),
                id: String::new(),
                sha256: String::new(),
            },
            None => all
                .iter()
                .find(|b| &b.name == name && usable(b))
                .cloned()
                .map(StagingBuildpack::Admin)
                .ok_or_else(|| {
                    ApiError::unprocessable(format!(
                        "Buildpack \"{name}\" must be an existing admin buildpack or a valid git URI"
                    ))
                })?,
        };
        chosen.push(bp);
    }
    Ok((chosen, true))
}

/// Clones the build's git buildpacks into blobs; the first failure is the
/// build's error.
async fn fetch_git_buildpacks(
    ctx: &Ctx,
    build_guid: &str,
    buildpacks: &mut [StagingBuildpack],
) -> ApiResult<Result<(), String>> {
    for (index, bp) in buildpacks.iter_mut().enumerate() {
        if let StagingBuildpack::Git { url, id, sha256 } = bp {
            *id = custom_buildpack_id(build_guid, index);
            match super::custom_buildpacks::fetch_git(ctx, url, id).await? {
                Ok(sha) => *sha256 = sha,
                Err(why) => return Ok(Err(why)),
            }
        }
    }
    Ok(Ok(()))
}

/// What a build stages, checked before anything is written.
struct Plan {
    app: App,
    package: Package,
    names: Vec<String>,
    stack: String,
    kind: LifecycleType,
    lifecycle: StagingLifecycle,
    memory: i64,
    disk: i64,
    meta: crate::db::metadata::Patch,
}

/// `POST /v3/builds`: returns the build, STAGING, or FAILED when it cannot
/// stage (no buildpacks, the BBS refused the Task).
pub async fn create(ctx: &Ctx, user: &CurrentUser, msg: CreateBuild) -> ApiResult<Build> {
    let plan = plan(ctx, msg).await?;
    let build_guid = util::new_guid();
    let droplet_guid = util::new_guid();
    record(ctx, user, &plan, (&build_guid, &droplet_guid)).await?;
    super::metadata::apply(ctx, &build_guid, &plan.meta).await?;
    ctx.api_log(
        &plan.app.guid,
        &format!("Creating build for app with guid {}", plan.app.guid),
    );
    desire_staging(ctx, plan, &build_guid, &droplet_guid).await?;
    db::get::<Build>(&ctx.pool, &build_guid).await
}

/// Phase 1: the package is READY, the app is not staging already, the
/// lifecycle and buildpacks resolve, staging memory and disk are chosen.
async fn plan(ctx: &Ctx, msg: CreateBuild) -> ApiResult<Plan> {
    let _ = msg.staging_log_rate_limit_bytes_per_second;
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let package = db::find::<Package>(&ctx.pool, &msg.package.guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Unable to use package. Ensure that the package exists and you have access to it.",
            )
        })?;
    if package.state != PackageState::Ready {
        return Err(ApiError::bad_request(
            "Cannot stage package whose state is not ready.",
        ));
    }
    let app = db::get::<App>(&ctx.pool, &package.app_guid).await?;
    let staging = [
        ("app_guid", app.guid.as_str()),
        ("state", BuildState::Staging.as_str()),
    ];
    if db::first_where::<Build>(&ctx.pool, &staging)
        .await?
        .is_some()
    {
        return Err(ApiError::cf(
            StatusCode::UNPROCESSABLE_ENTITY,
            170017,
            "CF-StagingInProgress",
            "Only one build can be STAGING at a time per application.",
        ));
    }
    let kind = LifecycleType::of_package(&package);
    if let Some(l) = &msg.lifecycle
        && l.kind != kind.as_str()
    {
        return Err(ApiError::unprocessable(format!(
            "Lifecycle type must be '{}' to stage a {} package",
            kind.as_str(),
            package.r#type
        )));
    }
    let (names, stack) = match msg.lifecycle {
        Some(l) => {
            let data = l.data.unwrap_or_default();
            (
                data.buildpacks.unwrap_or(app.buildpacks.clone()),
                data.stack.unwrap_or(app.stack.clone()),
            )
        }
        None => (app.buildpacks.clone(), app.stack.clone()),
    };
    let lifecycle = match kind {
        LifecycleType::Buildpack => {
            let (buildpacks, skip_detect) = choose_buildpacks(ctx, &names).await?;
            StagingLifecycle::Buildpack {
                buildpacks,
                skip_detect,
            }
        }
        LifecycleType::Docker => StagingLifecycle::Docker,
    };
    let web =
        db::first_where::<Process>(&ctx.pool, &[("app_guid", &app.guid), ("type", "web")]).await?;
    let memory = msg
        .staging_memory_in_mb
        .unwrap_or(web.as_ref().map_or(0, |p| p.memory_in_mb))
        .max(STAGING_MIN_MEMORY_MB);
    let disk = msg
        .staging_disk_in_mb
        .unwrap_or(web.as_ref().map_or(0, |p| p.disk_in_mb))
        .max(STAGING_MIN_DISK_MB);
    Ok(Plan {
        app,
        package,
        names,
        stack,
        kind,
        lifecycle,
        memory,
        disk,
        meta,
    })
}

/// Phase 3: the staging Task desired in the BBS, or the build FAILED.
async fn desire_staging(
    ctx: &Ctx,
    mut plan: Plan,
    build_guid: &str,
    droplet_guid: &str,
) -> ApiResult<()> {
    if let StagingLifecycle::Buildpack { buildpacks, .. } = &mut plan.lifecycle {
        if buildpacks.is_empty() {
            return diego::staging::fail_build(ctx, build_guid, NO_BUILDPACKS).await;
        }
        if let Err(why) = fetch_git_buildpacks(ctx, build_guid, buildpacks).await? {
            tracing::warn!(build_guid, error = %why, "fetching a git buildpack failed");
            ctx.api_log(&plan.app.guid, &why);
            return diego::staging::fail_build(ctx, build_guid, &why).await;
        }
    }
    let details = StagingDetails {
        app: &plan.app,
        package: &plan.package,
        droplet_guid,
        stack: &plan.stack,
        memory_mb: plan.memory,
        disk_mb: plan.disk,
        lifecycle: plan.lifecycle,
    };
    let definition = diego::staging_task(ctx, &details).await?;
    match ctx
        .bbs
        .desire_task(build_guid, STAGING_DOMAIN, definition)
        .await
    {
        Ok(()) => {
            tracing::info!(build_guid, app_guid = %plan.app.guid, "staging task desired");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(build_guid, error = %e, "desiring the staging task failed");
            let error = format!("StagerUnavailable - Stager is unavailable: {e}");
            diego::staging::fail_build(ctx, build_guid, &error).await
        }
    }
}

/// Phase 2: every build starts STAGING with an AWAITING_UPLOAD droplet, both in one
/// transaction; a build that cannot stage moves to FAILED through
/// `fail_build` like any other.
async fn record(
    ctx: &Ctx,
    user: &CurrentUser,
    plan: &Plan,
    (build_guid, droplet_guid): (&str, &str),
) -> ApiResult<()> {
    let (app, package, stack) = (&plan.app, &plan.package, plan.stack.as_str());
    let now = util::now();
    let data = serde_json::json!({"build_guid": build_guid, "package_guid": package.guid});
    let event =
        crate::audit::app_event(&ctx.pool, app, crate::audit::types::APP_BUILD_CREATE, data)
            .await?;
    let mut tx = ctx.pool.begin().await?;
    db::insert::<Build>(
        &mut *tx,
        vec![
            ("guid", build_guid.into()),
            ("app_guid", app.guid.as_str().into()),
            ("package_guid", package.guid.as_str().into()),
            ("droplet_guid", droplet_guid.into()),
            ("state", BuildState::Staging.as_str().into()),
            ("error", Val::Text(None)),
            ("buildpacks", db::json_text(&plan.names)),
            ("stack", stack.into()),
            ("staging_memory_in_mb", plan.memory.into()),
            ("staging_disk_in_mb", plan.disk.into()),
            ("created_by_guid", user.guid.as_str().into()),
            ("created_by_name", user.name.as_str().into()),
            ("created_by_email", user.email.as_str().into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
            ("lifecycle_type", plan.kind.as_str().into()),
        ],
    )
    .await?;
    db::insert::<Droplet>(
        &mut *tx,
        vec![
            ("guid", droplet_guid.into()),
            ("app_guid", app.guid.as_str().into()),
            ("package_guid", package.guid.as_str().into()),
            ("build_guid", build_guid.into()),
            ("state", DropletState::AwaitingUpload.as_str().into()),
            ("error", Val::Text(None)),
            ("process_types", "{}".into()),
            ("buildpacks", "[]".into()),
            ("execution_metadata", "".into()),
            ("sha256", Val::Text(None)),
            ("stack", stack.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.as_str().into()),
            ("lifecycle_type", plan.kind.as_str().into()),
        ],
    )
    .await?;
    crate::audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    Ok(())
}
