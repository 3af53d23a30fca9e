//! `create-space-quota`, `space-quotas`, `space-quota`, `update-space-quota`,
//! `set-space-quota`, `unset-space-quota`, `delete-space-quota`: the cf
//! CLI's names, flags and output, through `/v3/space_quotas`, in the
//! targeted org.

use crate::app::confirmed;
use crate::client::{Body, Client, q};
use crate::config::Named;
use crate::quotas::{limits_of, limits_table};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// A limit as cf takes it: a number (memory with M or G), or -1 for
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Of(u64),
}

impl Limit {
    fn json(self) -> Value {
        match self {
            Limit::Unlimited => Value::Null,
            Limit::Of(n) => json!(n),
        }
    }
}

fn parse_memory(text: &str) -> Result<Limit, String> {
    if text.trim() == "-1" {
        return Ok(Limit::Unlimited);
    }
    crate::push::parse_megabytes(text).map(Limit::Of)
}

fn parse_count(text: &str) -> Result<Limit, String> {
    match text.trim() {
        "-1" => Ok(Limit::Unlimited),
        n => n.parse::<u64>().map(Limit::Of).map_err(|_| {
            format!("invalid number {text:?}: use a whole number, or -1 for unlimited")
        }),
    }
}

/// The limits both `create-space-quota` and `update-space-quota` take.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SpaceQuotaLimits {
    /// Total amount of memory all processes can have, e.g. 1024M, 1G, 10G; -1 for unlimited
    #[arg(short = 'm', value_parser = parse_memory, allow_hyphen_values = true)]
    pub total_memory: Option<Limit>,
    /// Maximum amount of memory a process can have, e.g. 1024M, 1G; -1 for unlimited
    #[arg(short = 'i', value_parser = parse_memory, allow_hyphen_values = true)]
    pub instance_memory: Option<Limit>,
    /// Total number of routes allowed; -1 for unlimited
    #[arg(short = 'r', value_parser = parse_count, allow_hyphen_values = true)]
    pub routes: Option<Limit>,
    /// Total number of service instances allowed; -1 for unlimited
    #[arg(short = 's', value_parser = parse_count, allow_hyphen_values = true)]
    pub service_instances: Option<Limit>,
    /// Total number of application instances; -1 for unlimited
    #[arg(short = 'a', value_parser = parse_count, allow_hyphen_values = true)]
    pub app_instances: Option<Limit>,
    /// Maximum number of routes that may have reserved ports; -1 for unlimited
    #[arg(long = "reserved-route-ports", value_parser = parse_count, allow_hyphen_values = true)]
    pub reserved_route_ports: Option<Limit>,
}

