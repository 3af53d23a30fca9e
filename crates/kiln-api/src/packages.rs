//! Packages (an app's source bits) and the resource cache: the multipart
//! upload is streamed to scratch under a size limit, every zip entry is
//! checked (no absolute paths, no `..`, no symlink leaving the app), and the
//! stored package is the uploaded entries plus the files the client only
//! listed, read from the cache (`resources/<sha1>`).

use crate::Shared;
use crate::catalog::metadata;
use crate::db::{self, App, Package};
use crate::error::{ApiError, ApiResult};
use crate::util::{self, link, link_method};
use crate::web::{CfJson, CfMultipart, ListParams, paginate};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_model::PackageState;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::path::PathBuf;

pub fn package_json(b: &str, p: &Package) -> Value {
    let path = format!("/v3/packages/{}", p.guid);
    json!({
        "guid": p.guid, "created_at": p.created_at, "updated_at": p.updated_at,
        "type": p.r#type,
        "data": {"error": p.error, "checksum": {"type": "sha256", "value": p.sha256}},
        "state": p.state,
        "relationships": {"app": {"data": {"guid": p.app_guid}}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "upload": link_method(b, &format!("{path}/upload"), "POST"),
            "download": link(b, &format!("{path}/download")),
            "app": link(b, &format!("/v3/apps/{}", p.app_guid)),
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRelationship {
    app: crate::apps::ToOne,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePackage {
    #[serde(rename = "type")]
    kind: String,
    relationships: AppRelationship,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(body): CfJson<CreatePackage>,
) -> ApiResult<Response> {
    let _ = (&body.data, &body.metadata);
    if body.kind != "bits" {
        return Err(ApiError::unprocessable(format!(
            "Package type '{}' is not supported; Kiln stages bits packages",
            body.kind
        )));
    }
    let app_guid = body.relationships.app.data.guid;
    db::find::<App>(&ctx.pool, &app_guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable("App is invalid. Ensure it exists and you have access to it.")
        })?;
    let guid = util::new_guid();
    let now = util::now();
    sqlx::query("INSERT INTO packages (guid, app_guid, type, state, sha256, error, created_at, updated_at) VALUES (?, ?, 'bits', ?, NULL, NULL, ?, ?)")
        .bind(&guid)
        .bind(&app_guid)
        .bind(PackageState::AwaitingUpload.as_str())
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await?;
    let p = db::get::<Package>(&ctx.pool, &guid).await?;
    Ok((StatusCode::CREATED, Json(package_json(&ctx.base, &p))).into_response())
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = db::all::<Package>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|p| {
            params.matches("app_guids", &p.app_guid)
                && params.matches("guids", &p.guid)
                && params.matches("states", &p.state)
                && params.matches("types", &p.r#type)
        })
        .map(|p| package_json(&ctx.base, &p))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/packages", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = db::get::<Package>(&ctx.pool, &guid).await?;
    Ok(Json(package_json(&ctx.base, &p)))
}

/// One entry of a `resources` list (v3 shape, or the legacy v2 one).
#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub sha1: String,
    pub path: String,
    pub mode: u32,
    pub original: Value,
}

fn parse_resource(v: &Value) -> ApiResult<ResourceEntry> {
    let bad = || {
        ApiError::unprocessable(
            "Resources must be objects with checksum.value, size_in_bytes, path and mode",
        )
    };
    let sha1 = v["checksum"]["value"]
        .as_str()
        .or_else(|| v["sha1"].as_str())
        .ok_or_else(bad)?
        .to_ascii_lowercase();
    if sha1.len() != 40 || !sha1.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::unprocessable(format!(
            "Resource checksum '{sha1}' is not a sha1"
        )));
    }
    let path = v["path"]
        .as_str()
        .or_else(|| v["fn"].as_str())
        .unwrap_or("")
        .to_string();
    let mode = match &v["mode"] {
        Value::String(s) if !s.is_empty() => u32::from_str_radix(s, 8)
            .map_err(|_| ApiError::unprocessable(format!("Resource mode '{s}' is not octal")))?,
        Value::Number(n) => n.as_u64().unwrap_or(0o644) as u32,
        _ => 0o644,
    };
    Ok(ResourceEntry {
        sha1,
        path,
        mode: mode & 0o7777,
        original: v.clone(),
    })
}

fn parse_resources(value: &Value) -> ApiResult<Vec<ResourceEntry>> {
    match value {
        Value::Array(items) => items.iter().map(parse_resource).collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(ApiError::unprocessable("Resources must be an array")),
    }
}

fn resource_key(sha1: &str) -> String {
    format!("resources/{sha1}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchBody {
    resources: Vec<Value>,
}

pub async fn resource_matches(
    State(ctx): State<Shared>,
    CfJson(body): CfJson<MatchBody>,
) -> ApiResult<Response> {
    let mut matched = Vec::new();
    let mut known = std::collections::HashMap::new();
    for v in &body.resources {
        let r = parse_resource(v)?;
        let cached = match known.get(&r.sha1) {
            Some(&cached) => cached,
            None => {
                let cached = ctx.blobstore.exists(&resource_key(&r.sha1)).await?;
                known.insert(r.sha1.clone(), cached);
                cached
            }
        };
        if cached {
            matched.push(r.original);
        }
    }
    Ok((StatusCode::CREATED, Json(json!({"resources": matched}))).into_response())
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
    /// (sha1, scratch file) for every uploaded file of at least one byte.
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
                    // Inflate the file once: count it against the limit and
                    // keep it for the resource cache, keyed by its sha1.
                    let cached = scratch.join(format!("resource-{}", util::new_guid()));
                    let mut f = std::fs::File::create(&cached).map_err(|e| e.to_string())?;
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
                        hasher.update(&buf[..n]);
                        if let Err(e) = f.write_all(&buf[..n]) {
                            break Err(e.to_string().into());
                        }
                    };
                    drop(f);
                    let kept = copied.and_then(|()| {
                        if size == 0 {
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

fn too_large_413(limit: u64) -> ApiError {
    ApiError::package_too_large(StatusCode::PAYLOAD_TOO_LARGE, limit)
}

fn remove_scratch(path: &Option<PathBuf>) {
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

/// Reads the multipart upload: the `resources` list (parsed) and the
/// `bits` zip (streamed to a scratch file under the size limit).
async fn read_upload(
    ctx: &Shared,
    multipart: &mut axum::extract::Multipart,
    bits: &mut Option<PathBuf>,
) -> ApiResult<Option<Value>> {
    let limit: crate::internal::Limit = (ctx.config.max_package_bytes, too_large_413);
    let mut resources = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(crate::web::multipart_error(limit))?
    {
        match field.name() {
            Some("resources") => {
                let text = field
                    .text()
                    .await
                    .map_err(crate::web::multipart_error(limit))?;
                resources = Some(serde_json::from_str(&text).map_err(|_| ApiError::parse_error())?);
            }
            Some("bits") if bits.is_none() => {
                let (path, _, _) =
                    crate::internal::stream_to_scratch(ctx, field, Some(limit)).await?;
                *bits = Some(path);
            }
            _ => {}
        }
    }
    Ok(resources)
}

/// `POST /v3/packages/:guid/upload`. Everything is checked and the final
/// zip assembled before the package changes state, so a refused upload
/// leaves the package as it was; then AWAITING_UPLOAD → PROCESSING_UPLOAD
/// is claimed atomically (one concurrent upload wins) → READY.
pub async fn upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfMultipart(mut multipart): CfMultipart,
) -> ApiResult<Json<Value>> {
    let package = db::get::<Package>(&ctx.pool, &guid).await?;
    let from: PackageState = package.state.parse()?;
    if from != PackageState::AwaitingUpload {
        return Err(ApiError::unprocessable(format!(
            "Package state is {from}; bits can only be uploaded once"
        )));
    }
    let mut bits: Option<PathBuf> = None;
    let read = read_upload(&ctx, &mut multipart, &mut bits).await;
    let assembled = async {
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
        let scratch = ctx.blobstore.scratch_dir().to_path_buf();
        let bits_for_assembly = bits.clone();
        let max = ctx.config.max_package_bytes;
        tokio::task::spawn_blocking(move || assemble(scratch, bits_for_assembly, opened, max))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| match e {
                AssembleError::TooLarge => {
                    ApiError::package_too_large(StatusCode::UNPROCESSABLE_ENTITY, max)
                }
                AssembleError::Invalid(why) => ApiError::package_invalid(why),
            })
    }
    .await;
    remove_scratch(&bits);
    let assembled = assembled?;
    for (sha1, path) in assembled.cache {
        let key = resource_key(&sha1);
        if ctx.blobstore.exists(&key).await? {
            let _ = tokio::fs::remove_file(&path).await;
        } else {
            ctx.blobstore.put_file(&key, &path).await?;
        }
    }

    let processing = from.transition_to(PackageState::ProcessingUpload)?;
    let claimed =
        sqlx::query("UPDATE packages SET state = ?, updated_at = ? WHERE guid = ? AND state = ?")
            .bind(processing.as_str())
            .bind(util::now())
            .bind(&guid)
            .bind(from.as_str())
            .execute(&ctx.pool)
            .await?
            .rows_affected()
            == 1;
    if !claimed {
        let _ = tokio::fs::remove_file(&assembled.zip_path).await;
        return Err(ApiError::unprocessable(
            "Package state changed during the upload; bits can only be uploaded once",
        ));
    }
    let (to, sha256, error) = match ctx
        .blobstore
        .put_file(&format!("packages/{guid}"), &assembled.zip_path)
        .await
    {
        Ok(info) => {
            tracing::info!(package_guid = %guid, size = info.size, "package uploaded");
            (PackageState::Ready, Some(info.sha256), None)
        }
        Err(e) => {
            tracing::warn!(package_guid = %guid, error = %e, "storing a package failed");
            let _ = tokio::fs::remove_file(&assembled.zip_path).await;
            (
                PackageState::Failed,
                None,
                Some(format!("storing the package failed: {e}")),
            )
        }
    };
    let to = processing.transition_to(to)?;
    sqlx::query(
        "UPDATE packages SET state = ?, sha256 = ?, error = ?, updated_at = ? WHERE guid = ? AND state = ?",
    )
    .bind(to.as_str())
    .bind(&sha256)
    .bind(&error)
    .bind(util::now())
    .bind(&guid)
    .bind(processing.as_str())
    .execute(&ctx.pool)
    .await?;
    let p = db::get::<Package>(&ctx.pool, &guid).await?;
    Ok(Json(package_json(&ctx.base, &p)))
}

/// Packages left PROCESSING_UPLOAD by a crash mid-upload can never finish:
/// they become FAILED (the client uploads a new package).
pub async fn fail_interrupted_uploads(ctx: &crate::Ctx) -> ApiResult<()> {
    let stuck =
        db::where_eq::<Package>(&ctx.pool, "state", PackageState::ProcessingUpload.as_str())
            .await?;
    for p in stuck {
        let from: PackageState = p.state.parse()?;
        let to = from.transition_to(PackageState::Failed)?;
        sqlx::query(
            "UPDATE packages SET state = ?, error = ?, updated_at = ? WHERE guid = ? AND state = ?",
        )
        .bind(to.as_str())
        .bind("the upload was interrupted")
        .bind(util::now())
        .bind(&p.guid)
        .bind(from.as_str())
        .execute(&ctx.pool)
        .await?;
        tracing::warn!(package_guid = %p.guid, "package upload was interrupted");
    }
    Ok(())
}
