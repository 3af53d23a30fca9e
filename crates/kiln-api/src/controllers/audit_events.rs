//! `/v3/audit_events` (read only: events are written by the actions).

use super::list_of;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::permissions::Permissions;
use crate::presenters::audit_event_json;
use crate::web::ListParams;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::Value;

pub async fn list(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let events = fetchers::audit_events(&ctx, &perms, &params).await?;
    Ok(list_of(
        &ctx.base,
        "/v3/audit_events",
        &params,
        events,
        |e| audit_event_json(&ctx.base, e),
    ))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = fetchers::one::<crate::db::AuditEvent>(&ctx, &guid).await?;
    Ok(Json(audit_event_json(&ctx.base, &e)))
}
