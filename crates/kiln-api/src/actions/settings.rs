//! Platform settings an admin changes: the running and staging environment
//! variable groups, and feature flags (CC's `FeatureFlag`, its names and
//! defaults), with the check the guarded code paths make.

use crate::context::Ctx;
use crate::db::settings::{self, EnvGroup};
use crate::error::{ApiError, ApiResult};
use crate::messages::{UpdateEnvGroup, UpdateFeatureFlag};
use crate::permissions::Permissions;
use axum::http::StatusCode;

/// Cloud Controller's flags and defaults. One deliberate difference:
/// `diego_docker` is on, because Kiln runs docker images out of the box.
pub const DEFAULT_FLAGS: &[(&str, bool)] = &[
    ("user_org_creation", false),
    ("private_domain_creation", true),
    ("app_bits_upload", true),
    ("app_scaling", true),
    ("route_creation", true),
    ("service_instance_creation", true),
    ("diego_docker", true),
    ("diego_cnb", false),
    ("set_roles_by_username", true),
    ("unset_roles_by_username", true),
    ("task_creation", true),
    ("env_var_visibility", true),
    ("space_scoped_private_broker_creation", true),
    ("space_developer_env_var_visibility", true),
    ("service_instance_sharing", false),
    ("hide_marketplace_from_unauthenticated_users", false),
    ("resource_matching", true),
    ("route_sharing", false),
    ("hash_based_routing", false),
];

/// Flags an admin passes whatever their value.
const ADMIN_SKIPPABLE: &[&str] = &[
    "app_bits_upload",
    "app_scaling",
    "set_roles_by_username",
    "space_developer_env_var_visibility",
    "task_creation",
    "unset_roles_by_username",
];

/// A flag as presented: name, value, when an admin set it, its message.
#[derive(Debug, Clone)]
pub struct Flag {
    pub name: String,
    pub enabled: bool,
    pub updated_at: Option<String>,
    pub custom_error_message: Option<String>,
}

/// Every flag, in CC's order, with what an admin set.
pub async fn feature_flags(ctx: &Ctx) -> ApiResult<Vec<Flag>> {
    let set = settings::feature_flags(&ctx.pool).await?;
    Ok(DEFAULT_FLAGS
        .iter()
        .map(
            |(name, default)| match set.iter().find(|r| r.name == *name) {
                Some(r) => Flag {
                    name: r.name.clone(),
                    enabled: r.enabled,
                    updated_at: Some(r.updated_at.clone()),
                    custom_error_message: r.error_message.clone(),
                },
                None => Flag {
                    name: name.to_string(),
                    enabled: *default,
                    updated_at: None,
                    custom_error_message: None,
                },
            },
        )
        .collect())
}

pub async fn feature_flag(ctx: &Ctx, name: &str) -> ApiResult<Flag> {
    feature_flags(ctx)
        .await?
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::not_found("Feature flag"))
}

/// `PATCH /v3/feature_flags/:name` (admins).
pub async fn update_feature_flag(ctx: &Ctx, name: &str, msg: UpdateFeatureFlag) -> ApiResult<Flag> {
    let current = feature_flag(ctx, name).await?;
    msg.validate()?;
    let enabled = msg.enabled.unwrap_or(current.enabled);
    let message = match msg.custom_error_message {
        Some(m) => m,
        None => current.custom_error_message,
    };
    settings::set_feature_flag(&ctx.pool, name, enabled, message.as_deref()).await?;
    tracing::info!(flag = name, enabled, "feature flag set");
    feature_flag(ctx, name).await
}

/// Refuses with CC's 403 FeatureDisabled unless the flag is on (or the
/// caller is an admin and the flag lets admins pass).
pub async fn require(ctx: &Ctx, perms: Option<&Permissions>, name: &str) -> ApiResult<()> {
    if perms.is_some_and(Permissions::is_admin) && ADMIN_SKIPPABLE.contains(&name) {
        return Ok(());
    }
    let flag = feature_flag(ctx, name).await?;
    if flag.enabled {
        return Ok(());
    }
    Err(disabled(
        flag.custom_error_message.as_deref().unwrap_or(name),
    ))
}

/// Whether a flag is on (no admin exception).
pub async fn enabled(ctx: &Ctx, name: &str) -> ApiResult<bool> {
    Ok(feature_flag(ctx, name).await?.enabled)
}

fn disabled(message: &str) -> ApiError {
    ApiError::cf(
        StatusCode::FORBIDDEN,
        330002,
        "CF-FeatureDisabled",
        format!("Feature Disabled: {message}"),
    )
}

fn group_name(name: &str) -> ApiResult<&'static str> {
    match name {
        "running" => Ok("running"),
        "staging" => Ok("staging"),
        _ => Err(ApiError::not_found("Environment variable group")),
    }
}

pub async fn env_group(ctx: &Ctx, name: &str) -> ApiResult<EnvGroup> {
    settings::env_group(&ctx.pool, group_name(name)?).await
}

/// `PATCH /v3/environment_variable_groups/:name`: merges `var` into the
/// group (null deletes a variable).
pub async fn update_env_group(ctx: &Ctx, name: &str, msg: UpdateEnvGroup) -> ApiResult<EnvGroup> {
    let name = group_name(name)?;
    let changes = msg.validate()?;
    let mut group = settings::env_group(&ctx.pool, name).await?;
    for (k, v) in changes {
        match v {
            Some(v) => group.vars.insert(k, v),
            None => group.vars.remove(&k),
        };
    }
    settings::set_env_group(&ctx.pool, name, &group.vars).await?;
    tracing::info!(group = name, "environment variable group updated");
    settings::env_group(&ctx.pool, name).await
}
