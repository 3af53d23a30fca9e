//! `kiln push`, step by step as Cloud Foundry's staging page describes it:
//! create the app, match resources, upload what is missing, stage while
//! printing the staging output, set the droplet, start, wait, summarise.

use crate::app;
use crate::client::{Client, q};
use crate::files::{self, AppFile};
use crate::logs::Follower;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct PushArgs {
    pub name: String,
    /// The app directory
    #[arg(short = 'p', default_value = ".")]
    pub path: PathBuf,
    /// A buildpack by name; repeat for multi-buildpack (default: detect)
    #[arg(short = 'b')]
    pub buildpacks: Vec<String>,
    /// The start command (default: the buildpack's or the Procfile's)
    #[arg(short = 'c')]
    pub command: Option<String>,
    /// Number of instances
    #[arg(short = 'i')]
    pub instances: Option<u32>,
    /// Memory limit, e.g. 256M or 1G
    #[arg(short = 'm', value_parser = parse_megabytes)]
    pub memory: Option<u64>,
    /// Disk limit, e.g. 1G
    #[arg(short = 'k', value_parser = parse_megabytes)]
    pub disk: Option<u64>,
    /// Upload and stage nothing; stop the app if it runs
    #[arg(long)]
    pub no_start: bool,
    /// Do not map the default route
    #[arg(long)]
    pub no_route: bool,
}

/// `256M`, `1G`, `512` (megabytes), `1024MB`, `2GB` → megabytes.
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
        Ok(n) if n > 0 => Ok(n * factor),
        _ => Err(format!(
            "invalid size {text:?}: use a number with M or G, e.g. 256M or 1G"
        )),
    }
}

pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let mut client = crate::client()?;
    let space = client.config.require_space()?.clone();
    let name = args.name.clone();
    println!(
        "Pushing app {name} to org {} / space {} as {}...",
        client.config.org.as_ref().map_or("", |o| &o.name),
        space.name,
        client.config.user
    );

    // Steps 1-3: the app record and its web process.
    let app = match app::find_app(&mut client, &name).await? {
        Some(app) => {
            if !args.buildpacks.is_empty() {
                let guid = app["guid"].as_str().unwrap_or_default();
                let lifecycle =
                    json!({"type": "buildpack", "data": {"buildpacks": args.buildpacks}});
                client
                    .patch(
                        &format!("/v3/apps/{guid}"),
                        &json!({"lifecycle": lifecycle}),
                    )
                    .await?
            } else {
                app
            }
        }
        None => {
            println!("Creating app {name}...");
            client
                .post(
                    "/v3/apps",
                    &json!({
                        "name": name,
                        "relationships": {"space": {"data": {"guid": space.guid}}},
                        "lifecycle": {"type": "buildpack", "data": {"buildpacks": args.buildpacks}},
                    }),
                )
                .await?
        }
    };
    let app_guid = app["guid"]
        .as_str()
        .context("the API returned no app guid")?
        .to_string();
    let processes = client
        .list(&format!("/v3/apps/{app_guid}/processes"))
        .await?;
    let web = processes
        .iter()
        .find(|p| p["type"] == "web")
        .context("the app has no web process")?;
    let web_guid = web["guid"].as_str().unwrap_or_default().to_string();
    if args.instances.is_some() || args.memory.is_some() || args.disk.is_some() {
        let mut scale = serde_json::Map::new();
        if let Some(i) = args.instances {
            scale.insert("instances".into(), i.into());
        }
        if let Some(m) = args.memory {
            scale.insert("memory_in_mb".into(), m.into());
        }
        if let Some(d) = args.disk {
            scale.insert("disk_in_mb".into(), d.into());
        }
        client
            .post(
                &format!("/v3/processes/{web_guid}/actions/scale"),
                &Value::Object(scale),
            )
            .await?;
    }
    if let Some(command) = &args.command {
        client
            .patch(
                &format!("/v3/processes/{web_guid}"),
                &json!({"command": command}),
            )
            .await?;
    }
    if !args.no_route {
        map_default_route(&mut client, &app_guid, &name, &space.guid).await?;
    }

    // Steps 4-5: resource match, upload only what is missing.
    upload_package(&mut client, &app_guid, &args.path)
        .await
        .map(|_| ())?;
    let package_guid = latest_ready_package(&mut client, &app_guid).await?;

    if args.no_start {
        if app["state"] == "STARTED" {
            client
                .post(&format!("/v3/apps/{app_guid}/actions/stop"), &json!({}))
                .await?;
        }
        println!("\nApp {name} uploaded; not started (--no-start).\nOK");
        return Ok(());
    }

    // Steps 6-10: stage, printing the staging output as it is written.
    let droplet_guid = stage(&mut client, &app_guid, &name, &package_guid).await?;

    // Steps 11-12: run the droplet and wait for an instance.
    client
        .patch(
            &format!("/v3/apps/{app_guid}/relationships/current_droplet"),
            &json!({"data": {"guid": droplet_guid}}),
        )
        .await?;
    let app = client
        .post(&format!("/v3/apps/{app_guid}/actions/restart"), &json!({}))
        .await?;
    app::wait_until_running(&mut client, &app).await?;
    println!();
    print!("{}", app::summary(&mut client, &app).await?);
    Ok(())
}

