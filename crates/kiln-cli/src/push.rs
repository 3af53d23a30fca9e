//! `kiln push`, in the order of Cloud Foundry's "How applications are
//! staged": create (or update) the app record, map its route, match
//! resources and upload only what the platform lacks, stage while printing
//! the staging output as it is written, set the droplet, start, wait for an
//! instance, summarise.

use crate::app::{find_app, print_summary, wait_until_running};
use crate::client::{Body, Client, Pace, q};
use crate::files::{self, AppFile, ResourceList};
use crate::logs::Follower;
use crate::manifest;
use crate::resources::{App, Build, Named, Package, Page, Process, Route, RouteDestinations};
use anyhow::{Context, bail};
use clap::Args;
use kiln_model::{AppState, BuildState, LOG_SOURCE_STAGING, PackageState};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Staging fails after 15 minutes, as in Cloud Foundry.
const STAGING_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The cf CLI asks about at most this many files per resource match.
const MATCH_CHUNK: usize = 1000;

#[derive(Args, Debug, Clone, Default)]
pub struct PushArgs {
    /// The app's name; with a manifest, the one app of it to push
    pub name: Option<String>,
    /// The app directory
    #[arg(short = 'p', long = "path", conflicts_with = "docker_image")]
    pub path: Option<PathBuf>,
    /// A Docker image to run instead of app files (`registry/repo:tag`,
    /// `repo@sha256:…`)
    #[arg(short = 'o', long = "docker-image", value_name = "IMAGE",
          conflicts_with_all = ["buildpacks", "stack"])]
    pub docker_image: Option<String>,
    /// The user of a private registry; the password is read from
    /// CF_DOCKER_PASSWORD
    #[arg(
        long = "docker-username",
        value_name = "USER",
        requires = "docker_image"
    )]
    pub docker_username: Option<String>,
    /// The manifest (default: manifest.yml in the current directory)
    #[arg(short = 'f', long = "manifest", conflicts_with = "no_manifest")]
    pub manifest: Option<PathBuf>,
    /// Ignore manifest.yml in the current directory
    #[arg(long)]
    pub no_manifest: bool,
    /// A YAML file of values for the manifest's ((variables)); repeatable
    #[arg(long = "vars-file", value_name = "FILE")]
    pub vars_files: Vec<PathBuf>,
    /// A value for a manifest ((variable)), NAME=VALUE; repeatable
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A buildpack by name; repeat for several (supply, then final);
    /// `default` or `null` goes back to detection
    #[arg(short = 'b', long = "buildpack", value_name = "BUILDPACK")]
    pub buildpacks: Vec<String>,
    /// The start command; `default` or `null` goes back to the detected one
    #[arg(short = 'c', long = "start-command")]
    pub command: Option<String>,
    /// Number of instances
    #[arg(short = 'i', long = "instances")]
    pub instances: Option<u32>,
    /// Memory limit, e.g. 256M or 1G
    #[arg(short = 'm', long = "memory", value_parser = parse_megabytes)]
    pub memory: Option<u64>,
    /// Disk limit, e.g. 1G
    #[arg(short = 'k', long = "disk", value_parser = parse_megabytes)]
    pub disk: Option<u64>,
    /// The stack to stage and run on
    #[arg(short = 's', long = "stack")]
    pub stack: Option<String>,
    /// Health check type: port, http or process
    #[arg(short = 'u', long = "health-check-type", value_parser = ["port", "http", "process", "none"])]
    pub health_check_type: Option<String>,
    /// The path an http health check requests
    #[arg(long = "endpoint")]
    pub endpoint: Option<String>,
    /// Seconds an instance may take to start
    #[arg(short = 't', long = "app-start-timeout")]
    pub timeout: Option<u32>,
    /// Upload the files but do not stage or start; stop the app if it runs
    #[arg(long)]
    pub no_start: bool,
    /// Do not map the default route
    #[arg(long, conflicts_with = "random_route")]
    pub no_route: bool,
    /// Map a route with a random host name
    #[arg(long)]
    pub random_route: bool,
    #[command(flatten)]
    pub deploy: Box<crate::deployments::StrategyArgs>,
}

impl PushArgs {
    /// A push of `name` from `path` with no other flags.
    pub fn new(name: &str, path: &Path) -> PushArgs {
        PushArgs {
            name: Some(name.to_string()),
            path: Some(path.to_path_buf()),
            ..PushArgs::default()
        }
    }

