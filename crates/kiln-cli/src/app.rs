//! App verbs that read or change a running app: `apps`, `app`, `start`,
//! `stop`, `delete`, `logs`, and the summary and start-up wait that `push`
//! shares with them.

use crate::client::{Client, q};
use crate::logs::{Follower, format_line};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Left-aligned columns, like the cf CLI's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        format!("{}\n", padded.join("   ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The app named `name` in the targeted space.
pub async fn find_app(client: &mut Client, name: &str) -> anyhow::Result<Option<Value>> {
    let space = client.config.require_space()?.guid.clone();
    let apps = client
        .list(&format!("/v3/apps?names={}&space_guids={space}", q(name)))
        .await?;
    Ok(apps.into_iter().next())
}

pub async fn require_app(client: &mut Client, name: &str) -> anyhow::Result<Value> {
    find_app(client, name)
        .await?
        .with_context(|| format!("App '{name}' not found."))
}

pub async fn apps() -> anyhow::Result<()> {
    let mut client = crate::client()?;
    let space = client.config.require_space()?.clone();
    println!(
        "Getting apps in org {} / space {} as {}...\n",
        client.config.org.as_ref().map_or("", |o| &o.name),
        space.name,
        client.config.user
    );
    let apps = client
        .list(&format!(
            "/v3/apps?space_guids={}&order_by=name",
            space.guid
        ))
        .await?;
    let mut rows = Vec::new();
    for app in &apps {
        let guid = app["guid"].as_str().unwrap_or_default();
        let mut processes = Vec::new();
        for process in client.list(&format!("/v3/apps/{guid}/processes")).await? {
            let stats = client
                .get(&format!(
                    "/v3/processes/{}/stats",
                    process["guid"].as_str().unwrap_or_default()
                ))
                .await?;
            let (running, total) = count_running(&stats);
            processes.push(format!(
                "{}:{running}/{total}",
                process["type"].as_str().unwrap_or("web")
            ));
        }
        let routes = route_urls(&mut client, guid).await?;
        rows.push(vec![
            app["name"].as_str().unwrap_or_default().to_string(),
            app["state"].as_str().unwrap_or_default().to_lowercase(),
            processes.join(", "),
            routes.join(", "),
        ]);
    }
    print!(
        "{}",
        table(&["name", "requested state", "processes", "routes"], &rows)
    );
    Ok(())
}

fn count_running(stats: &Value) -> (usize, usize) {
    let instances = stats["resources"].as_array().cloned().unwrap_or_default();
    let running = instances.iter().filter(|i| i["state"] == "RUNNING").count();
    (running, instances.len())
}

pub async fn route_urls(client: &mut Client, app_guid: &str) -> anyhow::Result<Vec<String>> {
    let routes = client.list(&format!("/v3/apps/{app_guid}/routes")).await?;
    Ok(routes
        .iter()
        .filter_map(|r| r["url"].as_str().map(str::to_string))
        .collect())
}

pub async fn app(name: &str) -> anyhow::Result<()> {
    let mut client = crate::client()?;
    let app = require_app(&mut client, name).await?;
    print!("{}", summary(&mut client, &app).await?);
    Ok(())
}

