//! `kiln create-user`, `set-org-role`, `set-space-role` and `space-users`,
//! with the cf CLI's names and calls: UAA's SCIM `POST /Users`, then
//! `POST /v3/users`; roles by username and origin at `POST /v3/roles`; a
//! space's users from `GET /v3/roles?include=user`.

use crate::client::{ApiError, Body, Client, q};
use crate::summary::table;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(clap::Args, Debug, Clone)]
pub struct CreateUserArgs {
    /// The new user's name
    pub username: String,
    /// Its password
    pub password: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SetOrgRoleArgs {
    pub username: String,
    pub org: String,
    /// OrgManager, BillingManager or OrgAuditor
    pub role: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SetSpaceRoleArgs {
    pub username: String,
    pub org: String,
    pub space: String,
    /// SpaceManager, SpaceDeveloper, SpaceAuditor or SpaceSupporter
    pub role: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SpaceUsersArgs {
    pub org: String,
    pub space: String,
}

#[derive(Debug, Deserialize)]
struct Named {
    guid: String,
    name: String,
}

/// The cf CLI's role names and Cloud Controller's types, org then space.
const ORG_ROLES: [(&str, &str); 3] = [
    ("OrgManager", "organization_manager"),
    ("BillingManager", "organization_billing_manager"),
    ("OrgAuditor", "organization_auditor"),
];
const SPACE_ROLES: [(&str, &str, &str); 4] = [
    ("SpaceManager", "space_manager", "SPACE MANAGER"),
    ("SpaceDeveloper", "space_developer", "SPACE DEVELOPER"),
    ("SpaceAuditor", "space_auditor", "SPACE AUDITOR"),
    ("SpaceSupporter", "space_supporter", "SPACE SUPPORTER"),
];

pub async fn create_user(client: &mut Client, args: CreateUserArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    println!(
        "Creating user {} as {}...",
        args.username, client.config.user
    );
    let body = json!({
        "userName": args.username,
        "password": args.password,
        "emails": [{"value": args.username, "primary": true}],
    });
    let user: Value = client.post("/Users", body).await?;
    let id = user["id"].as_str().unwrap_or_default().to_string();
    let _: Value = client.post("/v3/users", json!({"guid": id})).await?;
    println!("OK\n\nTIP: Assign roles with 'kiln set-org-role' and 'kiln set-space-role'.");
    Ok(())
}

async fn org(client: &mut Client, name: &str) -> anyhow::Result<Named> {
    let orgs: Vec<Named> = client
        .list(&format!("/v3/organizations?names={}", q(name)))
        .await?;
    orgs.into_iter()
        .find(|o| o.name == name)
        .ok_or_else(|| anyhow::anyhow!("Organization '{name}' not found."))
}

async fn space(client: &mut Client, org: &Named, name: &str) -> anyhow::Result<Named> {
    let spaces: Vec<Named> = client
        .list(&format!(
            "/v3/spaces?names={}&organization_guids={}",
            q(name),
            org.guid
        ))
        .await?;
    spaces
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow::anyhow!("Space '{name}' not found."))
}

/// Grants a role by username; one the user already has is not an error
/// (as with the cf CLI).
async fn grant(
    client: &mut Client,
    kind: &str,
    username: &str,
    scope: (&str, &str),
) -> anyhow::Result<()> {
    let body = json!({
        "type": kind,
        "relationships": {
            "user": {"data": {"username": username, "origin": "uaa"}},
            scope.0: {"data": {"guid": scope.1}},
        },
    });
    match client
        .call(Method::POST, "/v3/roles", Body::Json(body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match e.downcast_ref::<ApiError>() {
            Some(api) if api.detail().is_some_and(|d| d.contains("already has")) => {
                println!("{}", api.detail().unwrap_or_default());
                Ok(())
            }
            _ => Err(e),
        },
    }
}

pub async fn set_org_role(client: &mut Client, args: SetOrgRoleArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    let kind = ORG_ROLES
        .iter()
        .find(|(cli, _)| cli.eq_ignore_ascii_case(&args.role))
        .map(|(_, kind)| *kind)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Invalid role '{}': use OrgManager, BillingManager or OrgAuditor",
                args.role
            )
        })?;
    let o = org(client, &args.org).await?;
    println!(
        "Assigning role {} to user {} in org {} as {}...",
        args.role, args.username, o.name, client.config.user
    );
    grant(client, kind, &args.username, ("organization", &o.guid)).await?;
    println!("OK");
    Ok(())
}

pub async fn set_space_role(client: &mut Client, args: SetSpaceRoleArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    let kind = SPACE_ROLES
        .iter()
        .find(|(cli, ..)| cli.eq_ignore_ascii_case(&args.role))
        .map(|(_, kind, _)| *kind)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Invalid role '{}': use SpaceManager, SpaceDeveloper, SpaceAuditor or SpaceSupporter",
                args.role
            )
        })?;
    let o = org(client, &args.org).await?;
    let s = space(client, &o, &args.space).await?;
    println!(
        "Assigning role {} to user {} in org {} / space {} as {}...",
        args.role, args.username, o.name, s.name, client.config.user
    );
    // A space role needs the org membership first, as the cf CLI does it.
    grant(
        client,
        "organization_user",
        &args.username,
        ("organization", &o.guid),
    )
    .await?;
    grant(client, kind, &args.username, ("space", &s.guid)).await?;
    println!("OK");
    Ok(())
}

pub async fn space_users(client: &mut Client, args: SpaceUsersArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    let o = org(client, &args.org).await?;
    let s = space(client, &o, &args.space).await?;
    println!(
        "Getting users in org {} / space {} as {}...\n",
        o.name, s.name, client.config.user
    );
    let page: Value = client
        .get(&format!(
            "/v3/roles?space_guids={}&include=user&per_page=5000",
            s.guid
        ))
        .await?;
    let users = page["included"]["users"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let name_of = |guid: &str| {
        users
            .iter()
            .find(|u| u["guid"] == guid)
            .and_then(|u| u["username"].as_str())
            .unwrap_or(guid)
            .to_string()
    };
    let roles = page["resources"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for (_, kind, title) in SPACE_ROLES {
        let mut names: Vec<String> = roles
            .iter()
            .filter(|r| r["type"] == kind)
            .map(|r| {
                name_of(
                    r["relationships"]["user"]["data"]["guid"]
                        .as_str()
                        .unwrap_or(""),
                )
            })
            .collect();
        names.sort();
        if names.is_empty() {
            names.push("none".into());
        }
        rows.push(vec![title.to_string(), names.join(", ")]);
    }
    print!("{}", table(&["role", "users"], &rows, ""));
    Ok(())
}
