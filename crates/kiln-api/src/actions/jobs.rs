//! Jobs: Kiln does the work of an asynchronous endpoint inline and records
//! the job already finished, so clients polling `/v3/jobs/:guid` see it done.

use crate::context::Ctx;
use crate::db::{self, Job};
use crate::error::ApiResult;
use crate::util;
use serde_json::Value;

/// Records a job that already finished: COMPLETE without `errors`, FAILED
/// with them (each `{"code","title","detail"}`). Returns its guid.
pub async fn finished(
    ctx: &Ctx,
    operation: &str,
    resource_type: &str,
    resource_guid: &str,
    errors: &[Value],
) -> ApiResult<String> {
    let guid = util::new_guid();
    let now = util::now();
    let state = if errors.is_empty() {
        "COMPLETE"
    } else {
        "FAILED"
    };
    db::insert::<Job>(
        &ctx.pool,
        vec![
            ("guid", guid.as_str().into()),
            ("operation", operation.into()),
            ("state", state.into()),
            ("resource_type", resource_type.into()),
            ("resource_guid", resource_guid.into()),
            ("errors", Value::from(errors.to_vec()).to_string().into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await?;
    Ok(guid)
}

/// Records a job that completed.
pub async fn completed(
    ctx: &Ctx,
    operation: &str,
    resource_type: &str,
    resource_guid: &str,
) -> ApiResult<String> {
    finished(ctx, operation, resource_type, resource_guid, &[]).await
}
