//! Droplet actions: storing the droplet a cell uploads for a build, and
//! droplets by hand (CC's `DropletCreate`, `DropletUpload`, `DropletCopy`).

use crate::audit::{self, types};
use crate::context::Ctx;
use crate::db::{self, App, Droplet, Val};
use crate::diego::LifecycleType;
use crate::error::{ApiError, ApiResult};
use crate::messages::droplets::CreateDroplet;
use crate::uploads::{blob_mismatch, droplet_key};
use crate::util;
use kiln_model::DropletState;
use kiln_model::bbs::UploadReport;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// The droplet, if the cell may upload its bits.
pub async fn uploadable(ctx: &Ctx, guid: &str) -> ApiResult<Droplet> {
    let droplet = db::get::<Droplet>(&ctx.pool, guid).await?;
    if !matches!(
        droplet.state,
        DropletState::AwaitingUpload | DropletState::ProcessingUpload
    ) {
        return Err(ApiError::unprocessable("Droplet is not awaiting an upload"));
    }
    Ok(droplet)
}

/// Stores the uploaded droplet (a scratch file) and records its checksum;
/// the build's completion moves its state.
pub async fn store_upload(ctx: &Ctx, droplet: &Droplet, path: &Path) -> ApiResult<()> {
    let info = ctx
        .blobstore
        .put_file(&droplet_key(&droplet.guid), path)
        .await?;
    db::update::<Droplet>(
        &ctx.pool,
        &droplet.guid,
        vec![("sha256", info.sha256.as_str().into())],
    )
    .await?;
    tracing::info!(droplet_guid = %droplet.guid, size = info.size, "droplet uploaded");
    Ok(())
}

/// Checks the droplet a cell PUT straight into the blobstore against the
/// cell's report (the object exists, has the reported size and, where the
/// store's ETag is a single PUT's MD5, the reported MD5), then records the
/// reported SHA-256 as the droplet's checksum and what was checked, which
/// the staging completion checks again. A mismatch changes nothing.
pub async fn check_direct_upload(
    ctx: &Ctx,
    droplet: &Droplet,
    report: &UploadReport,
) -> ApiResult<()> {
    let hex_of = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_of(&report.sha256, 64) || !hex_of(&report.md5, 32) {
        return Err(ApiError::unprocessable(
            "The upload report needs a hex sha256 and md5",
        ));
    }
    let size = i64::try_from(report.size)
        .map_err(|_| ApiError::unprocessable("The upload report's size is out of range"))?;
    let stat = ctx.blobstore.stat(&droplet_key(&droplet.guid)).await?;
    if let Some(why) = blob_mismatch(stat.as_ref(), report.size, Some(&report.md5)) {
        tracing::warn!(droplet_guid = %droplet.guid, why, "droplet upload refused");
        return Err(ApiError::unprocessable(format!(
            "The droplet upload was refused: {why}"
        )));
    }
    let etag = stat.and_then(|s| s.etag);
    db::update::<Droplet>(
        &ctx.pool,
        &droplet.guid,
        vec![
            ("sha256", report.sha256.to_ascii_lowercase().into()),
            ("blob_size", size.into()),
            ("blob_etag", etag.into()),
        ],
    )
    .await?;
    tracing::info!(droplet_guid = %droplet.guid, size, "droplet stored by the cell in the blobstore and checked");
    Ok(())
}

/// `POST /v3/droplets`: an AWAITING_UPLOAD droplet for a buildpack app, its
/// bits to come by [`upload`] (CC's `DropletCreate`).
pub async fn create(ctx: &Ctx, msg: CreateDroplet) -> ApiResult<Droplet> {
    let process_types = msg.process_types()?;
    let app = app_for_droplet(ctx, msg.app_guid()).await?;
    if LifecycleType::of(&app) == LifecycleType::Docker {
        return Err(ApiError::unprocessable(
            "Droplet creation is not available for apps with docker lifecycles.",
        ));
    }
    let fields = NewDroplet {
        state: DropletState::AwaitingUpload,
        process_types,
        buildpacks: json!([]),
        execution_metadata: String::new(),
        sha256: None,
        stack: app.stack.clone(),
    };
    insert(ctx, &app, fields).await
}

/// `POST /v3/droplets?source_guid=`: a STAGED copy of a staged droplet for
/// another app (CC's `DropletCopy`), its bits copied in the blobstore.
pub async fn copy(ctx: &Ctx, source_guid: &str, msg: CreateDroplet) -> ApiResult<Droplet> {
    if msg.process_types.is_some() {
        return Err(ApiError::unprocessable("Unknown field(s): 'process_types'"));
    }
    let source = db::find::<Droplet>(&ctx.pool, source_guid)
        .await?
        .ok_or_else(|| ApiError::not_found("Droplet"))?;
    let app = app_for_droplet(ctx, msg.app_guid()).await?;
    if source.state != DropletState::Staged {
        return Err(ApiError::unprocessable("source droplet is not staged"));
    }
    if source.lifecycle_type == "docker" {
        return Err(ApiError::unprocessable(
            "Droplet creation is not available for apps with docker lifecycles.",
        ));
    }
    let fields = NewDroplet {
        state: DropletState::AwaitingUpload,
        process_types: source.process_types.clone(),
        buildpacks: source.buildpacks.clone(),
        execution_metadata: source.execution_metadata.clone(),
        sha256: None,
        stack: source.stack.clone(),
    };
    let bits = ctx.blobstore.open(&droplet_key(&source.guid)).await?;
    let copy = insert(ctx, &app, fields).await?;
    let stream = tokio_util::io::ReaderStream::new(bits);
    let (scratch, _, _) = crate::uploads::stream_to_scratch(ctx, stream, None).await?;
    let stored = store_staged(ctx, &copy, &scratch).await;
    let _ = tokio::fs::remove_file(&scratch).await;
    stored
}