impl SpaceQuotaLimits {
    /// The body's `apps`, `routes` and `services`: only the limits given.
    fn body(&self, paid: Option<bool>) -> Value {
        let put = |m: &mut Map<String, Value>, k: &str, v: Option<Limit>| {
            if let Some(v) = v {
                m.insert(k.into(), v.json());
            }
        };
        let mut apps = Map::new();
        put(&mut apps, "total_memory_in_mb", self.total_memory);
        put(&mut apps, "per_process_memory_in_mb", self.instance_memory);
        put(&mut apps, "total_instances", self.app_instances);
        let mut routes = Map::new();
        put(&mut routes, "total_routes", self.routes);
        put(
            &mut routes,
            "total_reserved_ports",
            self.reserved_route_ports,
        );
        let mut services = Map::new();
        put(
            &mut services,
            "total_service_instances",
            self.service_instances,
        );
        if let Some(paid) = paid {
            services.insert("paid_services_allowed".into(), json!(paid));
        }
        json!({"apps": apps, "routes": routes, "services": services})
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct CreateSpaceQuotaArgs {
    /// The quota's name
    pub name: String,
    #[command(flatten)]
    pub limits: SpaceQuotaLimits,
    /// Allow provisioning instances of paid service plans
    #[arg(long = "allow-paid-service-plans")]
    pub allow_paid_service_plans: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UpdateSpaceQuotaArgs {
    /// The quota's name
    pub name: String,
    /// A new name for the quota
    #[arg(short = 'n')]
    pub new_name: Option<String>,
    #[command(flatten)]
    pub limits: SpaceQuotaLimits,
    /// Allow provisioning instances of paid service plans
    #[arg(
        long = "allow-paid-service-plans",
        conflicts_with = "disallow_paid_service_plans"
    )]
    pub allow_paid_service_plans: bool,
    /// Disallow provisioning instances of paid service plans
    #[arg(long = "disallow-paid-service-plans")]
    pub disallow_paid_service_plans: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SpaceQuotaArgs {
    /// The quota's name
    pub name: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SetSpaceQuotaArgs {
    pub space: String,
    pub quota: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteSpaceQuotaArgs {
    /// The quota's name
    pub name: String,
    /// Force deletion without confirmation
    #[arg(short = 'f')]
    pub force: bool,
}

fn targeted_org(client: &Client) -> anyhow::Result<Named> {
    client.config.org.clone().ok_or_else(|| {
        anyhow::anyhow!("No org targeted, use 'kiln target -o ORG' to target an org.")
    })
}

/// The targeted org's space quota of that name.
async fn find(client: &mut Client, org: &Named, name: &str) -> anyhow::Result<Value> {
    let found: Vec<Value> = client
        .list(&format!(
            "/v3/space_quotas?organization_guids={}&names={}",
            org.guid,
            q(name)
        ))
        .await?;
    found
        .into_iter()
        .find(|x| x["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("Space quota with name '{name}' not found."))
}

fn guid(v: &Value) -> &str {
    v["guid"].as_str().unwrap_or_default()
}

pub async fn create(client: &mut Client, a: CreateSpaceQuotaArgs) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    println!(
        "Creating space quota {} for org {} as {}...",
        a.name, org.name, client.config.user
    );
    let mut body = a.limits.body(Some(a.allow_paid_service_plans));
    body["name"] = json!(a.name);
    body["relationships"] = json!({"organization": {"data": {"guid": org.guid}}});
    let _: Value = client.post("/v3/space_quotas", body).await?;
    println!("OK");
    Ok(())
}

pub async fn update(client: &mut Client, a: UpdateSpaceQuotaArgs) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    println!(
        "Updating space quota {} for org {} as {}...",
        a.name, org.name, client.config.user
    );
    let quota = find(client, &org, &a.name).await?;
    let paid = match (a.allow_paid_service_plans, a.disallow_paid_service_plans) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let mut body = a.limits.body(paid);
    if let Some(new_name) = &a.new_name {
        body["name"] = json!(new_name);
    }
    let _: Value = client
        .patch(&format!("/v3/space_quotas/{}", guid(&quota)), body)
        .await?;
    println!("OK");
    Ok(())
}

pub async fn list(client: &mut Client) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    println!(
        "Getting space quotas for org {} as {}...\n",
        org.name, client.config.user
    );
    let quotas: Vec<Value> = client
        .list(&format!(
            "/v3/space_quotas?organization_guids={}&order_by=name",
            org.guid
        ))
        .await?;
    if quotas.is_empty() {
        println!("No space quotas found.");
        return Ok(());
    }
    print!("{}", limits_table(&quotas));
    Ok(())
}

pub async fn show(client: &mut Client, a: SpaceQuotaArgs) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    println!(
        "Getting space quota {} for org {} as {}...\n",
        a.name, org.name, client.config.user
    );
    let quota = find(client, &org, &a.name).await?;
    for (k, v) in limits_of(&quota) {
        println!("{:<24}{v}", format!("{k}:"));
    }
    Ok(())
}

/// The targeted org's space of that name.
async fn space_named(client: &mut Client, org: &Named, name: &str) -> anyhow::Result<Value> {
    let spaces: Vec<Value> = client
        .list(&format!(
            "/v3/spaces?organization_guids={}&names={}",
            org.guid,
            q(name)
        ))
        .await?;
    spaces
        .into_iter()
        .find(|s| s["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("Space '{name}' not found."))
}

pub async fn set(client: &mut Client, a: SetSpaceQuotaArgs) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    println!(
        "Setting space quota {} to space {} as {}...",
        a.quota, a.space, client.config.user
    );
    let space = space_named(client, &org, &a.space).await?;
    let quota = find(client, &org, &a.quota).await?;
    let path = format!("/v3/space_quotas/{}/relationships/spaces", guid(&quota));
    let _: Value = client
        .post(&path, json!({"data": [{"guid": guid(&space)}]}))
        .await?;
    println!("OK");
    Ok(())
}

pub async fn unset(client: &mut Client, a: SetSpaceQuotaArgs) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    println!(
        "Unassigning space quota {} from space {} as {}...",
        a.quota, a.space, client.config.user
    );
    let space = space_named(client, &org, &a.space).await?;
    let quota = find(client, &org, &a.quota).await?;
    let path = format!(
        "/v3/space_quotas/{}/relationships/spaces/{}",
        guid(&quota),
        guid(&space)
    );
    client.call(Method::DELETE, &path, Body::Empty).await?;
    println!("OK");
    Ok(())
}

pub async fn delete(client: &mut Client, a: DeleteSpaceQuotaArgs) -> anyhow::Result<()> {
    let org = targeted_org(client)?;
    let question = format!(
        "Really delete the space quota {} in org {}?",
        a.name, org.name
    );
    if !a.force && !confirmed(&question) {
        println!("Space quota '{}' has not been deleted.", a.name);
        return Ok(());
    }
    println!(
        "Deleting space quota {} for org {} as {}...",
        a.name, org.name, client.config.user
    );
    let quota = match find(client, &org, &a.name).await {
        Ok(quota) => quota,
        Err(_) => {
            println!("Space quota with name '{}' does not exist.\nOK", a.name);
            return Ok(());
        }
    };
    client
        .delete_and_wait(&format!("/v3/space_quotas/{}", guid(&quota)))
        .await?;
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quotas::shown;

    #[test]
    fn limits_take_cf_spellings_and_minus_one_for_unlimited() {
        assert_eq!(parse_memory("1G"), Ok(Limit::Of(1024)));
        assert_eq!(parse_memory("-1"), Ok(Limit::Unlimited));
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_count("10"), Ok(Limit::Of(10)));
        assert_eq!(parse_count("-1"), Ok(Limit::Unlimited));
        assert!(parse_count("-2").is_err());
    }

    #[test]
    fn a_body_names_only_the_limits_given() {
        let limits = SpaceQuotaLimits {
            total_memory: Some(Limit::Of(512)),
            app_instances: Some(Limit::Unlimited),
            ..Default::default()
        };
        let body = limits.body(None);
        assert_eq!(
            body,
            json!({"apps": {"total_memory_in_mb": 512, "total_instances": null},
                "routes": {}, "services": {}})
        );
        assert_eq!(shown(&json!(2048), true), "2G");
        assert_eq!(shown(&Value::Null, false), "unlimited");
    }
}
