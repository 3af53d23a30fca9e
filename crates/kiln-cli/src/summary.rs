//! The app summary that `kiln app`, `kiln push` and `kiln start` print:
//! fetched with the calls the cf CLI makes for its summary, and formatted
//! by a pure function so its layout is tested without a server.

use crate::client::{ApiError, Client};
use crate::resources::{App, Droplet, InstanceStats, Process, ProcessStats, Route};
use reqwest::StatusCode;
use time::OffsetDateTime;

/// Everything the summary shows about one app.
#[derive(Debug, Clone, Default)]
pub struct AppSummary {
    pub app: App,
    pub routes: Vec<String>,
    pub droplet: Option<Droplet>,
    pub processes: Vec<(Process, Vec<InstanceStats>)>,
}

/// `GET /v3/apps/:guid`, its routes, its current droplet (none is fine),
/// and each process with its instance stats.
pub async fn fetch(client: &mut Client, app_guid: &str) -> anyhow::Result<AppSummary> {
    // The reads do not depend on each other: side by side they cost the
    // slowest one, not their sum (a push prints this after its instance
    // runs, so the user waits for it).
    client.ensure_fresh_token().await?;
    let (mut for_app, mut for_routes) = (client.fork(), client.fork());
    let (mut for_droplet, mut for_processes) = (client.fork(), client.fork());
    let (app_path, routes_path) = (
        format!("/v3/apps/{app_guid}"),
        format!("/v3/apps/{app_guid}/routes"),
    );
    let (app, routes, droplet, processes) = tokio::try_join!(
        for_app.get::<App>(&app_path),
        for_routes.list::<Route>(&routes_path),
        current_droplet(&mut for_droplet, app_guid),
        processes_with_stats(&mut for_processes, app_guid),
    )?;
    Ok(AppSummary {
        app,
        routes: routes.into_iter().map(|r| r.url).collect(),
        droplet,
        processes,
    })
}

/// The app's current droplet; `None` when it has none.
async fn current_droplet(client: &mut Client, app_guid: &str) -> anyhow::Result<Option<Droplet>> {
    match client
        .get::<Droplet>(&format!("/v3/apps/{app_guid}/droplets/current"))
        .await
    {
        Ok(droplet) => Ok(Some(droplet)),
        Err(error)
            if error
                .downcast_ref::<ApiError>()
                .is_some_and(|e| e.status == StatusCode::NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Each of the app's processes with its instance stats.
async fn processes_with_stats(
    client: &mut Client,
    app_guid: &str,
) -> anyhow::Result<Vec<(Process, Vec<InstanceStats>)>> {
    let mut processes = Vec::new();
    for process in client
        .list::<Process>(&format!("/v3/apps/{app_guid}/processes"))
        .await?
    {
        let stats: ProcessStats = client
            .get(&format!("/v3/processes/{}/stats", process.guid))
            .await?;
        processes.push((process, stats.resources));
    }
    Ok(processes)
}

/// Left-aligned columns three spaces apart, like the cf CLI's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        format!("{indent}{}\n", padded.join("   ").trim_end())
    };
    let mut out = line(headers);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    out
}

/// Bytes as the cf CLI shows them: `256M`, `1G`, `21.4M`, `512K`, `0`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            let text = format!("{value:.1}");
            let text = text.strip_suffix(".0").unwrap_or(&text);
            return format!("{text}{unit}");
        }
    }
    if bytes == 0 {
        "0".to_string()
    } else {
        format!("{bytes}B")
    }
}

/// Instances running and in total, as `cf apps` shows them (`1/1`).
pub fn running_of(stats: &[InstanceStats]) -> String {
    let running = stats.iter().filter(|i| i.state == "RUNNING").count();
    format!("{running}/{}", stats.len())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `Tue 25 Nov 07:45:00 UTC 2025` from an RFC 3339 timestamp.
fn uploaded_at(created_at: &str) -> String {
    let format = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short] [day] [month repr:short] [hour]:[minute]:[second] UTC [year]",
    );
    OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .ok()
        .zip(format.ok())
        .and_then(|(t, format)| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| created_at.to_string())
}

