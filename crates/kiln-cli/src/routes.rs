//! `routes`, `create-route`, `delete-route`, `map-route`, `unmap-route`:
//! routes are `host.domain/path` records in a space, mapped to apps through
//! their destinations.

use crate::app::{confirmed, require_app, whereabouts};
use crate::client::{Body, Client, q};
use crate::resources::{App, Named, Route, RouteDestinations};
use crate::summary::table;
use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A route as the cf CLI names it: a domain, and optionally a host and a path.
#[derive(Args, Debug, Clone, Default)]
pub struct RouteArgs {
    /// The route's domain
    pub domain: String,
    /// The host name in front of the domain
    #[arg(long = "hostname", short = 'n')]
    pub hostname: Option<String>,
    /// A path after the host, e.g. /api
    #[arg(long)]
    pub path: Option<String>,
}

impl RouteArgs {
    fn host(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// CF stores paths with a leading `/` and no trailing one.
    fn path(&self) -> String {
        match self.path.as_deref().map(|p| p.trim_end_matches('/')) {
            None | Some("") => String::new(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => format!("/{p}"),
        }
    }

    fn url(&self, domain: &str) -> String {
        let host = self.host();
        let host = if host.is_empty() {
            String::new()
        } else {
            format!("{host}.")
        };
        format!("{host}{domain}{}", self.path())
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RouteWithDomain {
    guid: String,
    host: String,
    path: String,
    relationships: Relationships,
    destinations: Vec<crate::resources::Destination>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Relationships {
    domain: Relationship,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Relationship {
    data: crate::resources::Guid,
}

pub async fn list(client: &mut Client) -> anyhow::Result<()> {
    let space = client.config.require_space()?.clone();
    println!("Getting routes {}...\n", whereabouts(client));
    let routes: Vec<RouteWithDomain> = client
        .list(&format!("/v3/routes?space_guids={}", space.guid))
        .await?;
    if routes.is_empty() {
        println!("No routes found.");
        return Ok(());
    }
    let domains: HashMap<String, String> = client
        .list::<Named>("/v3/domains")
        .await?
        .into_iter()
        .map(|d| (d.guid, d.name))
        .collect();
    let apps: HashMap<String, String> = client
        .list::<App>(&format!("/v3/apps?space_guids={}", space.guid))
        .await?
        .into_iter()
        .map(|a| (a.guid, a.name))
        .collect();
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let domain = r.relationships.domain.data.guid.clone().unwrap_or_default();
            let mut names: Vec<&str> = r
                .destinations
                .iter()
                .filter_map(|d| d.app.guid.as_deref())
                .filter_map(|g| apps.get(g).map(String::as_str))
                .collect();
            names.sort_unstable();
            names.dedup();
            vec![
                space.name.clone(),
                r.host.clone(),
                domains.get(&domain).cloned().unwrap_or(domain),
                r.path.clone(),
                "http".into(),
                names.join(", "),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["space", "host", "domain", "path", "protocol", "apps"],
            &rows,
            ""
        )
    );
    Ok(())
}

async fn find_domain(client: &mut Client, name: &str) -> anyhow::Result<Named> {
    let domains: Vec<Named> = client
        .list(&format!("/v3/domains?names={}", q(name)))
        .await?;
    domains
        .into_iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .with_context(|| format!("Domain '{name}' not found."))
}

async fn find_route(
    client: &mut Client,
    domain: &Named,
    args: &RouteArgs,
) -> anyhow::Result<Option<Route>> {
    let (host, path) = (args.host(), args.path());
    // Empty filters are left out: servers differ on what `hosts=` means.
    let mut query = format!("/v3/routes?domain_guids={}", domain.guid);
    if !host.is_empty() {
        query.push_str(&format!("&hosts={}", q(&host)));
    }
    if !path.is_empty() {
        query.push_str(&format!("&paths={}", q(&path)));
    }
    let routes: Vec<Route> = client.list(&query).await?;
    // Filter here too: the server's filters may be looser.
    Ok(routes
        .into_iter()
        .find(|r| r.host == host && r.path == path))
}

async fn create(client: &mut Client, domain: &Named, args: &RouteArgs) -> anyhow::Result<Route> {
    let space = client.config.require_space()?.clone();
    let mut body = json!({"relationships": {
        "space": {"data": {"guid": space.guid}},
        "domain": {"data": {"guid": domain.guid}},
    }});
    if !args.host().is_empty() {
        body["host"] = Value::String(args.host());
    }
    if !args.path().is_empty() {
        body["path"] = Value::String(args.path());
    }
    client.post("/v3/routes", body).await
}

pub async fn create_route(client: &mut Client, args: RouteArgs) -> anyhow::Result<()> {
    let domain = find_domain(client, &args.domain).await?;
    let url = args.url(&domain.name);
    println!("Creating route {url} {}...", whereabouts(client));
    if find_route(client, &domain, &args).await?.is_some() {
        println!("Route {url} already exists.\nOK");
        return Ok(());
    }
    create(client, &domain, &args).await?;
    println!("Route {url} has been created.\nOK");
    Ok(())
}

pub async fn delete_route(client: &mut Client, args: RouteArgs, force: bool) -> anyhow::Result<()> {
    let domain = find_domain(client, &args.domain).await?;
    let url = args.url(&domain.name);
    if !force && !confirmed(&format!("Really delete the route {url}?")) {
        println!("'{url}' has not been deleted.");
        return Ok(());
    }
    println!("Deleting route {url}...");
    let Some(route) = find_route(client, &domain, &args).await? else {
        println!(
            "Unable to delete. Route with domain '{}' not found.\nOK",
            domain.name
        );
        return Ok(());
    };
    delete_by_guid(client, &route).await?;
    println!("OK");
    Ok(())
}

pub async fn map_route(client: &mut Client, app: &str, args: RouteArgs) -> anyhow::Result<()> {
    let app = require_app(client, app).await?;
    let domain = find_domain(client, &args.domain).await?;
    let url = args.url(&domain.name);
    println!(
        "Mapping route {url} to app {} {}...",
        app.name,
        whereabouts(client)
    );
    let route = match find_route(client, &domain, &args).await? {
        Some(route) => route,
        None => {
            println!("Creating route {url}...");
            create(client, &domain, &args).await?
        }
    };
    let destinations: RouteDestinations = client
        .get(&format!("/v3/routes/{}/destinations", route.guid))
        .await?;
    if destinations
        .destinations
        .iter()
        .any(|d| d.app.guid.as_deref() == Some(app.guid.as_str()))
    {
        println!("App '{}' is already mapped to route '{url}'.\nOK", app.name);
        return Ok(());
    }
    let _: Value = client
        .post(
            &format!("/v3/routes/{}/destinations", route.guid),
            json!({"destinations": [{"app": {"guid": app.guid, "process": {"type": "web"}}}]}),
        )
        .await?;
    println!("OK");
    Ok(())
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct DestinationWithGuid {
    guid: String,
    app: crate::resources::Guid,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct DestinationList {
    destinations: Vec<DestinationWithGuid>,
}

pub async fn unmap_route(client: &mut Client, app: &str, args: RouteArgs) -> anyhow::Result<()> {
    let app = require_app(client, app).await?;
    let domain = find_domain(client, &args.domain).await?;
    let url = args.url(&domain.name);
    println!(
        "Removing route {url} from app {} {}...",
        app.name,
        whereabouts(client)
    );
    let Some(route) = find_route(client, &domain, &args).await? else {
        anyhow::bail!(
            "Route with host '{}', domain '{}' and path '{}' not found.",
            args.host(),
            domain.name,
            args.path()
        );
    };
    let list: DestinationList = client
        .get(&format!("/v3/routes/{}/destinations", route.guid))
        .await?;
    for d in list
        .destinations
        .iter()
        .filter(|d| d.app.guid.as_deref() == Some(app.guid.as_str()))
    {
        client
            .call(
                Method::DELETE,
                &format!("/v3/routes/{}/destinations/{}", route.guid, d.guid),
                Body::Empty,
            )
            .await?;
    }
    println!("OK");
    Ok(())
}

/// The routes mapped to `app_guid` (for `delete -r`).
pub async fn of_app(client: &mut Client, app_guid: &str) -> anyhow::Result<Vec<Route>> {
    client.list(&format!("/v3/apps/{app_guid}/routes")).await
}

pub async fn delete_by_guid(client: &mut Client, route: &Route) -> anyhow::Result<()> {
    client
        .delete_and_wait(&format!("/v3/routes/{}", route.guid))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_named_like_cf() {
        let args = RouteArgs {
            domain: "example.com".into(),
            hostname: Some("Shop".into()),
            path: Some("api/".into()),
        };
        assert_eq!(args.host(), "shop");
        assert_eq!(args.path(), "/api");
        assert_eq!(args.url("example.com"), "shop.example.com/api");
        let bare = RouteArgs {
            domain: "example.com".into(),
            ..RouteArgs::default()
        };
        assert_eq!(bare.url("example.com"), "example.com");
    }
}
