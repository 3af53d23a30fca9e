//! Builds and droplets: `POST /v3/builds` checks the package and picks the
//! buildpacks, creates the droplet and desires the staging Task exactly as
//! the cell expects it; completion is recorded by `sync`.

use crate::auth::CurrentUser;
use crate::buildpacks::ordered;
use crate::catalog::metadata;
use crate::db::{self, App, Build, Buildpack, Droplet, Package, Process};
use crate::error::{ApiError, ApiResult};
use crate::signing;
use crate::util::{self, link, link_method};
use crate::web::{CfJson, ListParams, paginate};
use crate::{Ctx, Shared};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kiln_model::bbs::{
    ArtifactKind, Checksum, DownloadAction, EnvVar, RunAction, TaskDefinition, UploadAction,
};
use kiln_model::{BuildState, DropletState, LIFECYCLE_BINARY_PATH, STAGING_DOMAIN};
use serde::Deserialize;
use serde_json::{Value, json};

pub const STAGING_MIN_MEMORY_MB: i64 = 1024;
pub const STAGING_MIN_DISK_MB: i64 = 4096;
pub const NO_BUILDPACKS: &str = "NoBuildpacksFound - There are no buildpacks available";

pub fn build_json(b: &str, build: &Build) -> Value {
    let droplet = match (&build.droplet_guid, build.state.as_str()) {
        (Some(d), "STAGED") => json!({"guid": d}),
        _ => Value::Null,
    };
    let mut links = json!({
        "self": link(b, &format!("/v3/builds/{}", build.guid)),
        "app": link(b, &format!("/v3/apps/{}", build.app_guid)),
    });
    if let (Some(d), "STAGED") = (&build.droplet_guid, build.state.as_str()) {
        links["droplet"] = link(b, &format!("/v3/droplets/{d}"));
    }
    json!({
        "guid": build.guid, "created_at": build.created_at, "updated_at": build.updated_at,
        "state": build.state,
        "staging_memory_in_mb": build.staging_memory_in_mb,
        "staging_disk_in_mb": build.staging_disk_in_mb,
        "staging_log_rate_limit_bytes_per_second": -1,
        "error": build.error,
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": build.buildpacks, "stack": build.stack}},
        "package": {"guid": build.package_guid},
        "droplet": droplet,
        "created_by": {"guid": build.created_by_guid, "name": build.created_by_name, "email": build.created_by_email},
        "relationships": {"app": {"data": {"guid": build.app_guid}}},
        "metadata": metadata(),
        "links": links,
    })
}