    fn overrides(&self) -> manifest::Overrides {
        manifest::Overrides {
            buildpacks: self.buildpacks.clone(),
            command: self.command.clone(),
            instances: self.instances,
            memory_mb: self.memory,
            disk_mb: self.disk,
            path: self.path.clone(),
            stack: self.stack.clone(),
            health_check_type: self.health_check_type.clone(),
            health_check_endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            no_route: self.no_route,
            random_route: self.random_route,
            docker_image: self.docker_image.clone(),
            docker_username: self.docker_username.clone(),
        }
    }

    /// The manifest this push follows, if any: `-f`, else `manifest.yml`
    /// in the current directory unless `--no-manifest`.
    fn manifest(&self) -> anyhow::Result<Option<manifest::Manifest>> {
        if self.no_manifest {
            return Ok(None);
        }
        let path = match &self.manifest {
            Some(path) => path.clone(),
            None => match manifest::find_default(Path::new(".")) {
                Some(path) => path,
                None => return Ok(None),
            },
        };
        manifest::load(&path, &self.vars_files, &self.vars).map(Some)
    }
}

/// `256M`, `1G`, `512` (megabytes), `1024MB`, `2gb` → megabytes.
pub fn parse_megabytes(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let (digits, factor) = if let Some(n) = upper.strip_suffix("GB").or(upper.strip_suffix('G')) {
        (n, 1024)
    } else if let Some(n) = upper.strip_suffix("MB").or(upper.strip_suffix('M')) {
        (n, 1)
    } else {
        (upper.as_str(), 1)
    };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(factor)
            .ok_or_else(|| format!("size {text:?} is too large")),
        _ => Err(format!(
            "invalid size {text:?}: use a whole number with M or G, e.g. 256M or 1G"
        )),
    }
}

/// The default route's host: the app name, lowercased, other characters
/// than letters, digits and `-` replaced by `-`.
pub fn default_host(name: &str) -> String {
    let host: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    host.trim_matches('-').to_string()
}

/// `-b default` and `-b null` mean "detect" (an empty list), as in cf.
fn requested_buildpacks(args: &[String]) -> Vec<String> {
    if args.len() == 1 && matches!(args[0].as_str(), "default" | "null") {
        Vec::new()
    } else {
        args.to_vec()
    }
}

pub async fn push(client: &mut Client, args: PushArgs) -> anyhow::Result<()> {
    match args.manifest()? {
        Some(manifest) => push_manifest(client, &args, manifest).await,
        None => push_flags(client, args).await,
    }
}

/// `kiln push` with a manifest: the manifest (with the flags applied to its
/// one app) goes to `apply_manifest`, which creates and configures every
/// app with its routes; then each app's files are pushed, staged and
/// started in the manifest's order.
async fn push_manifest(
    client: &mut Client,
    args: &PushArgs,
    mut manifest: manifest::Manifest,
) -> anyhow::Result<()> {
    let space = client.config.require_space()?.clone();
    if let Some(name) = &args.name {
        manifest.select(name)?;
    }
    manifest.override_app(&args.overrides())?;
    manifest.request_default_routes();
    println!(
        "Pushing from manifest to org {} / space {} as {}...",
        client.config.org_name(),
        space.name,
        client.config.user
    );
    // Every app's files are read before anything changes on the platform.
    let mut bits = Vec::new();
    for app in manifest.apps() {
        let name = app
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let source = match app.get("docker").filter(|d| !d.is_null()) {
            Some(docker) => Source::docker(
                docker
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                docker.get("username").and_then(Value::as_str),
            )?,
            None => {
                let path = manifest.app_path(app);
                let tree = scan_app_dir(&path)?;
                Source::Bits { path, tree }
            }
        };
        bits.push((name, source));
    }
    println!("Applying manifest...");
    let reply = client
        .call(
            Method::POST,
            &format!("/v3/spaces/{}/actions/apply_manifest", space.guid),
            Body::Yaml(manifest.body()),
        )
        .await?;
    let location = reply
        .location()
        .context("apply_manifest answered without a job location")?;
    client.wait_for_job(&location).await?;
    for (name, source) in bits {
        let app = find_app(client, &name)
            .await?
            .with_context(|| format!("the manifest was applied but app {name} is missing"))?;
        println!();
        deploy(client, &app, &source, args).await?;
    }
    Ok(())
}

