//! `create-private-domain`, `create-shared-domain`, `delete-private-domain`,
//! `delete-shared-domain`, `share-private-domain`, `unshare-private-domain`
//! and `check-route`, with the cf CLI's names, arguments and words, through
//! `/v3/domains`.

use crate::app::confirmed;
use crate::client::{Body, Client, q};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(clap::Args, Debug, Clone)]
pub struct OrgDomainArgs {
    /// The organization
    pub org: String,
    /// The domain, e.g. example.com
    pub domain: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CreateSharedDomainArgs {
    /// The domain, e.g. example.com
    pub domain: String,
    /// Only for container-to-container routes (no router sends traffic to it)
    #[arg(long)]
    pub internal: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteDomainArgs {
    pub domain: String,
    /// Do not ask for confirmation
    #[arg(short = 'f')]
    pub force: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckRouteArgs {
    /// The route's host, e.g. shop
    pub host: String,
    /// The domain, e.g. example.com
    pub domain: String,
    /// The route's path, e.g. /api
    #[arg(long)]
    pub path: Option<String>,
}

async fn find_org(client: &mut Client, name: &str) -> anyhow::Result<Value> {
    let orgs: Vec<Value> = client
        .list(&format!("/v3/organizations?names={}", q(name)))
        .await?;
    orgs.into_iter()
        .find(|o| o["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("Organization '{name}' not found."))
}

async fn find_domain(client: &mut Client, name: &str) -> anyhow::Result<Option<Value>> {
    let domains: Vec<Value> = client
        .list(&format!(
            "/v3/domains?names={}",
            q(&name.to_ascii_lowercase())
        ))
        .await?;
    Ok(domains.into_iter().find(|d| {
        d["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }))
}

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap_or_default().to_string()
}

fn is_private(d: &Value) -> bool {
    d["relationships"]["organization"]["data"]["guid"].is_string()
}

pub async fn create_private(client: &mut Client, a: OrgDomainArgs) -> anyhow::Result<()> {
    println!(
        "Creating private domain {} for org {} as {}...",
        a.domain, a.org, client.config.user
    );
    let org = find_org(client, &a.org).await?;
    let body = json!({"name": a.domain,
        "relationships": {"organization": {"data": {"guid": org["guid"]}}}});
    let _: Value = client.post("/v3/domains", body).await?;
    println!("OK\n");
    println!(
        "TIP: Domain '{}' is a private domain. Run 'kiln share-private-domain' to share this domain with a different org.",
        a.domain
    );
    Ok(())
}

pub async fn create_shared(client: &mut Client, a: CreateSharedDomainArgs) -> anyhow::Result<()> {
    println!(
        "Creating shared domain {} as {}...",
        a.domain, client.config.user
    );
    let mut body = json!({ "name": a.domain });
    if a.internal {
        body["internal"] = json!(true);
    }
    let _: Value = client.post("/v3/domains", body).await?;
    println!("OK");
    Ok(())
}

/// Deletes a domain of the kind the verb names; the other kind is refused
/// with cf's hint.
pub async fn delete(client: &mut Client, a: DeleteDomainArgs, private: bool) -> anyhow::Result<()> {
    let kind = if private { "private" } else { "shared" };
    let Some(d) = find_domain(client, &a.domain).await? else {
        println!(
            "Deleting {kind} domain {} as {}...",
            a.domain, client.config.user
        );
        println!("Domain '{}' does not exist.\nOK", a.domain);
        return Ok(());
    };
    if is_private(&d) != private {
        let (is, verb) = if private {
            ("shared", "delete-shared-domain")
        } else {
            ("private", "delete-private-domain")
        };
        anyhow::bail!(
            "Domain '{}' is a {is} domain, not a {kind} domain. Use 'kiln {verb}'.",
            a.domain
        );
    }
    let question = format!(
        "Deleting the {kind} domain will remove associated routes which will make apps with this domain unreachable.\nReally delete the {kind} domain {}?",
        a.domain
    );
    if !a.force && !confirmed(&question) {
        println!("'{}' has not been deleted.", a.domain);
        return Ok(());
    }
    println!(
        "Deleting {kind} domain {} as {}...",
        a.domain, client.config.user
    );
    client
        .delete_and_wait(&format!("/v3/domains/{}", guid(&d)))
        .await?;
    println!("OK");
    Ok(())
}

async fn private_domain(client: &mut Client, name: &str) -> anyhow::Result<Value> {
    let d = find_domain(client, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("Domain '{name}' not found."))?;
    if !is_private(&d) {
        anyhow::bail!("Domain '{name}' is a shared domain, not a private domain.");
    }
    Ok(d)
}

pub async fn share(client: &mut Client, a: OrgDomainArgs) -> anyhow::Result<()> {
    println!(
        "Sharing domain {} with org {} as {}...",
        a.domain, a.org, client.config.user
    );
    let d = private_domain(client, &a.domain).await?;
    let org = find_org(client, &a.org).await?;
    let path = format!(
        "/v3/domains/{}/relationships/shared_organizations",
        guid(&d)
    );
    let _: Value = client
        .post(&path, json!({"data": [{"guid": org["guid"]}]}))
        .await?;
    println!("OK");
    Ok(())
}

pub async fn unshare(client: &mut Client, a: OrgDomainArgs) -> anyhow::Result<()> {
    let question = format!(
        "Warning: org {} will no longer be able to access private domain {}\nReally unshare private domain {}?",
        a.org, a.domain, a.domain
    );
    if !confirmed(&question) {
        println!(
            "Domain {} has not been unshared from organization {}",
            a.domain, a.org
        );
        return Ok(());
    }
    println!(
        "Unsharing domain {} from org {} as {}...",
        a.domain, a.org, client.config.user
    );
    let d = private_domain(client, &a.domain).await?;
    let org = find_org(client, &a.org).await?;
    let path = format!(
        "/v3/domains/{}/relationships/shared_organizations/{}",
        guid(&d),
        guid(&org)
    );
    client.call(Method::DELETE, &path, Body::Empty).await?;
    println!("OK");
    Ok(())
}

/// `host.domain/path` as cf prints a route.
fn route_url(host: &str, domain: &str, path: Option<&str>) -> String {
    let path = path.unwrap_or_default();
    if host.is_empty() {
        format!("{domain}{path}")
    } else {
        format!("{host}.{domain}{path}")
    }
}

pub async fn check_route(client: &mut Client, a: CheckRouteArgs) -> anyhow::Result<()> {
    let url = route_url(&a.host, &a.domain, a.path.as_deref());
    println!("Checking for route {url} as {}...", client.config.user);
    let d = find_domain(client, &a.domain)
        .await?
        .ok_or_else(|| anyhow::anyhow!("Domain '{}' not found.", a.domain))?;
    let mut path = format!(
        "/v3/domains/{}/route_reservations?host={}",
        guid(&d),
        q(&a.host)
    );
    if let Some(p) = &a.path {
        path.push_str(&format!("&path={}", q(p)));
    }
    let found: Value = client.get(&path).await?;
    let does = if found["matching_route"] == true {
        "does"
    } else {
        "does not"
    };
    println!("Route '{url}' {does} exist.\nOK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_print_as_cf_prints_them() {
        assert_eq!(
            route_url("shop", "example.com", Some("/api")),
            "shop.example.com/api"
        );
        assert_eq!(route_url("", "example.com", None), "example.com");
    }
}
