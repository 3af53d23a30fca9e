//! Space manifests, the two endpoints `cf push` calls first.

use super::accepted;
use crate::actions;
use crate::context::Shared;
use crate::db::Space;
use crate::error::{ApiError, ApiResult};
use crate::fetchers;
use crate::messages::manifest::{is_yaml, parse_manifest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

/// `POST /v3/spaces/:guid/manifest_diff`. Cloud Controller computes a JSON
/// patch between the space's apps and the manifest; the cf CLI only displays
/// it, so an empty diff is enough for `cf push` to continue.
pub async fn diff(
    State(ctx): State<Shared>,
    Path(space_guid): Path<String>,
) -> ApiResult<Json<Value>> {
    fetchers::one::<Space>(&ctx, &space_guid).await?;
    Ok(Json(json!({"diff": []})))
}

/// `POST /v3/spaces/:guid/actions/apply_manifest`: the manifest is
/// validated whole before anything changes.
pub async fn apply(
    State(ctx): State<Shared>,
    Path(space_guid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if !is_yaml(&headers) {
        return Err(ApiError::bad_request("Content-Type must be yaml"));
    }
    let space = fetchers::one::<Space>(&ctx, &space_guid).await?;
    let manifests = parse_manifest(&body)?;
    let job = actions::manifest::apply(&ctx, &space, manifests).await?;
    Ok(accepted(&ctx.base, &job))
}
