//! Crash events (Cloud Controller's app-crashed handler and its tps
//! watcher): every `ActualLrpCrashed` of the BBS becomes an
//! `audit.app.process.crash` event and an `API` log line. A crash is
//! identified by its ActualLrp and the moment it was recorded, so seeing
//! it twice (a resync, an API restart) records it once.

use crate::audit::{self, Actor, types};
use crate::context::Ctx;
use crate::db::{self, App, Process};
use crate::error::ApiResult;
use kiln_bbs::ActualLrpFilter;
use kiln_model::bbs::{ActualLrpKey, Nanos};
use kiln_model::{APPS_DOMAIN, ActualLrpState};
use serde_json::{Value, json};

/// One crash as the BBS reported it.
pub struct Crash<'a> {
    pub key: &'a ActualLrpKey,
    /// Empty when only the ActualLrp's record is left (a resync).
    pub instance_guid: &'a str,
    pub cell_id: &'a str,
    pub crash_count: u32,
    pub reason: &'a str,
    pub since: Nanos,
}

/// CC keeps the first 5,000 characters of an exit description.
const EXIT_DESCRIPTION_MAX: usize = 5000;

/// A DesiredLrp's process guid is `<cc process guid>-<version>`, both
/// guids of 36 characters.
fn split_lrp_guid(lrp: &str) -> Option<(&str, &str)> {
    let cut = lrp.len().checked_sub(37)?;
    let (process, rest) = lrp.split_at_checked(cut)?;
    Some((process, rest.strip_prefix('-')?))
}

/// The exit status in a cell's reason (`Exited with status 137 (out of
/// memory)`), if the process exited.
fn exit_status(reason: &str) -> Value {
    reason
        .split_once("Exited with status ")
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit() && c != '-')
                .next()
                .and_then(|n| n.parse::<i64>().ok())
        })
        .map_or(Value::Null, Value::from)
}

/// Records one crash; true if it was new.
pub async fn record(ctx: &Ctx, c: &Crash<'_>) -> ApiResult<bool> {
    if c.key.domain != APPS_DOMAIN {
        return Ok(false);
    }
    let Some((process_guid, version)) = split_lrp_guid(&c.key.process_guid) else {
        return Ok(false);
    };
    // The app or process may be gone since: nothing to record it on.
    let Some(p) = db::find::<Process>(&ctx.pool, process_guid).await? else {
        return Ok(false);
    };
    let Some(app) = db::find::<App>(&ctx.pool, &p.app_guid).await? else {
        return Ok(false);
    };
    let description: String = c.reason.chars().take(EXIT_DESCRIPTION_MAX).collect();
    let data = json!({
        "instance": c.instance_guid,
        "index": c.key.index,
        "cell_id": c.cell_id,
        "exit_status": exit_status(c.reason),
        "exit_description": description,
        "reason": "CRASHED",
        "crash_count": c.crash_count,
        "crash_timestamp": c.since,
        "version": version,
    });
    let event = audit::app_event(&ctx.pool, &app, types::APP_PROCESS_CRASH, data)
        .await?
        .by(Actor::process(&p.guid, &p.r#type))
        .with_dedup_key(format!(
            "crash/{}/{}/{}",
            c.key.process_guid, c.key.index, c.since
        ));
    let new = audit::record(&ctx.pool, event).await?;
    if new {
        tracing::info!(app_guid = %app.guid, process_guid = %p.guid, index = c.key.index, reason = c.reason, "process crashed");
        ctx.api_log(
            &app.guid,
            &format!("Process has crashed with type: \"{}\"", p.r#type),
        );
    }
    Ok(new)
}

/// Records the crashes events may have missed (at start, after lagging):
/// every CRASHED instance's last crash, once.
pub async fn resync(ctx: &Ctx) -> ApiResult<()> {
    let filter = ActualLrpFilter {
        domain: Some(APPS_DOMAIN.into()),
        ..Default::default()
    };
    for a in ctx.bbs.actual_lrps(filter).await? {
        if a.state != ActualLrpState::Crashed {
            continue;
        }
        let crash = Crash {
            key: &a.key,
            instance_guid: "",
            cell_id: "",
            crash_count: a.crash_count,
            reason: &a.crash_reason,
            since: a.since,
        };
        record(ctx, &crash).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrp_guids_split_into_process_and_version() {
        let p = "0b8f3c1e-6a1f-4c4e-9a55-0d6f3a7c2b10";
        let v = "5d2e7f90-1c3b-4a8d-8e6f-2b4c6d8e0f12";
        assert_eq!(split_lrp_guid(&format!("{p}-{v}")), Some((p, v)));
        assert_eq!(split_lrp_guid("short"), None);
    }

    #[test]
    fn exit_status_comes_from_the_cells_reason() {
        assert_eq!(exit_status("Exited with status 3"), json!(3));
        assert_eq!(
            exit_status("APP/PROC/WEB: Exited with status 137 (out of memory)"),
            json!(137)
        );
        assert_eq!(exit_status("Instance never healthy"), Value::Null);
    }
}
