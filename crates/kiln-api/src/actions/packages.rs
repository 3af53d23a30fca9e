//! Package actions: create, the bits upload (every zip entry checked: no
//! absolute paths, no `..`, no symlink leaving the app; the stored package
//! is the uploaded entries plus the files the client only listed, read from
//! the resource cache), resource matching, failing uploads a crash
//! interrupted, and sealing docker passwords stored before they were.

use crate::audit;
use crate::context::Ctx;
use crate::db::{self, App, Package, Val};
use crate::diego::LifecycleType;
use crate::error::{ApiError, ApiResult};
use crate::messages::{CreatePackage, MatchBody, ResourceEntry, parse_resource, parse_resources};
use crate::uploads::{package_key, resource_key, resource_matchable, resource_size_allowed};
use crate::util;
use axum::http::StatusCode;
use kiln_model::PackageState;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// `POST /v3/packages`: a bits package awaits its upload; a docker
/// package names its image and is READY at once. The package's type must
/// be the one its app's lifecycle stages.
pub async fn create(ctx: &Ctx, msg: CreatePackage) -> ApiResult<Package> {
    let meta = crate::messages::metadata::patch_of(&msg.metadata);
    msg.validate()?;
    let docker = msg.docker_data()?;
    let app_guid = msg.relationships.app.data.guid.clone();
    let app = db::find::<App>(&ctx.pool, &app_guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable("App is invalid. Ensure it exists and you have access to it.")
        })?;
    let lifecycle = LifecycleType::of(&app);
    if lifecycle.package_type() != msg.kind {
        return Err(ApiError::unprocessable(format!(
            "Type must be '{}' for an app with the {} lifecycle",
            lifecycle.package_type(),
            lifecycle.as_str()
        )));
    }
    let guid = util::new_guid();
    let now = util::now();
    let state = match docker {
        Some(_) => PackageState::Ready,
        None => PackageState::AwaitingUpload,
    };
    let docker = docker.unwrap_or_default();
    let text = |v: Option<String>| Val::Text(v.filter(|s| !s.is_empty()));
    // The request is kept without its data: a docker password stays out.
    let data = serde_json::json!({"package_guid": guid, "request": {"type": msg.kind, "relationships": {"app": {"data": {"guid": app_guid}}}}});
    let event = audit::app_event(&ctx.pool, &app, audit::types::APP_PACKAGE_CREATE, data).await?;
    let mut tx = ctx.pool.begin().await?;
    db::insert::<Package>(
        &mut *tx,
        vec![
            ("guid", guid.as_str().into()),
            ("app_guid", app_guid.into()),
            ("type", msg.kind.as_str().into()),
            ("state", state.as_str().into()),
            ("sha256", Val::Text(None)),
            ("error", Val::Text(None)),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
            ("docker_image", text(Some(docker.image))),
            ("docker_username", text(docker.username)),
            (
                "docker_password",
                // Sealed at rest; opened only where a staging Task or a
                // DesiredLrp is built.
                text(docker.password.map(|p| ctx.cipher.encrypt(&guid, &p))),
            ),
        ],
    )
    .await?;
    audit::record(&mut *tx, event).await?;
    db::metadata::apply(&mut tx, &guid, &meta).await?;
    tx.commit().await?;
    db::get::<Package>(&ctx.pool, &guid).await
}

/// How many resource-cache look-ups run at once: on S3 each is a round
/// trip (HEAD), and a big app offers tens of thousands of files.
const LOOKUPS_IN_FLIGHT: usize = 32;

/// The resources of `msg` the resource cache already holds; only those
/// the pool takes ([`resource_matchable`]) are looked up.
pub async fn resource_matches(ctx: &Ctx, msg: MatchBody) -> ApiResult<Vec<Value>> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let mut resources = msg
        .resources
        .iter()
        .map(parse_resource)
        .collect::<ApiResult<Vec<_>>>()?;
    resources.retain(|r| resource_matchable(r.size, r.mode));
    let distinct: std::collections::BTreeSet<String> =
        resources.iter().map(|r| r.sha1.clone()).collect();
    let cached: std::collections::HashSet<String> = futures_util::stream::iter(distinct)
        .map(|sha1: String| async move {
            let hit = ctx.blobstore.exists(&resource_key(&sha1)).await?;
            ApiResult::Ok(hit.then_some(sha1))
        })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .try_filter_map(|hit| async move { Ok(hit) })
        .try_collect()
        .await?;
    Ok(resources
        .into_iter()
        .filter(|r| cached.contains(r.sha1.as_str()))
        .map(|r| r.original)
        .collect())
}

