//! `kiln`'s user verbs: the cf CLI's everyday commands against the Cloud
//! Foundry v3 API.
//!
//! Architecture invariant: only the public HTTP API is used (v3,
//! `/oauth/token`, log cache), so every verb works the same against a remote
//! Kiln — and mostly against a real Cloud Foundry.

mod app;
mod client;
mod config;
mod files;
mod logs;
mod push;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use client::{Client, q};
use config::{Config, Named};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Log in to a Kiln (or Cloud Foundry) API and target its org and space
    Login(LoginArgs),
    /// Forget the saved tokens
    Logout,
    /// Show or set the targeted org and space
    Target(TargetArgs),
    /// Upload an admin buildpack from a directory or a .zip
    CreateBuildpack(CreateBuildpackArgs),
    /// List the admin buildpacks
    Buildpacks,
    /// Push an app: upload, stage, start, and wait until it runs
    Push(push::PushArgs),
    /// List the apps in the targeted space
    Apps,
    /// Show an app's health and status
    App(AppArgs),
    /// Start an app and wait until it runs
    Start(AppArgs),
    /// Stop an app
    Stop(AppArgs),
    /// Delete an app
    Delete(DeleteArgs),
    /// Show an app's logs (follows them unless --recent)
    Logs(LogsArgs),
    /// Make an authenticated request to the API
    Curl(CurlArgs),
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The API endpoint, e.g. http://127.0.0.1:9022 (default: the saved one)
    #[arg(short = 'a')]
    pub api: Option<String>,
    #[arg(short = 'u')]
    pub username: String,
    #[arg(short = 'p')]
    pub password: String,
    #[arg(short = 'o')]
    pub org: Option<String>,
    #[arg(short = 's')]
    pub space: Option<String>,
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    #[arg(short = 'o')]
    pub org: Option<String>,
    #[arg(short = 's')]
    pub space: Option<String>,
}

#[derive(Args, Debug)]
pub struct CreateBuildpackArgs {
    pub name: String,
    /// A buildpack directory (zipped with its file modes) or a .zip file
    pub path: PathBuf,
    /// Where it goes in the detection order (1 is first)
    pub position: u32,
    /// Create it disabled
    #[arg(long)]
    pub disable: bool,
}

#[derive(Args, Debug)]
pub struct AppArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub name: String,
    /// Do not ask for confirmation (there is no prompt; kept for cf compatibility)
    #[arg(short = 'f')]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub name: String,
    /// Print the recent logs and exit
    #[arg(long)]
    pub recent: bool,
}

#[derive(Args, Debug)]
pub struct CurlArgs {
    /// An API path such as /v3/apps
    pub path: String,
    #[arg(short = 'X', default_value = "GET")]
    pub method: String,
    /// A JSON request body
    #[arg(short = 'd')]
    pub data: Option<String>,
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => login(args).await,
        Command::Logout => {
            let mut config = Config::load()?;
            config.access_token.clear();
            config.refresh_token.clear();
            config.save()?;
            println!("Logging out {}...\nOK", config.user);
            Ok(())
        }
        Command::Target(args) => target(args).await,
        Command::CreateBuildpack(args) => create_buildpack(args).await,
        Command::Buildpacks => buildpacks().await,
        Command::Push(args) => push::push(args).await,
        Command::Apps => app::apps().await,
        Command::App(args) => app::app(&args.name).await,
        Command::Start(args) => app::start(&args.name).await,
        Command::Stop(args) => app::stop(&args.name).await,
        Command::Delete(args) => app::delete(&args.name).await,
        Command::Logs(args) => app::logs(&args.name, args.recent).await,
        Command::Curl(args) => curl(args).await,
    }
}

/// A client for the saved target.
pub(crate) fn client() -> anyhow::Result<Client> {
    let config = Config::load()?;
    config.require_target()?;
    Ok(Client::new(config))
}

async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let mut config = Config::load()?;
    if let Some(api) = args.api {
        config = Config {
            api: api.trim_end_matches('/').to_string(),
            ..Config::default()
        };
    }
    anyhow::ensure!(
        !config.api.is_empty(),
        "no API endpoint; use 'kiln login -a URL'"
    );
    println!("API endpoint: {}", config.api);
    let mut client = Client::new(config);
    let root: Value = client
        .http
        .get(format!("{}/", client.config.api))
        .send()
        .await
        .with_context(|| format!("reaching {}", client.config.api))?
        .error_for_status()
        .context("the API root did not answer")?
        .json()
        .await
        .context("the API root is not JSON")?;
    let links = &root["links"];
    client.config.login = links["login"]["href"]
        .as_str()
        .or(links["uaa"]["href"].as_str())
        .unwrap_or(&client.config.api)
        .to_string();
    client.config.log_cache = links["log_cache"]["href"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    client
        .token_grant(&[
            ("grant_type", "password"),
            ("username", &args.username),
            ("password", &args.password),
        ])
        .await
        .context("logging in")?;
    client.config.user = args.username.clone();
    client.config.org = None;
    client.config.space = None;
    client.config.save()?;
    println!("Authenticating...\nOK\n");
    choose_target(&mut client, args.org.as_deref(), args.space.as_deref()).await?;
    client.config.save()?;
    print_target(&client.config);
    Ok(())
}

