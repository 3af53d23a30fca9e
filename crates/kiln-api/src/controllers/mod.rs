//! Controllers: the HTTP handlers. Each extracts the request, calls one
//! fetcher or action, and presents the result (Cloud Controller's
//! `app/controllers`). No SQL, no state rules here.

pub mod app_features;
pub mod apps;
pub mod audit_events;
pub mod buildpacks;
pub mod builds;
pub mod catalog;
pub mod deployments;
pub mod domains;
pub mod droplets;
pub mod internal;
pub mod links;
pub mod logcache;
pub mod manifest;
pub mod metadata;
pub mod organization_quotas;
pub mod packages;
pub mod processes;
pub mod roles;
pub mod routes;
pub mod service_credential_bindings;
pub mod service_instances;
pub mod settings;
pub mod sidecars;
pub mod space_features;
pub mod space_quotas;
pub mod tasks;
pub mod users;

use crate::context::Ctx;
use crate::error::{ApiResult, Limit};
use crate::fetchers::Page;
use crate::uploads::stream_to_scratch;
use crate::web::{ListParams, page_json, paginate};
use axum::Json;
use serde_json::Value;

/// CF's paginated list at `path` of one page, paged in SQL, each row
/// presented by `present`.
pub fn list_of<T>(
    base: &str,
    path: &str,
    params: &ListParams,
    page: Page<T>,
    present: impl Fn(&T) -> Value,
) -> Json<Value> {
    Json(page_json(
        &format!("{base}{path}"),
        params,
        page.total,
        page.items.iter().map(present).collect(),
    ))
}

/// A list that is not a table's rows (feature flags, the one deployed
/// revision, a process's sidecars), ordered and paged in memory.
pub fn list_all_of<T>(
    base: &str,
    path: &str,
    params: &ListParams,
    items: Vec<T>,
    present: impl Fn(&T) -> Value,
) -> Json<Value> {
    Json(paginate(
        &format!("{base}{path}"),
        params,
        items.iter().map(present).collect(),
    ))
}

/// The first `bits` file of a multipart body, streamed to a scratch file
/// under `limit`, with the file name the client gave (`None`: no `bits`).
pub async fn bits_to_scratch(
    ctx: &Ctx,
    multipart: &mut axum::extract::Multipart,
    limit: Limit,
) -> ApiResult<Option<(std::path::PathBuf, Option<String>)>> {
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(crate::web::multipart_error(limit))?
    {
        if field.name() != Some("bits") {
            continue;
        }
        let name = field.file_name().map(str::to_string);
        let (path, _, _) = stream_to_scratch(ctx, field, Some(limit)).await?;
        return Ok(Some((path, name)));
    }
    Ok(None)
}

/// `202 Accepted` with the job's location.
pub fn accepted(base: &str, job_guid: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::ACCEPTED, job_header(base, job_guid)).into_response()
}

/// `202 Accepted` with the job's location and the resource as it is now
/// (an upload's answer).
pub fn accepted_with(base: &str, job_guid: &str, resource: Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::ACCEPTED,
        job_header(base, job_guid),
        Json(resource),
    )
        .into_response()
}

fn job_header(base: &str, job_guid: &str) -> [(http::HeaderName, String); 1] {
    [(
        http::header::LOCATION,
        crate::presenters::job_location(base, job_guid),
    )]
}