pub fn droplet_json(b: &str, d: &Droplet) -> Value {
    json!({
        "guid": d.guid, "created_at": d.created_at, "updated_at": d.updated_at,
        "state": d.state, "error": d.error,
        "lifecycle": {"type": "buildpack", "data": {}},
        "checksum": if d.state == "STAGED" { json!({"type": "sha256", "value": d.sha256}) } else { Value::Null },
        "buildpacks": d.buildpacks,
        "stack": d.stack, "image": null,
        "execution_metadata": d.execution_metadata,
        "process_types": d.process_types,
        "relationships": {"app": {"data": {"guid": d.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/droplets/{}", d.guid)),
            "app": link(b, &format!("/v3/apps/{}", d.app_guid)),
            "package": link(b, &format!("/v3/packages/{}", d.package_guid)),
            "assign_current_droplet": link_method(b, &format!("/v3/apps/{}/relationships/current_droplet", d.app_guid), "PATCH"),
            "download": link(b, &format!("/v3/droplets/{}/download", d.guid)),
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRef {
    guid: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBuild {
    package: PackageRef,
    #[serde(default)]
    lifecycle: Option<crate::apps::Lifecycle>,
    #[serde(default)]
    staging_memory_in_mb: Option<i64>,
    #[serde(default)]
    staging_disk_in_mb: Option<i64>,
    #[serde(default)]
    staging_log_rate_limit_bytes_per_second: Option<i64>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// The buildpacks a build of `app` uses, and whether detection is skipped.
async fn choose_buildpacks(ctx: &Ctx, named: &[String]) -> ApiResult<(Vec<Buildpack>, bool)> {
    let all = ordered(ctx).await?;
    if named.is_empty() {
        let usable = all
            .into_iter()
            .filter(|b| b.enabled && b.state == "READY")
            .collect();
        return Ok((usable, false));
    }
    let mut chosen = Vec::new();
    for name in named {
        let bp = all
            .iter()
            .find(|b| &b.name == name && b.state == "READY" && b.enabled)
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "Buildpack \"{name}\" must be an existing admin buildpack"
                ))
            })?;
        chosen.push(bp.clone());
    }
    Ok((chosen, true))
}

pub async fn create(
    State(ctx): State<Shared>,
    Extension(user): Extension<CurrentUser>,
    CfJson(body): CfJson<CreateBuild>,
) -> ApiResult<Response> {
    let _ = (&body.metadata, body.staging_log_rate_limit_bytes_per_second);
    let package = db::find::<Package>(&ctx.pool, &body.package.guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Unable to use package. Ensure that the package exists and you have access to it.",
            )
        })?;
    if package.state != "READY" {
        return Err(ApiError::bad_request(
            "Cannot stage package whose state is not ready.",
        ));
    }
    let app = db::get::<App>(&ctx.pool, &package.app_guid).await?;
    let builds = db::where_eq::<Build>(&ctx.pool, "app_guid", &app.guid).await?;
    if builds.iter().any(|b| b.state == "STAGING") {
        return Err(ApiError::cf(
            StatusCode::UNPROCESSABLE_ENTITY,
            170017,
            "CF-StagingInProgress",
            "Only one build can be STAGING at a time per application.",
        ));
    }
    let (names, stack) = match body.lifecycle {
        Some(l) => {
            if l.kind != "buildpack" {
                return Err(ApiError::unprocessable(
                    "Kiln stages with the buildpack lifecycle only",
                ));
            }
            let data = l.data.unwrap_or_default();
            (
                data.buildpacks.unwrap_or(app.buildpacks.clone()),
                data.stack.unwrap_or(app.stack.clone()),
            )
        }
        None => (app.buildpacks.clone(), app.stack.clone()),
    };
    let (buildpacks, skip_detect) = choose_buildpacks(&ctx, &names).await?;
    let web = db::where_eq::<Process>(&ctx.pool, "app_guid", &app.guid)
        .await?
        .into_iter()
        .find(|p| p.r#type == "web");
    let memory = body
        .staging_memory_in_mb
        .unwrap_or(web.as_ref().map_or(0, |p| p.memory_in_mb))
        .max(STAGING_MIN_MEMORY_MB);
    let disk = body
        .staging_disk_in_mb
        .unwrap_or(web.as_ref().map_or(0, |p| p.disk_in_mb))
        .max(STAGING_MIN_DISK_MB);

    let build_guid = util::new_guid();
    let droplet_guid = util::new_guid();
    let now = util::now();
    // Every build starts STAGING with an AWAITING_UPLOAD droplet; a build
    // that cannot stage moves to FAILED through `fail_build` like any other.
    let mut tx = ctx.pool.begin().await?;
    sqlx::query("INSERT INTO builds (guid, app_guid, package_guid, droplet_guid, state, error, buildpacks, stack, staging_memory_in_mb, staging_disk_in_mb, created_by_guid, created_by_name, created_by_email, created_at, updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(&build_guid)
        .bind(&app.guid)
        .bind(&package.guid)
        .bind(&droplet_guid)
        .bind(BuildState::Staging.as_str())
        .bind(serde_json::to_string(&names).unwrap_or_default())
        .bind(&stack)
        .bind(memory)
        .bind(disk)
        .bind(&user.guid)
        .bind(&user.name)
        .bind(&user.email)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO droplets (guid, app_guid, package_guid, build_guid, state, error, process_types, buildpacks, execution_metadata, sha256, stack, created_at, updated_at) VALUES (?, ?, ?, ?, ?, NULL, '{}', '[]', '', NULL, ?, ?, ?)")
        .bind(&droplet_guid)
        .bind(&app.guid)
        .bind(&package.guid)
        .bind(&build_guid)
        .bind(DropletState::AwaitingUpload.as_str())
        .bind(&stack)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    crate::sync::api_log(
        &ctx,
        &app.guid,
        &format!("Creating build for app with guid {}", app.guid),
    );
    if buildpacks.is_empty() {
        crate::sync::fail_build(&ctx, &build_guid, NO_BUILDPACKS).await?;
    } else {
        let definition = staging_task(
            &ctx,
            &app,
            &package,
            &droplet_guid,
            &buildpacks,
            skip_detect,
            &stack,
            memory,
            disk,
        )
        .await?;
        match ctx
            .bbs
            .desire_task(&build_guid, STAGING_DOMAIN, definition)
            .await
        {
            Ok(()) => {
                tracing::info!(build_guid = %build_guid, app_guid = %app.guid, "staging task desired");
            }
            Err(e) => {
                tracing::warn!(build_guid = %build_guid, error = %e, "desiring the staging task failed");
                crate::sync::fail_build(
                    &ctx,
                    &build_guid,
                    &format!("StagerUnavailable - Stager is unavailable: {e}"),
                )
                .await?;
            }
        }
    }
    let build = db::get::<Build>(&ctx.pool, &build_guid).await?;
    Ok((StatusCode::CREATED, Json(build_json(&ctx.base, &build))).into_response())
}

/// The staging Task, per the contract the cell and lifecycle builder share.
#[allow(clippy::too_many_arguments)]
async fn staging_task(
    ctx: &Ctx,
    app: &App,
    package: &Package,
    droplet_guid: &str,
    buildpacks: &[Buildpack],
    skip_detect: bool,
    stack: &str,
    memory: i64,
    disk: i64,
) -> ApiResult<TaskDefinition> {
    let ttl = signing::staging_ttl(ctx);
    let mut downloads = vec![DownloadAction {
        artifact: "app package".into(),
        from: signing::sign(
            ctx,
            "GET",
            &format!("/internal/v4/packages/{}/download", package.guid),
            ttl,
        ),
        to: "/tmp/app".into(),
        kind: ArtifactKind::Zip,
        cache_key: None,
        checksum: package.sha256.as_ref().map(|v| Checksum {
            algorithm: "sha256".into(),
            value: v.clone(),
        }),
        optional: false,
    }];
    for bp in buildpacks {
        let sha = bp.sha256.clone().unwrap_or_default();
        downloads.push(DownloadAction {
            artifact: format!("buildpack {}", bp.name),
            from: signing::sign(
                ctx,
                "GET",
                &format!("/internal/v4/buildpacks/{}/download", bp.guid),
                ttl,
            ),
            to: format!("/tmp/buildpacks/{}", bp.guid),
            kind: ArtifactKind::Zip,
            cache_key: Some(format!("buildpack-{}-{sha}", bp.guid)),
            checksum: Some(Checksum {
                algorithm: "sha256".into(),
                value: sha,
            }),
            optional: false,
        });
    }
    downloads.push(DownloadAction {
        artifact: "build artifacts cache".into(),
        from: signing::sign(
            ctx,
            "GET",
            &format!("/internal/v4/build_cache/{}/download", app.guid),
            ttl,
        ),
        to: "/tmp/cache".into(),
        kind: ArtifactKind::Tgz,
        cache_key: None,
        checksum: None,
        optional: true,
    });
    let order: Vec<&str> = buildpacks.iter().map(|b| b.guid.as_str()).collect();
    let mut vcap = crate::apps::vcap_application(ctx, app, None).await?;
    vcap["limits"] = json!({"fds": 16384, "mem": memory, "disk": disk});
    let mut env = vec![
        EnvVar::new("CF_STACK", stack),
        EnvVar::new("VCAP_APPLICATION", vcap.to_string()),
        EnvVar::new("VCAP_SERVICES", "{}"),
        EnvVar::new("MEMORY_LIMIT", format!("{memory}m")),
        EnvVar::new("LANG", "en_US.UTF-8"),
    ];
    env.extend(
        app.environment_variables
            .iter()
            .map(|(k, v)| EnvVar::new(k, v)),
    );
    Ok(TaskDefinition {
        rootfs: format!("preloaded:{stack}"),
        log_guid: app.guid.clone(),
        log_source: kiln_model::LOG_SOURCE_STAGING.into(),
        memory_mb: memory as u64,
        disk_mb: disk as u64,
        env: Vec::new(),
        downloads,
        run: RunAction {
            path: LIFECYCLE_BINARY_PATH.into(),
            args: vec![
                "lifecycle".into(),
                "builder".into(),
                "--build-dir=/tmp/app".into(),
                "--buildpacks-dir=/tmp/buildpacks".into(),
                format!("--buildpack-order={}", order.join(",")),
                format!("--skip-detect={skip_detect}"),
                "--output-droplet=/tmp/droplet".into(),
                "--output-metadata=/tmp/result.json".into(),
                "--build-artifacts-cache-dir=/tmp/cache".into(),
                "--output-build-artifacts-cache=/tmp/output-cache".into(),
            ],
            env,
            dir: Some("/tmp/app".into()),
            user: kiln_model::CONTAINER_USER.into(),
        },
        uploads: vec![
            UploadAction {
                artifact: "droplet".into(),
                from: "/tmp/droplet".into(),
                to: signing::sign(
                    ctx,
                    "POST",
                    &format!("/internal/v4/droplets/{droplet_guid}/upload"),
                    ttl,
                ),
            },
            UploadAction {
                artifact: "build artifacts cache".into(),
                from: "/tmp/output-cache".into(),
                to: signing::sign(
                    ctx,
                    "POST",
                    &format!("/internal/v4/build_cache/{}/upload", app.guid),
                    ttl,
                ),
            },
        ],
        result_file: "/tmp/result.json".into(),
        timeout_ms: crate::staging_timeout_ms(&ctx.config),
    })
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let b = db::get::<Build>(&ctx.pool, &guid).await?;
    Ok(Json(build_json(&ctx.base, &b)))
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = db::all::<Build>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|b| {
            params.matches("app_guids", &b.app_guid)
                && params.matches("guids", &b.guid)
                && params.matches("states", &b.state)
                && params.matches("package_guids", &b.package_guid)
        })
        .map(|b| build_json(&ctx.base, &b))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/builds", ctx.base),
        &params,
        items,
    )))
}

pub async fn list_droplets(
    State(ctx): State<Shared>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let items = db::all::<Droplet>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|d| {
            params.matches("app_guids", &d.app_guid)
                && params.matches("guids", &d.guid)
                && params.matches("states", &d.state)
                && params.matches("package_guids", &d.package_guid)
        })
        .map(|d| droplet_json(&ctx.base, &d))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/droplets", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_droplet(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = db::get::<Droplet>(&ctx.pool, &guid).await?;
    Ok(Json(droplet_json(&ctx.base, &d)))
}