/// The summary's text; `now` places each instance's `since`.
pub fn format_summary(summary: &AppSummary, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let field = |out: &mut String, width: usize, key: &str, value: &str| {
        let line = format!("{:<width$}{value}", format!("{key}:"));
        out.push_str(line.trim_end());
        out.push('\n');
    };
    let droplet = summary.droplet.as_ref();
    field(&mut out, 19, "name", &summary.app.name);
    field(
        &mut out,
        19,
        "requested state",
        &summary.app.state.to_lowercase(),
    );
    field(&mut out, 19, "routes", &summary.routes.join(", "));
    field(
        &mut out,
        19,
        "last uploaded",
        &droplet.map_or(String::new(), |d| uploaded_at(&d.created_at)),
    );
    field(
        &mut out,
        19,
        "stack",
        droplet.and_then(|d| d.stack.as_deref()).unwrap_or(""),
    );
    field(&mut out, 19, "buildpacks", "");
    let buildpacks = droplet.and_then(|d| d.buildpacks.as_ref());
    if let Some(buildpacks) = buildpacks.filter(|b| !b.is_empty()) {
        let rows: Vec<Vec<String>> = buildpacks
            .iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    b.version.clone().unwrap_or_default(),
                    b.detect_output.clone().unwrap_or_default(),
                    b.buildpack_name.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["name", "version", "detect output", "buildpack name"],
            &rows,
            "\t",
        ));
    }
    for (process, stats) in &summary.processes {
        let command = process
            .command
            .clone()
            .or_else(|| {
                droplet?
                    .process_types
                    .as_ref()?
                    .get(&process.process_type)
                    .cloned()
            })
            .unwrap_or_default();
        out.push('\n');
        field(&mut out, 16, "type", &process.process_type);
        field(&mut out, 16, "sidecars", "");
        field(&mut out, 16, "instances", &running_of(stats));
        field(
            &mut out,
            16,
            "memory usage",
            &format!("{}M", process.memory_in_mb),
        );
        field(&mut out, 16, "start command", &command);
        if stats.is_empty() {
            out.push_str("There are no running instances of this process.\n");
            continue;
        }
        let rows: Vec<Vec<String>> = stats
            .iter()
            .map(|i| {
                let since = if i.state == "RUNNING" || i.uptime > 0 {
                    rfc3339(now - time::Duration::seconds(i.uptime as i64))
                } else {
                    String::new()
                };
                let of = |used: u64, quota: Option<u64>| match quota {
                    Some(quota) => format!("{} of {}", human_bytes(used), human_bytes(quota)),
                    None => String::new(),
                };
                vec![
                    format!("#{}", i.index),
                    i.state.to_lowercase(),
                    since,
                    format!("{:.1}%", i.usage.cpu * 100.0),
                    of(i.usage.mem, i.mem_quota),
                    of(i.usage.disk, i.disk_quota),
                    i.details.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["", "state", "since", "cpu", "memory", "disk", "details"],
            &rows,
            "",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DropletBuildpack, Usage};

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["name", "state"],
            &[
                vec!["hello".into(), "started".into()],
                vec!["a".into(), "".into()],
            ],
            "",
        );
        assert_eq!(out, "name    state\nhello   started\na\n");
    }

    #[test]
    fn bytes_read_like_the_cf_cli() {
        assert_eq!(human_bytes(256 << 20), "256M");
        assert_eq!(human_bytes(1 << 30), "1G");
        assert_eq!(human_bytes(22_439_526), "21.4M");
        assert_eq!(human_bytes(512 << 10), "512K");
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(17), "17B");
    }

    #[test]
    fn formats_the_app_summary() {
        let summary = AppSummary {
            app: App {
                guid: "a".into(),
                name: "hello".into(),
                state: "STARTED".into(),
            },
            routes: vec!["hello.localhost".into()],
            droplet: Some(Droplet {
                created_at: "2026-11-25T07:45:00Z".into(),
                stack: Some("debian12-host".into()),
                buildpacks: Some(vec![DropletBuildpack {
                    name: "python".into(),
                    buildpack_name: Some("python".into()),
                    detect_output: Some("python".into()),
                    version: Some("1.0.0".into()),
                }]),
                process_types: Some([("web".to_string(), "python app.py".to_string())].into()),
                ..Droplet::default()
            }),
            processes: vec![(
                Process {
                    guid: "w".into(),
                    process_type: "web".into(),
                    command: None,
                    instances: 2,
                    memory_in_mb: 256,
                    disk_in_mb: 1024,
                },
                vec![
                    InstanceStats {
                        index: 0,
                        state: "RUNNING".into(),
                        uptime: 60,
                        mem_quota: Some(256 << 20),
                        disk_quota: Some(1 << 30),
                        details: None,
                        usage: Usage {
                            cpu: 0.0123,
                            mem: 22_439_526,
                            disk: 8 << 20,
                        },
                    },
                    InstanceStats {
                        index: 1,
                        state: "CRASHED".into(),
                        details: Some("Exited with status 1".into()),
                        ..InstanceStats::default()
                    },
                ],
            )],
        };
        let now = OffsetDateTime::parse(
            "2026-11-25T08:00:00.5Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let expected = "\
name:              hello
requested state:   started
routes:            hello.localhost
last uploaded:     Wed 25 Nov 07:45:00 UTC 2026
stack:             debian12-host
buildpacks:
\tname     version   detect output   buildpack name
\tpython   1.0.0     python          python

type:           web
sidecars:
instances:      1/2
memory usage:   256M
start command:  python app.py
     state     since                  cpu    memory          disk       details
#0   running   2026-11-25T07:59:00Z   1.2%   21.4M of 256M   8M of 1G
#1   crashed                          0.0%                              Exited with status 1
";
        assert_eq!(format_summary(&summary, now), expected);
    }
}
