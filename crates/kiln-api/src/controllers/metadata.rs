//! Labels and annotations in every answer, and the `PATCH` of resources
//! whose only changeable field is their metadata.
//!
//! Presenters put an empty `metadata` in every resource; [`present`] fills
//! each resource of a JSON answer (a list's, an `include`d one, a single
//! one) from the metadata tables in one read, so no presenter or handler
//! has its own copy of this.

use crate::context::Shared;
use crate::db::metadata::Metadata;
use crate::fetchers;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Fills `metadata` of every resource in a JSON answer.
pub async fn present(State(ctx): State<Shared>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !is_json || !res.status().is_success() {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "reading an answer to present its metadata");
            return crate::error::ApiError::bad_request("answer unreadable").into_response();
        }
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut guids = Vec::new();
    resources(&doc, &mut guids);
    if guids.is_empty() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    guids.sort();
    guids.dedup();
    let found = match fetchers::metadata(&ctx, &guids).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    fill(&mut doc, &found);
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(doc.to_string()))
}

/// The guids of the objects with a `metadata` of labels and annotations.
fn resources(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(guid)), Some(m)) = (o.get("guid"), o.get("metadata"))
                && m.get("labels").is_some()
            {
                out.push(guid.clone());
            }
            o.iter()
                .filter(|(k, _)| *k != "metadata")
                .for_each(|(_, v)| resources(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| resources(v, out)),
        _ => {}
    }
}

fn fill(v: &mut Value, found: &HashMap<String, Metadata>) {
    match v {
        Value::Object(o) => {
            let guid = o.get("guid").and_then(Value::as_str).map(str::to_string);
            if let (Some(guid), Some(m)) = (guid, o.get_mut("metadata"))
                && m.get("labels").is_some()
                && let Some(meta) = found.get(&guid)
            {
                *m = json!({"labels": meta.labels, "annotations": meta.annotations});
            }
            o.iter_mut()
                .filter(|(k, _)| *k != "metadata")
                .for_each(|(_, v)| fill(v, found));
        }
        Value::Array(a) => a.iter_mut().for_each(|v| fill(v, found)),
        _ => {}
    }
}

/// `PATCH` handlers for resources that change only their metadata: apply
/// it, then answer as the resource's `GET` does.
macro_rules! metadata_patch {
    ($($name:ident: $record:ty => $get:path),+ $(,)?) => {$(
        pub async fn $name(
            State(ctx): State<Shared>,
            axum::extract::Path(guid): axum::extract::Path<String>,
            crate::web::CfJson(msg): crate::web::CfJson<crate::messages::UpdateMetadata>,
        ) -> crate::error::ApiResult<Response> {
            crate::actions::metadata::update::<$record>(&ctx, &guid, msg).await?;
            Ok($get(State(ctx), axum::extract::Path(guid)).await?.into_response())
        }
    )+};
}

metadata_patch!(
    patch_package: crate::db::Package => super::packages::get_one,
    patch_droplet: crate::db::Droplet => super::builds::get_droplet,
    patch_route: crate::db::Route => super::routes::get_one,
    patch_stack: crate::db::Stack => super::catalog::get_stack,
    patch_deployment: crate::db::Deployment => super::deployments::get_one,
    patch_revision: crate::db::Revision => super::deployments::revision,
    patch_task: crate::db::Task => super::tasks::get_one,
);

pub async fn patch_build(
    State(ctx): State<Shared>,
    axum::extract::Path(guid): axum::extract::Path<String>,
    crate::web::CfJson(msg): crate::web::CfJson<crate::messages::UpdateMetadata>,
) -> crate::error::ApiResult<Response> {
    crate::actions::metadata::update::<crate::db::Build>(&ctx, &guid, msg).await?;
    let answer = super::builds::get_one(
        State(ctx),
        axum::extract::Path(guid),
        http::HeaderMap::new(),
    );
    answer.await
}

/// `PATCH /v3/domains/:guid`: a domain's labels and annotations, by its
/// org's managers (admins for a shared one); who may is answered before
/// what the body says.
pub async fn patch_domain(
    State(ctx): State<Shared>,
    perms: axum::Extension<crate::permissions::Permissions>,
    axum::extract::Path(guid): axum::extract::Path<String>,
    body: Result<crate::web::CfJson<crate::messages::UpdateMetadata>, crate::error::ApiError>,
) -> crate::error::ApiResult<Response> {
    crate::actions::domains::may_change(&ctx, &perms, &guid).await?;
    let crate::web::CfJson(msg) = body?;
    crate::actions::metadata::update::<crate::db::Domain>(&ctx, &guid, msg).await?;
    let answer = super::domains::get_one(State(ctx), perms, axum::extract::Path(guid));
    Ok(answer.await?.into_response())
}

/// `PATCH /v3/users/:guid` (admins): a user's labels and annotations.
pub async fn patch_user(
    State(ctx): State<Shared>,
    perms: axum::Extension<crate::permissions::Permissions>,
    axum::extract::Path(guid): axum::extract::Path<String>,
    crate::web::CfJson(msg): crate::web::CfJson<crate::messages::UpdateMetadata>,
) -> crate::error::ApiResult<Response> {
    crate::actions::metadata::update::<crate::db::CcUser>(&ctx, &guid, msg).await?;
    let answer = super::users::get_one(State(ctx), perms, axum::extract::Path(guid));
    Ok(answer.await?.into_response())
}
