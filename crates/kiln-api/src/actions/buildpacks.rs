//! Admin buildpack actions: create (with CF's position shifting) and the
//! zip upload that makes one READY.

use crate::context::Ctx;
use crate::db::{self, Buildpack, BuildpackState, StateMachine, Val};
use crate::error::{ApiError, ApiResult};
use crate::messages::CreateBuildpack;
use crate::uploads::buildpack_key;
use crate::util;
use axum::http::StatusCode;
use std::path::PathBuf;

pub async fn create(ctx: &Ctx, msg: CreateBuildpack) -> ApiResult<Buildpack> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    msg.validate()?;
    let taken = || {
        format!(
            "Buildpack with name '{}' and an unassigned stack already exists",
            msg.name
        )
    };
    let existing: Vec<Buildpack> = db::where_eq(&ctx.pool, "name", &msg.name).await?;
    if !existing.is_empty() {
        return Err(ApiError::unprocessable(taken()));
    }
    let mut tx = ctx.pool.begin().await?;
    let count = db::count::<Buildpack>(&mut *tx).await?;
    // Like CC's BuildpackCreate: no position means 1 (first); a position
    // past the end means last; the others shift down to make room.
    let position = match msg.position.unwrap_or(1) {
        p if p >= 1 && p <= count => {
            db::shift_buildpacks_from(&mut *tx, p).await?;
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
    let inserted = db::insert::<Buildpack>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("name", msg.name.as_str().into()),
            (
                "stack",
                msg.stack.as_deref().filter(|s| !s.is_empty()).into(),
            ),
            ("position", position.into()),
            ("enabled", msg.enabled.unwrap_or(true).into()),
            ("locked", msg.locked.unwrap_or(false).into()),
            ("state", BuildpackState::AwaitingUpload.as_str().into()),
            ("filename", Val::Text(None)),
            ("sha256", Val::Text(None)),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await;
    db::unique_or_taken(inserted, taken)?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    db::get::<Buildpack>(&ctx.pool, &guid).await
}

/// The buildpack, if a zip may be uploaded into it (checked before the
/// body is read).
pub async fn uploadable(ctx: &Ctx, guid: &str) -> ApiResult<Buildpack> {
    let bp = db::get::<Buildpack>(&ctx.pool, guid).await?;
    if bp.locked {
        return Err(ApiError::cf(
            StatusCode::CONFLICT,
            290005,
            "CF-BuildpackLocked",
            "The buildpack is locked",
        ));
    }
    Ok(bp)
}

/// Checks the uploaded zip (a scratch file, removed if refused), stores it
/// and makes the buildpack READY.
pub async fn upload(
    ctx: &Ctx,
    bp: Buildpack,
    path: PathBuf,
    filename: Option<String>,
) -> ApiResult<Buildpack> {
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
        .put_file(&buildpack_key(&bp.guid), &path)
        .await?;
    // Read again: another upload may have made it READY meanwhile.
    let current = db::get::<Buildpack>(&ctx.pool, &bp.guid).await?;
    db::transition::<Buildpack>(
        &ctx.pool,
        &bp.guid,
        current.state,
        BuildpackState::Ready,
        vec![
            ("sha256", info.sha256.as_str().into()),
            (
                "filename",
                filename
                    .unwrap_or_else(|| format!("{}.zip", bp.name))
                    .into(),
            ),
        ],
    )
    .await?;
    let bp = db::get::<Buildpack>(&ctx.pool, &bp.guid).await?;
    tracing::info!(buildpack = %bp.name, sha256 = %info.sha256, "buildpack uploaded");
    Ok(bp)
}

pub fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::cf(
        StatusCode::UNPROCESSABLE_ENTITY,
        290003,
        "CF-BuildpackInvalid",
        format!("Buildpack is invalid: {}", detail.into()),
    )
}

pub fn too_large(limit: u64) -> ApiError {
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
