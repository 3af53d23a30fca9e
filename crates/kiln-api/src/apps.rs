//! Apps: CRUD, start/stop/restart, the current droplet, environment
//! variables, and the per-app sub-collections.

use crate::builds::{build_json, droplet_json};
use crate::catalog::{completed_job, job_location, metadata};
use crate::db::{self, App, Build, Droplet, Organization, Package, Process, Space};
use crate::error::{ApiError, ApiResult};
use crate::packages::package_json;
use crate::processes::{insert_process, process_json};
use crate::util::{self, link, link_method};
use crate::web::{CfJson, ListParams, paginate};
use crate::{Ctx, Shared};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_model::AppState;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn app_json(b: &str, a: &App) -> Value {
    let p = format!("/v3/apps/{}", a.guid);
    json!({
        "guid": a.guid, "created_at": a.created_at, "updated_at": a.updated_at,
        "name": a.name, "state": a.state,
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": a.buildpacks, "stack": a.stack}},
        "relationships": {
            "space": {"data": {"guid": a.space_guid}},
            "current_droplet": {"data": {"guid": a.droplet_guid}},
        },
        "metadata": metadata(),
        "links": {
            "self": link(b, &p),
            "environment_variables": link(b, &format!("{p}/environment_variables")),
            "space": link(b, &format!("/v3/spaces/{}", a.space_guid)),
            "processes": link(b, &format!("{p}/processes")),
            "packages": link(b, &format!("{p}/packages")),
            "current_droplet": link(b, &format!("{p}/droplets/current")),
            "droplets": link(b, &format!("{p}/droplets")),
            "tasks": link(b, &format!("{p}/tasks")),
            "start": link_method(b, &format!("{p}/actions/start"), "POST"),
            "stop": link_method(b, &format!("{p}/actions/stop"), "POST"),
            "clear_buildpack_cache": link_method(b, &format!("{p}/actions/clear_buildpack_cache"), "POST"),
            "revisions": link(b, &format!("{p}/revisions")),
            "deployed_revisions": link(b, &format!("{p}/revisions/deployed")),
            "features": link(b, &format!("{p}/features")),
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidRef {
    pub guid: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToOne {
    pub data: GuidRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceRelationship {
    pub space: ToOne,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LifecycleData {
    #[serde(default)]
    pub buildpacks: Option<Vec<String>>,
    #[serde(default)]
    pub stack: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Option<LifecycleData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    name: String,
    relationships: SpaceRelationship,
    #[serde(default)]
    lifecycle: Option<Lifecycle>,
    #[serde(default)]
    environment_variables: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    metadata: Option<Value>,
}

fn env_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Checks a lifecycle and returns (buildpacks, stack) with the app's
/// current values as defaults.
async fn resolve_lifecycle(
    ctx: &Ctx,
    lifecycle: Option<Lifecycle>,
    current: (Vec<String>, String),
) -> ApiResult<(Vec<String>, String)> {
    let Some(l) = lifecycle else {
        return Ok(current);
    };
    if l.kind != "buildpack" {
        return Err(ApiError::unprocessable(format!(
            "Lifecycle type '{}' is not supported; Kiln stages with buildpacks",
            l.kind
        )));
    }
    let data = l.data.unwrap_or_default();
    let buildpacks = data.buildpacks.unwrap_or(current.0);
    let stack = data.stack.unwrap_or(current.1);
    if db::where_eq::<db::Stack>(&ctx.pool, "name", &stack)
        .await?
        .is_empty()
    {
        return Err(ApiError::unprocessable(format!(
            "Stack '{stack}' does not exist"
        )));
    }
    Ok((buildpacks, stack))
}

pub async fn create(
    State(ctx): State<Shared>,
    CfJson(body): CfJson<CreateApp>,
) -> ApiResult<Response> {
    let app = create_app(&ctx, body).await?;
    Ok((StatusCode::CREATED, Json(app_json(&ctx.base, &app))).into_response())
}

/// Creates an app and its web process (`POST /v3/apps`, and apply_manifest
/// for an app the space lacks).
pub async fn create_app(ctx: &Ctx, body: CreateApp) -> ApiResult<App> {
    let _ = &body.metadata;
    if body.name.trim().is_empty() {
        return Err(ApiError::unprocessable("Name can't be blank"));
    }
    let space_guid = body.relationships.space.data.guid;
    db::find::<Space>(&ctx.pool, &space_guid)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(
                "Invalid space. Ensure that the space exists and you have access to it.",
            )
        })?;
    let (buildpacks, stack) =
        resolve_lifecycle(ctx, body.lifecycle, (Vec::new(), ctx.config.stack.clone())).await?;
    let env: BTreeMap<String, String> = body
        .environment_variables
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| env_string(v).map(|v| (k.clone(), v)))
        .collect();
    let guid = util::new_guid();
    let now = util::now();
    let inserted = sqlx::query("INSERT INTO apps (guid, name, space_guid, state, buildpacks, stack, environment_variables, droplet_guid, created_at, updated_at) VALUES (?, ?, ?, 'STOPPED', ?, ?, ?, NULL, ?, ?)")
        .bind(&guid)
        .bind(&body.name)
        .bind(&space_guid)
        .bind(serde_json::to_string(&buildpacks).unwrap_or_default())
        .bind(&stack)
        .bind(serde_json::to_string(&env).unwrap_or_default())
        .bind(&now)
        .bind(&now)
        .execute(&ctx.pool)
        .await;
    db::unique_or_taken(inserted, || {
        format!("App with the name '{}' already exists.", body.name)
    })?;
    insert_process(ctx, &guid, "web", 1, None).await?;
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    tracing::info!(app_guid = %guid, name = %app.name, "app created");
    Ok(app)
}

pub async fn list(State(ctx): State<Shared>, params: ListParams) -> ApiResult<Json<Value>> {
    let org_filter = params.list("organization_guids");
    let spaces = db::all::<Space>(&ctx.pool).await?;
    let items = db::all::<App>(&ctx.pool)
        .await?
        .into_iter()
        .filter(|a| {
            params.matches("names", &a.name)
                && params.matches("guids", &a.guid)
                && params.matches("space_guids", &a.space_guid)
                && params.matches("stacks", &a.stack)
                && org_filter.as_ref().is_none_or(|orgs| {
                    spaces
                        .iter()
                        .any(|s| s.guid == a.space_guid && orgs.contains(&s.organization_guid))
                })
        })
        .map(|a| app_json(&ctx.base, &a))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/apps", ctx.base),
        &params,
        items,
    )))
}

pub async fn get_one(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = db::get::<App>(&ctx.pool, &guid).await?;
    Ok(Json(app_json(&ctx.base, &a)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    lifecycle: Option<Lifecycle>,
    #[serde(default)]
    metadata: Option<Value>,
}

pub async fn update(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<UpdateApp>,
) -> ApiResult<Json<Value>> {
    let a = update_app(&ctx, &guid, body).await?;
    Ok(Json(app_json(&ctx.base, &a)))
}

/// Renames an app or changes its lifecycle (`PATCH /v3/apps/:guid`, and
/// apply_manifest for an existing app).
pub async fn update_app(ctx: &Ctx, guid: &str, body: UpdateApp) -> ApiResult<App> {
    let _ = &body.metadata;
    let app = db::get::<App>(&ctx.pool, guid).await?;
    let name = body.name.unwrap_or(app.name.clone());
    let (buildpacks, stack) = resolve_lifecycle(
        ctx,
        body.lifecycle,
        (app.buildpacks.clone(), app.stack.clone()),
    )
    .await?;
    let updated = sqlx::query(
        "UPDATE apps SET name = ?, buildpacks = ?, stack = ?, updated_at = ? WHERE guid = ?",
    )
    .bind(&name)
    .bind(serde_json::to_string(&buildpacks).unwrap_or_default())
    .bind(&stack)
    .bind(util::now())
    .bind(guid)
    .execute(&ctx.pool)
    .await;
    db::unique_or_taken(updated, || {
        format!("App with the name '{name}' already exists.")
    })?;
    db::get::<App>(&ctx.pool, guid).await
}

pub async fn delete(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Response> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    for p in db::where_eq::<Process>(&ctx.pool, "app_guid", &guid).await? {
        crate::sync::remove_lrps_of(&ctx, &p.guid, None).await?;
    }
    // Stop staging the app: its Tasks' results would have nowhere to go.
    for b in db::where_eq::<Build>(&ctx.pool, "app_guid", &guid).await? {
        if b.state == kiln_model::BuildState::Staging.as_str() {
            match ctx.bbs.cancel_task(&b.guid).await {
                Ok(()) | Err(kiln_bbs::BbsError::NotFound { .. }) => {}
                Err(kiln_bbs::BbsError::InvalidTransition { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for d in db::where_eq::<Droplet>(&ctx.pool, "app_guid", &guid).await? {
        ctx.blobstore
            .delete(&format!("droplets/{}", d.guid))
            .await?;
    }
    for p in db::where_eq::<Package>(&ctx.pool, "app_guid", &guid).await? {
        ctx.blobstore
            .delete(&format!("packages/{}", p.guid))
            .await?;
    }
    ctx.blobstore
        .delete(&crate::internal::build_cache_key(&guid))
        .await?;
    let mut tx = ctx.pool.begin().await?;
    for table in [
        "route_destinations",
        "processes",
        "packages",
        "builds",
        "droplets",
    ] {
        let sql = format!("DELETE FROM {table} WHERE app_guid = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&guid)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM apps WHERE guid = ?")
        .bind(&guid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    crate::sync::refresh_all_routes(&ctx).await?;
    let job = completed_job(&ctx, "app.delete", "app", &guid).await?;
    tracing::info!(app_guid = %guid, name = %app.name, "app deleted");
    Ok((
        StatusCode::ACCEPTED,
        [(http::header::LOCATION, job_location(&ctx, &job))],
    )
        .into_response())
}

async fn set_state(ctx: &Ctx, app: &App, to: AppState) -> ApiResult<()> {
    // AppState has no transition rules (any move is legal); parsing still
    // refuses a corrupt stored value.
    let _from: AppState = app.state.parse()?;
    sqlx::query("UPDATE apps SET state = ?, updated_at = ? WHERE guid = ?")
        .bind(to.as_str())
        .bind(util::now())
        .bind(&app.guid)
        .execute(&ctx.pool)
        .await?;
    crate::sync::api_log(
        ctx,
        &app.guid,
        &format!(
            "Updated app with guid {} ({{\"state\"=>\"{}\"}})",
            app.guid,
            to.as_str()
        ),
    );
    Ok(())
}

async fn bump_versions(ctx: &Ctx, app_guid: &str) -> ApiResult<()> {
    for p in db::where_eq::<Process>(&ctx.pool, "app_guid", app_guid).await? {
        sqlx::query("UPDATE processes SET version = ?, updated_at = ? WHERE guid = ?")
            .bind(util::new_guid())
            .bind(util::now())
            .bind(&p.guid)
            .execute(&ctx.pool)
            .await?;
    }
    Ok(())
}

async fn start_app(ctx: &Ctx, guid: &str, restart: bool) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, guid).await?;
    if app.droplet_guid.is_none() {
        return Err(ApiError::unprocessable(
            "Assign a droplet before starting this app.",
        ));
    }
    if restart || app.state != "STARTED" {
        if restart && app.state == "STARTED" {
            set_state(ctx, &app, AppState::Stopped).await?;
        }
        bump_versions(ctx, guid).await?;
        set_state(ctx, &app, AppState::Started).await?;
    }
    crate::sync::sync_app(ctx, guid).await?;
    let a = db::get::<App>(&ctx.pool, guid).await?;
    Ok(Json(app_json(&ctx.base, &a)))
}

pub async fn start(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    start_app(&ctx, &guid, false).await
}

pub async fn restart(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    start_app(&ctx, &guid, true).await
}

pub async fn stop(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    if app.state != "STOPPED" {
        set_state(&ctx, &app, AppState::Stopped).await?;
    }
    crate::sync::sync_app(&ctx, &guid).await?;
    let a = db::get::<App>(&ctx.pool, &guid).await?;
    Ok(Json(app_json(&ctx.base, &a)))
}

fn droplet_rel_json(b: &str, app_guid: &str, droplet_guid: Option<&str>) -> Value {
    json!({
        "data": droplet_guid.map(|g| json!({"guid": g})),
        "links": {
            "self": link(b, &format!("/v3/apps/{app_guid}/relationships/current_droplet")),
            "related": link(b, &format!("/v3/apps/{app_guid}/droplets/current")),
        },
    })
}

pub async fn get_current_droplet_rel(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    Ok(Json(droplet_rel_json(
        &ctx.base,
        &guid,
        app.droplet_guid.as_deref(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDroplet {
    data: Option<GuidRef>,
}

pub async fn set_current_droplet(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<SetDroplet>,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    let unable = || {
        ApiError::unprocessable(
            "Unable to assign current droplet. Ensure the droplet exists and belongs to this app.",
        )
    };
    let data = body.data.ok_or_else(unable)?;
    let droplet = db::find::<Droplet>(&ctx.pool, &data.guid)
        .await?
        .filter(|d| d.app_guid == guid && d.state == "STAGED")
        .ok_or_else(unable)?;
    sqlx::query("UPDATE apps SET droplet_guid = ?, updated_at = ? WHERE guid = ?")
        .bind(&droplet.guid)
        .bind(util::now())
        .bind(&guid)
        .execute(&ctx.pool)
        .await?;
    // Process types the droplet brings that the app lacks appear with 0 instances.
    let existing = db::where_eq::<Process>(&ctx.pool, "app_guid", &guid).await?;
    for ptype in droplet.process_types.keys() {
        if !existing.iter().any(|p| &p.r#type == ptype) {
            insert_process(&ctx, &guid, ptype, 0, Some("process")).await?;
        }
    }
    // A new droplet is a new version of every process: a started app's
    // DesiredLrps are replaced by ones that run it.
    if app.droplet_guid.as_deref() != Some(droplet.guid.as_str()) {
        bump_versions(&ctx, &guid).await?;
        crate::sync::sync_app(&ctx, &guid).await?;
    }
    Ok(Json(droplet_rel_json(
        &ctx.base,
        &guid,
        Some(&droplet.guid),
    )))
}

pub async fn current_droplet(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    let droplet_guid = app
        .droplet_guid
        .ok_or_else(|| ApiError::not_found("Droplet"))?;
    let d = db::get::<Droplet>(&ctx.pool, &droplet_guid).await?;
    Ok(Json(droplet_json(&ctx.base, &d)))
}

pub async fn processes(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    let items = db::where_eq::<Process>(&ctx.pool, "app_guid", &guid)
        .await?
        .into_iter()
        .filter(|p| params.matches("types", &p.r#type) && params.matches("guids", &p.guid))
        .map(|p| process_json(&ctx.base, &app, &p))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/apps/{guid}/processes", ctx.base),
        &params,
        items,
    )))
}

pub async fn process_by_type(
    State(ctx): State<Shared>,
    Path((guid, ptype)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    let p = db::where_eq::<Process>(&ctx.pool, "app_guid", &guid)
        .await?
        .into_iter()
        .find(|p| p.r#type == ptype)
        .ok_or_else(|| ApiError::not_found("Process"))?;
    Ok(Json(process_json(&ctx.base, &app, &p)))
}

pub async fn routes(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    db::get::<App>(&ctx.pool, &guid).await?;
    let items = crate::routes::route_jsons(
        &ctx,
        |_, dests| dests.iter().any(|d| d.app_guid == guid),
        &params,
    )
    .await?;
    Ok(Json(paginate(
        &format!("{}/v3/apps/{guid}/routes", ctx.base),
        &params,
        items,
    )))
}

pub async fn packages(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    db::get::<App>(&ctx.pool, &guid).await?;
    let items = db::where_eq::<Package>(&ctx.pool, "app_guid", &guid)
        .await?
        .into_iter()
        .filter(|p| params.matches("states", &p.state) && params.matches("types", &p.r#type))
        .map(|p| package_json(&ctx.base, &p))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/apps/{guid}/packages", ctx.base),
        &params,
        items,
    )))
}

pub async fn droplets(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    let current = params.get("current").is_some_and(|v| v == "true");
    let items = db::where_eq::<Droplet>(&ctx.pool, "app_guid", &guid)
        .await?
        .into_iter()
        .filter(|d| params.matches("states", &d.state))
        .filter(|d| !current || app.droplet_guid.as_deref() == Some(d.guid.as_str()))
        .map(|d| droplet_json(&ctx.base, &d))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/apps/{guid}/droplets", ctx.base),
        &params,
        items,
    )))
}

pub async fn builds(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    params: ListParams,
) -> ApiResult<Json<Value>> {
    db::get::<App>(&ctx.pool, &guid).await?;
    let items = db::where_eq::<Build>(&ctx.pool, "app_guid", &guid)
        .await?
        .into_iter()
        .filter(|b| params.matches("states", &b.state))
        .map(|b| build_json(&ctx.base, &b))
        .collect();
    Ok(Json(paginate(
        &format!("{}/v3/apps/{guid}/builds", ctx.base),
        &params,
        items,
    )))
}

/// The app-level VCAP_APPLICATION (CC's AppModel variant: no process fields).
pub async fn vcap_application(
    ctx: &Ctx,
    app: &App,
    process_type: Option<&str>,
) -> ApiResult<Value> {
    let space = db::get::<Space>(&ctx.pool, &app.space_guid).await?;
    let org = db::get::<Organization>(&ctx.pool, &space.organization_guid).await?;
    let uris = crate::routes::app_uris(ctx, &app.guid, process_type).await?;
    Ok(json!({
        "cf_api": ctx.base,
        "limits": {"fds": 16384},
        "application_name": app.name,
        "application_uris": uris,
        "name": app.name,
        "space_name": space.name,
        "space_id": space.guid,
        "organization_id": org.guid,
        "organization_name": org.name,
        "uris": uris,
        "users": null,
        "application_id": app.guid,
    }))
}

pub async fn env(State(ctx): State<Shared>, Path(guid): Path<String>) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    Ok(Json(json!({
        "environment_variables": app.environment_variables,
        "staging_env_json": {},
        "running_env_json": {},
        "system_env_json": {"VCAP_SERVICES": {}},
        "application_env_json": {"VCAP_APPLICATION": vcap_application(&ctx, &app, None).await?},
    })))
}

fn env_vars_json(b: &str, app: &App) -> Value {
    json!({
        "var": app.environment_variables,
        "links": {
            "self": link(b, &format!("/v3/apps/{}/environment_variables", app.guid)),
            "app": link(b, &format!("/v3/apps/{}", app.guid)),
        },
    })
}

pub async fn get_env_vars(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Value>> {
    let app = db::get::<App>(&ctx.pool, &guid).await?;
    Ok(Json(env_vars_json(&ctx.base, &app)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchEnv {
    #[serde(default)]
    var: Option<BTreeMap<String, Value>>,
}

pub async fn patch_env_vars(
    State(ctx): State<Shared>,
    Path(guid): Path<String>,
    CfJson(body): CfJson<PatchEnv>,
) -> ApiResult<Json<Value>> {
    let app = merge_env_vars(&ctx, &guid, body).await?;
    Ok(Json(env_vars_json(&ctx.base, &app)))
}

/// Merges variables into an app's environment (a null value removes one).
pub async fn merge_env_vars(ctx: &Ctx, guid: &str, body: PatchEnv) -> ApiResult<App> {
    let app = db::get::<App>(&ctx.pool, guid).await?;
    let mut env = app.environment_variables.clone();
    for (k, v) in body.var.unwrap_or_default() {
        match env_string(&v) {
            Some(v) => {
                env.insert(k, v);
            }
            None => {
                env.remove(&k);
            }
        }
    }
    sqlx::query("UPDATE apps SET environment_variables = ?, updated_at = ? WHERE guid = ?")
        .bind(serde_json::to_string(&env).unwrap_or_default())
        .bind(util::now())
        .bind(guid)
        .execute(&ctx.pool)
        .await?;
    db::get::<App>(&ctx.pool, guid).await
}