/// The cf-like summary of an app: its state, routes, droplet and instances.
pub async fn summary(client: &mut Client, app: &Value) -> anyhow::Result<String> {
    let guid = app["guid"].as_str().unwrap_or_default().to_string();
    let app = client.get(&format!("/v3/apps/{guid}")).await?;
    let routes = route_urls(client, &guid).await?;
    let droplet = client
        .get(&format!("/v3/apps/{guid}/droplets/current"))
        .await
        .ok();
    let buildpacks = droplet
        .as_ref()
        .and_then(|d| d["buildpacks"].as_array())
        .map(|b| {
            b.iter()
                .filter_map(|b| b["name"].as_str().or(b["buildpack_name"].as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut out = String::new();
    let field =
        |out: &mut String, k: &str, v: &str| out.push_str(&format!("{:<18}{v}\n", format!("{k}:")));
    field(&mut out, "name", app["name"].as_str().unwrap_or_default());
    field(
        &mut out,
        "requested state",
        &app["state"].as_str().unwrap_or_default().to_lowercase(),
    );
    field(&mut out, "routes", &routes.join(", "));
    field(
        &mut out,
        "last uploaded",
        droplet
            .as_ref()
            .and_then(|d| d["created_at"].as_str())
            .unwrap_or(""),
    );
    field(
        &mut out,
        "stack",
        droplet
            .as_ref()
            .and_then(|d| d["stack"].as_str())
            .unwrap_or(""),
    );
    field(&mut out, "buildpacks", &buildpacks);
    for process in client.list(&format!("/v3/apps/{guid}/processes")).await? {
        let pguid = process["guid"].as_str().unwrap_or_default();
        let stats = client.get(&format!("/v3/processes/{pguid}/stats")).await?;
        let (running, total) = count_running(&stats);
        let command = process["command"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                let t = process["type"].as_str()?;
                droplet.as_ref()?["process_types"][t]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        out.push('\n');
        field(&mut out, "type", process["type"].as_str().unwrap_or("web"));
        field(&mut out, "instances", &format!("{running}/{total}"));
        field(
            &mut out,
            "memory usage",
            &format!("{}M", process["memory_in_mb"].as_u64().unwrap_or(0)),
        );
        field(&mut out, "start command", &command);
        let rows: Vec<Vec<String>> = stats["resources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|i| {
                let uptime = i["uptime"].as_u64().unwrap_or(0);
                vec![
                    format!("#{}", i["index"].as_u64().unwrap_or(0)),
                    i["state"].as_str().unwrap_or_default().to_lowercase(),
                    if i["state"] == "RUNNING" {
                        format!("{uptime}s ago")
                    } else {
                        String::new()
                    },
                    format!("{:.1}%", i["usage"]["cpu"].as_f64().unwrap_or(0.0) * 100.0),
                    format!(
                        "{}M of {}M",
                        i["usage"]["mem"].as_u64().unwrap_or(0) >> 20,
                        i["mem_quota"].as_u64().unwrap_or(0) >> 20
                    ),
                    format!(
                        "{}M of {}M",
                        i["usage"]["disk"].as_u64().unwrap_or(0) >> 20,
                        i["disk_quota"].as_u64().unwrap_or(0) >> 20
                    ),
                    i["details"].as_str().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push('\n');
            out.push_str(&table(
                &["", "state", "since", "cpu", "memory", "disk", "details"],
                &rows,
            ));
        }
    }
    Ok(out)
}

/// Waits until every process with instances has one RUNNING; all CRASHED
/// is a failure. `KILN_STARTUP_TIMEOUT` seconds at most (default 300).
pub async fn wait_until_running(client: &mut Client, app: &Value) -> anyhow::Result<()> {
    let guid = app["guid"].as_str().unwrap_or_default();
    let name = app["name"].as_str().unwrap_or_default();
    println!("\nWaiting for app {name} to start...\n");
    let timeout = std::env::var("KILN_STARTUP_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let processes = client.list(&format!("/v3/apps/{guid}/processes")).await?;
    for process in processes {
        let pguid = process["guid"].as_str().unwrap_or_default();
        loop {
            let stats = client.get(&format!("/v3/processes/{pguid}/stats")).await?;
            let instances = stats["resources"].as_array().cloned().unwrap_or_default();
            if instances.is_empty() || instances.iter().any(|i| i["state"] == "RUNNING") {
                break;
            }
            if instances.iter().all(|i| i["state"] == "CRASHED") {
                let why = instances[0]["details"].as_str().unwrap_or("");
                bail!(
                    "All instances crashed. {why}\nTIP: use 'kiln logs {name} --recent' for more information"
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "Start app timeout after {timeout}s\nTIP: use 'kiln logs {name} --recent' for more information"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

pub async fn start(name: &str) -> anyhow::Result<()> {
    let mut client = crate::client()?;
    let app = require_app(&mut client, name).await?;
    if app["state"] == "STARTED" {
        println!("App '{name}' is already started.\nOK");
        return Ok(());
    }
    println!("Starting app {name}...");
    let guid = app["guid"].as_str().unwrap_or_default();
    let app = client
        .post(&format!("/v3/apps/{guid}/actions/start"), &json!({}))
        .await?;
    wait_until_running(&mut client, &app).await?;
    print!("{}", summary(&mut client, &app).await?);
    Ok(())
}

pub async fn stop(name: &str) -> anyhow::Result<()> {
    let mut client = crate::client()?;
    let app = require_app(&mut client, name).await?;
    println!("Stopping app {name}...");
    let guid = app["guid"].as_str().unwrap_or_default();
    client
        .post(&format!("/v3/apps/{guid}/actions/stop"), &json!({}))
        .await?;
    println!("OK");
    Ok(())
}

pub async fn delete(name: &str) -> anyhow::Result<()> {
    let mut client = crate::client()?;
    println!("Deleting app {name}...");
    let Some(app) = find_app(&mut client, name).await? else {
        println!("App '{name}' does not exist.\nOK");
        return Ok(());
    };
    let guid = app["guid"].as_str().unwrap_or_default();
    let (_, location) = client
        .request(reqwest::Method::DELETE, &format!("/v3/apps/{guid}"), None)
        .await?;
    if let Some(job) = location {
        client.wait_for_job(&job).await?;
    }
    println!("OK");
    Ok(())
}

pub async fn logs(name: &str, recent: bool) -> anyhow::Result<()> {
    let mut client = crate::client()?;
    let app = require_app(&mut client, name).await?;
    let guid = app["guid"].as_str().unwrap_or_default();
    println!("Retrieving logs for app {name}...\n");
    let mut follower = Follower::new(guid, 0);
    loop {
        for line in follower.poll(&mut client).await? {
            println!("{}", format_line(&line));
        }
        if recent {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["name", "state"],
            &[
                vec!["hello".into(), "started".into()],
                vec!["a".into(), "".into()],
            ],
        );
        assert_eq!(out, "name    state\nhello   started\na\n");
    }
}
