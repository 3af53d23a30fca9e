//! Cloud Controller's `lib/cloud_controller/diego`: how apps become BBS
//! work. The parts every lifecycle shares (the staging Task and DesiredLrp
//! around the actions, their environment and routes) live here; what a
//! lifecycle does differently (rootfs, downloads, the builder or launcher
//! run, uploads) is one plain-data value per lifecycle, built in its module
//! ([`buildpack`] and [`docker`]). A lifecycle is a variant of
//! [`LifecycleType`] and a module; no handler or action branches on it.

pub mod buildpack;
pub mod crashes;
pub mod deployment_updater;
pub mod docker;
pub mod droplet_sidecars;
pub mod staging;
pub mod sync;
pub mod task;
pub mod waits;

use crate::context::Ctx;
use crate::db::{self, App, Buildpack, Droplet, Package, Process};
use crate::environment;
use crate::error::ApiResult;
use kiln_model::bbs::{
    DesiredLrp, DownloadAction, HealthCheck, HttpRoute, ResolveImageAction, RunAction,
    SidecarAction, TaskDefinition, UploadAction,
};
use kiln_model::rootfs::{RootFs, Secret};
use kiln_model::{APPS_DOMAIN, LIFECYCLE_BINARY_PATH, LOG_SOURCE_STAGING};
use serde_json::json;

/// How an app is staged and run (Cloud Controller's `lifecycle.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleType {
    Buildpack,
    Docker,
}

impl LifecycleType {
    pub fn parse(s: &str) -> Option<LifecycleType> {
        match s {
            "buildpack" => Some(LifecycleType::Buildpack),
            "docker" => Some(LifecycleType::Docker),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleType::Buildpack => "buildpack",
            LifecycleType::Docker => "docker",
        }
    }

    /// The app's lifecycle (a stored value no variant knows is read as
    /// buildpack, the column's default).
    pub fn of(app: &App) -> LifecycleType {
        LifecycleType::parse(&app.lifecycle_type).unwrap_or(LifecycleType::Buildpack)
    }

    /// The lifecycle a package stages with: a docker package names an
    /// image, a bits package holds files for buildpacks.
    pub fn of_package(package: &Package) -> LifecycleType {
        if package.r#type == "docker" {
            LifecycleType::Docker
        } else {
            LifecycleType::Buildpack
        }
    }

    /// The droplet's lifecycle.
    pub fn of_droplet(droplet: &Droplet) -> LifecycleType {
        LifecycleType::parse(&droplet.lifecycle_type).unwrap_or(LifecycleType::Buildpack)
    }

    /// The package type an app of this lifecycle takes.
    pub fn package_type(self) -> &'static str {
        match self {
            LifecycleType::Buildpack => "bits",
            LifecycleType::Docker => "docker",
        }
    }
}

/// What one staging needs, whatever the lifecycle.
pub struct StagingDetails<'a> {
    pub app: &'a App,
    pub package: &'a Package,
    pub droplet_guid: &'a str,
    pub stack: &'a str,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub lifecycle: StagingLifecycle,
}

/// The lifecycle-specific inputs of a staging.
pub enum StagingLifecycle {
    Buildpack {
        buildpacks: Vec<StagingBuildpack>,
        skip_detect: bool,
    },
    /// The package's image, resolved on the cell.
    Docker,
}

/// One buildpack of a staging: an admin one, or a custom one by URL.
#[derive(Debug, Clone)]
pub enum StagingBuildpack {
    Admin(Buildpack),
    /// An `http(s)://….zip` the staging task downloads itself.
    Zip {
        url: String,
    },
    /// A git repository the API cloned at build create and stored as a
    /// zip blob (`uploads::custom_buildpack_id` `id`, with its sha256) for
    /// the staging task to download.
    Git {
        url: String,
        id: String,
        sha256: String,
    },
}

