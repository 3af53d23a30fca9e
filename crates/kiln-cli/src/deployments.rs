//! Zero-downtime deploys, as the cf CLI does them: `restart --strategy`,
//! `push --strategy` (both create a `/v3/deployments` and follow it until
//! DEPLOYED), `cancel-deployment` and `continue-deployment`.

use crate::app::{print_summary, require_app, startup_timeout, wait_until_running, whereabouts};
use crate::client::{Body, Client, Pace};
use crate::resources::{Process, ProcessStats};
use anyhow::{Context, bail};
use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// The flags that turn a restart or a push into a deployment.
#[derive(Args, Debug, Clone, Default)]
pub struct StrategyArgs {
    /// Deploy without downtime: `rolling` replaces instances in batches,
    /// `canary` starts one new instance and pauses
    #[arg(long, value_parser = ["rolling", "canary"])]
    pub strategy: Option<String>,
    /// How many new instances start at once (with --strategy)
    #[arg(long = "max-in-flight", requires = "strategy", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: Option<u32>,
    /// Do not wait for the deployment to finish (with --strategy)
    #[arg(long = "no-wait", requires = "strategy")]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Status {
    value: String,
    reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Deployment {
    guid: String,
    status: Status,
}

/// Creates a deployment of `droplet` (the current one if None) and, unless
/// `--no-wait`, follows it until the new instances all run.
pub async fn deploy(
    client: &mut Client,
    app_guid: &str,
    name: &str,
    droplet: Option<&str>,
    args: &StrategyArgs,
) -> anyhow::Result<()> {
    let strategy = args.strategy.as_deref().unwrap_or("rolling");
    let mut body = json!({
        "strategy": strategy,
        "relationships": {"app": {"data": {"guid": app_guid}}},
    });
    if let Some(d) = droplet {
        body["droplet"] = json!({"guid": d});
    }
    if let Some(n) = args.max_in_flight {
        body["options"] = json!({"max_in_flight": n});
    }
    println!("Creating deployment for app {name}...\n");
    let d: Deployment = client.post("/v3/deployments", body).await?;
    anyhow::ensure!(!d.guid.is_empty(), "the API returned no deployment guid");
    if args.no_wait {
        println!("First instance restaged correctly, restaging remaining in the background...");
        return print_summary(client, app_guid).await;
    }
    println!("Waiting for app to deploy...\n");
    if wait_for_deployment(client, app_guid, name, &d.guid).await? {
        // A stopped app's deployment just starts it (DEPLOYED at once):
        // wait for an instance as a plain start does.
        wait_until_running(client, app_guid, name).await?;
    }
    print_summary(client, app_guid).await
}

/// Follows a deployment: prints how many new web instances run as it
/// changes; done when DEPLOYED (true), or PAUSED for a canary (false).
async fn wait_for_deployment(
    client: &mut Client,
    app_guid: &str,
    name: &str,
    guid: &str,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + startup_timeout();
    let mut pace = Pace::up_to(Duration::from_millis(500));
    let mut shown = None;
    loop {
        let d: Deployment = client.get(&format!("/v3/deployments/{guid}")).await?;
        match (d.status.value.as_str(), d.status.reason.as_str()) {
            ("FINALIZED", "DEPLOYED") => return Ok(true),
            ("FINALIZED", reason) => bail!("Deployment of app {name} ended: {reason}"),
            ("ACTIVE", "PAUSED") => {
                println!(
                    "Canary deployment of app {name} is paused.\n\
                     TIP: Run 'kiln continue-deployment {name}' to continue, or \
                     'kiln cancel-deployment {name}' to go back.\n"
                );
                return Ok(false);
            }
            _ => {}
        }
        let progress = web_progress(client, app_guid).await?;
        if shown != Some(progress) {
            println!("   {} of {} new instances running", progress.0, progress.1);
            shown = Some(progress);
        }
        if Instant::now() > deadline {
            bail!(
                "Deployment of app {name} did not finish within {}s; it goes on.\n\n\
                 TIP: see why with 'kiln logs {name} --recent', or go back with \
                 'kiln cancel-deployment {name}'",
                startup_timeout().as_secs()
            );
        }
        pace.wait().await;
    }
}

/// (running, wanted) instances of the web process's newest version.
async fn web_progress(client: &mut Client, app_guid: &str) -> anyhow::Result<(usize, usize)> {
    let web: Process = client
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await?;
    let stats: ProcessStats = client
        .get(&format!("/v3/processes/{}/stats", web.guid))
        .await?;
    let running = stats
        .resources
        .iter()
        .filter(|i| i.state == "RUNNING")
        .count();
    Ok((running, web.instances as usize))
}

/// `restart NAME --strategy rolling`: the current droplet, deployed.
pub async fn restart(client: &mut Client, name: &str, args: &StrategyArgs) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!("Restarting app {name} {}...\n", whereabouts(client));
    deploy(client, &app.guid, name, None, args).await
}

/// The app's active deployment.
async fn active(client: &mut Client, name: &str) -> anyhow::Result<(String, Deployment)> {
    let app = require_app(client, name).await?;
    let list: Vec<Deployment> = client
        .list(&format!(
            "/v3/deployments?app_guids={}&status_values=ACTIVE",
            app.guid
        ))
        .await?;
    let d = list
        .into_iter()
        .last()
        .with_context(|| format!("App '{name}' has no active deployment."))?;
    Ok((app.guid, d))
}

/// `cancel-deployment NAME`: the previous droplet runs again.
pub async fn cancel(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let (_, d) = active(client, name).await?;
    println!(
        "Canceling deployment for app {name} {}...",
        whereabouts(client)
    );
    let path = format!("/v3/deployments/{}/actions/cancel", d.guid);
    client
        .call(Method::POST, &path, Body::Json(json!({})))
        .await?;
    println!("OK\n\nTIP: Run 'kiln app {name}' to view app status.");
    Ok(())
}

/// `continue-deployment NAME`: a paused canary goes on to the end.
pub async fn continue_(client: &mut Client, name: &str, no_wait: bool) -> anyhow::Result<()> {
    let (app_guid, d) = active(client, name).await?;
    println!(
        "Continuing deployment for app {name} {}...\n",
        whereabouts(client)
    );
    let path = format!("/v3/deployments/{}/actions/continue", d.guid);
    client
        .call(Method::POST, &path, Body::Json(json!({})))
        .await?;
    if !no_wait {
        println!("Waiting for app to deploy...\n");
        if wait_for_deployment(client, &app_guid, name, &d.guid).await? {
            wait_until_running(client, &app_guid, name).await?;
        }
    }
    print_summary(client, &app_guid).await
}
