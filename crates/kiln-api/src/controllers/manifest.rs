//! Space manifests, the two endpoints `cf push` calls first.

use super::accepted;
use crate::actions;
use crate::context::Shared;
use crate::db::Space;
use crate::error::{ApiError, ApiResult};
use crate::fetchers;
use crate::messages::manifest::{applications, is_yaml, parse_manifest};
use crate::messages::manifest_diff;
use crate::permissions::Permissions;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{Value, json};

/// `POST /v3/spaces/:guid/manifest_diff`: what applying the manifest would
/// change, in CC's JSON-patch-like shape (`cf push` shows it).
pub async fn diff(
    State(ctx): State<Shared>,
    Path(space_guid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    fetchers::one::<Space>(&ctx, &space_guid).await?;
    if !is_yaml(&headers) {
        return Err(ApiError::bad_request("Content-Type must be yaml"));
    }
    let applications = applications(&body)?;
    let names = applications
        .iter()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    let existing = fetchers::space_app_manifests(&ctx, &space_guid, names).await?;
    Ok(Json(
        json!({"diff": manifest_diff::diff(&applications, &existing)?}),
    ))
}

/// `GET /v3/apps/:guid/manifest`: the app as a manifest, in YAML.
pub async fn app_manifest(
    State(ctx): State<Shared>,
    Path(app_guid): Path<String>,
) -> ApiResult<Response> {
    let app = fetchers::app_manifest(&ctx, &app_guid).await?;
    let yaml = serde_saphyr::to_string(&crate::presenters::manifest::manifest(vec![app]))
        .map_err(|e| ApiError::bad_request(format!("presenting the manifest: {e}")))?;
    Ok(([(http::header::CONTENT_TYPE, "application/x-yaml")], yaml).into_response())
}

/// `POST /v3/spaces/:guid/actions/apply_manifest`: the manifest is
/// validated whole before anything changes.
pub async fn apply(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Path(space_guid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if !is_yaml(&headers) {
        return Err(ApiError::bad_request("Content-Type must be yaml"));
    }
    let space = fetchers::one::<Space>(&ctx, &space_guid).await?;
    let manifests = parse_manifest(&body)?;
    let job = actions::manifest::apply(&ctx, &perms, &space, manifests).await?;
    Ok(accepted(&ctx.base, &job))
}