/// Maps `<name>.<first domain>` to the app, creating the route if needed.
async fn map_default_route(
    client: &mut Client,
    app_guid: &str,
    name: &str,
    space_guid: &str,
) -> anyhow::Result<()> {
    let domains = client.list("/v3/domains").await?;
    let domain = domains
        .first()
        .context("the platform has no domain to route to")?;
    let domain_guid = domain["guid"].as_str().unwrap_or_default().to_string();
    let host = name.to_ascii_lowercase();
    let existing = client
        .list(&format!(
            "/v3/routes?hosts={}&domain_guids={domain_guid}",
            q(&host)
        ))
        .await?;
    let route = match existing.into_iter().next() {
        Some(route) => route,
        None => {
            println!(
                "Creating route {host}.{}...",
                domain["name"].as_str().unwrap_or_default()
            );
            client
                .post(
                    "/v3/routes",
                    &json!({"host": host, "relationships": {
                        "space": {"data": {"guid": space_guid}},
                        "domain": {"data": {"guid": domain_guid}},
                    }}),
                )
                .await?
        }
    };
    let route_guid = route["guid"].as_str().unwrap_or_default();
    let destinations = client
        .get(&format!("/v3/routes/{route_guid}/destinations"))
        .await?;
    let mapped = destinations["destinations"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["app"]["guid"] == app_guid));
    if !mapped {
        client
            .post(
                &format!("/v3/routes/{route_guid}/destinations"),
                &json!({"destinations": [{"app": {"guid": app_guid, "process": {"type": "web"}}}]}),
            )
            .await?;
    }
    Ok(())
}

