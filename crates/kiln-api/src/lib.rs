//! Kiln's Cloud Controller: the Cloud Foundry v3 API the cf CLI and the
//! `kiln` CLI speak, the UAA token endpoint, log-cache reads, and the
//! bridge to the BBS (staging Tasks, app DesiredLrps).
//!
//! It owns the CCDB (`<data_dir>/ccdb.sqlite`): orgs, spaces, apps,
//! processes, packages, builds, droplets, buildpacks, routes, tasks, audit
//! events, user-provided service instances and bindings. Bits live in the
//! blobstore; cells fetch and store them through signed `/internal/v4` URLs
//! and never see the database. [`Api::run`] serves HTTP and runs the staging
//! completion and process sync loops.

// Each module belongs to a layer and uses only modules of lower layers; the
// order is in ARCHITECTURE.md, and `tests/layers.rs` checks every `crate::`
// path against it.
mod actions;
mod audit;
mod auth;
mod config;
mod context;
mod controllers;
mod db;
mod diego;
mod encryption;
mod environment;
mod error;
mod fetchers;
mod messages;
mod permissions;
mod presenters;
mod signing;
mod uploads;
mod util;
mod web;

pub use config::{ApiConfig, ApiDeps, DEFAULT_MAX_PACKAGE_BYTES};
/// The CCDB's schema steps, for tools that prepare a database for the API
/// without serving it (`kiln migrate`).
pub use db::MIGRATIONS;
pub use error::ApiError;

use axum::Router;
use axum::routing::{get, patch, post, put};
use context::{Ctx, Shared};
use controllers::{
    app_features, apps, audit_events, buildpacks, builds, catalog, deployments, domains, droplets,
    internal, links, logcache, manifest, metadata, organization_quotas, packages, processes, roles,
    routes, service_credential_bindings, service_instances, settings, sidecars, space_features,
    space_quotas, tasks, users,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The CCDB's key: the operator's file, which must exist, or one
/// generated in the data dir on first start.
async fn open_db_cipher(config: &ApiConfig) -> Result<encryption::DbCipher, ApiError> {
    let material = match &config.db_encryption_key_file {
        Some(path) => tokio::fs::read_to_string(path).await.map_err(|e| {
            ApiError::io(
                format!("reading the db encryption key {}", path.display()),
                e,
            )
        })?,
        None => {
            let path = config.data_dir.join("db-encryption-key");
            context::read_or_create_secret(&path, || hex::encode(util::random_bytes(32)))
                .await?
                .0
        }
    };
    encryption::DbCipher::new(&material)
}

pub struct Api {
    ctx: Shared,
    generated_password: Option<String>,
}

impl Api {
    /// Opens (creating) the data dir and CCDB, applies migrations and
    /// bootstraps the admin user, signing key, org `kiln`, space `dev`, the
    /// shared domain and the stack. Idempotent.
    pub async fn open(config: ApiConfig, deps: ApiDeps) -> Result<Api, ApiError> {
        let ccdb = kiln_store::Database::Sqlite(config.data_dir.join("ccdb.sqlite"));
        Api::open_on(&ccdb, kiln_store::OpenOptions::default(), config, deps).await
    }

    /// [`Api::open`] with the CCDB in `ccdb` (SQLite or PostgreSQL); the
    /// data dir still holds the signing and encryption keys.
    pub async fn open_on(
        ccdb: &kiln_store::Database,
        options: kiln_store::OpenOptions,
        config: ApiConfig,
        deps: ApiDeps,
    ) -> Result<Api, ApiError> {
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(|e| ApiError::io(format!("creating {}", config.data_dir.display()), e))?;
        let pool = kiln_store::open(ccdb, db::MIGRATIONS, options).await?;
        let signing_key =
            context::read_or_create_secret(&config.data_dir.join("signing-key"), || {
                hex::encode(util::random_bytes(32))
            })
            .await?
            .0;
        let cipher = open_db_cipher(&config).await?;
        let base = config.external_url.trim_end_matches('/').to_string();
        let inherited_staging =
            db::where_eq::<db::Build>(&pool, "state", kiln_model::BuildState::Staging.as_str())
                .await?
                .into_iter()
                .map(|b| b.guid)
                .collect();
        let ctx = Arc::new(Ctx {
            base,
            pool,
            bbs: deps.bbs,
            blobstore: deps.blobstore,
            logs: deps.logs,
            signing_key: signing_key.into_bytes(),
            cipher,
            sync_lock: tokio::sync::Mutex::new(()),
            inherited_staging,
            config,
        });
        let generated_password = actions::bootstrap::bootstrap(&ctx).await?;
        actions::packages::fail_interrupted_uploads(&ctx).await?;
        actions::packages::encrypt_plaintext_docker_passwords(&ctx).await?;
        Ok(Api {
            ctx,
            generated_password,
        })
    }

    /// The admin password generated on this start (first start only).
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.generated_password.as_deref()
    }

    pub fn router(&self) -> Router {
        router(self.ctx.clone())
    }

    /// Serves HTTP on `listener` and runs the background loops until
    /// `shutdown`.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ApiError> {
        self.run_singletons_while(listener, shutdown, None).await
    }

    /// [`Api::run`] on a cluster node: the background loops (staging
    /// completion, process reconcile, deployment updater, crash events)
    /// run only while `leader` is true, so that one node of the cluster
    /// applies each BBS event and each periodic sync (the node whose BBS
    /// holds the lock); every node serves HTTP.
    pub async fn run_singletons_while(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
        leader: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<(), ApiError> {
        let loops = tokio::spawn(run_loops(self.ctx.clone(), shutdown.clone(), leader));
        let app = self.router();
        let token = shutdown.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .map_err(|e| ApiError::io("serving the api", e));
        shutdown.cancel();
        let _ = loops.await;
        served
    }
}