/// What an app runs: files from a directory, staged with buildpacks, or a
/// Docker image.
enum Source {
    Bits {
        path: PathBuf,
        tree: files::AppTree,
    },
    Docker {
        image: String,
        username: Option<String>,
        password: Option<String>,
    },
}

impl Source {
    /// A Docker image, with the password from `CF_DOCKER_PASSWORD` when
    /// a user is given (as the cf CLI reads it).
    fn docker(image: &str, username: Option<&str>) -> anyhow::Result<Source> {
        anyhow::ensure!(!image.trim().is_empty(), "the Docker image is empty");
        let password = match username {
            Some(_) => Some(
                std::env::var("CF_DOCKER_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .context("Environment variable CF_DOCKER_PASSWORD not set.")?,
            ),
            None => None,
        };
        Ok(Source::Docker {
            image: image.to_string(),
            username: username.map(str::to_string),
            password,
        })
    }
}

/// The app directory's files, or why they cannot be pushed.
fn scan_app_dir(path: &Path) -> anyhow::Result<files::AppTree> {
    anyhow::ensure!(
        path.is_dir(),
        "{} is not a directory; push the directory that holds the app",
        path.display()
    );
    let tree = files::scan_app(path)?;
    anyhow::ensure!(
        !tree.files.is_empty(),
        "{} has no files to push",
        path.display()
    );
    Ok(tree)
}

/// `kiln push NAME` without a manifest: the flags say everything.
async fn push_flags(client: &mut Client, args: PushArgs) -> anyhow::Result<()> {
    let space = client.config.require_space()?.clone();
    let name = args
        .name
        .clone()
        .context("Incorrect Usage: the app name is required when there is no manifest")?;
    println!(
        "Pushing app {name} to org {} / space {} as {}...",
        client.config.org_name(),
        space.name,
        client.config.user
    );
    // The files first: a link out of the directory is refused before
    // anything changes on the platform.
    let source = match &args.docker_image {
        Some(image) => Source::docker(image, args.docker_username.as_deref())?,
        None => {
            let path = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
            let tree = scan_app_dir(&path)?;
            Source::Bits { path, tree }
        }
    };

    // Steps 2-3: the app record.
    println!("Getting app info...");
    let buildpacks = requested_buildpacks(&args.buildpacks);
    let stack = args.stack.clone().map_or(Value::Null, Value::String);
    // `stack: null`: the platform's default stack.
    let lifecycle = match &source {
        Source::Docker { .. } => json!({"type": "docker", "data": {}}),
        Source::Bits { .. } => {
            json!({"type": "buildpack", "data": {"buildpacks": buildpacks, "stack": stack}})
        }
    };
    let app: App = match find_app(client, &name).await? {
        Some(app) if args.buildpacks.is_empty() && args.stack.is_none() => app,
        Some(app) => {
            println!("Updating app {name}...");
            client
                .patch(
                    &format!("/v3/apps/{}", app.guid),
                    json!({"lifecycle": lifecycle}),
                )
                .await?
        }
        None => {
            println!("Creating app {name}...");
            client
                .post(
                    "/v3/apps",
                    json!({
                        "name": name,
                        "relationships": {"space": {"data": {"guid": space.guid}}},
                        "lifecycle": lifecycle,
                    }),
                )
                .await?
        }
    };
    anyhow::ensure!(!app.guid.is_empty(), "the API returned no app guid");
    configure_web_process(client, &app, &args).await?;
    if !args.no_route {
        map_default_route(client, &app, &space).await?;
    }
    deploy(client, &app, &source, &args).await
}

/// Seed steps 4-12 for one app whose record and routes exist: upload the
/// files the platform lacks, stage, set the droplet, restart, wait for an
/// instance, summarise (or, with `--no-start`, upload and stop; with
/// `--strategy`, deploy the droplet without downtime instead of restarting).
async fn deploy(
    client: &mut Client,
    app: &App,
    source: &Source,
    args: &PushArgs,
) -> anyhow::Result<()> {
    let no_start = args.no_start;
    let name = app.name.clone();
    // Steps 4-5: resource match, upload only what is missing; or the
    // image's package.
    let package_guid = match source {
        Source::Bits { path, tree } => upload_package(client, &app.guid, path, tree).await?,
        Source::Docker {
            image,
            username,
            password,
        } => docker_package(client, &app.guid, image, username, password).await?,
    };

    if no_start {
        if app.state.parse::<AppState>().ok() == Some(AppState::Started) {
            println!("Stopping app {name}...");
            let _: App = client
                .post(&format!("/v3/apps/{}/actions/stop", app.guid), json!({}))
                .await?;
        }
        println!();
        return print_summary(client, &app.guid).await;
    }

    // Steps 6-10: stage, printing the staging output as it is written.
    let droplet_guid = stage(client, &app.guid, &name, &package_guid).await?;

    if args.deploy.strategy.is_some() {
        println!();
        let d = Some(droplet_guid.as_str());
        return crate::deployments::deploy(client, &app.guid, &name, d, &args.deploy).await;
    }

    // Steps 11-12: run the droplet and wait for an instance.
    run_droplet(client, app, &droplet_guid).await
}

/// Makes `droplet_guid` the app's current droplet, restarts the app on it,
/// waits for an instance and prints the summary.
async fn run_droplet(client: &mut Client, app: &App, droplet_guid: &str) -> anyhow::Result<()> {
    let _: Value = client
        .patch(
            &format!("/v3/apps/{}/relationships/current_droplet", app.guid),
            json!({"data": {"guid": droplet_guid}}),
        )
        .await?;
    let _: App = client
        .post(&format!("/v3/apps/{}/actions/restart", app.guid), json!({}))
        .await?;
    wait_until_running(client, &app.guid, &app.name).await?;
    print_summary(client, &app.guid).await
}

/// Scales the web process and sets its command when the flags say so.
async fn configure_web_process(
    client: &mut Client,
    app: &App,
    args: &PushArgs,
) -> anyhow::Result<()> {
    let scaling = args.instances.is_some() || args.memory.is_some() || args.disk.is_some();
    let health =
        args.health_check_type.is_some() || args.endpoint.is_some() || args.timeout.is_some();
    if !scaling && args.command.is_none() && !health {
        return Ok(());
    }
    let processes: Vec<Process> = client
        .list(&format!("/v3/apps/{}/processes", app.guid))
        .await?;
    let web = processes
        .into_iter()
        .find(|p| p.process_type == "web")
        .context("the app has no web process")?;
    if scaling {
        let mut scale = serde_json::Map::new();
        if let Some(instances) = args.instances {
            scale.insert("instances".into(), instances.into());
        }
        if let Some(memory) = args.memory {
            scale.insert("memory_in_mb".into(), memory.into());
        }
        if let Some(disk) = args.disk {
            scale.insert("disk_in_mb".into(), disk.into());
        }
        let _: Value = client
            .post(
                &format!("/v3/processes/{}/actions/scale", web.guid),
                Value::Object(scale),
            )
            .await?;
    }
    let mut update = serde_json::Map::new();
    if let Some(command) = &args.command {
        let command = match command.as_str() {
            "default" | "null" => Value::Null,
            other => Value::String(other.to_string()),
        };
        update.insert("command".into(), command);
    }
    if health {
        let check_type = match args.health_check_type.as_deref() {
            Some("none") => Some("process"),
            other => other,
        };
        let mut data = serde_json::Map::new();
        if let Some(t) = args.timeout {
            data.insert("timeout".into(), t.into());
        }
        if let Some(e) = &args.endpoint {
            data.insert("endpoint".into(), e.as_str().into());
        }
        let mut check = serde_json::Map::new();
        if let Some(t) = check_type {
            check.insert("type".into(), t.into());
        }
        check.insert("data".into(), Value::Object(data));
        update.insert("health_check".into(), Value::Object(check));
    }
    if !update.is_empty() {
        let _: Value = client
            .patch(
                &format!("/v3/processes/{}", web.guid),
                Value::Object(update),
            )
            .await?;
    }
    Ok(())
}

/// Maps `<name>.<first domain>` to the app, creating the route if needed.
async fn map_default_route(
    client: &mut Client,
    app: &App,
    space: &crate::config::Named,
) -> anyhow::Result<()> {
    let host = default_host(&app.name);
    anyhow::ensure!(
        !host.is_empty(),
        "no route host can be made from the name {:?}; push with --no-route",
        app.name
    );
    let domains: Vec<Named> = client.list("/v3/domains").await?;
    let domain = domains
        .into_iter()
        .next()
        .context("the platform has no domain to route to; push with --no-route")?;
    let routes: Vec<Route> = client
        .list(&format!(
            "/v3/routes?hosts={}&domain_guids={}",
            q(&host),
            domain.guid
        ))
        .await?;
    let existing = routes
        .into_iter()
        .find(|r| r.host == host && r.path.is_empty());
    let route = match existing {
        Some(route) => route,
        None => {
            println!("Creating route {host}.{}...", domain.name);
            client
                .post(
                    "/v3/routes",
                    json!({"host": host, "relationships": {
                        "space": {"data": {"guid": space.guid}},
                        "domain": {"data": {"guid": domain.guid}},
                    }}),
                )
                .await?
        }
    };
    // The route's own `destinations` may be absent or stale in other
    // servers' answers; the destinations endpoint is authoritative.
    let destinations: RouteDestinations = client
        .get(&format!("/v3/routes/{}/destinations", route.guid))
        .await?;
    let mapped = destinations
        .destinations
        .iter()
        .any(|d| d.app.guid.as_deref() == Some(app.guid.as_str()));
    if !mapped {
        let url = if route.url.is_empty() {
            format!("{host}.{}", domain.name)
        } else {
            route.url.clone()
        };
        println!("Mapping route {url} to app {}...", app.name);
        let _: Value = client
            .post(
                &format!("/v3/routes/{}/destinations", route.guid),
                json!({"destinations": [{"app": {"guid": app.guid, "process": {"type": "web"}}}]}),
            )
            .await?;
    }
    Ok(())
}

/// The files the platform already has, asked in chunks; a failed match is
/// not fatal (everything is uploaded then), as matching only saves bytes.
async fn match_resources(client: &mut Client, files: &[AppFile]) -> HashSet<(String, String)> {
    let offered: Vec<_> = files
        .iter()
        .filter(|f| f.size > 0)
        .map(AppFile::resource)
        .collect();
    let mut matched = HashSet::new();
    for chunk in offered.chunks(MATCH_CHUNK) {
        let request = ResourceList {
            resources: chunk.to_vec(),
        };
        let body = match serde_json::to_value(&request) {
            Ok(body) => body,
            Err(_) => return HashSet::new(),
        };
        match client
            .post::<ResourceList>("/v3/resource_matches", body)
            .await
        {
            Ok(answer) => matched.extend(
                answer
                    .resources
                    .into_iter()
                    .map(|r| (r.path, r.checksum.value)),
            ),
            Err(error) => {
                eprintln!("Resource matching failed ({error:#}); uploading every file.");
                return HashSet::new();
            }
        }
    }
    matched
}

/// Creates a package, uploads the zip of unmatched files with the list of
/// matched ones, and waits until the package is READY.
/// A docker package for `image` (READY at once: nothing to upload).
async fn docker_package(
    client: &mut Client,
    app_guid: &str,
    image: &str,
    username: &Option<String>,
    password: &Option<String>,
) -> anyhow::Result<String> {
    let mut data = json!({"image": image});
    if let (Some(u), Some(p)) = (username, password) {
        data["username"] = json!(u);
        data["password"] = json!(p);
    }
    let package: Package = client
        .post(
            "/v3/packages",
            json!({"type": "docker", "data": data, "relationships": {"app": {"data": {"guid": app_guid}}}}),
        )
        .await?;
    anyhow::ensure!(!package.guid.is_empty(), "the API returned no package guid");
    Ok(package.guid)
}

async fn upload_package(
    client: &mut Client,
    app_guid: &str,
    path: &Path,
    tree: &files::AppTree,
) -> anyhow::Result<String> {
    println!("Comparing local files to remote cache...");
    let matched = match_resources(client, &tree.files).await;
    let (cached, missing): (Vec<&AppFile>, Vec<&AppFile>) = tree
        .files
        .iter()
        .partition(|f| matched.contains(&(f.path.clone(), f.sha1.clone())));
    println!("Packaging files to upload...");
    let zip = if missing.is_empty() {
        None
    } else {
        Some(
            files::zip_tree(&tree.dirs, &missing)
                .with_context(|| format!("zipping {}", path.display()))?,
        )
    };
    let package: Package = client
        .post(
            "/v3/packages",
            json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}}}),
        )
        .await?;
    anyhow::ensure!(!package.guid.is_empty(), "the API returned no package guid");
    let resources = ResourceList {
        resources: cached.iter().map(|f| f.resource()).collect(),
    };
    let mut form = reqwest::multipart::Form::new()
        .text("resources", serde_json::to_string(&resources.resources)?);
    let bytes = zip.as_ref().map_or(0, Vec::len);
    if let Some(zip) = zip {
        form = form.part(
            "bits",
            crate::progress::upload_part(zip, "Uploading app files")
                .file_name("application.zip")
                .mime_str("application/zip")?,
        );
    }
    println!(
        "Uploading files...\n {} of {} files uploaded, {bytes} bytes ({} already on the platform)",
        missing.len(),
        tree.files.len(),
        cached.len()
    );
    let path = format!("/v3/packages/{}/upload", package.guid);
    let reply = client
        .call(Method::POST, &path, Body::Multipart(form))
        .await?;
    println!("\nWaiting for API to complete processing files...");
    // Kiln processes the upload before answering: no need to ask again.
    let uploaded: Option<Package> = serde_json::from_str(&reply.body).ok();
    if uploaded.is_some_and(|p| p.state.parse::<PackageState>().ok() == Some(PackageState::Ready)) {
        return Ok(package.guid);
    }
    let deadline = Instant::now() + STAGING_TIMEOUT;
    let mut pace = Pace::up_to(Duration::from_millis(300));
    loop {
        let package: Package = client
            .get(&format!("/v3/packages/{}", package.guid))
            .await?;
        match package.state.parse::<PackageState>() {
            Ok(PackageState::Ready) => return Ok(package.guid),
            Ok(PackageState::Failed) => bail!("package processing failed"),
            Ok(PackageState::Expired) => bail!("the package expired before it was processed"),
            _ if Instant::now() > deadline => {
                bail!("the package was not processed within 15 minutes")
            }
            _ => pace.wait().await,
        }
    }
}

