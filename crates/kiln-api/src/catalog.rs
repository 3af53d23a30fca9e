//! The platform's fixed furniture: first-start bootstrap, the root and info
//! documents, organizations, spaces, domains, stacks and jobs.

use crate::db::{self, Domain, Job, Organization, Space, Stack, User};
use crate::error::{ApiError, ApiResult};
use crate::util::{self, link, link_method};
use crate::web::{ListParams, paginate};
use crate::{Ctx, Shared};
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

pub const DEFAULT_ORG: &str = "kiln";
pub const DEFAULT_SPACE: &str = "dev";
pub const API_VERSION: &str = "3.180.0";

/// Creates what a fresh platform needs; returns the admin password when it
/// was generated now.
pub async fn bootstrap(ctx: &Ctx) -> ApiResult<Option<String>> {
    let now = util::now();
    let mut generated = None;
    let admin = db::where_eq::<User>(&ctx.pool, "username", "admin").await?;
    match (&ctx.config.admin_password, admin.first()) {
        (Some(password), existing) => {
            let hash = crate::auth::hash_password(password)?;
            match existing {
                Some(user) => {
                    sqlx::query("UPDATE users SET password_hash = ? WHERE guid = ?")
                        .bind(&hash)
                        .bind(&user.guid)
                        .execute(&ctx.pool)
                        .await?;
                }
                None => insert_admin(ctx, &hash, &now).await?,
            }
        }
        (None, Some(_)) => {}
        (None, None) => {
            let password = util::random_password(24);
            crate::write_private(&ctx.config.data_dir.join("admin-password"), &password).await?;
            let hash = crate::auth::hash_password(&password)?;
            insert_admin(ctx, &hash, &now).await?;
            generated = Some(password);
        }
    }

    sqlx::query("INSERT OR IGNORE INTO organizations (guid, name, created_at, updated_at) VALUES (?, ?, ?, ?)")
        .bind(util::new_guid())
        .bind(DEFAULT_ORG)
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await?;
    let org = db::where_eq::<Organization>(&ctx.pool, "name", DEFAULT_ORG)
        .await?
        .remove(0);
    sqlx::query("INSERT OR IGNORE INTO spaces (guid, name, organization_guid, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
        .bind(util::new_guid())
        .bind(DEFAULT_SPACE)
        .bind(&org.guid)
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO domains (guid, name, created_at, updated_at) VALUES (?, ?, ?, ?)",
    )
    .bind(util::new_guid())
    .bind(&ctx.config.domain)
    .bind(&now)
    .bind(&now)
    .execute(&ctx.pool)
    .await?;
    sqlx::query("UPDATE stacks SET is_default = 0 WHERE name <> ?")
        .bind(&ctx.config.stack)
        .execute(&ctx.pool)
        .await?;
    sqlx::query("INSERT OR IGNORE INTO stacks (guid, name, description, is_default, created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?)")
        .bind(util::new_guid())
        .bind(&ctx.config.stack)
        .bind("the host's own operating system, read-only")
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await?;
    sqlx::query("UPDATE stacks SET is_default = 1 WHERE name = ?")
        .bind(&ctx.config.stack)
        .execute(&ctx.pool)
        .await?;
    Ok(generated)
}

async fn insert_admin(ctx: &Ctx, hash: &str, now: &str) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO users (guid, username, email, password_hash, created_at) VALUES (?, 'admin', 'admin', ?, ?)",
    )
    .bind(util::new_guid())
    .bind(hash)
    .bind(now)
    .execute(&ctx.pool)
    .await?;
    Ok(())
}

pub async fn root(State(ctx): State<Shared>) -> Json<Value> {
    let b = &ctx.base;
    Json(json!({
        "links": {
            "self": {"href": b},
            "cloud_controller_v3": {"href": format!("{b}/v3"), "meta": {"version": API_VERSION}},
            "network_policy_v0": null,
            "network_policy_v1": null,
            "login": {"href": b},
            "uaa": {"href": b},
            "credhub": null,
            "routing": null,
            "logging": null,
            "log_cache": {"href": b},
            "log_stream": null,
            "app_ssh": null,
        }
    }))
}