/// The background loops until `shutdown`, started and stopped as `leader`
/// turns true and false (always on without one).
async fn run_loops(
    ctx: Shared,
    shutdown: CancellationToken,
    leader: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let start = |token: CancellationToken| {
        let mut loops = diego::staging::spawn_loops(ctx.clone(), token.clone());
        loops.push(diego::deployment_updater::spawn(ctx.clone(), token));
        loops
    };
    let Some(mut leader) = leader else {
        for handle in start(shutdown) {
            let _ = handle.await;
        }
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = leader.wait_for(|on| *on) => if changed.is_err() { return },
        }
        tracing::info!("api background loops started on this node");
        let token = shutdown.child_token();
        let loops = start(token.clone());
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = leader.wait_for(|on| !*on) => {}
        }
        token.cancel();
        for handle in loops {
            let _ = handle.await;
        }
        if shutdown.is_cancelled() {
            return;
        }
        tracing::info!("api background loops stopped on this node");
    }
}

fn router(ctx: Shared) -> Router {
    use axum::extract::DefaultBodyLimit;
    use axum::middleware::{from_fn, from_fn_with_state};
    let upload_limit = (ctx.config.max_package_bytes as usize).saturating_add(16 * 1024 * 1024);

    let v3 = Router::new()
        // orgs, spaces, domains, stacks, jobs
        .route(
            "/v3/organizations",
            get(catalog::list_orgs).post(catalog::create_org),
        )
        .route(
            "/v3/organizations/{guid}",
            get(catalog::get_org)
                .patch(catalog::update_org)
                .delete(catalog::delete_org),
        )
        .route("/v3/organizations/{guid}/domains", get(domains::of_org))
        .route(
            "/v3/organizations/{guid}/domains/default",
            get(domains::default_of_org),
        )
        .route(
            "/v3/spaces",
            get(catalog::list_spaces).post(catalog::create_space),
        )
        .route(
            "/v3/spaces/{guid}",
            get(catalog::get_space)
                .patch(catalog::update_space)
                .delete(catalog::delete_space),
        )
        .route("/v3/spaces/{guid}/features", get(space_features::list))
        .route(
            "/v3/spaces/{guid}/features/{name}",
            get(space_features::get_one).patch(space_features::update),
        )
        .route("/v3/spaces/{guid}/manifest_diff", post(manifest::diff))
        .route(
            "/v3/spaces/{guid}/actions/apply_manifest",
            post(manifest::apply),
        )
        .route("/v3/domains", get(domains::list).post(domains::create))
        .route(
            "/v3/domains/{guid}",
            get(domains::get_one).delete(domains::delete),
        )
        .route(
            "/v3/domains/{guid}/relationships/shared_organizations",
            get(domains::shared_orgs).post(domains::share),
        )
        .route(
            "/v3/domains/{guid}/relationships/shared_organizations/{org_guid}",
            axum::routing::delete(domains::unshare),
        )
        .route("/v3/stacks", get(catalog::list_stacks))
        .route("/v3/stacks/{guid}", get(catalog::get_stack))
        .route("/v3/jobs/{guid}", get(catalog::get_job))
        .route(
            "/v3/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route("/v3/deployments/{guid}", get(deployments::get_one))
        .route(
            "/v3/deployments/{guid}/actions/cancel",
            post(deployments::cancel),
        )
        .route(
            "/v3/deployments/{guid}/actions/continue",
            post(deployments::continue_),
        )
        .route("/v3/revisions/{guid}", get(deployments::revision))
        .route(
            "/v3/revisions/{guid}/environment_variables",
            get(deployments::revision_env),
        )
        // buildpacks
        .route(
            "/v3/buildpacks",
            get(buildpacks::list).post(buildpacks::create),
        )
        .route(
            "/v3/buildpacks/{guid}",
            get(buildpacks::get_one)
                .patch(buildpacks::update)
                .delete(buildpacks::delete),
        )
        .route(
            "/v3/buildpacks/{guid}/upload",
            post(buildpacks::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        // app features (ssh, revisions)
        .route("/v3/apps/{guid}/features", get(app_features::list))
        .route(
            "/v3/apps/{guid}/features/{name}",
            get(app_features::get_one).patch(app_features::update),
        )
        .route(
            "/v3/apps/{guid}/ssh_enabled",
            get(app_features::ssh_enabled),
        )
        // apps
        .route("/v3/apps", get(apps::list).post(apps::create))
        .route(
            "/v3/apps/{guid}",
            get(apps::get_one).patch(apps::update).delete(apps::delete),
        )
        .route("/v3/apps/{guid}/actions/start", post(apps::start))
        .route("/v3/apps/{guid}/actions/stop", post(apps::stop))
        .route("/v3/apps/{guid}/actions/restart", post(apps::restart))
        .route(
            "/v3/apps/{guid}/relationships/current_droplet",
            get(apps::get_current_droplet_rel).patch(apps::set_current_droplet),
        )
        .route(
            "/v3/apps/{guid}/droplets/current",
            get(apps::current_droplet),
        )
        .route("/v3/apps/{guid}/processes", get(apps::processes))
        .route(
            "/v3/apps/{guid}/processes/{ptype}",
            get(apps::process_by_type),
        )
        .route(
            "/v3/apps/{guid}/processes/{ptype}/actions/scale",
            post(processes::scale_by_type),
        )
        .route("/v3/apps/{guid}/routes", get(apps::routes))
        .route("/v3/apps/{guid}/packages", get(apps::packages))
        .route("/v3/apps/{guid}/droplets", get(apps::droplets))
        .route("/v3/apps/{guid}/builds", get(apps::builds))
        .route("/v3/apps/{guid}/env", get(apps::env))
        .route("/v3/apps/{guid}/revisions", get(deployments::app_revisions))
        .route(
            "/v3/apps/{guid}/environment_variables",
            get(apps::get_env_vars).patch(apps::patch_env_vars),
        )
        // processes
        .route("/v3/processes", get(processes::list))
        .route(
            "/v3/processes/{guid}",
            get(processes::get_one).patch(processes::update),
        )
        .route("/v3/processes/{guid}/stats", get(processes::stats))
        .route("/v3/processes/{guid}/actions/scale", post(processes::scale))
        .route(
            "/v3/processes/{guid}/sidecars",
            get(sidecars::process_sidecars),
        )
        .route(
            "/v3/apps/{guid}/sidecars",
            get(sidecars::app_sidecars).post(sidecars::create),
        )
        .route(
            "/v3/sidecars/{guid}",
            get(sidecars::get_one)
                .patch(sidecars::update)
                .delete(sidecars::delete),
        )
        // packages
        .route("/v3/packages", get(packages::list).post(packages::create))
        .route("/v3/packages/{guid}", get(packages::get_one))
        .route("/v3/packages/{guid}/droplets", get(packages::droplets))
        .route(
            "/v3/packages/{guid}/upload",
            post(packages::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        // cf push offers every file of the app here: allow long lists.
        .route(
            "/v3/resource_matches",
            post(packages::resource_matches).layer(DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
        // builds, droplets
        .route("/v3/builds", get(builds::list).post(builds::create))
        .route("/v3/builds/{guid}", get(builds::get_one))
        .route(
            "/v3/droplets",
            get(builds::list_droplets).post(droplets::create),
        )
        .route(
            "/v3/droplets/{guid}/upload",
            post(droplets::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v3/droplets/{guid}/download", get(droplets::download))
        .route("/v3/droplets/{guid}", get(builds::get_droplet))
        // routes
        .route("/v3/routes", get(routes::list).post(routes::create))
        .route(
            "/v3/routes/{guid}",
            get(routes::get_one).delete(routes::delete),
        )
        .route(
            "/v3/routes/{guid}/destinations",
            get(routes::destinations).post(routes::add_destinations),
        )
        .route(
            "/v3/routes/{guid}/destinations/{dguid}",
            axum::routing::delete(routes::remove_destination),
        )
        // tasks
        .route(
            "/v3/apps/{guid}/tasks",
            get(tasks::app_tasks).post(tasks::create),
        )
        .route("/v3/tasks", get(tasks::list))
        .route("/v3/tasks/{guid}", get(tasks::get_one))
        .route("/v3/tasks/{guid}/actions/cancel", post(tasks::cancel))
        .route("/v3/tasks/{guid}/cancel", put(tasks::cancel))
        // audit events
        .route("/v3/audit_events", get(audit_events::list))
        .route("/v3/audit_events/{guid}", get(audit_events::get_one))
        // users and roles (UAA's SCIM `/Users` too: the `uaa` link is here)
        .route("/Users", post(users::scim_create))
        .route("/Users/{guid}/password", put(users::scim_password))
        .route("/v3/users", get(users::list).post(users::create))
        .route(
            "/v3/users/{guid}",
            get(users::get_one).delete(users::delete),
        )
        .route("/v3/roles", get(roles::list).post(roles::create))
        .route(
            "/v3/roles/{guid}",
            get(roles::get_one).delete(roles::delete),
        )
        // log cache reads
        .route("/api/v1/read/{source_id}", get(logcache::read))
        // services: user-provided instances and app credential bindings
        .route(
            "/v3/service_instances",
            get(service_instances::list).post(service_instances::create),
        )
        .route(
            "/v3/service_instances/{guid}",
            get(service_instances::get_one)
                .patch(service_instances::update)
                .delete(service_instances::delete),
        )
        .route(
            "/v3/service_instances/{guid}/credentials",
            get(service_instances::credentials),
        )
        .route(
            "/v3/service_credential_bindings",
            get(service_credential_bindings::list).post(service_credential_bindings::create),
        )
        .route(
            "/v3/service_credential_bindings/{guid}",
            get(service_credential_bindings::get_one).delete(service_credential_bindings::delete),
        )
        .route(
            "/v3/service_credential_bindings/{guid}/details",
            get(service_credential_bindings::details),
        )
        .route(
            "/v3/service_credential_bindings/{guid}/parameters",
            get(service_credential_bindings::parameters),
        )
        // organization quotas
        .route(
            "/v3/organization_quotas",
            get(organization_quotas::list).post(organization_quotas::create),
        )
        .route(
            "/v3/organization_quotas/{guid}",
            get(organization_quotas::get_one)
                .patch(organization_quotas::update)
                .delete(organization_quotas::delete),
        )
        .route(
            "/v3/organization_quotas/{guid}/relationships/organizations",
            post(organization_quotas::apply),
        )
        // space quotas
        .route(
            "/v3/space_quotas",
            get(space_quotas::list).post(space_quotas::create),
        )
        .route(
            "/v3/space_quotas/{guid}",
            get(space_quotas::get_one)
                .patch(space_quotas::update)
                .delete(space_quotas::delete),
        )
        .route(
            "/v3/space_quotas/{guid}/relationships/spaces",
            post(space_quotas::apply),
        )
        .route(
            "/v3/space_quotas/{guid}/relationships/spaces/{space_guid}",
            axum::routing::delete(space_quotas::remove),
        )
        // labels and annotations, feature flags, environment variable
        // groups, usage summaries
        .route("/v3/packages/{guid}", patch(metadata::patch_package))
        .route("/v3/builds/{guid}", patch(metadata::patch_build))
        .route("/v3/droplets/{guid}", patch(metadata::patch_droplet))
        .route("/v3/routes/{guid}", patch(metadata::patch_route))
        .route("/v3/domains/{guid}", patch(metadata::patch_domain))
        .route("/v3/stacks/{guid}", patch(metadata::patch_stack))
        .route("/v3/deployments/{guid}", patch(metadata::patch_deployment))
        .route("/v3/revisions/{guid}", patch(metadata::patch_revision))
        .route("/v3/tasks/{guid}", patch(metadata::patch_task))
        .route("/v3/users/{guid}", patch(metadata::patch_user))
        .route("/v3/feature_flags", get(settings::list_feature_flags))
        .route(
            "/v3/feature_flags/{name}",
            get(settings::get_feature_flag).patch(settings::update_feature_flag),
        )
        .route(
            "/v3/environment_variable_groups/{name}",
            get(settings::get_env_group).patch(settings::update_env_group),
        )
        .route("/v3/info/usage_summary", get(settings::usage_summary))
        .route(
            "/v3/organizations/{guid}/usage_summary",
            get(settings::org_usage_summary),
        )
        .route(
            "/v3/domains/{guid}/route_reservations",
            get(links::route_reservations),
        )
        .route("/v3/packages/{guid}/download", get(links::package_download))
        .route(
            "/v3/apps/{guid}/revisions/deployed",
            get(links::deployed_revisions),
        )
        .route(
            "/v3/apps/{guid}/actions/clear_buildpack_cache",
            post(links::clear_buildpack_cache),
        )
        .route("/v3/apps/{guid}/manifest", get(manifest::app_manifest))
        // Every answer's labels and annotations.
        .route_layer(from_fn_with_state(ctx.clone(), metadata::present))
        // Innermost: every route's rule, once the token is known.
        .route_layer(from_fn_with_state(ctx.clone(), auth::authorize))
        .route_layer(from_fn_with_state(ctx.clone(), auth::require_token));

    let open = Router::new()
        .route("/", get(catalog::root))
        .route("/v3", get(catalog::v3_root))
        .route("/v3/info", get(catalog::info))
        .route("/login", get(auth::login))
        .route("/oauth/token", post(auth::token))
        .route("/api/v1/info", get(logcache::info))
        .route(
            "/internal/v4/packages/{guid}/download",
            get(internal::package_download),
        )
        .route(
            "/internal/v4/buildpacks/{guid}/download",
            get(internal::buildpack_download),
        )
        .route(
            "/internal/v4/custom_buildpacks/{id}/download",
            get(internal::custom_buildpack_download),
        )
        .route(
            "/internal/v4/droplets/{guid}/download",
            get(internal::droplet_download),
        )
        .route(
            "/internal/v4/droplets/{guid}/upload",
            post(internal::droplet_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/internal/v4/droplets/{guid}/uploaded",
            post(internal::droplet_uploaded),
        )
        .route(
            "/internal/v4/build_cache/{guid}/download",
            get(internal::build_cache_download),
        )
        .route(
            "/internal/v4/build_cache/{guid}/upload",
            post(internal::build_cache_upload).layer(DefaultBodyLimit::disable()),
        );

    // Cloud Controller answers an unknown path, or a known path with a
    // method it does not route, with CF-NotFound "Unknown request".
    let inner = open
        .merge(v3)
        .method_not_allowed_fallback(|| async { ApiError::unknown_request() })
        .fallback(|| async { ApiError::unknown_request() })
        .with_state(ctx);
    Router::new()
        .fallback_service(inner)
        .layer(from_fn(web::strip_trailing_slash))
        .layer(from_fn(web::request_id))
}
