//! The verbs that read or change an existing app (`apps`, `app`, `start`,
//! `stop`, `delete`, `logs`), and the start-up wait that `push` shares.

use crate::client::{ApiError, Body, Client, Pace, q};
use crate::logs::{self, Follower, format_line};
use crate::resources::{App, Process, ProcessStats, Route};
use crate::summary::{self, running_of, table};
use anyhow::{Context, bail};
use kiln_model::AppState;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

/// The default `KILN_STARTUP_TIMEOUT`: cf's 5 minutes.
const DEFAULT_STARTUP_TIMEOUT_SECS: u64 = 300;

/// `in org O / space S as U`, the tail of the cf CLI's progress lines.
pub fn whereabouts(client: &Client) -> String {
    let space = client.config.space.as_ref().map_or("", |s| s.name.as_str());
    format!(
        "in org {} / space {space} as {}",
        client.config.org_name(),
        client.config.user
    )
}

/// The app named `name` in the targeted space.
pub async fn find_app(client: &mut Client, name: &str) -> anyhow::Result<Option<App>> {
    let space = client.config.require_space()?.guid.clone();
    let apps: Vec<App> = client
        .list(&format!("/v3/apps?names={}&space_guids={space}", q(name)))
        .await?;
    // Filter here too: names are exact, whatever the server's filter does.
    Ok(apps.into_iter().find(|a| a.name == name))
}

pub async fn require_app(client: &mut Client, name: &str) -> anyhow::Result<App> {
    find_app(client, name)
        .await?
        .with_context(|| format!("App '{name}' not found."))
}

fn is_state(app: &App, state: AppState) -> bool {
    app.state.parse::<AppState>().ok() == Some(state)
}

