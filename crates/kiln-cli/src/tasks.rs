//! `run-task`, `tasks`, `terminate-task` and `events`, with the cf CLI v7's
//! calls, wording and columns (`command/v7/run_task_command.go`,
//! `tasks_command.go`, `terminate_task_command.go`, `events_command.go`).

use crate::app::{require_app, whereabouts};
use crate::client::{Client, q};
use crate::summary::table;
use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Args, Debug, Clone)]
pub struct RunTaskArgs {
    /// The app's name
    pub name: String,
    /// The command to execute
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// Name to give the task (generated if omitted)
    #[arg(long = "name")]
    pub task_name: Option<String>,
    /// Memory limit (e.g. 256M, 1024M, 1G)
    #[arg(short = 'm', value_parser = crate::push::parse_megabytes)]
    pub memory: Option<u64>,
    /// Disk limit (e.g. 256M, 1024M, 1G)
    #[arg(short = 'k', value_parser = crate::push::parse_megabytes)]
    pub disk: Option<u64>,
    /// Process type to use as a template for command, memory, and disk
    #[arg(long)]
    pub process: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TerminateTaskArgs {
    /// The app's name
    pub name: String,
    /// The task's id (its sequence id, as `kiln tasks` shows it)
    pub task_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Task {
    guid: String,
    sequence_id: i64,
    name: String,
    state: String,
    command: Option<String>,
    created_at: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Actor {
    name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Event {
    created_at: String,
    #[serde(rename = "type")]
    kind: String,
    actor: Option<Actor>,
    data: Map<String, Value>,
}

/// `kiln run-task APP --command CMD [--name NAME] [-m MEM] [-k DISK]`.
pub async fn run_task(client: &mut Client, args: RunTaskArgs) -> anyhow::Result<()> {
    let app = require_app(client, &args.name).await?;
    let mut body = json!({});
    if let Some(c) = &args.command {
        body["command"] = json!(c);
    }
    if let Some(n) = &args.task_name {
        body["name"] = json!(n);
    }
    if let Some(m) = args.memory {
        body["memory_in_mb"] = json!(m);
    }
    if let Some(d) = args.disk {
        body["disk_in_mb"] = json!(d);
    }
    if let Some(ptype) = &args.process {
        let process: Value = client
            .get(&format!("/v3/apps/{}/processes/{}", app.guid, q(ptype)))
            .await
            .with_context(|| format!("Process '{ptype}' not found."))?;
        body["template"] = json!({"process": {"guid": process["guid"]}});
    } else if args.command.is_none() {
        bail!("Incorrect Usage: the required flag '-c, --command' was not specified");
    }
    println!(
        "Creating task for app {} {}...",
        args.name,
        whereabouts(client)
    );
    let task: Task = client
        .post(&format!("/v3/apps/{}/tasks", app.guid), body)
        .await?;
    println!("Task has been submitted successfully for execution.");
    println!("OK\n");
    print!(
        "{}",
        table(
            &["task name:", &task.name],
            &[vec!["task id:".into(), task.sequence_id.to_string()]],
            ""
        )
    );
    Ok(())
}

/// A task's creation time as the cf CLI shows it (Go's RFC 1123, UTC).
fn rfc1123(created_at: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(created_at, &Rfc3339) else {
        return created_at.to_string();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    let short = |long: String| long.chars().take(3).collect::<String>();
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} UTC",
        short(t.weekday().to_string()),
        t.day(),
        short(t.month().to_string()),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `kiln tasks APP`: newest first.
pub async fn tasks(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!("Getting tasks for app {name} {}...\n", whereabouts(client));
    let tasks: Vec<Task> = client
        .list(&format!("/v3/apps/{}/tasks?order_by=-created_at", app.guid))
        .await?;
    if tasks.is_empty() {
        println!("No tasks found for application.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.sequence_id.to_string(),
                t.name.clone(),
                t.state.clone(),
                rfc1123(&t.created_at),
                t.command
                    .clone()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "[hidden]".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["id", "name", "state", "start time", "command"], &rows, "")
    );
    Ok(())
}

/// `kiln terminate-task APP TASK_ID`.
pub async fn terminate(client: &mut Client, args: TerminateTaskArgs) -> anyhow::Result<()> {
    let Ok(id) = args.task_id.parse::<u64>() else {
        bail!("Incorrect Usage: Value for TASK_ID must be integer");
    };
    let app = require_app(client, &args.name).await?;
    let found: Vec<Task> = client
        .list(&format!("/v3/apps/{}/tasks?sequence_ids={id}", app.guid))
        .await?;
    let task = found
        .into_iter()
        .find(|t| t.sequence_id == id as i64)
        .with_context(|| format!("Task sequence ID {id} not found."))?;
    println!(
        "Terminating task {id} of app {} {}...",
        args.name,
        whereabouts(client)
    );
    let _: Value = client
        .post(
            &format!("/v3/tasks/{}/actions/cancel", task.guid),
            json!({}),
        )
        .await?;
    println!("OK");
    Ok(())
}

/// The metadata keys the cf CLI shows in an event's description, in its
/// order (`actor/v7action/event.go`).
const KNOWN_METADATA_KEYS: [&str; 13] = [
    "index",
    "reason",
    "cell_id",
    "instance",
    "exit_description",
    "exit_status",
    "recursive",
    "disk_quota",
    "instances",
    "memory",
    "state",
    "command",
    "environment_json",
];

/// An event's description: the known keys of its data (or of its
/// `request`), `key: value` joined by commas.
fn describe(data: &Map<String, Value>) -> String {
    let fields = match data.get("request") {
        Some(Value::Object(request)) => request,
        _ => data,
    };
    KNOWN_METADATA_KEYS
        .iter()
        .filter_map(|k| {
            let value = match fields.get(*k)? {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("{k}: {value}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An event's time as the cf CLI shows it (`2006-01-02T15:04:05.00-0700`).
fn event_time(created_at: &str) -> String {
    let Ok(t) = OffsetDateTime::parse(created_at, &Rfc3339) else {
        return created_at.to_string();
    };
    crate::logs::cf_time(t)
}

/// `kiln events APP`: the newest page of the app's audit events.
pub async fn events(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!("Getting events for app {name} {}...\n", whereabouts(client));
    let page: crate::resources::Page<Event> = client
        .get(&format!(
            "/v3/audit_events?target_guids={}&order_by=-created_at&page=1",
            app.guid
        ))
        .await?;
    if page.resources.is_empty() {
        println!("No events found.");
    }
    let rows: Vec<Vec<String>> = page
        .resources
        .iter()
        .map(|e| {
            vec![
                event_time(&e.created_at),
                e.kind.clone(),
                e.actor.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
                describe(&e.data),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["time", "event", "actor", "description"], &rows, "")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_follow_the_cf_clis_known_keys() {
        let crash = json!({"instance": "i-1", "index": 0, "cell_id": "c", "exit_status": 3,
                           "exit_description": "Exited with status 3", "reason": "CRASHED",
                           "crash_count": 1});
        assert_eq!(
            describe(crash.as_object().unwrap()),
            "index: 0, reason: CRASHED, cell_id: c, instance: i-1, exit_description: Exited with status 3, exit_status: 3"
        );
        let scale = json!({"process_type": "web", "request": {"instances": 2}});
        assert_eq!(describe(scale.as_object().unwrap()), "instances: 2");
        assert_eq!(describe(&Map::new()), "");
    }

    #[test]
    fn times_look_like_the_cf_clis() {
        assert_eq!(
            rfc1123("2026-11-29T12:30:05Z"),
            "Sun, 29 Nov 2026 12:30:05 UTC"
        );
        assert_eq!(
            event_time("2026-11-29T12:30:05Z"),
            "2026-11-29T12:30:05.00+0000"
        );
        assert_eq!(rfc1123("soon"), "soon");
    }
}
