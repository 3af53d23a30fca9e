//! Feature flags, environment variable groups and usage summaries.

use crate::db::settings::{EnvGroup, Usage};
use crate::util::link;
use serde_json::{Value, json};

pub fn feature_flag_json(
    b: &str,
    name: &str,
    enabled: bool,
    updated_at: Option<&str>,
    custom_error_message: Option<&str>,
) -> Value {
    json!({
        "name": name,
        "enabled": enabled,
        "updated_at": updated_at,
        "custom_error_message": custom_error_message,
        "links": {"self": link(b, &format!("/v3/feature_flags/{name}"))},
    })
}

pub fn env_group_json(b: &str, g: &EnvGroup) -> Value {
    json!({
        "updated_at": g.updated_at,
        "name": g.name,
        "var": g.vars,
        "links": {"self": link(b, &format!("/v3/environment_variable_groups/{}", g.name))},
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "started_instances": u.started_instances,
        "memory_in_mb": u.memory_in_mb,
        "routes": u.routes,
        "service_instances": 0,
        "reserved_ports": 0,
        "domains": u.domains,
        "per_app_tasks": u.per_app_tasks,
        "service_keys": 0,
    })
}

pub fn usage_summary_json(b: &str, u: &Usage) -> Value {
    json!({
        "usage_summary": usage_json(u),
        "links": {"self": link(b, "/v3/info/usage_summary")},
    })
}

pub fn org_usage_summary_json(b: &str, org_guid: &str, u: &Usage) -> Value {
    json!({
        "usage_summary": usage_json(u),
        "links": {
            "self": link(b, &format!("/v3/organizations/{org_guid}/usage_summary")),
            "organization": link(b, &format!("/v3/organizations/{org_guid}")),
        },
    })
}