/// The package, if bits may be uploaded into it (checked before the body
/// is read).
pub async fn uploadable(ctx: &Ctx, guid: &str) -> ApiResult<Package> {
    let package = db::get::<Package>(&ctx.pool, guid).await?;
    if package.state != PackageState::AwaitingUpload {
        return Err(ApiError::unprocessable(format!(
            "Package state is {}; bits can only be uploaded once",
            package.state
        )));
    }
    Ok(package)
}

/// `POST /v3/packages/:guid/upload` after the body was read (`read`: the
/// parsed `resources`; `bits`: the zip's scratch file). Everything is
/// checked and the final zip assembled before the package changes state, so
/// a refused upload leaves the package as it was; then AWAITING_UPLOAD →
/// PROCESSING_UPLOAD is claimed (one concurrent upload wins) → READY.
pub async fn upload(
    ctx: &Ctx,
    package: Package,
    read: ApiResult<Option<Value>>,
    bits: Option<PathBuf>,
) -> ApiResult<Package> {
    let assembled = check_and_assemble(ctx, read, &bits).await;
    remove_scratch(&bits);
    let assembled = assembled?;
    cache_resources(ctx, assembled.cache).await?;
    claim_and_store(ctx, &package, &assembled.zip_path).await?;
    db::get::<Package>(&ctx.pool, &package.guid).await
}

/// Phase 1: the resources listed are safe paths the cache holds; the zip
/// and those resources are assembled into the package (blocking IO).
async fn check_and_assemble(
    ctx: &Ctx,
    read: ApiResult<Option<Value>>,
    bits: &Option<PathBuf>,
) -> ApiResult<Assembled> {
    let resources_json = read?;
    if bits.is_none() && resources_json.is_none() {
        return Err(ApiError::unprocessable(
            "Upload must include either resources or bits",
        ));
    }
    let entries = resources_json
        .as_ref()
        .map(parse_resources)
        .transpose()?
        .unwrap_or_default();
    let opened = open_cached(ctx, entries).await?;
    let scratch = ctx.blobstore.scratch_dir().to_path_buf();
    let bits = bits.clone();
    let max = ctx.config.max_package_bytes;
    tokio::task::spawn_blocking(move || assemble(scratch, bits, opened, max))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            AssembleError::TooLarge => {
                ApiError::package_too_large(StatusCode::UNPROCESSABLE_ENTITY, max)
            }
            AssembleError::Invalid(why) => ApiError::package_invalid(why),
        })
}

