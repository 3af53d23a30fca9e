//! Processes: their JSON, scaling and updates, and instance stats read from
//! the BBS's ActualLrps with Cloud Controller's state mapping, and their
//! usage from the cells' latest container metrics in the log service.

use crate::catalog::metadata;
use crate::db::{self, App, Process};
use crate::error::{ApiError, ApiResult};
use crate::util::{self, link, link_method};
use crate::web::{CfJson, ListParams, paginate};
use crate::{Ctx, Shared};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_bbs::ActualLrpFilter;
use kiln_model::ActualLrpState;
use kiln_model::logs::ContainerMetric;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn health_check_json(p: &Process) -> Value {
    let mut data = json!({
        "timeout": p.health_check_timeout,
        "invocation_timeout": p.health_check_invocation_timeout,
    });
    if p.health_check_type == "http" {
        data["endpoint"] = json!(
            p.health_check_endpoint
                .clone()
                .unwrap_or_else(|| "/".into())
        );
    }
    json!({"type": p.health_check_type, "data": data})
}

pub fn process_json(b: &str, app: &App, p: &Process) -> Value {
    let path = format!("/v3/processes/{}", p.guid);
    json!({
        "guid": p.guid, "created_at": p.created_at, "updated_at": p.updated_at,
        "version": p.version, "type": p.r#type, "command": p.command, "user": "vcap",
        "instances": p.instances, "memory_in_mb": p.memory_in_mb, "disk_in_mb": p.disk_in_mb,
        "log_rate_limit_in_bytes_per_second": -1,
        "health_check": health_check_json(p),
        "readiness_health_check": {"type": "process", "data": {"invocation_timeout": null, "interval": null}},
        "relationships": {"app": {"data": {"guid": p.app_guid}}, "revision": null},
        "metadata": metadata(),
        "links": {
            "self": link(b, &path),
            "scale": link_method(b, &format!("{path}/actions/scale"), "POST"),
            "app": link(b, &format!("/v3/apps/{}", p.app_guid)),
            "space": link(b, &format!("/v3/spaces/{}", app.space_guid)),
            "stats": link(b, &format!("{path}/stats")),
        },
    })
}