pub async fn v3_root(State(ctx): State<Shared>) -> Json<Value> {
    let b = &ctx.base;
    let mut links = serde_json::Map::new();
    links.insert("self".into(), link(b, "/v3"));
    for name in [
        "apps",
        "buildpacks",
        "builds",
        "deployments",
        "domains",
        "droplets",
        "info",
        "jobs",
        "organizations",
        "packages",
        "processes",
        "resource_matches",
        "routes",
        "spaces",
        "stacks",
    ] {
        links.insert(name.into(), link(b, &format!("/v3/{name}")));
    }
    Json(json!({ "links": links }))
}

pub async fn info(State(ctx): State<Shared>) -> Json<Value> {
    Json(json!({
        "build": "",
        "cli_version": {"minimum": "", "recommended": ""},
        "custom": {},
        "description": "Kiln, a Cloud Foundry-compatible platform in one binary",
        "name": "kiln",
        "version": 0,
        "osbapi_version": "2.15",
        "rate_limits": {"enabled": false, "general_limit": "", "reset_interval_in_minutes": ""},
        "links": {"self": link(&ctx.base, "/v3/info"), "support": {"href": ""}},
    }))
}

pub fn metadata() -> Value {
    json!({"labels": {}, "annotations": {}})
}

pub fn org_json(b: &str, o: &Organization) -> Value {
    json!({
        "guid": o.guid, "created_at": o.created_at, "updated_at": o.updated_at,
        "name": o.name, "suspended": false,
        "relationships": {"quota": {"data": null}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/organizations/{}", o.guid)),
            "domains": link(b, &format!("/v3/organizations/{}/domains", o.guid)),
            "default_domain": link(b, &format!("/v3/organizations/{}/domains/default", o.guid)),
        },
    })
}

pub fn space_json(b: &str, s: &Space) -> Value {
    json!({
        "guid": s.guid, "created_at": s.created_at, "updated_at": s.updated_at,
        "name": s.name, "suspended": false,
        "relationships": {
            "organization": {"data": {"guid": s.organization_guid}},
            "quota": {"data": null},
        },
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/spaces/{}", s.guid)),
            "organization": link(b, &format!("/v3/organizations/{}", s.organization_guid)),
            "features": link(b, &format!("/v3/spaces/{}/features", s.guid)),
            "apply_manifest": link_method(b, &format!("/v3/spaces/{}/actions/apply_manifest", s.guid), "POST"),
        },
    })
}

pub fn domain_json(b: &str, d: &Domain) -> Value {
    json!({
        "guid": d.guid, "created_at": d.created_at, "updated_at": d.updated_at,
        "name": d.name, "internal": false, "router_group": null,
        "supported_protocols": ["http"],
        "relationships": {"organization": {"data": null}, "shared_organizations": {"data": []}},
        "metadata": metadata(),
        "links": {
            "self": link(b, &format!("/v3/domains/{}", d.guid)),
            "route_reservations": link(b, &format!("/v3/domains/{}/route_reservations", d.guid)),
        },
    })
}

pub fn stack_json(b: &str, s: &Stack) -> Value {
    json!({
        "guid": s.guid, "created_at": s.created_at, "updated_at": s.updated_at,
        "name": s.name, "description": s.description, "state": "ACTIVE", "state_reason": null,
        "run_rootfs_image": format!("preloaded:{}", s.name),
        "build_rootfs_image": format!("preloaded:{}", s.name),
        "default": s.is_default,
        "metadata": metadata(),
        "links": {"self": link(b, &format!("/v3/stacks/{}", s.guid))},
    })
}

