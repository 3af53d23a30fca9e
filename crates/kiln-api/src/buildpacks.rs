//! Admin buildpacks: create (with CF's position shifting), list by
//! position, and the zip upload that makes one READY.

use crate::catalog::{completed_job, job_location, metadata};
use crate::db::{self, Buildpack};
use crate::error::{ApiError, ApiResult};
use crate::util::{self, link, link_method};
use crate::web::{CfJson, CfMultipart, ListParams, paginate};
use crate::{Ctx, Shared};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn buildpack_json(b: &str, bp: &Buildpack) -> Value {
    json!({
        "guid": bp.guid, "created_at": bp.created_at, "updated_at": bp.updated_at,
        "name": bp.name, "stack": bp.stack, "state": bp.state, "lifecycle": "buildpack",
        "filename": bp.filename, "position": bp.position, "enabled": bp.enabled, "locked": bp.locked,
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/buildpacks/{}", bp.guid)),
            "upload": link_method(b, &format!("/v3/buildpacks/{}/upload", bp.guid), "POST"),
        },
    })
}

/// All buildpacks in position order.
pub async fn ordered(ctx: &Ctx) -> ApiResult<Vec<Buildpack>> {
    let mut all = db::all::<Buildpack>(&ctx.pool).await?;
    all.sort_by_key(|b| b.position);
    Ok(all)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBuildpack {
    name: String,
    #[serde(default)]
    position: Option<i64>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    locked: Option<bool>,
    #[serde(default)]
    stack: Option<String>,
    #[serde(default)]
    lifecycle: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(body): CfJson<CreateBuildpack>,
) -> ApiResult<Response> {
    let _ = (&body.metadata, &body.lifecycle);
    if body.name.trim().is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    if body.lifecycle.as_deref().is_some_and(|l| l != "buildpack") {
        return Err(ApiError::unprocessable("Lifecycle must be 'buildpack'"));
    }
    let mut tx = ctx.pool.begin().await?;
    let existing: Option<(String,)> = sqlx::query_as("SELECT guid FROM buildpacks WHERE name = ?")
        .bind(&body.name)
        .fetch_optional(&mut *tx)
        .await?;
    if existing.is_some() {
        return Err(ApiError::unprocessable(format!(
            "Buildpack with name '{}' and an unassigned stack already exists",
            body.name
        )));
    }
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM buildpacks")
        .fetch_one(&mut *tx)
        .await?;
    // Like CC's BuildpackCreate: no position means 1 (first); a position
    // past the end means last; the others shift down to make room.
    let position = match body.position.unwrap_or(1) {
        p if p >= 1 && p <= count => {
            sqlx::query("UPDATE buildpacks SET position = position + 1 WHERE position >= ?")
                .bind(p)
                .execute(&mut *tx)
                .await?;
            p
        }
        p if p < 1 => {
            return Err(ApiError::unprocessable(
                "Position must be greater than or equal to 1",
            ));
        }
        _ => count + 1,
    };
    let guid = util::new_guid();
    let now = util::now();
    sqlx::query("INSERT INTO buildpacks (guid, name, stack, position, enabled, locked, state, filename, sha256, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'AWAITING_UPLOAD', NULL, NULL, ?, ?)")
        .bind(&guid)
        .bind(&body.name)
        .bind(body.stack.as_deref().filter(|s| !s.is_empty()))
        .bind(position)
        .bind(body.enabled.unwrap_or(true))
        .bind(body.locked.unwrap_or(false))
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let bp = db::get::<Buildpack>(&ctx.pool, &guid).await?;
    Ok((StatusCode::CREATED, Json(buildpack_json(&ctx.base, &bp))).into_response())
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = ordered(&ctx)
        .await?
        .into_iter()
        .filter(|b| {
            params.matches("names", &b.name)
                && params.matches("guids", &b.guid)
                && params.matches_opt("stacks", b.stack.as_deref())
        })
        .map(|b| buildpack_json(&ctx.base, &b))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/buildpacks", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let bp = db::get::<Buildpack>(&ctx.pool, &guid).await?;
    Ok(Json(buildpack_json(&ctx.base, &bp)))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::cf(
        StatusCode::UNPROCESSABLE_ENTITY,
        290003,
        "CF-BuildpackInvalid",
        format!("Buildpack is invalid: {}", detail.into()),
    )
}

fn too_large(limit: u64) -> ApiError {
    ApiError::cf(
        StatusCode::PAYLOAD_TOO_LARGE,
        290003,
        "CF-BuildpackInvalid",
        format!("Buildpack is invalid: the zip may not be larger than {limit} bytes"),
    )
}

/// The scripts of CF's buildpack contract; a buildpack has at least one.
const BUILDPACK_SCRIPTS: [&str; 5] = ["detect", "supply", "finalize", "compile", "release"];

/// A buildpack zip has `bin/<script>` at its top, or inside its one
/// top-level directory (zips of a GitHub release unpack that way).
fn check_buildpack_zip(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|_| "the file is not a zip archive".to_string())?;
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        if entry.enclosed_name().is_none() {
            return Err(format!("entry {name:?} leaves the buildpack directory"));
        }
        names.push(name);
    }
    let has_scripts = |prefix: &str| {
        BUILDPACK_SCRIPTS
            .iter()
            .any(|script| names.iter().any(|n| *n == format!("{prefix}bin/{script}")))
    };
    if has_scripts("") {
        return Ok(());
    }
    let tops: std::collections::BTreeSet<&str> =
        names.iter().filter_map(|n| n.split('/').next()).collect();
    if let [top] = tops.into_iter().collect::<Vec<_>>()[..]
        && has_scripts(&format!("{top}/"))
    {
        return Ok(());
    }
    Err("the zip has no bin/detect, bin/supply, bin/finalize, bin/compile or bin/release at its top or in its one top-level directory".into())
}

