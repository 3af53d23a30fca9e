//! Droplets by hand: `POST /v3/droplets` (fresh, or a copy with
//! `?source_guid=`), `POST /v3/droplets/:guid/upload`, `GET
//! /v3/droplets/:guid/download`. Listing and reading are in `builds.rs`.

use crate::actions;
use crate::context::Shared;
use crate::error::{ApiError, ApiResult, Limit};
use crate::fetchers;
use crate::messages::droplets::CreateDroplet;
use crate::permissions::{Kind, Need, Permissions};
use crate::presenters::droplet_json;
use crate::uploads::droplet_key;
use crate::web::{CfJson, CfMultipart};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    #[serde(default)]
    source_guid: Option<String>,
}

/// A copy's source must be a droplet the caller sees (its 404 otherwise);
/// the destination app was held to the route's rule.
pub async fn create(
    State(ctx): State<Shared>,
    Extension(perms): Extension<Permissions>,
    Query(q): Query<CreateQuery>,
    CfJson(msg): CfJson<CreateDroplet>,
) -> ApiResult<Response> {
    let droplet = match &q.source_guid {
        Some(source) => {
            if let Some((org, space)) =
                crate::permissions::owner(&ctx, Kind::Droplet, source).await?
            {
                crate::permissions::check(
                    &perms,
                    Need::Read,
                    Kind::Droplet,
                    &org,
                    space.as_deref(),
                )?;
            }
            actions::droplets::copy(&ctx, source, msg).await?
        }
        None => actions::droplets::create(&ctx, msg).await?,
    };
    Ok((StatusCode::CREATED, Json(droplet_json(&ctx.base, &droplet))).into_response())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::cf(
        StatusCode::PAYLOAD_TOO_LARGE,
        10004,
        "CF-InvalidRequest",
        format!("The request is invalid: a droplet may not be larger than {limit} bytes"),
    )
}

/// The droplet is checked before the body is read; the `bits` file is
/// streamed to a scratch file under the upload limit, checked and stored
/// (202 with a finished job, as CC answers).
pub async fn upload(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfMultipart(mut multipart): CfMultipart,
) -> ApiResult<Response> {
    let droplet = actions::droplets::awaiting_upload(&ctx, &guid).await?;
    let limit: Limit = (ctx.config.max_package_bytes, too_large);
    let Some((path, name)) = super::bits_to_scratch(&ctx, &mut multipart, limit).await? else {
        return Err(ApiError::unprocessable(
            "A droplet tgz file must be uploaded as 'bits'",
        ));
    };
    let result = actions::droplets::upload(&ctx, &droplet, &path, name.as_deref()).await;
    let _ = tokio::fs::remove_file(&path).await;
    let droplet = result?;
    let job = actions::jobs::completed(&ctx, "droplet.upload", "droplet", &guid).await?;
    Ok(super::accepted_with(
        &ctx.base,
        &job,
        droplet_json(&ctx.base, &droplet),
    ))
}

pub async fn download(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    let d = fetchers::downloadable_droplet(&ctx, &guid).await?;
    actions::droplets::record_download(&ctx, &d).await?;
    super::internal::serve_blob(&ctx, &droplet_key(&guid), "Droplet bits").await
}