pub async fn apps(client: &mut Client) -> anyhow::Result<()> {
    let space = client.config.require_space()?.clone();
    println!("Getting apps {}...\n", whereabouts(client));
    let apps: Vec<App> = client
        .list(&format!(
            "/v3/apps?space_guids={}&order_by=name",
            space.guid
        ))
        .await?;
    if apps.is_empty() {
        println!("No apps found");
        return Ok(());
    }
    let mut rows = Vec::new();
    for app in &apps {
        let mut processes = Vec::new();
        for process in client
            .list::<Process>(&format!("/v3/apps/{}/processes", app.guid))
            .await?
        {
            let stats: ProcessStats = client
                .get(&format!("/v3/processes/{}/stats", process.guid))
                .await?;
            processes.push(format!(
                "{}:{}",
                process.process_type,
                running_of(&stats.resources)
            ));
        }
        let routes: Vec<Route> = client
            .list(&format!("/v3/apps/{}/routes", app.guid))
            .await?;
        rows.push(vec![
            app.name.clone(),
            app.state.to_lowercase(),
            processes.join(", "),
            routes
                .into_iter()
                .map(|r| r.url)
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    print!(
        "{}",
        table(
            &["name", "requested state", "processes", "routes"],
            &rows,
            ""
        )
    );
    Ok(())
}

pub async fn app(client: &mut Client, name: &str) -> anyhow::Result<()> {
    println!(
        "Showing health and status for app {name} {}...\n",
        whereabouts(client)
    );
    let app = require_app(client, name).await?;
    print_summary(client, &app.guid).await
}

pub async fn print_summary(client: &mut Client, app_guid: &str) -> anyhow::Result<()> {
    let summary = summary::fetch(client, app_guid).await?;
    print!(
        "{}",
        summary::format_summary(&summary, time::OffsetDateTime::now_utc())
    );
    Ok(())
}

pub fn startup_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("KILN_STARTUP_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_STARTUP_TIMEOUT_SECS),
    )
}

/// Waits until every process that should run has an instance RUNNING;
/// all of a process's instances CRASHED is a failure, as is the start-up
/// timeout (`KILN_STARTUP_TIMEOUT` seconds, default 300).
pub async fn wait_until_running(
    client: &mut Client,
    app_guid: &str,
    name: &str,
) -> anyhow::Result<()> {
    println!("\nWaiting for app {name} to start...\n");
    let timeout = startup_timeout();
    let deadline = Instant::now() + timeout;
    let mut pace = Pace::up_to(Duration::from_millis(500));
    loop {
        let processes: Vec<Process> = client
            .list(&format!("/v3/apps/{app_guid}/processes"))
            .await?;
        let mut waiting = false;
        let mut held = false;
        for process in processes.iter().filter(|p| p.instances > 0) {
            // Held by Kiln while nothing runs, until an instance changes.
            let path = format!("/v3/processes/{}/stats", process.guid);
            let (stats, was_held): (ProcessStats, bool) = client.get_waiting(&path, 1).await?;
            held |= was_held;
            let instances = &stats.resources;
            if instances.iter().any(|i| i.state == "RUNNING") {
                continue;
            }
            if !instances.is_empty() && instances.iter().all(|i| i.state == "CRASHED") {
                let why = instances
                    .iter()
                    .find_map(|i| i.details.clone().filter(|d| !d.is_empty()))
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                bail!(
                    "All instances crashed{why}\n\nTIP: see why with 'kiln logs {name} --recent'"
                );
            }
            waiting = true;
        }
        if !waiting {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "Start app timeout: no instance of {name} was running after {}s\n\n\
                 TIP: the app must listen on the port in $PORT; see 'kiln logs {name} --recent'",
                timeout.as_secs()
            );
        }
        if !held {
            pace.wait().await;
        }
    }
}

pub async fn start(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    if is_state(&app, AppState::Started) {
        println!("App '{name}' is already started.\nOK");
        return Ok(());
    }
    println!("Starting app {name} {}...", whereabouts(client));
    let _: App = client
        .post(&format!("/v3/apps/{}/actions/start", app.guid), json!({}))
        .await?;
    wait_until_running(client, &app.guid, name).await?;
    print_summary(client, &app.guid).await
}

pub async fn stop(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    if is_state(&app, AppState::Stopped) {
        println!("App '{name}' is already stopped.\nOK");
        return Ok(());
    }
    println!("Stopping app {name} {}...", whereabouts(client));
    let _: App = client
        .post(&format!("/v3/apps/{}/actions/stop", app.guid), json!({}))
        .await?;
    println!("OK");
    Ok(())
}

/// Asks on a terminal; without one (scripts, tests) there is nobody to ask.
pub fn confirmed(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return true;
    }
    print!("{question} [yN]: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn delete(
    client: &mut Client,
    name: &str,
    force: bool,
    delete_routes: bool,
) -> anyhow::Result<()> {
    client.config.require_space()?;
    if !force && !confirmed(&format!("Really delete the app {name}?")) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!("Deleting app {name} {}...", whereabouts(client));
    let Some(app) = find_app(client, name).await? else {
        println!("App '{name}' does not exist.\nOK");
        return Ok(());
    };
    // The mapped routes are read before the app (and its mappings) go.
    let routes = if delete_routes {
        crate::routes::of_app(client, &app.guid).await?
    } else {
        Vec::new()
    };
    let path = format!("/v3/apps/{}", app.guid);
    match client.call(Method::DELETE, &path, Body::Empty).await {
        Ok(reply) => {
            if let Some(job) = reply.location() {
                client.wait_for_job(&job).await?;
            }
        }
        Err(error) => {
            let Some(api) = error.downcast_ref::<ApiError>() else {
                return Err(error);
            };
            match (api.status, api.detail()) {
                // Deleted meanwhile: what was asked for is done.
                (StatusCode::NOT_FOUND, Some("App not found")) => {}
                (StatusCode::NOT_FOUND, _)
                | (StatusCode::METHOD_NOT_ALLOWED, _)
                | (StatusCode::NOT_IMPLEMENTED, _) => bail!(
                    "this API does not support deleting apps yet: DELETE {path} answered HTTP {}",
                    api.status.as_u16()
                ),
                _ => return Err(error),
            }
        }
    }
    for route in &routes {
        println!("Deleting route {}...", route.url);
        crate::routes::delete_by_guid(client, route).await?;
    }
    println!("OK");
    Ok(())
}

/// `restart`: stop and start with the current droplet, as one API call.
pub async fn restart(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!("Restarting app {name} {}...", whereabouts(client));
    let _: App = client
        .post(&format!("/v3/apps/{}/actions/restart", app.guid), json!({}))
        .await?;
    wait_until_running(client, &app.guid, name).await?;
    print_summary(client, &app.guid).await
}

/// `scale`: instances change in place; memory or disk need a restart,
/// which is asked for unless `force`.
pub async fn scale(
    client: &mut Client,
    name: &str,
    instances: Option<u32>,
    memory_mb: Option<u64>,
    disk_mb: Option<u64>,
    force: bool,
) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    if instances.is_none() && memory_mb.is_none() && disk_mb.is_none() {
        return print_summary(client, &app.guid).await;
    }
    let restarts = memory_mb.is_some() || disk_mb.is_some();
    if restarts
        && !force
        && !confirmed("This will cause the app to restart. Are you sure you want to scale?")
    {
        println!("Scaling cancelled");
        return Ok(());
    }
    println!("Scaling app {name} {}...", whereabouts(client));
    let mut body = serde_json::Map::new();
    if let Some(i) = instances {
        body.insert("instances".into(), i.into());
    }
    if let Some(m) = memory_mb {
        body.insert("memory_in_mb".into(), m.into());
    }
    if let Some(d) = disk_mb {
        body.insert("disk_in_mb".into(), d.into());
    }
    let _: serde_json::Value = client
        .post(
            &format!("/v3/apps/{}/processes/web/actions/scale", app.guid),
            serde_json::Value::Object(body),
        )
        .await?;
    if restarts && is_state(&app, AppState::Started) {
        println!("Stopping app...\nStarting app...");
        let _: App = client
            .post(&format!("/v3/apps/{}/actions/restart", app.guid), json!({}))
            .await?;
        wait_until_running(client, &app.guid, name).await?;
    }
    print_summary(client, &app.guid).await
}