pub fn job_json(b: &str, j: &Job) -> Value {
    let mut links = serde_json::Map::new();
    links.insert("self".into(), link(b, &format!("/v3/jobs/{}", j.guid)));
    if !j.resource_type.is_empty() {
        links.insert(
            j.resource_type.clone(),
            link(b, &format!("/v3/{}s/{}", j.resource_type, j.resource_guid)),
        );
    }
    json!({
        "guid": j.guid, "created_at": j.created_at, "updated_at": j.updated_at,
        "operation": j.operation, "state": j.state,
        "errors": j.errors, "warnings": [],
        "links": links,
    })
}

/// Records a job that already finished (Kiln does the work inline).
pub async fn completed_job(
    ctx: &Ctx,
    operation: &str,
    resource_type: &str,
    resource_guid: &str,
) -> ApiResult<String> {
    finished_job(ctx, operation, resource_type, resource_guid, &[]).await
}

/// Records a job that already finished: COMPLETE without `errors`, FAILED
/// with them (each `{"code","title","detail"}`).
pub async fn finished_job(
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
    sqlx::query("INSERT INTO jobs (guid, operation, state, resource_type, resource_guid, errors, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(&guid)
        .bind(operation)
        .bind(state)
        .bind(resource_type)
        .bind(resource_guid)
        .bind(Value::from(errors.to_vec()).to_string())
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await?;
    Ok(guid)
}

pub fn job_location(ctx: &Ctx, job_guid: &str) -> String {
    format!("{}/v3/jobs/{job_guid}", ctx.base)
}

pub async fn list_orgs(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = db::all::<Organization>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|o| params.matches("names", &o.name) && params.matches("guids", &o.guid))
        .map(|o| org_json(&ctx.base, &o))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/organizations", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_org(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let o = db::get::<Organization>(&ctx.pool, &guid).await?;
    Ok(Json(org_json(&ctx.base, &o)))
}

pub async fn org_domains(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    db::get::<Organization>(&ctx.pool, &guid).await?;
    let items = db::all::<Domain>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|d| params.matches("names", &d.name))
        .map(|d| domain_json(&ctx.base, &d))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/organizations/{guid}/domains", ctx.base),
        &params,
        items,
    )))
}

pub async fn org_default_domain(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    db::get::<Organization>(&ctx.pool, &guid).await?;
    let d = db::all::<Domain>(&ctx.pool)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Domain"))?;
    Ok(Json(domain_json(&ctx.base, &d)))
}

pub async fn list_spaces(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = db::all::<Space>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|s| {
            params.matches("names", &s.name)
                && params.matches("guids", &s.guid)
                && params.matches("organization_guids", &s.organization_guid)
        })
        .map(|s| space_json(&ctx.base, &s))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/spaces", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_space(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = db::get::<Space>(&ctx.pool, &guid).await?;
    Ok(Json(space_json(&ctx.base, &s)))
}

pub async fn list_domains(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = db::all::<Domain>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|d| params.matches("names", &d.name) && params.matches("guids", &d.guid))
        .map(|d| domain_json(&ctx.base, &d))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/domains", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_domain(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = db::get::<Domain>(&ctx.pool, &guid).await?;
    Ok(Json(domain_json(&ctx.base, &d)))
}

pub async fn list_stacks(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let items = db::all::<Stack>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|s| params.matches("names", &s.name) && params.matches("guids", &s.guid))
        .map(|s| stack_json(&ctx.base, &s))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/stacks", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_stack(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = db::get::<Stack>(&ctx.pool, &guid).await?;
    Ok(Json(stack_json(&ctx.base, &s)))
}

pub async fn get_job(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let j = db::get::<Job>(&ctx.pool, &guid).await?;
    Ok(Json(job_json(&ctx.base, &j)))
}

/// Lists Kiln does not keep anything in yet (deployments, sidecars, …).
pub async fn empty_list(
    State(ctx): State<Shared>,
    uri: axum::http::Uri,
    params: ListParams,
) -> Json<Value> {
    Json(paginate(
        &format!("{}{}", ctx.base, uri.path()),
        &params,
        Vec::new(),
    ))
}