/// Creates a process of `ptype` for an app (web: port check, 1 instance).
pub async fn insert_process(
    ctx: &Ctx,
    app_guid: &str,
    ptype: &str,
    instances: i64,
    health_check: Option<&str>,
) -> ApiResult<String> {
    let guid = util::new_guid();
    let now = util::now();
    let hc = health_check.unwrap_or(if ptype == "web" { "port" } else { "process" });
    sqlx::query("INSERT INTO processes (guid, app_guid, type, command, instances, memory_in_mb, disk_in_mb, health_check_type, health_check_endpoint, health_check_timeout, health_check_invocation_timeout, version, created_at, updated_at) VALUES (?, ?, ?, NULL, ?, 256, 1024, ?, NULL, NULL, NULL, ?, ?, ?)")
        .bind(&guid)
        .bind(app_guid)
        .bind(ptype)
        .bind(instances)
        .bind(hc)
        .bind(util::new_guid())
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await?;
    Ok(guid)
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let apps = db::all::<App>(&ctx.pool).await?;
    let items = db::all::<Process>(&ctx.pool)
        .await?
        .into_iter()
        .filter_map(|p| {
            let app = apps.iter().find(|a| a.guid == p.app_guid)?;
            (params.matches("app_guids", &p.app_guid)
                && params.matches("guids", &p.guid)
                && params.matches("types", &p.r#type)
                && params.matches("space_guids", &app.space_guid))
            .then(|| process_json(&ctx.base, app, &p))
        })
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/processes", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = db::get::<Process>(&ctx.pool, &guid).await?;
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    Ok(Json(process_json(&ctx.base, &app, &p)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckData {
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    invocation_timeout: Option<i64>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    interval: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<HealthCheckData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProcess {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    health_check: Option<HealthCheckBody>,
    #[serde(default)]
    readiness_health_check: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<UpdateProcess>,
) -> ApiResult<Json<Value>> {
    let p = update_process(&ctx, &guid, body).await?;
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    Ok(Json(process_json(&ctx.base, &app, &p)))
}

/// Changes a process's command and health check (`PATCH /v3/processes/:guid`).
pub async fn update_process(ctx: &Ctx, guid: &str, body: UpdateProcess) -> ApiResult<Process> {
    let _ = (&body.readiness_health_check, &body.metadata);
    let p = db::get::<Process>(&ctx.pool, guid).await?;
    let command = match body.command {
        Some(c) if c.is_empty() => None,
        Some(c) => Some(c),
        None => p.command.clone(),
    };
    let (hc_type, endpoint, timeout, invocation) = match body.health_check {
        Some(hc) => {
            if !["port", "process", "http"].contains(&hc.kind.as_str()) {
                return Err(ApiError::unprocessable(
                    "Health check type must be \"port\", \"process\", or \"http\"",
                ));
            }
            let data = hc.data.unwrap_or_default();
            let _ = data.interval;
            (
                hc.kind,
                data.endpoint,
                data.timeout,
                data.invocation_timeout,
            )
        }
        None => (
            p.health_check_type.clone(),
            p.health_check_endpoint.clone(),
            p.health_check_timeout,
            p.health_check_invocation_timeout,
        ),
    };
    sqlx::query("UPDATE processes SET command = ?, health_check_type = ?, health_check_endpoint = ?, health_check_timeout = ?, health_check_invocation_timeout = ?, updated_at = ? WHERE guid = ?")
        .bind(&command)
        .bind(&hc_type)
        .bind(&endpoint)
        .bind(timeout)
        .bind(invocation)
        .bind(util::now())
        .bind(guid)
        .execute(&ctx.pool)
        .await?;
    db::get::<Process>(&ctx.pool, guid).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    #[serde(default)]
    instances: Option<i64>,
    #[serde(default)]
    memory_in_mb: Option<i64>,
    #[serde(default)]
    disk_in_mb: Option<i64>,
    #[serde(default)]
    log_rate_limit_in_bytes_per_second: Option<i64>,
}

async fn scale_process(ctx: &Ctx, p: Process, body: ScaleBody) -> ApiResult<Response> {
    let p = apply_scale(ctx, &p, body).await?;
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(process_json(&ctx.base, &app, &p)),
    )
        .into_response())
}

/// Scales a process and syncs its app's DesiredLrps (the scale endpoints,
/// and apply_manifest).
pub async fn apply_scale(ctx: &Ctx, p: &Process, body: ScaleBody) -> ApiResult<Process> {
    let _ = body.log_rate_limit_in_bytes_per_second;
    if body.instances.is_some_and(|i| i < 0) {
        return Err(ApiError::unprocessable(
            "Instances must be greater than or equal to 0",
        ));
    }
    if body.memory_in_mb.is_some_and(|m| m < 1) || body.disk_in_mb.is_some_and(|d| d < 1) {
        return Err(ApiError::unprocessable(
            "Memory and disk must be greater than 0MB",
        ));
    }
    sqlx::query("UPDATE processes SET instances = ?, memory_in_mb = ?, disk_in_mb = ?, updated_at = ? WHERE guid = ?")
        .bind(body.instances.unwrap_or(p.instances))
        .bind(body.memory_in_mb.unwrap_or(p.memory_in_mb))
        .bind(body.disk_in_mb.unwrap_or(p.disk_in_mb))
        .bind(util::now())
        .bind(&p.guid)
        .execute(&ctx.pool)
        .await?;
    crate::sync::sync_app(ctx, &p.app_guid).await?;
    db::get::<Process>(&ctx.pool, &p.guid).await
}

pub async fn scale(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<ScaleBody>,
) -> ApiResult<Response> {
    let p = db::get::<Process>(&ctx.pool, &guid).await?;
    scale_process(&ctx, p, body).await
}

pub async fn scale_by_type(
    State(ctx): State<Shared>,
    Path((app_guid, ptype)): Path<(String, String)>,
    CfJson(body): CfJson<ScaleBody>,
) -> ApiResult<Response> {
    db::get::<App>(&ctx.pool, &app_guid).await?;
    let p = db::where_eq::<Process>(&ctx.pool, "app_guid", &app_guid)
        .await?
        .into_iter()
        .find(|p| p.r#type == ptype)
        .ok_or_else(|| ApiError::not_found("Process"))?;
    scale_process(&ctx, p, body).await
}

pub async fn stats(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let p = db::get::<Process>(&ctx.pool, &guid).await?;
    let app = db::get::<App>(&ctx.pool, &p.app_guid).await?;
    let instances = p.instances.max(0) as u32;
    let down = |index: u32, details: Value| {
        json!({"type": p.r#type, "index": index, "state": "DOWN", "routable": false, "uptime": 0,
               "isolation_segment": null, "details": details})
    };
    let running = app.state == "STARTED" && app.droplet_guid.is_some();
    let actuals = if running {
        ctx.bbs
            .actual_lrps(ActualLrpFilter {
                process_guid: Some(crate::sync::lrp_guid(&p)),
                ..ActualLrpFilter::default()
            })
            .await?
    } else {
        Vec::new()
    };
    let now_nanos = util::now_nanos();
    let metrics = ctx
        .logs
        .container_metrics(&app.guid, &crate::sync::lrp_guid(&p));
    let mut resources = Vec::new();
    for index in 0..instances {
        let Some(a) = actuals.iter().find(|a| a.key.index == index) else {
            resources.push(down(index, Value::Null));
            continue;
        };
        let (state, details) = match a.state {
            ActualLrpState::Running => ("RUNNING", Value::Null),
            ActualLrpState::Claimed => ("STARTING", Value::Null),
            ActualLrpState::Unclaimed if !a.placement_error.is_empty() => {
                resources.push(down(index, json!(a.placement_error)));
                continue;
            }
            ActualLrpState::Unclaimed => ("STARTING", Value::Null),
            ActualLrpState::Crashed => (
                "CRASHED",
                if a.crash_reason.is_empty() {
                    Value::Null
                } else {
                    json!(a.crash_reason)
                },
            ),
        };
        let (host, ports) = match &a.net_info {
            Some(n) => (
                json!(n.address),
                json!(
                    n.ports
                        .iter()
                        .map(|m| json!({"external": m.host_port, "internal": m.container_port}))
                        .collect::<Vec<_>>()
                ),
            ),
            None => (json!(""), json!([])),
        };
        let uptime = if a.state == ActualLrpState::Running {
            ((now_nanos - a.since).max(0) / 1_000_000_000) as u64
        } else {
            0
        };
        resources.push(json!({
            "type": p.r#type, "index": index,
            "instance_guid": a.instance_key.as_ref().map(|k| k.instance_guid.clone()).unwrap_or_default(),
            "state": state, "routable": state == "RUNNING",
            "host": host, "instance_internal_ip": host,
            "instance_ports": ports,
            "uptime": uptime,
            "mem_quota": p.memory_in_mb * 1024 * 1024,
            "disk_quota": p.disk_in_mb * 1024 * 1024,
            "log_rate_limit": -1,
            "fds_quota": 16384,
            "isolation_segment": null,
            "details": details,
            "usage": usage_json(instance_metric(&metrics, a, index)),
        }));
    }
    Ok(Json(json!({"resources": resources})))
}

/// The latest container metric of this very instance (not of the one an
/// index had before a crash), while it runs.
fn instance_metric<'m>(
    metrics: &'m [ContainerMetric],
    actual: &kiln_model::bbs::ActualLrp,
    index: u32,
) -> Option<&'m ContainerMetric> {
    let guid = &actual.instance_key.as_ref()?.instance_guid;
    if actual.state != ActualLrpState::Running {
        return None;
    }
    metrics
        .iter()
        .find(|m| m.instance_id == index.to_string() && &m.instance_guid == guid)
}

/// Cloud Controller's `usage`: `cpu` as a fraction of one core (the gauge
/// is a percentage), `mem` and `disk` in bytes, `time` of the measurement.
/// Zeros until the cell has measured the instance.
fn usage_json(metric: Option<&ContainerMetric>) -> Value {
    let Some(m) = metric else {
        return json!({"time": util::now(), "cpu": 0, "cpu_entitlement": 0, "mem": 0, "disk": 0, "log_rate": 0});
    };
    let time = time::OffsetDateTime::from_unix_timestamp(m.timestamp / 1_000_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(util::now);
    json!({"time": time, "cpu": m.cpu_percentage / 100.0, "cpu_entitlement": 0,
           "mem": m.memory_bytes, "disk": m.disk_bytes, "log_rate": 0})
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn usage_is_cloud_controllers_shape_from_the_gauge() {
        let metric = ContainerMetric {
            timestamp: 1_700_000_000_500_000_000,
            source_id: "app".into(),
            process_id: "p".into(),
            instance_id: "0".into(),
            instance_guid: "i".into(),
            cpu_percentage: 25.0,
            memory_bytes: 1_000_000,
            disk_bytes: 2_000_000,
            memory_bytes_quota: 0,
            disk_bytes_quota: 0,
        };
        let u = usage_json(Some(&metric));
        assert_eq!(u["cpu"], 0.25);
        assert_eq!(u["mem"], 1_000_000);
        assert_eq!(u["disk"], 2_000_000);
        assert_eq!(u["time"], "2023-11-14T22:13:20Z");
        assert_eq!(usage_json(None)["mem"], 0);
    }

    #[test]
    fn usage_is_only_the_running_instances_own() {
        let metric = |index: &str, guid: &str| ContainerMetric {
            timestamp: 1,
            source_id: "app".into(),
            process_id: "p".into(),
            instance_id: index.into(),
            instance_guid: guid.into(),
            cpu_percentage: 0.0,
            memory_bytes: 7,
            disk_bytes: 0,
            memory_bytes_quota: 0,
            disk_bytes_quota: 0,
        };
        let metrics = [metric("0", "old"), metric("0", "new"), metric("1", "new")];
        let actual = |state: ActualLrpState| kiln_model::bbs::ActualLrp {
            key: kiln_model::bbs::ActualLrpKey {
                process_guid: "p".into(),
                index: 0,
                domain: "cf-apps".into(),
            },
            instance_key: Some(kiln_model::bbs::ActualLrpInstanceKey {
                instance_guid: "new".into(),
                cell_id: "cell".into(),
            }),
            net_info: None,
            state,
            crash_count: 0,
            crash_reason: String::new(),
            placement_error: String::new(),
            since: 0,
        };
        let found = instance_metric(&metrics, &actual(ActualLrpState::Running), 0).unwrap();
        assert_eq!(
            (found.instance_id.as_str(), found.instance_guid.as_str()),
            ("0", "new")
        );
        assert!(instance_metric(&metrics, &actual(ActualLrpState::Crashed), 0).is_none());
        assert!(instance_metric(&metrics, &actual(ActualLrpState::Running), 2).is_none());
    }
}