/// Opens the cached file of every listed resource, with its size.
async fn open_cached(
    ctx: &Ctx,
    entries: Vec<ResourceEntry>,
) -> ApiResult<Vec<(ResourceEntry, std::fs::File, u64)>> {
    let mut opened = Vec::new();
    for r in entries {
        if r.path.is_empty() {
            return Err(ApiError::package_invalid("a resource has no path"));
        }
        if let Some(why) = unsafe_path(&r.path) {
            return Err(ApiError::package_invalid(why));
        }
        match ctx.blobstore.open(&resource_key(&r.sha1)).await {
            Ok(f) => {
                let size = f
                    .metadata()
                    .await
                    .map_err(|e| ApiError::io("reading a cached resource", e))?
                    .len();
                opened.push((r, f.into_std().await, size));
            }
            Err(kiln_store::StoreError::BlobNotFound { .. }) => {
                return Err(ApiError::package_invalid(format!(
                    "resource {:?} ({}) is not in the resource cache",
                    r.path, r.sha1
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(opened)
}

/// Phase 2: every uploaded file joins the resource cache (by sha1).
async fn cache_resources(ctx: &Ctx, files: Vec<(String, PathBuf)>) -> ApiResult<()> {
    for (sha1, path) in files {
        let key = resource_key(&sha1);
        if ctx.blobstore.exists(&key).await? {
            let _ = tokio::fs::remove_file(&path).await;
        } else {
            ctx.blobstore.put_file(&key, &path).await?;
        }
    }
    Ok(())
}

/// Phase 3: claim the package (PROCESSING_UPLOAD), store the zip, and
/// record READY, or FAILED if the blobstore refused it. A blobstore that
/// does not answer gives the package back (AWAITING_UPLOAD) and answers
/// CC's 502, so the same upload succeeds once the store is back.
async fn claim_and_store(ctx: &Ctx, package: &Package, zip: &Path) -> ApiResult<()> {
    let guid = &package.guid;
    let processing = PackageState::ProcessingUpload;
    let app = db::get::<App>(&ctx.pool, &package.app_guid).await?;
    let data = serde_json::json!({"package_guid": guid});
    let event = audit::app_event(&ctx.pool, &app, audit::types::APP_PACKAGE_UPLOAD, data).await?;
    let mut tx = ctx.pool.begin().await?;
    let claimed =
        db::transition::<Package>(&mut *tx, guid, package.state, processing, Vec::new()).await?;
    if claimed {
        audit::record(&mut *tx, event).await?;
    }
    tx.commit().await?;
    if !claimed {
        let _ = tokio::fs::remove_file(zip).await;
        return Err(ApiError::unprocessable(
            "Package state changed during the upload; bits can only be uploaded once",
        ));
    }
    let (to, sha256, error) = match ctx.blobstore.put_file(&package_key(guid), zip).await {
        Ok(info) => {
            tracing::info!(package_guid = %guid, size = info.size, "package uploaded");
            (PackageState::Ready, Some(info.sha256), None)
        }
        Err(e @ kiln_store::StoreError::ObjectStore { .. }) => {
            let _ = tokio::fs::remove_file(zip).await;
            let back = PackageState::AwaitingUpload;
            db::transition::<Package>(&ctx.pool, guid, processing, back, Vec::new()).await?;
            return Err(e.into());
        }
        Err(e) => {
            tracing::warn!(package_guid = %guid, error = %e, "storing a package failed");
            let _ = tokio::fs::remove_file(zip).await;
            (
                PackageState::Failed,
                None,
                Some(format!("storing the package failed: {e}")),
            )
        }
    };
    db::transition::<Package>(
        &ctx.pool,
        guid,
        processing,
        to,
        vec![("sha256", sha256.into()), ("error", error.into())],
    )
    .await?;
    Ok(())
}

fn remove_scratch(path: &Option<PathBuf>) {
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

/// Why a path is not acceptable inside an app package, if it is not.
fn unsafe_path(name: &str) -> Option<String> {
    let drive = name.len() >= 2 && name.as_bytes()[1] == b':';
    if name.starts_with('/') || name.starts_with('\\') || drive {
        return Some(format!("entry {name:?} has an absolute path"));
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Some(format!("entry {name:?} leaves the app directory"));
    }
    if name.contains('\0') {
        return Some(format!("entry {name:?} has a NUL byte"));
    }
    None
}

/// Whether a symlink at `link_path` pointing at `target` stays inside the root.
fn symlink_escapes(link_path: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return true;
    }
    let mut depth: Vec<&str> = link_path
        .trim_end_matches('/')
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    depth.pop(); // the link itself
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return true;
                }
            }
            other => depth.push(other),
        }
    }
    false
}

struct Assembled {
    zip_path: PathBuf,
    /// (sha1, scratch file) for every uploaded file of a size the resource
    /// pool takes.
    cache: Vec<(String, PathBuf)>,
}

enum AssembleError {
    /// The package's files add up to more than the limit.
    TooLarge,
    Invalid(String),
}

impl From<String> for AssembleError {
    fn from(why: String) -> Self {
        AssembleError::Invalid(why)
    }
}

/// Checks the uploaded zip and writes the final package zip (blocking IO):
/// the uploaded entries as they are, plus the listed cached resources. The
/// unpacked size of everything together must stay within `max` bytes, as
/// Cloud Controller's packer checks; uploaded files are counted as they
/// are actually inflated, so a zip that lies about its sizes gains nothing.
fn assemble(
    scratch: PathBuf,
    bits: Option<PathBuf>,
    resources: Vec<(ResourceEntry, std::fs::File, u64)>,
    max: u64,
) -> Result<Assembled, AssembleError> {
    let out_path = scratch.join(format!("package-{}", util::new_guid()));
    let mut cache = Vec::new();
    let result = (|| -> Result<(), AssembleError> {
        let mut total: u64 = resources.iter().map(|(_, _, size)| size).sum();
        if total > max {
            return Err(AssembleError::TooLarge);
        }
        let out =
            std::fs::File::create(&out_path).map_err(|e| format!("creating the package: {e}"))?;
        let mut writer = zip::ZipWriter::new(out);
        let mut names = std::collections::HashSet::new();
        if let Some(bits) = &bits {
            let file = std::fs::File::open(bits).map_err(|e| e.to_string())?;
            let mut zip = zip::ZipArchive::new(file)
                .map_err(|_| "the bits are not a zip archive".to_string())?;
            // Check every name first, so a bad entry leaves nothing behind.
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| format!("reading entry {i}: {e}"))?;
                let name = entry.name().map_err(|e| e.to_string())?.into_owned();
                if let Some(why) = unsafe_path(&name) {
                    return Err(why.into());
                }
                if entry.enclosed_name().is_none() {
                    return Err(format!("entry {name:?} leaves the app directory").into());
                }
                if entry.is_symlink() {
                    let mut target = String::new();
                    (&mut entry)
                        .take(4096)
                        .read_to_string(&mut target)
                        .map_err(|e| format!("reading symlink {name:?}: {e}"))?;
                    if symlink_escapes(&name, &target) {
                        return Err(
                            format!("symlink {name:?} points outside the app directory").into()
                        );
                    }
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
                let name = entry.name().map_err(|e| e.to_string())?.into_owned();
                if !entry.is_dir() && !entry.is_symlink() {
                    // Inflate the file once: count it against the limit and,
                    // if the pool takes files of its size, keep it for the
                    // resource cache, keyed by its sha1. The declared size
                    // only spares small files a scratch copy; what is kept
                    // is decided by the size actually inflated.
                    let cached = scratch.join(format!("resource-{}", util::new_guid()));
                    let mut f = if resource_size_allowed(entry.size()) {
                        Some(std::fs::File::create(&cached).map_err(|e| e.to_string())?)
                    } else {
                        None
                    };
                    let mut hasher = Sha1::new();
                    let mut size = 0u64;
                    let copied = loop {
                        let n = match entry.read(&mut buf) {
                            Ok(n) => n,
                            Err(e) => break Err(format!("reading {name:?}: {e}").into()),
                        };
                        if n == 0 {
                            break Ok(());
                        }
                        size += n as u64;
                        total += n as u64;
                        if total > max {
                            break Err(AssembleError::TooLarge);
                        }
                        // Only a file kept for the cache needs its sha1.
                        if let Some(f) = f.as_mut() {
                            hasher.update(&buf[..n]);
                            if let Err(e) = f.write_all(&buf[..n]) {
                                break Err(e.to_string().into());
                            }
                        }
                    };
                    let written = f.is_some();
                    drop(f);
                    let kept = copied.and_then(|()| {
                        if !written || !resource_size_allowed(size) {
                            return Ok(false);
                        }
                        std::fs::File::open(&cached)
                            .and_then(|f| f.sync_all())
                            .map_err(|e| AssembleError::Invalid(e.to_string()))?;
                        Ok(true)
                    });
                    match kept {
                        Ok(true) => cache.push((hex::encode(hasher.finalize()), cached)),
                        Ok(false) => {
                            let _ = std::fs::remove_file(&cached);
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&cached);
                            return Err(e);
                        }
                    }
                }
                drop(entry);
                names.insert(name);
                let raw = zip.by_index_raw(i).map_err(|e| e.to_string())?;
                writer
                    .raw_copy_file(raw)
                    .map_err(|e| format!("copying an entry: {e}"))?;
            }
        }
        for (r, mut file, _) in resources {
            if names.contains(&r.path) {
                continue;
            }
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(if r.mode == 0 { 0o644 } else { r.mode });
            writer
                .start_file(r.path.clone(), options)
                .map_err(|e| e.to_string())?;
            std::io::copy(&mut file, &mut writer)
                .map_err(|e| format!("adding {:?}: {e}", r.path))?;
            names.insert(r.path);
        }
        let out = writer
            .finish()
            .map_err(|e| format!("finishing the package: {e}"))?;
        out.sync_all().map_err(|e| e.to_string())?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(Assembled {
            zip_path: out_path,
            cache,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&out_path);
            for (_, p) in cache {
                let _ = std::fs::remove_file(p);
            }
            Err(e)
        }
    }
}

/// Packages left PROCESSING_UPLOAD by a crash mid-upload can never finish:
/// they become FAILED (the client uploads a new package).
pub async fn fail_interrupted_uploads(ctx: &Ctx) -> ApiResult<()> {
    let stuck =
        db::where_eq::<Package>(&ctx.pool, "state", PackageState::ProcessingUpload.as_str())
            .await?;
    for p in stuck {
        db::transition::<Package>(
            &ctx.pool,
            &p.guid,
            p.state,
            PackageState::Failed,
            vec![("error", "the upload was interrupted".into())],
        )
        .await?;
        tracing::warn!(package_guid = %p.guid, "package upload was interrupted");
    }
    Ok(())
}

/// Seals every docker password still stored in plain text (written before
/// the CCDB encrypted them). Idempotent: sealed values are left alone.
pub async fn encrypt_plaintext_docker_passwords(ctx: &Ctx) -> ApiResult<()> {
    let docker = db::where_eq::<Package>(&ctx.pool, "type", "docker").await?;
    let mut sealed = 0;
    for p in docker {
        let Some(password) = p.docker_password.filter(|pw| !pw.expose().is_empty()) else {
            continue;
        };
        if crate::encryption::DbCipher::is_encrypted(password.expose()) {
            continue;
        }
        let stored = ctx.cipher.encrypt(&p.guid, &password);
        db::update_where::<Package>(
            &ctx.pool,
            "guid",
            &p.guid,
            vec![("docker_password", stored.into())],
        )
        .await?;
        sealed += 1;
    }
    if sealed > 0 {
        tracing::info!(
            packages = sealed,
            "sealed docker passwords stored in plain text"
        );
    }
    Ok(())
}
