//! `kiln login`, `kiln logout` and `kiln target`: the API's links from
//! `GET /`, a password grant at `{login}/oauth/token`, and the org and space
//! every other verb works in.

use crate::client::{Auth, Body, Client, claims, q};
use crate::config::{self, Config};
use crate::resources::Named;
use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;

#[derive(clap::Args, Debug, Clone)]
pub struct LoginArgs {
    /// The API endpoint, e.g. http://127.0.0.1:9022 (default: the saved one)
    #[arg(short = 'a')]
    pub api: Option<String>,
    /// User name
    #[arg(short = 'u')]
    pub username: String,
    /// Password
    #[arg(short = 'p')]
    pub password: String,
    /// Org to target
    #[arg(short = 'o')]
    pub org: Option<String>,
    /// Space to target
    #[arg(short = 's')]
    pub space: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Org to target
    #[arg(short = 'o')]
    pub org: Option<String>,
    /// Space to target (in the targeted org, or the one given with -o)
    #[arg(short = 's')]
    pub space: Option<String>,
}

/// The links a client needs from `GET /`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootLinks {
    pub login: String,
    pub log_cache: String,
    pub api_version: String,
}

/// Reads `GET /`'s links like the cf CLI: the token endpoint is `login`,
/// else `uaa`, else the API itself.
pub fn root_links(root: &Value, api: &str) -> RootLinks {
    let links = &root["links"];
    let href = |key: &str| links[key]["href"].as_str().filter(|h| !h.is_empty());
    RootLinks {
        login: href("login")
            .or(href("uaa"))
            .unwrap_or(api)
            .trim_end_matches('/')
            .to_string(),
        log_cache: href("log_cache")
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
        api_version: links["cloud_controller_v3"]["meta"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

pub async fn login(home: &Path, args: LoginArgs) -> anyhow::Result<()> {
    let saved = Config::load(home)?;
    let api = args
        .api
        .as_deref()
        .unwrap_or(&saved.api)
        .trim_end_matches('/')
        .to_string();
    anyhow::ensure!(
        !api.is_empty(),
        "no API endpoint; use 'kiln login -a URL -u USER -p PASSWORD'"
    );
    anyhow::ensure!(
        api.starts_with("http://") || api.starts_with("https://"),
        "the API endpoint {api:?} must start with http:// or https://"
    );
    println!("API endpoint: {api}\n");
    // A new login starts from nothing: old tokens and targets belong to
    // another session, maybe another API.
    let config = Config {
        api: api.clone(),
        ..Config::default()
    };
    let mut client = Client::new(config, home.to_path_buf())?;
    let reply = client
        .exchange(
            Method::GET,
            &format!("{api}/"),
            Auth::None,
            Body::Empty,
            &[],
        )
        .await
        .with_context(|| format!("the API at {api} cannot be reached"))?;
    if reply.status == StatusCode::NOT_FOUND {
        bail!("API not found at {api}");
    }
    anyhow::ensure!(
        reply.status.is_success(),
        "the API at {api} answered GET / with HTTP {}",
        reply.status.as_u16()
    );
    let root = reply
        .json()
        .with_context(|| format!("{api} does not look like a Cloud Foundry API"))?;
    let links = root_links(&root, &api);
    client.config.login = links.login;
    client.config.log_cache = links.log_cache;
    client.config.api_version = links.api_version;

    println!("Authenticating...");
    client
        .token_grant(vec![
            ("grant_type", "password".to_string()),
            ("username", args.username.clone()),
            ("password", args.password.clone()),
        ])
        .await?;
    client.config.user = claims(&client.config.access_token)
        .and_then(|c| c["user_name"].as_str().map(str::to_string))
        .unwrap_or(args.username);
    client.save_config()?;
    println!("OK\n");

    choose_target(&mut client, args.org.as_deref(), args.space.as_deref()).await?;
    client.save_config()?;
    println!();
    print_target(&client.config);
    Ok(())
}

pub fn logout(home: &Path) -> anyhow::Result<()> {
    let mut config = Config::load(home)?;
    println!("Logging out {}...", config.user);
    // The API endpoint and its links stay, as with the cf CLI.
    config = Config {
        api: config.api,
        api_version: config.api_version,
        login: config.login,
        log_cache: config.log_cache,
        ..Config::default()
    };
    config.save(home)?;
    println!("OK");
    Ok(())
}

pub async fn target(client: &mut Client, args: TargetArgs) -> anyhow::Result<()> {
    match (&args.org, &args.space) {
        (None, None) => {}
        (Some(_), _) => {
            choose_target(client, args.org.as_deref(), args.space.as_deref()).await?;
            client.save_config()?;
            println!();
        }
        (None, Some(space)) => {
            let org = client
                .config
                .org
                .clone()
                .context("no org targeted; use 'kiln target -o ORG -s SPACE'")?;
            choose_space(client, &org, Some(space)).await?;
            client.save_config()?;
            println!();
        }
    }
    print_target(&client.config);
    Ok(())
}

/// Exact name matches only, whatever the server's `names` filter does.
fn exactly(resources: Vec<Named>, name: &str) -> Option<Named> {
    resources.into_iter().find(|r| r.name == name)
}

/// Targets the named org (or the only one) and then a space in it.
async fn choose_target(
    client: &mut Client,
    org: Option<&str>,
    space: Option<&str>,
) -> anyhow::Result<()> {
    let chosen = match org {
        Some(name) => {
            let orgs = client
                .list(&format!("/v3/organizations?names={}", q(name)))
                .await?;
            Some(exactly(orgs, name).with_context(|| format!("Organization '{name}' not found."))?)
        }
        None => {
            let mut orgs: Vec<Named> = client.list("/v3/organizations").await?;
            if orgs.len() == 1 {
                orgs.pop()
            } else {
                if orgs.len() > 1 {
                    let names: Vec<_> = orgs.iter().map(|o| o.name.as_str()).collect();
                    println!(
                        "Orgs: {}\nChoose one with 'kiln target -o ORG'.",
                        names.join(", ")
                    );
                }
                None
            }
        }
    };
    let Some(chosen) = chosen else {
        anyhow::ensure!(space.is_none(), "an org must be targeted to target a space");
        client.config.org = None;
        client.config.space = None;
        return Ok(());
    };
    println!("Targeted org {}.", chosen.name);
    let org = config::Named {
        guid: chosen.guid,
        name: chosen.name,
    };
    client.config.org = Some(org.clone());
    client.config.space = None;
    choose_space(client, &org, space).await
}

/// Targets the named space of `org`, or its only one.
async fn choose_space(
    client: &mut Client,
    org: &config::Named,
    space: Option<&str>,
) -> anyhow::Result<()> {
    let mut path = format!("/v3/spaces?organization_guids={}", org.guid);
    if let Some(name) = space {
        path.push_str(&format!("&names={}", q(name)));
    }
    let mut spaces: Vec<Named> = client.list(&path).await?;
    let chosen = match space {
        Some(name) => Some(
            exactly(spaces, name)
                .with_context(|| format!("Space '{name}' not found in org {}.", org.name))?,
        ),
        None if spaces.len() == 1 => spaces.pop(),
        None => None,
    };
    if let Some(chosen) = chosen {
        println!("Targeted space {}.", chosen.name);
        client.config.space = Some(config::Named {
            guid: chosen.guid,
            name: chosen.name,
        });
    }
    Ok(())
}

pub fn print_target(config: &Config) {
    let field = |key: &str, value: &str| println!("{:<16}{value}", format!("{key}:"));
    field("API endpoint", &config.api);
    if !config.api_version.is_empty() {
        field("API version", &config.api_version);
    }
    field("user", &config.user);
    match (&config.org, &config.space) {
        (Some(org), Some(space)) => {
            field("org", &org.name);
            field("space", &space.name);
        }
        (Some(org), None) => {
            field("org", &org.name);
            field("space", "No space targeted, use 'kiln target -s SPACE'");
        }
        _ => field(
            "org",
            "No org or space targeted, use 'kiln target -o ORG -s SPACE'",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_links_name_the_login_and_log_cache() {
        let root = serde_json::json!({"links": {
            "self": {"href": "http://api"},
            "cloud_controller_v3": {"href": "http://api/v3", "meta": {"version": "3.180.0"}},
            "login": {"href": "http://login/"},
            "uaa": {"href": "http://uaa"},
            "log_cache": {"href": "http://logs"},
            "logging": null,
        }});
        assert_eq!(
            root_links(&root, "http://api"),
            RootLinks {
                login: "http://login".into(),
                log_cache: "http://logs".into(),
                api_version: "3.180.0".into(),
            }
        );
        let bare = serde_json::json!({"links": {"uaa": {"href": "http://uaa"}, "log_cache": null}});
        let links = root_links(&bare, "http://api");
        assert_eq!(
            (links.login.as_str(), links.log_cache.as_str()),
            ("http://uaa", "")
        );
        assert_eq!(root_links(&Value::Null, "http://api").login, "http://api");
    }
}
