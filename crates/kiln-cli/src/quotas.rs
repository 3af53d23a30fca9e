//! `create-org-quota`, `org-quotas` and `set-org-quota`, with the cf
//! CLI's names, flags and output, through `/v3/organization_quotas`.

use crate::client::{Client, q};
use crate::summary::table;
use serde_json::{Map, Value, json};

#[derive(clap::Args, Debug, Clone)]
pub struct CreateOrgQuotaArgs {
    /// The quota's name
    pub name: String,
    /// Total amount of memory all processes can have, e.g. 1024M, 1G, 10G
    #[arg(short = 'm', value_parser = crate::push::parse_megabytes)]
    pub total_memory: Option<u64>,
    /// Maximum amount of memory a process can have, e.g. 1024M, 1G
    #[arg(short = 'i', value_parser = crate::push::parse_megabytes)]
    pub instance_memory: Option<u64>,
    /// Total number of routes allowed
    #[arg(short = 'r')]
    pub routes: Option<u64>,
    /// Total number of service instances allowed
    #[arg(short = 's')]
    pub service_instances: Option<u64>,
    /// Total number of application instances
    #[arg(short = 'a')]
    pub app_instances: Option<u64>,
    /// Allow provisioning instances of paid service plans
    #[arg(long = "allow-paid-service-plans")]
    pub allow_paid_service_plans: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SetOrgQuotaArgs {
    pub org: String,
    pub quota: String,
}

pub async fn create(client: &mut Client, a: CreateOrgQuotaArgs) -> anyhow::Result<()> {
    println!("Creating org quota {} as {}...", a.name, client.config.user);
    let mut apps = Map::new();
    let put = |m: &mut Map<String, Value>, k: &str, v: Option<u64>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    };
    put(&mut apps, "total_memory_in_mb", a.total_memory);
    put(&mut apps, "per_process_memory_in_mb", a.instance_memory);
    put(&mut apps, "total_instances", a.app_instances);
    let mut routes = Map::new();
    put(&mut routes, "total_routes", a.routes);
    let mut services = Map::new();
    put(
        &mut services,
        "total_service_instances",
        a.service_instances,
    );
    services.insert(
        "paid_services_allowed".into(),
        json!(a.allow_paid_service_plans),
    );
    let body = json!({"name": a.name, "apps": apps, "routes": routes, "services": services});
    let _: Value = client.post("/v3/organization_quotas", body).await?;
    println!("OK");
    Ok(())
}

/// cf's way of showing a limit: a number, or `unlimited`.
pub(crate) fn shown(v: &Value, memory: bool) -> String {
    match v.as_i64() {
        None => "unlimited".into(),
        Some(mb) if memory && mb >= 1024 && mb % 1024 == 0 => format!("{}G", mb / 1024),
        Some(mb) if memory => format!("{mb}M"),
        Some(n) => n.to_string(),
    }
}

/// A quota's limits (an org's or a space's) in cf's order and words.
pub(crate) fn limits_of(qd: &Value) -> Vec<(&'static str, String)> {
    let paid = if qd["services"]["paid_services_allowed"] == true {
        "allowed"
    } else {
        "disallowed"
    };
    vec![
        (
            "total memory",
            shown(&qd["apps"]["total_memory_in_mb"], true),
        ),
        (
            "instance memory",
            shown(&qd["apps"]["per_process_memory_in_mb"], true),
        ),
        ("routes", shown(&qd["routes"]["total_routes"], false)),
        (
            "service instances",
            shown(&qd["services"]["total_service_instances"], false),
        ),
        ("paid service plans", paid.to_string()),
        (
            "app instances",
            shown(&qd["apps"]["total_instances"], false),
        ),
        (
            "route ports",
            shown(&qd["routes"]["total_reserved_ports"], false),
        ),
    ]
}

/// Quotas (an org's or a space's) as cf lists them: a row each, its name
/// and its limits.
pub(crate) fn limits_table(quotas: &[Value]) -> String {
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|qd| {
            let mut row = vec![qd["name"].as_str().unwrap_or_default().to_string()];
            row.extend(limits_of(qd).into_iter().map(|(_, v)| v));
            row
        })
        .collect();
    let mut headers = vec!["name"];
    headers.extend(limits_of(&Value::Null).into_iter().map(|(k, _)| k));
    table(&headers, &rows, "")
}

pub async fn list(client: &mut Client) -> anyhow::Result<()> {
    println!("Getting org quotas as {}...\n", client.config.user);
    let quotas: Vec<Value> = client.list("/v3/organization_quotas?order_by=name").await?;
    print!("{}", limits_table(&quotas));
    Ok(())
}

pub async fn set(client: &mut Client, a: SetOrgQuotaArgs) -> anyhow::Result<()> {
    println!(
        "Setting quota {} to org {} as {}...",
        a.quota, a.org, client.config.user
    );
    let orgs: Vec<Value> = client
        .list(&format!("/v3/organizations?names={}", q(&a.org)))
        .await?;
    let org = orgs
        .iter()
        .find(|o| o["name"] == a.org.as_str())
        .ok_or_else(|| anyhow::anyhow!("Organization '{}' not found.", a.org))?;
    let quotas: Vec<Value> = client
        .list(&format!("/v3/organization_quotas?names={}", q(&a.quota)))
        .await?;
    let quota = quotas
        .iter()
        .find(|x| x["name"] == a.quota.as_str())
        .ok_or_else(|| anyhow::anyhow!("Organization quota '{}' not found.", a.quota))?;
    let path = format!(
        "/v3/organization_quotas/{}/relationships/organizations",
        quota["guid"].as_str().unwrap_or_default()
    );
    let _: Value = client
        .post(&path, json!({"data": [{"guid": org["guid"]}]}))
        .await?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_show_as_cf_shows_them() {
        assert_eq!(shown(&json!(10240), true), "10G");
        assert_eq!(shown(&json!(512), true), "512M");
        assert_eq!(shown(&Value::Null, true), "unlimited");
        assert_eq!(shown(&json!(1000), false), "1000");
    }
}