/// Targets the named org and space, or the only one of each.
async fn choose_target(
    client: &mut Client,
    org: Option<&str>,
    space: Option<&str>,
) -> anyhow::Result<()> {
    let orgs = match org {
        Some(name) => {
            client
                .list(&format!("/v3/organizations?names={}", q(name)))
                .await?
        }
        None => client.list("/v3/organizations").await?,
    };
    let chosen_org = match (orgs.as_slice(), org) {
        ([one], _) => Some(one.clone()),
        ([], Some(name)) => bail!("Organization '{name}' not found."),
        _ => None,
    };
    if let Some(o) = &chosen_org {
        client.config.org = Some(named(o));
        client.config.space = None;
    }
    let Some(org) = client.config.org.clone() else {
        return Ok(());
    };
    let mut path = format!("/v3/spaces?organization_guids={}", org.guid);
    if let Some(name) = space {
        path.push_str(&format!("&names={}", q(name)));
    }
    let spaces = client.list(&path).await?;
    match (spaces.as_slice(), space) {
        ([one], _) => client.config.space = Some(named(one)),
        ([], Some(name)) => bail!("Space '{name}' not found."),
        _ => {}
    }
    Ok(())
}

fn named(resource: &Value) -> Named {
    Named {
        guid: resource["guid"].as_str().unwrap_or_default().to_string(),
        name: resource["name"].as_str().unwrap_or_default().to_string(),
    }
}

fn print_target(config: &Config) {
    let name = |n: &Option<Named>| n.as_ref().map_or("(none)".to_string(), |n| n.name.clone());
    println!("API endpoint:   {}", config.api);
    println!("user:           {}", config.user);
    println!("org:            {}", name(&config.org));
    println!("space:          {}", name(&config.space));
}

async fn target(args: TargetArgs) -> anyhow::Result<()> {
    let mut client = client()?;
    if args.org.is_some() || args.space.is_some() {
        let org = match args.org.clone() {
            Some(o) => Some(o),
            None => client.config.org.as_ref().map(|o| o.name.clone()),
        };
        choose_target(&mut client, org.as_deref(), args.space.as_deref()).await?;
        client.config.save()?;
    }
    print_target(&client.config);
    Ok(())
}

async fn create_buildpack(args: CreateBuildpackArgs) -> anyhow::Result<()> {
    let mut client = client()?;
    println!("Creating buildpack {}...", args.name);
    let bits = if args.path.is_dir() {
        files::zip_dir(&args.path)?
    } else {
        std::fs::read(&args.path).with_context(|| format!("reading {}", args.path.display()))?
    };
    let buildpack = client
        .post(
            "/v3/buildpacks",
            &json!({"name": args.name, "position": args.position, "enabled": !args.disable}),
        )
        .await?;
    let guid = buildpack["guid"]
        .as_str()
        .context("the API returned no buildpack guid")?
        .to_string();
    println!("OK\n\nUploading buildpack {}...", args.name);
    let part = reqwest::multipart::Part::bytes(bits)
        .file_name(format!("{}.zip", args.name))
        .mime_str("application/zip")?;
    let form = reqwest::multipart::Form::new().part("bits", part);
    let (_, location) = client
        .post_multipart(&format!("/v3/buildpacks/{guid}/upload"), form)
        .await?;
    if let Some(job) = location {
        client.wait_for_job(&job).await?;
    }
    println!("OK");
    Ok(())
}

async fn buildpacks() -> anyhow::Result<()> {
    let mut client = client()?;
    let list = client.list("/v3/buildpacks?order_by=position").await?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            let s = |k: &str| match &b[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            vec![
                s("position"),
                s("name"),
                s("stack"),
                s("enabled"),
                s("locked"),
                s("state"),
                s("filename"),
            ]
        })
        .collect();
    print!(
        "{}",
        app::table(
            &[
                "position", "name", "stack", "enabled", "locked", "state", "filename"
            ],
            &rows
        )
    );
    Ok(())
}

async fn curl(args: CurlArgs) -> anyhow::Result<()> {
    let mut client = client()?;
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .context("invalid method")?;
    let body = match &args.data {
        Some(data) => Some(serde_json::from_str::<Value>(data).context("-d must be JSON")?),
        None => None,
    };
    let (json, _) = client.request(method, &args.path, body.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
