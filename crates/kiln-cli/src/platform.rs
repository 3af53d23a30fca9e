//! What the platform offers a space: `orgs`, `spaces`, `domains`, `stacks`,
//! and the client's own `version`.

use crate::app::whereabouts;
use crate::client::Client;
use crate::summary::table;
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Described {
    name: String,
    description: Option<String>,
    internal: Option<bool>,
    relationships: Option<serde_json::Value>,
}

pub async fn orgs(client: &mut Client) -> anyhow::Result<()> {
    println!("Getting orgs as {}...\n", client.config.user);
    let orgs: Vec<Described> = client.list("/v3/organizations?order_by=name").await?;
    print_names(&orgs, "No orgs found.");
    Ok(())
}

pub async fn spaces(client: &mut Client) -> anyhow::Result<()> {
    let org = client.config.org.clone().ok_or_else(|| {
        anyhow::anyhow!("No org targeted, use 'kiln target -o ORG' to target an org.")
    })?;
    println!(
        "Getting spaces in org {} as {}...\n",
        org.name, client.config.user
    );
    let spaces: Vec<Described> = client
        .list(&format!(
            "/v3/spaces?organization_guids={}&order_by=name",
            org.guid
        ))
        .await?;
    print_names(&spaces, "No spaces found.");
    Ok(())
}

fn print_names(items: &[Described], empty: &str) {
    if items.is_empty() {
        println!("{empty}");
        return;
    }
    let rows: Vec<Vec<String>> = items.iter().map(|i| vec![i.name.clone()]).collect();
    print!("{}", table(&["name"], &rows, ""));
}

pub async fn domains(client: &mut Client) -> anyhow::Result<()> {
    println!("Getting domains {}...\n", whereabouts(client));
    let domains: Vec<Described> = client.list("/v3/domains").await?;
    let rows: Vec<Vec<String>> = domains
        .iter()
        .map(|d| {
            // A domain owned by an org is private; the others are shared.
            let owned = d
                .relationships
                .as_ref()
                .and_then(|r| r["organization"]["data"]["guid"].as_str())
                .is_some();
            let kind = if owned { "private" } else { "shared" };
            let detail = if d.internal == Some(true) {
                "internal"
            } else {
                ""
            };
            vec![d.name.clone(), kind.into(), detail.into()]
        })
        .collect();
    print!("{}", table(&["name", "availability", "details"], &rows, ""));
    Ok(())
}

pub async fn stacks(client: &mut Client) -> anyhow::Result<()> {
    println!("Getting stacks as {}...\n", client.config.user);
    let stacks: Vec<Described> = client.list("/v3/stacks?order_by=name").await?;
    let rows: Vec<Vec<String>> = stacks
        .iter()
        .map(|s| vec![s.name.clone(), s.description.clone().unwrap_or_default()])
        .collect();
    print!("{}", table(&["name", "description"], &rows, ""));
    Ok(())
}

pub fn version() {
    println!("kiln version {}", env!("CARGO_PKG_VERSION"));
}
