//! Admin buildpack actions: create (with CF's position shifting) and the
//! zip upload that makes one READY.

use crate::context::Ctx;
use crate::db::{self, Buildpack, BuildpackState, StateMachine, Val};
use crate::error::{ApiError, ApiResult};
use crate::messages::{CreateBuildpack, UpdateBuildpack};
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

/// CC's BuildpackUpdate: name, stack (only from unassigned), enabled,
/// locked, and a move within the order (Sequel's list `move_to`: past the
/// end means last; the ones between shift by one). One transaction.
pub async fn update(ctx: &Ctx, guid: &str, msg: UpdateBuildpack) -> ApiResult<Buildpack> {
    msg.validate()?;
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    let bp = db::get::<Buildpack>(&ctx.pool, guid).await?;
    let name = msg.name.clone().unwrap_or_else(|| bp.name.clone());
    let stack = match &msg.stack {
        Some(requested) => requested.clone().filter(|s| !s.is_empty()),
        None => bp.stack.clone(),
    };
    check_stack_change(ctx, &bp, stack.as_deref()).await?;
    let mut tx = ctx.pool.begin().await?;
    if let Some(target) = msg.position {
        move_to(&mut tx, &bp, target).await?;
    }
    let mut sets = vec![
        ("name", name.as_str().into()),
        ("stack", stack.as_deref().into()),
    ];
    if let Some(enabled) = msg.enabled {
        sets.push(("enabled", enabled.into()));
    }
    if let Some(locked) = msg.locked {
        sets.push(("locked", locked.into()));
    }
    let updated = db::update::<Buildpack>(&mut *tx, guid, sets).await;
    db::unique_or_taken(updated, || name_taken(&name, stack.as_deref()))?;
    tx.commit().await?;
    super::metadata::apply(ctx, guid, &meta).await?;
    db::get::<Buildpack>(&ctx.pool, guid).await
}

/// CC's Buildpack model: a stack is set once (from unassigned), and only to
/// a stack that exists.
async fn check_stack_change(ctx: &Ctx, bp: &Buildpack, stack: Option<&str>) -> ApiResult<()> {
    if bp.stack.is_some() && bp.stack.as_deref() != stack {
        return Err(ApiError::unprocessable("Buildpack stack cannot be changed"));
    }
    if let Some(stack) = stack {
        let known: Vec<db::Stack> = db::where_eq(&ctx.pool, "name", stack).await?;
        if known.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "Stack '{stack}' does not exist"
            )));
        }
    }
    Ok(())
}

fn name_taken(name: &str, stack: Option<&str>) -> String {
    match stack {
        None => format!("Buildpack with name '{name}' and an unassigned stack already exists"),
        Some(stack) => format!(
            "Buildpack with name '{name}', stack '{stack}' and lifecycle 'buildpack' already exists"
        ),
    }
}

/// Moves `bp` to `target` (clamped to the last position), shifting the
/// buildpacks between its old and new place by one.
async fn move_to(tx: &mut kiln_store::Connection, bp: &Buildpack, target: i64) -> ApiResult<()> {
    let target = target.min(db::last_buildpack_position(&mut *tx).await?);
    let from = bp.position;
    let (shift, low, high) = match target.cmp(&from) {
        std::cmp::Ordering::Equal => return Ok(()),
        std::cmp::Ordering::Less => (1, target, from - 1),
        std::cmp::Ordering::Greater => (-1, from + 1, target),
    };
    db::shift_buildpacks_between(&mut *tx, shift, low, high).await?;
    db::update::<Buildpack>(&mut *tx, &bp.guid, vec![("position", target.into())]).await?;
    Ok(())
}

/// CC's BuildpackDelete: the record goes (the ones after it move up, as
/// Sequel's list plugin closes the gap), then its zip.
pub async fn delete(ctx: &Ctx, guid: &str) -> ApiResult<()> {
    let bp = db::get::<Buildpack>(&ctx.pool, guid).await?;
    let mut tx = ctx.pool.begin().await?;
    db::delete_where::<Buildpack>(&mut *tx, "guid", guid).await?;
    db::close_buildpack_gap(&mut *tx, bp.position).await?;
    tx.commit().await?;
    ctx.blobstore.delete(&buildpack_key(guid)).await?;
    tracing::info!(buildpack = %bp.name, "buildpack deleted");
    Ok(())
}