/// The app a droplet is for; CC's words when it does not exist (one the
/// caller cannot see was refused by the route's rule).
async fn app_for_droplet(ctx: &Ctx, guid: &str) -> ApiResult<App> {
    db::find::<App>(&ctx.pool, guid).await?.ok_or_else(|| {
        ApiError::unprocessable(
            "Unable to use app. Ensure that the app exists and you have access to it.",
        )
    })
}

struct NewDroplet {
    state: DropletState,
    process_types: BTreeMap<String, String>,
    buildpacks: serde_json::Value,
    execution_metadata: String,
    sha256: Option<String>,
    stack: String,
}

async fn insert(ctx: &Ctx, app: &App, d: NewDroplet) -> ApiResult<Droplet> {
    let guid = util::new_guid();
    let now = util::now();
    let event = audit::app_event(
        &ctx.pool,
        app,
        types::APP_DROPLET_CREATE,
        json!({"droplet_guid": guid}),
    )
    .await?;
    let mut tx = ctx.pool.begin().await?;
    db::insert::<Droplet>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("app_guid", app.guid.as_str().into()),
            // Made by hand: no package or build.
            ("package_guid", "".into()),
            ("build_guid", "".into()),
            ("state", d.state.as_str().into()),
            ("error", Val::Text(None)),
            ("process_types", db::json_text(&d.process_types)),
            ("buildpacks", db::json_text(&d.buildpacks)),
            ("execution_metadata", d.execution_metadata.into()),
            ("sha256", Val::Text(d.sha256)),
            ("stack", d.stack.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
            ("lifecycle_type", "buildpack".into()),
        ],
    )
    .await?;
    audit::record(&mut *tx, event).await?;
    tx.commit().await?;
    db::get::<Droplet>(&ctx.pool, &guid).await
}

/// The droplet, if bits may be uploaded to it by hand (CC: only once).
pub async fn awaiting_upload(ctx: &Ctx, guid: &str) -> ApiResult<Droplet> {
    let d = db::get::<Droplet>(&ctx.pool, guid).await?;
    if d.state != DropletState::AwaitingUpload {
        return Err(ApiError::unprocessable(
            "Droplet may be uploaded only once. Create a new droplet to upload bits.",
        ));
    }
    Ok(d)
}

/// `POST /v3/droplets/:guid/upload`: the scratch file must be a gzipped
/// tar; it is stored and the droplet goes STAGED. Anything else changes
/// nothing.
pub async fn upload(ctx: &Ctx, d: &Droplet, path: &Path, name: Option<&str>) -> ApiResult<Droplet> {
    if let Some(name) = name
        && !(name.ends_with(".tgz") || name.ends_with(".tar.gz"))
    {
        return Err(ApiError::unprocessable(format!("{name} is not a tgz")));
    }
    let owned = path.to_path_buf();
    let valid = tokio::task::spawn_blocking(move || is_tgz(&owned))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !valid {
        return Err(ApiError::unprocessable(
            "Uploaded bits are not a valid droplet file",
        ));
    }
    store_staged(ctx, d, path).await
}

/// Whether the file is a non-empty gzipped tar, read to its end.
fn is_tgz(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let Ok(entries) = archive.entries() else {
        return false;
    };
    let mut any = false;
    for entry in entries {
        let Ok(mut entry) = entry else { return false };
        if std::io::copy(&mut entry, &mut std::io::sink()).is_err() {
            return false;
        }
        any = true;
    }
    any
}

/// Stores the bits and moves the droplet AWAITING_UPLOAD → STAGED with
/// their checksum (compare-and-set: a racing upload loses).
async fn store_staged(ctx: &Ctx, d: &Droplet, path: &Path) -> ApiResult<Droplet> {
    let info = ctx.blobstore.put_file(&droplet_key(&d.guid), path).await?;
    let moved = db::transition::<Droplet>(
        &ctx.pool,
        &d.guid,
        DropletState::AwaitingUpload,
        DropletState::Staged,
        vec![("sha256", info.sha256.as_str().into())],
    )
    .await?;
    if !moved {
        return Err(ApiError::unprocessable(
            "Droplet may be uploaded only once. Create a new droplet to upload bits.",
        ));
    }
    tracing::info!(droplet_guid = %d.guid, size = info.size, "droplet uploaded by hand");
    db::get::<Droplet>(&ctx.pool, &d.guid).await
}

/// `audit.app.droplet.download`, as CC records a download.
pub async fn record_download(ctx: &Ctx, d: &Droplet) -> ApiResult<()> {
    let app = db::get::<App>(&ctx.pool, &d.app_guid).await?;
    let data = json!({"droplet_guid": d.guid});
    let event = audit::app_event(&ctx.pool, &app, types::APP_DROPLET_DOWNLOAD, data).await?;
    audit::record(&ctx.pool, event).await?;
    Ok(())
}