pub async fn rename(client: &mut Client, name: &str, new_name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!(
        "Renaming app {name} to {new_name} {}...",
        whereabouts(client)
    );
    let _: App = client
        .patch(&format!("/v3/apps/{}", app.guid), json!({"name": new_name}))
        .await?;
    println!("OK");
    Ok(())
}

pub async fn show_logs(client: &mut Client, name: &str, recent: bool) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!(
        "Retrieving logs for app {name} {}...\n",
        whereabouts(client)
    );
    let mut lines = logs::recent(client, &app.guid).await?;
    // Where the follower starts when none is printed here.
    let mut next_start = lines.first().map_or(0, |l| l.timestamp);
    if !recent {
        // Those that have not settled come from the follower, with any
        // that arrive late among them.
        let settled = logs::settled_before();
        lines.retain(|l| l.timestamp < settled);
    }
    if let Some(last) = lines.last() {
        next_start = last.timestamp + 1;
    }
    for line in lines {
        println!("{}", format_line(&line));
    }
    if recent {
        return Ok(());
    }
    // Subscribed once, before the loop, so an interrupt that arrives while a
    // read is in flight is not lost.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    // Everything after what was just printed.
    let mut follower = Follower::starting_at(&app.guid, next_start);
    let mut failures = 0;
    loop {
        let polled = tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            polled = follower.poll(client) => polled,
        };
        match polled {
            Ok(lines) => {
                failures = 0;
                for line in lines {
                    println!("{}", format_line(&line));
                }
            }
            // A restarting server is not the end of a tail; five in a row is.
            Err(error) if failures < 5 => {
                failures += 1;
                eprintln!("reading logs failed ({error:#}); retrying");
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
