//! `/v3/apps/:guid/features` and `/v3/apps/:guid/ssh_enabled`.

use crate::actions::app_features::{self, Feature, SSH_DISABLED_GLOBALLY};
use crate::context::Shared;
use crate::error::ApiResult;
use crate::messages::UpdateAppFeature;
use crate::web::CfJson;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

fn feature_json(f: &Feature) -> Value {
    json!({"name": f.name, "description": f.description, "enabled": f.enabled})
}

/// CC lists the features unpaginated, with one page's links.
pub async fn list(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let features = app_features::list(&ctx, &guid).await?;
    let href = json!({"href": format!("{}/v3/apps/{guid}/features", ctx.base)});
    Ok(Json(json!({
        "resources": features.iter().map(feature_json).collect::<Vec<_>>(),
        "pagination": {
            "total_results": features.len(), "total_pages": 1,
            "first": href, "last": href, "next": null, "previous": null,
        },
    })))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path((guid, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let f = app_features::get(&ctx, &guid, &name).await?;
    Ok(Json(feature_json(&f)))
}

pub async fn update(
    State(ctx): State<Shared>,
    Path((guid, name)): Path<(String, String)>,
    CfJson(msg): CfJson<UpdateAppFeature>,
) -> ApiResult<Json<Value>> {
    let f = app_features::set(&ctx, &guid, &name, msg.enabled).await?;
    Ok(Json(feature_json(&f)))
}

/// CC's `AppSshStatusPresenter`: never enabled here, Kiln runs no SSH proxy.
pub async fn ssh_enabled(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    app_features::get(&ctx, &guid, app_features::SSH).await?;
    Ok(Json(
        json!({"enabled": false, "reason": SSH_DISABLED_GLOBALLY}),
    ))
}