/// `restage`: stage the app's newest package again (picking up changed
/// env vars and buildpacks), then run the new droplet.
pub async fn restage(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = crate::app::require_app(client, name).await?;
    println!(
        "Restaging app {name} {}...",
        crate::app::whereabouts(client)
    );
    // One page of one: the newest READY package.
    let packages: Page<Package> = client
        .get(&format!(
            "/v3/apps/{}/packages?states=READY&order_by=-created_at&per_page=1",
            app.guid
        ))
        .await?;
    let package = packages
        .resources
        .into_iter()
        .next()
        .with_context(|| format!("app {name} has no package to stage; push it first"))?;
    let droplet_guid = stage(client, &app.guid, name, &package.guid).await?;
    run_droplet(client, &app, &droplet_guid).await
}

/// Prints the staging lines among `lines`.
fn print_staging(lines: Vec<kiln_model::logs::LogEnvelope>) -> usize {
    let mut printed = 0;
    for line in lines
        .into_iter()
        .filter(|l| l.source_type == LOG_SOURCE_STAGING)
    {
        println!("   {}", line.message);
        printed += 1;
    }
    printed
}

/// The longest pause between two reads of the build and the log cache
/// while staging (the first ones come sooner: see [`Pace`]).
const STAGING_POLL: Duration = Duration::from_millis(300);