pub async fn upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfMultipart(mut multipart): CfMultipart,
) -> ApiResult<Response> {
    let bp = db::get::<Buildpack>(&ctx.pool, &guid).await?;
    if bp.locked {
        return Err(ApiError::cf(
            StatusCode::CONFLICT,
            290005,
            "CF-BuildpackLocked",
            "The buildpack is locked",
        ));
    }
    let mut stored = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(crate::web::multipart_error((
            ctx.config.max_package_bytes,
            too_large,
        )))?
    {
        if field.name() != Some("bits") {
            continue;
        }
        let filename = field.file_name().map(|f| {
            std::path::Path::new(f)
                .file_name()
                .map_or_else(|| f.to_string(), |n| n.to_string_lossy().into_owned())
        });
        let limit: crate::internal::Limit = (ctx.config.max_package_bytes, too_large);
        let scratch = crate::internal::stream_to_scratch(&ctx, field, Some(limit)).await?;
        stored = Some((scratch, filename));
        break;
    }
    let Some(((path, _, _), filename)) = stored else {
        return Err(ApiError::unprocessable("Upload must include a 'bits' file"));
    };
    let check_path = path.clone();
    let checked = tokio::task::spawn_blocking(move || check_buildpack_zip(&check_path))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Err(why) = checked {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(invalid(why));
    }
    let info = ctx
        .blobstore
        .put_file(&format!("buildpacks/{guid}"), &path)
        .await?;
    sqlx::query("UPDATE buildpacks SET state = 'READY', sha256 = ?, filename = ?, updated_at = ? WHERE guid = ?")
        .bind(&info.sha256)
        .bind(filename.unwrap_or_else(|| format!("{}.zip", bp.name)))
        .bind(util::now())
        .bind(&guid)
        .execute(&ctx.pool)
        .await?;
    let job = completed_job(&ctx, "buildpack.upload", "buildpack", &guid).await?;
    let bp = db::get::<Buildpack>(&ctx.pool, &guid).await?;
    tracing::info!(buildpack = %bp.name, sha256 = %info.sha256, "buildpack uploaded");
    Ok((
        StatusCode::ACCEPTED,
        [(http::header::LOCATION, job_location(&ctx, &job))],
        Json(buildpack_json(&ctx.base, &bp)),
    )
        .into_response())
}