/// Asks which files the platform already has, uploads a zip of the rest
/// with the list of the matched ones, and waits for the package to be READY.
async fn upload_package(
    client: &mut Client,
    app_guid: &str,
    path: &std::path::Path,
) -> anyhow::Result<String> {
    let files = files::scan(path)?;
    anyhow::ensure!(!files.is_empty(), "{} has no files to push", path.display());
    let offered: Vec<Value> = files
        .iter()
        .filter(|f| f.size > 0)
        .map(AppFile::resource_json)
        .collect();
    let matched: HashSet<String> = if offered.is_empty() {
        HashSet::new()
    } else {
        match client
            .post("/v3/resource_matches", &json!({"resources": offered}))
            .await
        {
            Ok(answer) => answer["resources"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|r| r["path"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            // Matching is an optimisation: without an answer, upload everything.
            Err(error) => {
                eprintln!("resource matching failed ({error}); uploading every file");
                HashSet::new()
            }
        }
    };
    let (cached, missing): (Vec<&AppFile>, Vec<&AppFile>) =
        files.iter().partition(|f| matched.contains(&f.path));
    let package = client
        .post(
            "/v3/packages",
            &json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}}}),
        )
        .await?;
    let package_guid = package["guid"]
        .as_str()
        .context("the API returned no package guid")?
        .to_string();
    let resources: Vec<Value> = cached.iter().map(|f| f.resource_json()).collect();
    let mut form =
        reqwest::multipart::Form::new().text("resources", serde_json::to_string(&resources)?);
    let mut bytes = 0;
    if !missing.is_empty() {
        let zip = files::zip_files(&missing)?;
        bytes = zip.len();
        form = form.part(
            "bits",
            reqwest::multipart::Part::bytes(zip)
                .file_name("application.zip")
                .mime_str("application/zip")?,
        );
    }
    println!(
        "Uploading files...\n{} of {} files uploaded ({bytes} bytes); {} already on the platform",
        missing.len(),
        files.len(),
        cached.len()
    );
    client
        .post_multipart(&format!("/v3/packages/{package_guid}/upload"), form)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    loop {
        let package = client.get(&format!("/v3/packages/{package_guid}")).await?;
        match package["state"].as_str() {
            Some("READY") => return Ok(package_guid),
            Some("FAILED") | Some("EXPIRED") => bail!("package {package_guid} failed to process"),
            _ if Instant::now() > deadline => {
                bail!("package {package_guid} was not ready after 15 minutes")
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn latest_ready_package(client: &mut Client, app_guid: &str) -> anyhow::Result<String> {
    let packages = client
        .list(&format!(
            "/v3/packages?app_guids={app_guid}&order_by=-created_at&states=READY"
        ))
        .await?;
    packages
        .iter()
        .filter(|p| p["state"] == "READY")
        .max_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()))
        .and_then(|p| p["guid"].as_str().map(str::to_string))
        .context("no READY package to stage")
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
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
        // Clocks of client and server may differ a little; seeing a line
        // twice is prevented by the follower, missing one is not.
        .saturating_sub(5_000_000_000);
    let mut follower = Follower::new(app_guid, since);
    let build = client
        .post("/v3/builds", &json!({"package": {"guid": package_guid}}))
        .await?;
    let build_guid = build["guid"]
        .as_str()
        .context("the API returned no build guid")?
        .to_string();
    let print_staging = |lines: Vec<crate::logs::LogLine>| {
        for line in lines.into_iter().filter(|l| l.source_type == "STG") {
            println!("   {}", line.message);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    let build = loop {
        match follower.poll(client).await {
            Ok(lines) => print_staging(lines),
            Err(error) => eprintln!("   (could not read staging logs: {error:#})"),
        }
        let build = client.get(&format!("/v3/builds/{build_guid}")).await?;
        if build["state"] != "STAGING" {
            break build;
        }
        if Instant::now() > deadline {
            bail!("staging did not finish within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Lines written just before the build finished.
    if let Ok(lines) = follower.poll(client).await {
        print_staging(lines);
    }
    match build["state"].as_str() {
        Some("STAGED") => {
            let droplet = build["droplet"]["guid"]
                .as_str()
                .context("the staged build has no droplet")?;
            println!("\nStaging complete.");
            Ok(droplet.to_string())
        }
        _ => {
            let error = build["error"]
                .as_str()
                .unwrap_or("staging failed with no error");
            if error.contains("NoAppDetectedError") {
                bail!(
                    "Error staging application: {error}\n\nTIP: use 'kiln buildpacks' to see the buildpacks on the platform, \
                     or push {name} with -b to name one"
                );
            }
            bail!(
                "Error staging application: {error}\n\nTIP: use 'kiln logs {name} --recent' for more information"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_megabytes() {
        for (text, expected) in [
            ("256M", Ok(256)),
            ("1G", Ok(1024)),
            ("512", Ok(512)),
            ("1024MB", Ok(1024)),
            ("2gb", Ok(2048)),
        ] {
            assert_eq!(parse_megabytes(text), expected, "{text}");
        }
        for bad in ["", "M", "-1G", "1T", "0"] {
            assert!(parse_megabytes(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