/// The error of a failed build, with cf's hint when no buildpack detected
/// the app.
fn staging_error(name: &str, error: &str) -> String {
    if error.contains("NoAppDetectedError") {
        format!(
            "Error staging application: {error}\n\n\
             For application '{name}': An app was not successfully detected by any available buildpack.\n\n\
             TIP: Use 'kiln buildpacks' to see a list of supported buildpacks."
        )
    } else {
        format!(
            "Error staging application: {error}\n\n\
             TIP: Use 'kiln logs {name} --recent' for more information"
        )
    }
}

/// Creates a build and follows it, printing `STG` lines as they arrive.
/// Returns the droplet guid.
async fn stage(
    client: &mut Client,
    app_guid: &str,
    name: &str,
    package_guid: &str,
) -> anyhow::Result<String> {
    println!("\nStaging app and tracing logs...");
    // Anchored before the build exists, so every line of it is after; a
    // log cache that cannot say where it stands starts at the build's start.
    let anchored = Follower::from_now(client, app_guid).await;
    let build: Build = client
        .post("/v3/builds", json!({"package": {"guid": package_guid}}))
        .await?;
    anyhow::ensure!(!build.guid.is_empty(), "the API returned no build guid");
    let build_start = crate::logs::rfc3339_nanos(&build.created_at).unwrap_or(0);
    let mut follower = anchored.unwrap_or_else(|_| Follower::starting_at(app_guid, build_start));
    follower.not_before(build_start);
    let mut logs_available = !client.config.log_cache.is_empty();
    let deadline = Instant::now() + STAGING_TIMEOUT;
    let mut pace = Pace::up_to(STAGING_POLL);
    let build = loop {
        if logs_available {
            match follower.poll(client).await {
                Ok(lines) => {
                    print_staging(lines);
                }
                Err(error) => {
                    logs_available = false;
                    eprintln!("   (reading staging logs failed: {error:#})");
                }
            }
        }
        // Held by Kiln until staging ends (at most a second, so the
        // staging logs keep flowing); other APIs answer at once.
        let path = format!("/v3/builds/{}", build.guid);
        let (build, held): (Build, bool) = client.get_waiting(&path, 1).await?;
        if build.state.parse::<BuildState>().ok() != Some(BuildState::Staging) {
            break build;
        }
        if Instant::now() > deadline {
            bail!("staging did not finish within 15 minutes");
        }
        if !held {
            pace.wait().await;
        }
    };
    // Lines written just before the build finished.
    if logs_available && let Ok(lines) = follower.flush(client).await {
        print_staging(lines);
    }
    match build.state.parse::<BuildState>() {
        Ok(BuildState::Staged) => build
            .droplet
            .and_then(|d| d.guid)
            .context("the staged build has no droplet"),
        _ => {
            let error = build
                .error
                .unwrap_or_else(|| format!("build ended in state {:?}", build.state));
            bail!("{}", staging_error(name, &error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder that is missing, holds nothing to push, or has a file
    /// that cannot be read fails with a message naming it (root reads any
    /// mode, so a dangling link stands for the unreadable file).
    #[test]
    fn push_folders_that_cannot_be_pushed_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let error = |p: &Path| format!("{:#}", scan_app_dir(p).unwrap_err());
        let missing = dir.path().join("nowhere");
        assert!(error(&missing).contains("nowhere is not a directory"));
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(empty.join("sub")).unwrap();
        std::fs::write(empty.join(".cfignore"), "").unwrap();
        std::fs::write(empty.join("manifest.yml"), "applications: []").unwrap();
        assert!(error(&empty).contains("empty has no files to push"));
        let broken = dir.path().join("broken");
        std::fs::create_dir(&broken).unwrap();
        std::fs::write(broken.join("app.py"), "x").unwrap();
        std::os::unix::fs::symlink(broken.join("gone"), broken.join("data")).unwrap();
        assert!(error(&broken).contains("data is a symbolic link whose target cannot be read"));
        let file = dir.path().join("file.txt");
        std::fs::write(&file, "x").unwrap();
        assert!(error(&file).contains("is not a directory"));
    }

    #[test]
    fn sizes_in_megabytes() {
        for (text, expected) in [
            ("256M", 256),
            ("1G", 1024),
            ("512", 512),
            ("1024MB", 1024),
            ("2gb", 2048),
            (" 64m ", 64),
        ] {
            assert_eq!(parse_megabytes(text), Ok(expected), "{text}");
        }
        for bad in ["", "M", "-1G", "1T", "0", "1.5G", "99999999999999999999G"] {
            assert!(parse_megabytes(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn undetected_apps_get_the_buildpacks_hint() {
        let message = staging_error("hello", "NoAppDetectedError - no buildpack detected");
        assert!(message.contains("For application 'hello'"), "{message}");
        assert!(message.contains("'kiln buildpacks'"), "{message}");
        let other = staging_error("hello", "BuildpackCompileFailed - exit 1");
        assert!(other.contains("kiln logs hello --recent"), "{other}");
    }

    #[test]
    fn default_hosts_are_dns_labels() {
        assert_eq!(default_host("hello"), "hello");
        assert_eq!(default_host("My_App"), "my-app");
        assert_eq!(default_host("_x_"), "x");
    }

    #[test]
    fn default_and_null_buildpacks_mean_detect() {
        assert!(requested_buildpacks(&["default".into()]).is_empty());
        assert!(requested_buildpacks(&["null".into()]).is_empty());
        assert_eq!(
            requested_buildpacks(&["a".into(), "b".into()]),
            ["a".to_string(), "b".to_string()]
        );
    }
}
