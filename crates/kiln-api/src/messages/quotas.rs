//! Bodies of `/v3/organization_quotas` with Cloud Controller's checks
//! (`organization_quotas_create_message.rb` and its `quotas_apps`,
//! `quotas_services`, `quotas_routes` messages): each limit a non-negative
//! integer or null (unlimited).

use super::GuidRef;
use crate::error::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
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
        validate_name(&self.name, required)
    }

    /// `base` with the body's limits laid over it, each checked.
    pub fn limits_over(&self, base: Value) -> ApiResult<Value> {
        lay_over(
            base,
            &[
                ("apps", &self.apps),
                ("services", &self.services),
                ("routes", &self.routes),
                ("domains", &self.domains),
            ],
        )
    }
}

fn validate_name(name: &Option<String>, required: bool) -> ApiResult<()> {
    match name {
        None if required => Err(ApiError::unprocessable("Name can't be blank")),
        Some(n) if n.trim().is_empty() => Err(ApiError::unprocessable("Name can't be blank")),
        Some(n) if n.chars().count() > 250 => Err(ApiError::unprocessable(
            "Name is too long (maximum is 250 characters)",
        )),
        _ => Ok(()),
    }
}

/// `base` with the given groups' limits laid over it, each checked with
/// CC's words (`quotas_apps_message.rb` and its siblings).
fn lay_over(mut base: Value, given: &[(&str, &Option<Map<String, Value>>)]) -> ApiResult<Value> {
    for (group, body) in given {
        let Some(body) = body else { continue };
        let keys = GROUPS
            .iter()
            .find(|(g, _)| g == group)
            .map_or(&[][..], |(_, k)| *k);
        for (k, v) in body {
            check_limit(group, keys, k, v)?;
            base[*group][k] = v.clone();
        }
    }
    Ok(base)
}

fn check_limit(group: &str, keys: &[&str], k: &str, v: &Value) -> ApiResult<()> {
    if !keys.contains(&k) {
        return Err(ApiError::unprocessable(format!(
            "{} Unknown field(s): '{k}'",
            humanize(group)
        )));
    }
    let ok = match (k, v) {
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
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "{} {} must be an integer greater than or equal to 0",
            humanize(group),
            humanize(k)
        )))
    }
}

/// `POST /v3/organization_quotas/:guid/relationships/organizations`.
pub type ApplyQuota = ToManyData;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpaceQuotaRelationships {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spaces: Option<Value>,
}

/// `POST /v3/space_quotas` and (every field optional, no relationships)
/// its PATCH (`space_quotas_create_message.rb`, `space_quota_update_message.rb`).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpaceQuotaBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<SpaceQuotaRelationships>,
}

/// A space quota's create, checked: its org and the spaces it starts with.
#[derive(Debug, Clone)]
pub struct NewSpaceQuota {
    pub name: String,
    pub limits: Value,
    pub organization_guid: String,
    pub space_guids: Vec<String>,
}

impl SpaceQuotaBody {
    /// A new space quota's fields (CC's defaults: every limit unlimited,
    /// paid services allowed), or CC's first complaint.
    pub fn for_create(&self) -> ApiResult<NewSpaceQuota> {
        validate_name(&self.name, true)?;
        let limits = self.limits_over(space_unlimited())?;
        let Some(rel) = &self.relationships else {
            return Err(ApiError::unprocessable(
                "Relationships 'relationships' is not an object",
            ));
        };
        let organization_guid = to_one_guid(rel.organization.as_ref()).ok_or_else(|| {
            ApiError::unprocessable(
                "Relationships Organization must be structured like this: \"organization: {\"data\": {\"guid\": \"valid-guid\"}}\"",
            )
        })?;
        let space_guids = match &rel.spaces {
            None => Vec::new(),
            Some(v) => to_many_guids(v).ok_or_else(|| {
                ApiError::unprocessable(
                    "Relationships Spaces must be structured like this: \"spaces: {\"data\": [{\"guid\": \"valid-guid\"},{\"guid\": \"valid-guid\"}]}\"",
                )
            })?,
        };
        Ok(NewSpaceQuota {
            name: self.name.clone().unwrap_or_default(),
            limits,
            organization_guid,
            space_guids,
        })
    }

    /// The request as an audit event records it.
    pub fn request(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// An update's name (if given) and `base` with its limits laid over.
    pub fn for_update(&self, base: Value) -> ApiResult<(Option<String>, Value)> {
        validate_name(&self.name, false)?;
        if self.relationships.is_some() {
            return Err(ApiError::unprocessable("Unknown field(s): 'relationships'"));
        }
        Ok((self.name.clone(), self.limits_over(base)?))
    }

    fn limits_over(&self, base: Value) -> ApiResult<Value> {
        lay_over(
            base,
            &[
                ("apps", &self.apps),
                ("services", &self.services),
                ("routes", &self.routes),
            ],
        )
    }
}

/// A space quota's limits with nothing limited: the org groups but
/// `domains` (CC's space quotas have none).
pub fn space_unlimited() -> Value {
    let mut all = unlimited();
    if let Some(m) = all.as_object_mut() {
        m.remove("domains");
    }
    all
}

fn to_one_guid(v: Option<&Value>) -> Option<String> {
    let data = v?.as_object()?.get("data")?.as_object()?;
    (data.len() == 1)
        .then(|| data.get("guid")?.as_str().map(str::to_string))
        .flatten()
}

fn to_many_guids(v: &Value) -> Option<Vec<String>> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.get("data")?
        .as_array()?
        .iter()
        .map(|d| {
            let d = d.as_object()?;
            (d.len() == 1)
                .then(|| d.get("guid")?.as_str().map(str::to_string))
                .flatten()
        })
        .collect()
}

/// `POST /v3/space_quotas/:guid/relationships/spaces`.
pub type ApplySpaceQuota = ToManyData;
