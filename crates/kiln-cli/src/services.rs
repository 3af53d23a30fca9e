//! `create-user-provided-service` (`cups`), `update-user-provided-service`
//! (`uups`), `services`, `service`, `bind-service`, `unbind-service` and
//! `delete-service`, with the cf CLI's names, flags and output, through
//! `/v3/service_instances` and `/v3/service_credential_bindings`.

use crate::app::{confirmed, require_app, whereabouts};
use crate::client::{Body, Client, q};
use crate::summary::table;
use anyhow::Context;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::io::BufRead;

#[derive(clap::Args, Debug, Clone)]
pub struct UserProvidedArgs {
    /// The service instance's name
    pub name: String,
    /// Credentials: inline JSON, a path to a JSON file, or comma-separated
    /// names to be prompted for
    #[arg(short = 'p')]
    pub credentials: Option<String>,
    /// URL to which logs for bound applications will be streamed
    #[arg(short = 'l')]
    pub syslog_drain_url: Option<String>,
    /// URL to which requests for bound routes will be forwarded (https)
    #[arg(short = 'r')]
    pub route_service_url: Option<String>,
    /// User-provided tags, comma-separated
    #[arg(short = 't')]
    pub tags: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    /// The service instance's name
    pub name: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BindArgs {
    /// The app's name
    pub app: String,
    /// The service instance's name
    pub service: String,
    /// Name to expose the service instance to the app process with
    #[arg(long = "binding-name")]
    pub binding_name: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UnbindArgs {
    pub app: String,
    pub service: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteServiceArgs {
    pub name: String,
    /// Do not ask for confirmation
    #[arg(short = 'f')]
    pub force: bool,
}

#[derive(Debug, Deserialize)]
struct Instance {
    guid: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    syslog_drain_url: Option<String>,
    #[serde(default)]
    route_service_url: Option<String>,
    #[serde(default)]
    last_operation: Value,
}

#[derive(Debug, Deserialize)]
struct Binding {
    guid: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    last_operation: Value,
    relationships: Value,
}

/// `-p`: a JSON object inline or in a file, or names to prompt for (cf's
/// three forms).
fn credentials(arg: &str) -> anyhow::Result<Map<String, Value>> {
    let text = match std::fs::read_to_string(arg) {
        Ok(file) => file,
        Err(_) => arg.to_string(),
    };
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => anyhow::bail!(
                "Invalid configuration provided for -p flag. Please provide a valid JSON object or path to a file containing a valid JSON object."
            ),
        };
    }
    let mut out = Map::new();
    let stdin = std::io::stdin();
    for key in arg.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        eprint!("{key}: ");
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        out.insert(key.to_string(), json!(line.trim_end_matches(['\r', '\n'])));
    }
    Ok(out)
}

