//! Labels and annotations: a create's or update's `metadata` merged into
//! what the resource has (null deletes a key), and the `PATCH` of resources
//! whose only changeable field is their metadata.

use crate::context::Ctx;
use crate::db::{self, Record, metadata::Patch};
use crate::error::ApiResult;
use crate::messages::UpdateMetadata;

/// Merges `patch` into the metadata of `guid`, in one transaction.
pub async fn apply(ctx: &Ctx, guid: &str, patch: &Patch) -> ApiResult<()> {
    if patch == &Patch::default() {
        return Ok(());
    }
    let mut tx = ctx.pool.begin().await?;
    db::metadata::apply(&mut tx, guid, patch).await?;
    tx.commit().await?;
    Ok(())
}

/// `PATCH /v3/<resources>/:guid` with only `metadata`: the resource must
/// exist (`<Resource> not found`).
pub async fn update<T: Record>(ctx: &Ctx, guid: &str, msg: UpdateMetadata) -> ApiResult<()> {
    db::get::<T>(&ctx.pool, guid).await?;
    let patch = crate::messages::metadata::patch_of(&msg.metadata);
    let mut tx = ctx.pool.begin().await?;
    db::metadata::apply(&mut tx, guid, &patch).await?;
    db::update::<T>(&mut *tx, guid, Vec::new()).await?;
    tx.commit().await?;
    Ok(())
}
