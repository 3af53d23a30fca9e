//! Endpoints Kiln's own documents link to: a domain's route reservations
//! (CC's check-route), a package's bits, an app's deployed revisions and
//! its buildpack cache.

use super::{accepted, list_all_of};
use crate::actions;
use crate::context::Shared;
use crate::error::ApiResult;
use crate::fetchers;
use crate::presenters::revision_json;
use crate::uploads::package_key;
use crate::web::ListParams;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

/// `GET /v3/domains/:guid/route_reservations?host=&path=`: whether a route
/// with that host and path exists on the domain (in any space).
pub async fn route_reservations(
    State(ctx): State<Shared>,
    axum::Extension(perms): axum::Extension<crate::permissions::Permissions>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let matching = fetchers::route_reserved(&ctx, &perms, &guid, &params).await?;
    Ok(Json(json!({ "matching_route": matching })))
}

/// `GET /v3/packages/:guid/download`: a bits package's zip.
pub async fn package_download(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    fetchers::downloadable_package(&ctx, &guid).await?;
    super::internal::serve_blob(&ctx, &package_key(&guid), "Package bits").await
}

/// `GET /v3/apps/:guid/revisions/deployed`: the revision the app runs.
pub async fn deployed_revisions(
    State(ctx): State<Shared>,
    Path(app_guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let revs = fetchers::deployed_revisions(&ctx, &app_guid).await?;
    let path = format!("/v3/apps/{app_guid}/revisions/deployed");
    Ok(list_all_of(&ctx.base, &path, &params, revs, |(r, d)| {
        revision_json(&ctx.base, r, d.as_ref())
    }))
}

/// `POST /v3/apps/:guid/actions/clear_buildpack_cache`: the next staging
/// starts without the app's build cache.
pub async fn clear_buildpack_cache(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    actions::apps::clear_buildpack_cache(&ctx, &guid).await?;
    let job = actions::jobs::completed(&ctx, "app.clear_buildpack_cache", "app", &guid).await?;
    Ok(accepted(&ctx.base, &job))
}
