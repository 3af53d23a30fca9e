//! `/v3/spaces/:guid/features`: the space's `ssh` feature in CC's shape.

use crate::actions::space_features::{self, SSH, SSH_DESCRIPTION};
use crate::context::Shared;
use crate::error::ApiResult;
use crate::messages::UpdateAppFeature;
use crate::web::CfJson;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

fn ssh_json(enabled: bool) -> Value {
    json!({"name": SSH, "description": SSH_DESCRIPTION, "enabled": enabled})
}

/// CC answers the list with its resources only (no pagination).
pub async fn list(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let enabled = space_features::get(&ctx, &guid, SSH).await?;
    Ok(Json(json!({ "resources": [ssh_json(enabled)] })))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path((guid, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(ssh_json(
        space_features::get(&ctx, &guid, &name).await?,
    )))
}

/// The body is CC's `SpaceFeatureUpdateMessage` (only `enabled`), the same
/// shape as an app feature's.
pub async fn update(
    State(ctx): State<Shared>,
    Path((guid, name)): Path<(String, String)>,
    CfJson(msg): CfJson<UpdateAppFeature>,
) -> ApiResult<Json<Value>> {
    let enabled = space_features::set(&ctx, &guid, &name, msg.enabled).await?;
    Ok(Json(ssh_json(enabled)))
}