impl StagingBuildpack {
    /// The directory under `/tmp/buildpacks` the builder finds it in, the
    /// key its staging result names it by, and the name its staging output
    /// headers show: an admin buildpack's name (names are unique and
    /// `[-\w]+`), a digest for a URL.
    pub fn key(&self) -> String {
        match self {
            StagingBuildpack::Admin(b) => b.name.clone(),
            StagingBuildpack::Zip { url } | StagingBuildpack::Git { url, .. } => url_key(url),
        }
    }

    /// The name a droplet shows: the admin buildpack's name, or the URL.
    pub fn name(&self) -> &str {
        match self {
            StagingBuildpack::Admin(b) => &b.name,
            StagingBuildpack::Zip { url } | StagingBuildpack::Git { url, .. } => url,
        }
    }
}

/// Whether a buildpack named in an app or a build is a custom one by URL
/// (Cloud Controller: anything with a scheme), and then whether a zip.
pub fn custom_buildpack_kind(name: &str) -> Option<CustomKind> {
    let (scheme, _) = name.split_once("://")?;
    let path = name.split(['#', '?']).next().unwrap_or(name);
    let web = matches!(scheme, "http" | "https");
    Some(if web && path.ends_with(".zip") {
        CustomKind::Zip
    } else {
        CustomKind::Git
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    Zip,
    Git,
}

/// A custom buildpack's directory name: the URL is no file name, so a
/// digest of it (as CF's builder does).
pub fn url_key(url: &str) -> String {
    use sha2::Digest;
    format!(
        "custom-{}",
        &hex::encode(sha2::Sha256::digest(url.as_bytes()))[..32]
    )
}

/// The lifecycle-specific part of a staging Task or a DesiredLrp.
pub struct LifecycleActions {
    pub rootfs: RootFs,
    pub downloads: Vec<DownloadAction>,
    pub run: RunAction,
    pub uploads: Vec<UploadAction>,
    /// Staging a docker image: the cell's host-side resolution, alone.
    pub resolve_image: Option<ResolveImageAction>,
    /// Registry credentials for running a docker image.
    pub image_username: String,
    pub image_password: Secret,
    /// Where the app listens (empty: 8080).
    pub ports: Vec<u16>,
}

/// The staging Task for a build, per the contract the cell and the
/// lifecycle's builder share.
pub async fn staging_task(ctx: &Ctx, s: &StagingDetails<'_>) -> ApiResult<TaskDefinition> {
    let env = environment::staging_env(ctx, s.app, s.stack, s.memory_mb, s.disk_mb).await?;
    let actions = match &s.lifecycle {
        StagingLifecycle::Buildpack {
            buildpacks,
            skip_detect,
        } => buildpack::staging_actions(ctx, s, buildpacks, *skip_detect, env).await?,
        StagingLifecycle::Docker => docker::staging_actions(ctx, s)?,
    };
    Ok(TaskDefinition {
        rootfs: actions.rootfs,
        resolve_image: actions.resolve_image,
        image_username: String::new(),
        image_password: Secret::default(),
        log_guid: s.app.guid.clone(),
        log_source: LOG_SOURCE_STAGING.into(),
        memory_mb: s.memory_mb as u64,
        disk_mb: s.disk_mb as u64,
        env: Vec::new(),
        downloads: actions.downloads,
        run: actions.run,
        uploads: actions.uploads,
        result_file: "/tmp/result.json".into(),
        timeout_ms: crate::config::staging_timeout_ms(&ctx.config),
    })
}

/// The DesiredLrp guid of a process's current version: a new version is a
/// new DesiredLrp, which replaces the old one.
pub fn lrp_guid(p: &Process) -> String {
    format!("{}-{}", p.guid, p.version)
}

/// The routes a process's DesiredLrp carries: host (`host.domain`) and
/// path of the routes mapped to this process type, apart, as the router
/// matches them; none on an internal domain (the router answers 404 for
/// those). The one place they are built.
pub async fn lrp_routes(ctx: &Ctx, app: &App, p: &Process) -> ApiResult<Vec<HttpRoute>> {
    environment::router_routes(ctx, &app.guid, &p.r#type).await
}

fn health_check(p: &Process) -> HealthCheck {
    match p.health_check_type.as_str() {
        "http" => HealthCheck::Http {
            endpoint: p
                .health_check_endpoint
                .clone()
                .unwrap_or_else(|| "/".into()),
        },
        "process" => HealthCheck::Process,
        _ => HealthCheck::Port,
    }
}

/// What runs a process of the app with its droplet, whatever the
/// lifecycle: the droplet's download, the launcher and the running
/// environment. A DesiredLrp and a task (run as a one-off process) are
/// both built from it.
pub async fn run_actions(
    ctx: &Ctx,
    app: &App,
    p: &Process,
    droplet: &Droplet,
) -> ApiResult<LifecycleActions> {
    let env = environment::running_env(ctx, app, p).await?;
    Ok(match LifecycleType::of(app) {
        LifecycleType::Buildpack => buildpack::run_actions(ctx, p, droplet, env),
        LifecycleType::Docker => docker::run_actions(ctx, p, droplet, env).await?,
    })
}

/// The app's sidecars that run beside processes of `ptype`.
pub async fn sidecars_of(ctx: &Ctx, app_guid: &str, ptype: &str) -> ApiResult<Vec<db::Sidecar>> {
    let all = db::where_eq::<db::Sidecar>(&ctx.pool, "app_guid", app_guid).await?;
    Ok(all
        .into_iter()
        .filter(|s| s.process_types.iter().any(|t| t == ptype))
        .collect())
}

/// How a sidecar's command runs, as CC's `sidecar_actions`: through the
/// launcher (so the droplet's profile scripts apply) for buildpack apps;
/// through the image's shell for docker ones.
fn sidecar_action(app: &App, p: &Process, s: &db::Sidecar) -> SidecarAction {
    let (path, args) = match LifecycleType::of(app) {
        LifecycleType::Buildpack => (
            LIFECYCLE_BINARY_PATH.to_string(),
            vec![
                "lifecycle".into(),
                "launcher".into(),
                "app".into(),
                s.command.clone(),
                String::new(),
            ],
        ),
        LifecycleType::Docker => ("/bin/sh".to_string(), vec!["-c".into(), s.command.clone()]),
    };
    SidecarAction {
        name: s.name.clone(),
        path,
        args,
        log_source: format!(
            "APP/PROC/{}/SIDECAR/{}",
            p.r#type.to_uppercase(),
            s.name.to_uppercase()
        ),
    }
}

/// The DesiredLrp of one process, per the contract with the cell.
pub async fn desired_lrp(
    ctx: &Ctx,
    app: &App,
    p: &Process,
    droplet: &Droplet,
) -> ApiResult<DesiredLrp> {
    let actions = run_actions(ctx, app, p, droplet).await?;
    let sidecars = sidecars_of(ctx, &app.guid, &p.r#type).await?;
    Ok(DesiredLrp {
        process_guid: lrp_guid(p),
        domain: APPS_DOMAIN.into(),
        instances: p.instances.max(0) as u32,
        rootfs: actions.rootfs,
        image_username: actions.image_username,
        image_password: actions.image_password,
        ports: actions.ports,
        memory_mb: p.memory_in_mb.max(0) as u64,
        disk_mb: p.disk_in_mb.max(0) as u64,
        env: Vec::new(),
        setup: actions.downloads,
        action: actions.run,
        sidecars: sidecars.iter().map(|s| sidecar_action(app, p, s)).collect(),
        health_check: health_check(p),
        start_timeout_ms: p
            .health_check_timeout
            .filter(|t| *t > 0)
            .map_or(kiln_model::DEFAULT_START_TIMEOUT_MS, |t| t as u64 * 1000),
        routes: lrp_routes(ctx, app, p).await?,
        log_guid: app.guid.clone(),
        log_source: format!("APP/PROC/{}", p.r#type.to_uppercase()),
        annotation:
            json!({"app_guid": app.guid, "process_type": p.r#type, "droplet_guid": droplet.guid})
                .to_string(),
    })
}
