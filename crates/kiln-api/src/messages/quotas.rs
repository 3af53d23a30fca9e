//! Bodies of `/v3/organization_quotas` with Cloud Controller's checks
//! (`organization_quotas_create_message.rb` and its `quotas_apps`,
//! `quotas_services`, `quotas_routes` messages): each limit a non-negative
//! integer or null (unlimited).

use super::GuidRef;
use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The limits CC presents, by group, with the keys each group takes.
const GROUPS: [(&str, &[&str]); 4] = [
    (
        "apps",
        &[
            "total_memory_in_mb",
            "per_process_memory_in_mb",
            "total_instances",
            "per_app_tasks",
            "log_rate_limit_in_bytes_per_second",
        ],
    ),
    (
        "services",
        &[
            "paid_services_allowed",
            "total_service_instances",
            "total_service_keys",
        ],
    ),
    ("routes", &["total_routes", "total_reserved_ports"]),
    ("domains", &["total_domains"]),
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ToManyData {
    pub data: Vec<GuidRef>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuotaRelationships {
    #[serde(default)]
    pub organizations: Option<ToManyData>,
}

/// `POST /v3/organization_quotas` and (every field optional) its PATCH.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OrgQuotaBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub apps: Option<Map<String, Value>>,
    #[serde(default)]
    pub services: Option<Map<String, Value>>,
    #[serde(default)]
    pub routes: Option<Map<String, Value>>,
    #[serde(default)]
    pub domains: Option<Map<String, Value>>,
    #[serde(default)]
    pub relationships: Option<QuotaRelationships>,
}

/// Every limit unlimited, paid services allowed (CC's defaults for a new
/// quota's unnamed fields).
pub fn unlimited() -> Value {
    let mut all = Map::new();
    for (group, keys) in GROUPS {
        let mut m = Map::new();
        for k in keys {
            let v = if *k == "paid_services_allowed" {
                json!(true)
            } else {
                Value::Null
            };
            m.insert((*k).into(), v);
        }
        all.insert(group.into(), Value::Object(m));
    }
    Value::Object(all)
}

fn humanize(key: &str) -> String {
    let mut s = key.replace('_', " ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

impl OrgQuotaBody {
    pub fn validate_name(&self, required: bool) -> ApiResult<()> {
        match &self.name {
            None if required => Err(ApiError::unprocessable("Name can't be blank")),
            Some(n) if n.trim().is_empty() => Err(ApiError::unprocessable("Name can't be blank")),
            Some(n) if n.chars().count() > 250 => Err(ApiError::unprocessable(
                "Name is too long (maximum is 250 characters)",
            )),
            _ => Ok(()),
        }
    }

    /// `base` with the body's limits laid over it, each checked.
    pub fn limits_over(&self, mut base: Value) -> ApiResult<Value> {
        let given = [
            ("apps", &self.apps),
            ("services", &self.services),
            ("routes", &self.routes),
            ("domains", &self.domains),
        ];
        for ((group, keys), (_, body)) in GROUPS.iter().zip(given) {
            let Some(body) = body else { continue };
            for (k, v) in body {
                if !keys.contains(&k.as_str()) {
                    return Err(ApiError::unprocessable(format!(
                        "{} Unknown field(s): '{k}'",
                        humanize(group)
                    )));
                }
                let ok = match (k.as_str(), v) {
                    ("paid_services_allowed", Value::Bool(_)) => true,
                    ("paid_services_allowed", _) => {
                        return Err(ApiError::unprocessable(format!(
                            "{} Paid services allowed must be a boolean",
                            humanize(group)
                        )));
                    }
                    (_, Value::Null) => true,
                    (_, Value::Number(n)) => n.as_i64().is_some_and(|n| n >= 0),
                    _ => false,
                };
                if !ok {
                    return Err(ApiError::unprocessable(format!(
                        "{} {} must be an integer greater than or equal to 0",
                        humanize(group),
                        humanize(k)
                    )));
                }
                base[*group][k] = v.clone();
            }
        }
        Ok(base)
    }
}

/// `POST /v3/organization_quotas/:guid/relationships/organizations`.
pub type ApplyQuota = ToManyData;
