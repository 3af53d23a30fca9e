//! Platform-wide settings an admin changes: the environment variable
//! groups and the feature flags an admin set.

use crate::error::{ApiError, ApiResult};
use kiln_store::Pool;
use std::collections::BTreeMap;

/// An environment variable group (`running` or `staging`).
#[derive(Debug, Clone)]
pub struct EnvGroup {
    pub name: String,
    pub vars: BTreeMap<String, String>,
    pub updated_at: Option<String>,
}

pub async fn env_group(pool: &Pool, name: &str) -> ApiResult<EnvGroup> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT environment_json, updated_at FROM environment_variable_groups WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let (json, updated_at) =
        row.ok_or_else(|| ApiError::not_found("Environment variable group"))?;
    let vars = serde_json::from_str(&json)
        .map_err(|e| ApiError::Database(sqlx::Error::Decode(e.into())))?;
    Ok(EnvGroup {
        name: name.to_string(),
        vars,
        updated_at,
    })
}

pub async fn set_env_group(
    pool: &Pool,
    name: &str,
    vars: &BTreeMap<String, String>,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE environment_variable_groups SET environment_json = $1, updated_at = $2 WHERE name = $3",
    )
    .bind(serde_json::to_string(vars).unwrap_or_default())
    .bind(crate::util::now())
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// A flag an admin set.
#[derive(Debug, Clone)]
pub struct FlagRow {
    pub name: String,
    pub enabled: bool,
    pub error_message: Option<String>,
    pub updated_at: String,
}

pub async fn feature_flags(pool: &Pool) -> ApiResult<Vec<FlagRow>> {
    // CAST: the column is declared BOOLEAN in SQLite (an integer there),
    // which sqlx's `Any` driver does not decode; a flag is an integer 0/1.
    let rows: Vec<(String, i64, Option<String>, String)> = sqlx::query_as(
        "SELECT name, CAST(enabled AS INTEGER) AS enabled, error_message, updated_at \
         FROM feature_flags",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, enabled, error_message, updated_at)| FlagRow {
            name,
            enabled: enabled != 0,
            error_message,
            updated_at,
        })
        .collect())
}

pub async fn set_feature_flag(
    pool: &Pool,
    name: &str,
    enabled: bool,
    error_message: Option<&str>,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO feature_flags (name, enabled, error_message, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, \
         error_message = excluded.error_message, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(i64::from(enabled))
    .bind(error_message)
    .bind(crate::util::now())
    .execute(pool)
    .await?;
    Ok(())
}

/// What is in use, platform-wide or in one org (CC's usage summary).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub started_instances: i64,
    pub memory_in_mb: i64,
    pub routes: i64,
    pub domains: i64,
    pub per_app_tasks: i64,
}

/// The usage of everything, or of the org `org`.
pub async fn usage(pool: &Pool, org: Option<&str>) -> ApiResult<Usage> {
    // `$1 IS NULL` makes one statement serve both the platform and an org.
    // CAST: PostgreSQL's SUM of BIGINTs is a NUMERIC.
    let (started_instances, memory_in_mb): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(p.instances), 0) AS BIGINT), \
         CAST(COALESCE(SUM(p.instances * p.memory_in_mb), 0) AS BIGINT) \
         FROM processes p JOIN apps a ON a.guid = p.app_guid JOIN spaces s ON s.guid = a.space_guid \
         WHERE a.state = 'STARTED' AND ($1 IS NULL OR s.organization_guid = $1)",
    )
    .bind(org)
    .fetch_one(pool)
    .await?;
    let (routes,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM routes r JOIN spaces s ON s.guid = r.space_guid \
         WHERE $1 IS NULL OR s.organization_guid = $1",
    )
    .bind(org)
    .fetch_one(pool)
    .await?;
    let (per_app_tasks,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tasks t JOIN apps a ON a.guid = t.app_guid \
         JOIN spaces s ON s.guid = a.space_guid \
         WHERE t.state = 'RUNNING' AND ($1 IS NULL OR s.organization_guid = $1)",
    )
    .bind(org)
    .fetch_one(pool)
    .await?;
    // An org's domains are the private ones it owns.
    let (domains,): (i64,) = match org {
        None => {
            sqlx::query_as("SELECT COUNT(*) FROM domains")
                .fetch_one(pool)
                .await?
        }
        Some(org) => {
            sqlx::query_as("SELECT COUNT(*) FROM domains WHERE owning_organization_guid = $1")
                .bind(org)
                .fetch_one(pool)
                .await?
        }
    };
    Ok(Usage {
        started_instances,
        memory_in_mb,
        routes,
        domains,
        per_app_tasks,
    })
}
