//! Droplet actions: storing the droplet a cell uploads for a build.

use crate::context::Ctx;
use crate::db::{self, Droplet};
use crate::error::{ApiError, ApiResult};
use crate::uploads::droplet_key;
use kiln_model::DropletState;
use std::path::Path;

/// The droplet, if the cell may upload its bits.
pub async fn uploadable(ctx: &Ctx, guid: &str) -> ApiResult<Droplet> {
    let droplet = db::get::<Droplet>(&ctx.pool, guid).await?;
    if !matches!(
        droplet.state,
        DropletState::AwaitingUpload | DropletState::ProcessingUpload
    ) {
        return Err(ApiError::unprocessable("Droplet is not awaiting an upload"));
    }
    Ok(droplet)
}

/// Stores the uploaded droplet (a scratch file) and records its checksum;
/// the build's completion moves its state.
pub async fn store_upload(ctx: &Ctx, droplet: &Droplet, path: &Path) -> ApiResult<()> {
    let info = ctx
        .blobstore
        .put_file(&droplet_key(&droplet.guid), path)
        .await?;
    db::update::<Droplet>(
        &ctx.pool,
        &droplet.guid,
        vec![("sha256", info.sha256.as_str().into())],
    )
    .await?;
    tracing::info!(droplet_guid = %droplet.guid, size = info.size, "droplet uploaded");
    Ok(())
}