fn tags(arg: &str) -> Vec<String> {
    arg.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The request fields the flags give.
fn fields(args: &UserProvidedArgs) -> anyhow::Result<Map<String, Value>> {
    let mut body = Map::new();
    if let Some(p) = &args.credentials {
        body.insert("credentials".into(), Value::Object(credentials(p)?));
    }
    if let Some(l) = &args.syslog_drain_url {
        body.insert("syslog_drain_url".into(), json!(l));
    }
    if let Some(r) = &args.route_service_url {
        body.insert("route_service_url".into(), json!(r));
    }
    if let Some(t) = &args.tags {
        body.insert("tags".into(), json!(tags(t)));
    }
    Ok(body)
}

async fn find_instance(client: &mut Client, name: &str) -> anyhow::Result<Option<Instance>> {
    let space = client.config.require_space()?.guid.clone();
    let found: Vec<Instance> = client
        .list(&format!(
            "/v3/service_instances?names={}&space_guids={space}",
            q(name)
        ))
        .await?;
    Ok(found.into_iter().find(|i| i.name == name))
}

async fn require_instance(client: &mut Client, name: &str) -> anyhow::Result<Instance> {
    find_instance(client, name)
        .await?
        .with_context(|| format!("Service instance '{name}' not found"))
}

pub async fn create(client: &mut Client, args: UserProvidedArgs) -> anyhow::Result<()> {
    let space = client.config.require_space()?.guid.clone();
    println!(
        "Creating user provided service {} {}...",
        args.name,
        whereabouts(client)
    );
    let mut body = fields(&args)?;
    body.insert("type".into(), json!("user-provided"));
    body.insert("name".into(), json!(args.name));
    body.insert(
        "relationships".into(),
        json!({"space": {"data": {"guid": space}}}),
    );
    let _: Value = client
        .post("/v3/service_instances", Value::Object(body))
        .await?;
    println!("OK");
    Ok(())
}

pub async fn update(client: &mut Client, args: UserProvidedArgs) -> anyhow::Result<()> {
    println!(
        "Updating user provided service {} {}...",
        args.name,
        whereabouts(client)
    );
    let instance = require_instance(client, &args.name).await?;
    let body = fields(&args)?;
    if body.is_empty() {
        println!("No flags specified. No changes were made.\nOK");
        return Ok(());
    }
    let _: Value = client
        .patch(
            &format!("/v3/service_instances/{}", instance.guid),
            Value::Object(body),
        )
        .await?;
    println!(
        "OK\n\nTIP: Use 'kiln restage' for any bound apps to ensure your env variable changes take effect"
    );
    Ok(())
}

fn operation(v: &Value) -> String {
    match (v["type"].as_str(), v["state"].as_str()) {
        (Some(t), Some(s)) => format!("{t} {s}"),
        _ => String::new(),
    }
}

/// The names of the apps bound to `instance`.
async fn bound_apps(client: &mut Client, instance: &str) -> anyhow::Result<Vec<(Binding, String)>> {
    let bindings: Vec<Binding> = client
        .list(&format!(
            "/v3/service_credential_bindings?service_instance_guids={instance}&type=app"
        ))
        .await?;
    let mut out = Vec::new();
    for b in bindings {
        let app_guid = b.relationships["app"]["data"]["guid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let app: Value = client.get(&format!("/v3/apps/{app_guid}")).await?;
        let name = app["name"].as_str().unwrap_or_default().to_string();
        out.push((b, name));
    }
    Ok(out)
}

pub async fn list(client: &mut Client) -> anyhow::Result<()> {
    let space = client.config.require_space()?.guid.clone();
    println!("Getting service instances {}...\n", whereabouts(client));
    let instances: Vec<Instance> = client
        .list(&format!(
            "/v3/service_instances?space_guids={space}&order_by=name"
        ))
        .await?;
    if instances.is_empty() {
        println!("No service instances found.");
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in &instances {
        let apps: Vec<String> = bound_apps(client, &i.guid)
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        let offering = if i.kind == "user-provided" {
            "user-provided"
        } else {
            ""
        };
        rows.push(vec![
            i.name.clone(),
            offering.to_string(),
            String::new(),
            apps.join(", "),
            operation(&i.last_operation),
            String::new(),
            String::new(),
        ]);
    }
    print!(
        "{}",
        table(
            &[
                "name",
                "offering",
                "plan",
                "bound apps",
                "last operation",
                "broker",
                "upgrade available"
            ],
            &rows,
            ""
        )
    );
    Ok(())
}

pub async fn show(client: &mut Client, name: &str) -> anyhow::Result<()> {
    println!(
        "Showing info of service {name} {}...\n",
        whereabouts(client)
    );
    let i = require_instance(client, name).await?;
    let rows = [
        ("name:", i.name.clone()),
        ("guid:", i.guid.clone()),
        ("type:", i.kind.clone()),
        ("tags:", i.tags.join(", ")),
        (
            "route service url:",
            i.route_service_url.clone().unwrap_or_default(),
        ),
        (
            "syslog drain url:",
            i.syslog_drain_url.clone().unwrap_or_default(),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<19}{v}");
    }
    println!();
    let bound = bound_apps(client, &i.guid).await?;
    if bound.is_empty() {
        println!("There are no bound apps for this service instance.");
        return Ok(());
    }
    println!("Showing bound apps:");
    let rows: Vec<Vec<String>> = bound
        .iter()
        .map(|(b, app)| {
            vec![
                app.clone(),
                b.name.clone().unwrap_or_default(),
                operation(&b.last_operation),
                String::new(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["name", "binding name", "status", "message"], &rows, "   ")
    );
    Ok(())
}

pub async fn bind(client: &mut Client, args: BindArgs) -> anyhow::Result<()> {
    println!(
        "Binding service instance {} to app {} {}...",
        args.service,
        args.app,
        whereabouts(client)
    );
    let app = require_app(client, &args.app).await?;
    let instance = require_instance(client, &args.service).await?;
    let mut body = json!({"type": "app", "relationships": {
        "app": {"data": {"guid": app.guid}},
        "service_instance": {"data": {"guid": instance.guid}},
    }});
    if let Some(n) = &args.binding_name {
        body["name"] = json!(n);
    }
    let reply = client
        .call(
            Method::POST,
            "/v3/service_credential_bindings",
            Body::Json(body),
        )
        .await;
    if let Err(e) = reply {
        let already = e
            .downcast_ref::<crate::client::ApiError>()
            .and_then(|a| a.detail())
            .is_some_and(|d| d.contains("already bound"));
        if !already {
            return Err(e);
        }
        println!(
            "App {} is already bound to service instance {}.",
            args.app, args.service
        );
    }
    println!(
        "OK\n\nTIP: Use 'kiln restage {}' to ensure your env variable changes take effect",
        args.app
    );
    Ok(())
}

pub async fn unbind(client: &mut Client, args: UnbindArgs) -> anyhow::Result<()> {
    println!(
        "Unbinding app {} from service {} {}...",
        args.app,
        args.service,
        whereabouts(client)
    );
    let app = require_app(client, &args.app).await?;
    let instance = require_instance(client, &args.service).await?;
    let bindings: Vec<Binding> = client
        .list(&format!(
            "/v3/service_credential_bindings?app_guids={}&service_instance_guids={}&type=app",
            app.guid, instance.guid
        ))
        .await?;
    let Some(b) = bindings.into_iter().next() else {
        println!(
            "Binding between {} and {} did not exist\nOK",
            args.service, args.app
        );
        return Ok(());
    };
    client
        .call(
            Method::DELETE,
            &format!("/v3/service_credential_bindings/{}", b.guid),
            Body::Empty,
        )
        .await?;
    println!("OK");
    Ok(())
}

pub async fn delete(client: &mut Client, args: DeleteServiceArgs) -> anyhow::Result<()> {
    client.config.require_space()?;
    if !args.force && !confirmed(&format!("Really delete the service {}?", args.name)) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!("Deleting service {} {}...", args.name, whereabouts(client));
    let Some(instance) = find_instance(client, &args.name).await? else {
        println!("Service instance {} did not exist.\nOK", args.name);
        return Ok(());
    };
    client
        .delete_and_wait(&format!("/v3/service_instances/{}", instance.guid))
        .await?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_inline_or_from_a_file() {
        let inline = credentials(r#"{"user":"u","port":5432}"#).unwrap();
        assert_eq!(inline["user"], "u");
        assert_eq!(inline["port"], 5432);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.json");
        std::fs::write(&file, r#"{"k":"v"}"#).unwrap();
        assert_eq!(credentials(file.to_str().unwrap()).unwrap()["k"], "v");
        assert!(credentials("{not json").is_err());
        assert_eq!(tags(" a, b ,,c"), ["a", "b", "c"]);
    }
}
