//! The CCDB: its schema (embedded migrations), one plain struct per table
//! and the generic reads every handler shares. Writes are written next to
//! the handler that owns them; state columns only ever receive a state that
//! kiln-model's `transition_to` allowed.

use crate::error::{ApiError, ApiResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;

pub const MIGRATIONS: &[kiln_store::MigrationStep] = &[(
    1,
    "ccdb tables",
    include_str!("../migrations/0001_ccdb.sql"),
)];

/// A table row with a guid, readable generically.
pub trait Record: Sized + Send + Unpin {
    const TABLE: &'static str;
    /// The name used in `<Resource> not found`.
    const RESOURCE: &'static str;
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error>;
}

/// The outcome of a write on a table with a unique name: a unique-constraint
/// violation becomes Cloud Foundry's 422 with `taken` as its detail, so two
/// racing creates cannot both succeed and neither sees a 500.
pub fn unique_or_taken<T>(
    result: Result<T, sqlx::Error>,
    taken: impl FnOnce() -> String,
) -> ApiResult<T> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::unprocessable(taken()))
        }
        other => Ok(other?),
    }
}

pub async fn find<T: Record>(pool: &SqlitePool, guid: &str) -> ApiResult<Option<T>> {
    let sql = format!("SELECT * FROM {} WHERE guid = ?", T::TABLE);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(guid)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(T::from_row).transpose()?)
}

pub async fn get<T: Record>(pool: &SqlitePool, guid: &str) -> ApiResult<T> {
    find(pool, guid)
        .await?
        .ok_or_else(|| ApiError::not_found(T::RESOURCE))
}

/// Every row, oldest first.
pub async fn all<T: Record>(pool: &SqlitePool) -> ApiResult<Vec<T>> {
    let sql = format!("SELECT * FROM {} ORDER BY rowid", T::TABLE);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
}

/// Rows whose `column` equals `value`, oldest first.
pub async fn where_eq<T: Record>(
    pool: &SqlitePool,
    column: &'static str,
    value: &str,
) -> ApiResult<Vec<T>> {
    let sql = format!(
        "SELECT * FROM {} WHERE {column} = ? ORDER BY rowid",
        T::TABLE
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
}

fn json_col<T: serde::de::DeserializeOwned>(row: &SqliteRow, col: &str) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

macro_rules! record {
    ($ty:ident, $table:literal, $resource:literal { $($field:ident : $kind:tt),+ $(,)? }) => {
        #[derive(Debug, Clone)]
        #[allow(dead_code)] // rows mirror their tables whole
        pub struct $ty { $(pub $field: record!(@ty $kind)),+ }
        impl Record for $ty {
            const TABLE: &'static str = $table;
            const RESOURCE: &'static str = $resource;
            fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
                Ok($ty { $($field: record!(@get row, $field, $kind)),+ })
            }
        }
    };
    (@ty str) => { String };
    (@ty opt) => { Option<String> };
    (@ty int) => { i64 };
    (@ty optint) => { Option<i64> };
    (@ty bool) => { bool };
    (@ty list) => { Vec<String> };
    (@ty map) => { BTreeMap<String, String> };
    (@ty value) => { serde_json::Value };
    (@get $row:ident, $field:ident, list) => { json_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, map) => { json_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, value) => { json_col($row, stringify!($field).trim_start_matches("r#"))? };
    (@get $row:ident, $field:ident, $kind:tt) => { $row.try_get(stringify!($field).trim_start_matches("r#"))? };
}

record!(User, "users", "User" {
    guid: str, username: str, email: str, password_hash: str, created_at: str,
});
record!(Organization, "organizations", "Organization" {
    guid: str, name: str, created_at: str, updated_at: str,
});
record!(Space, "spaces", "Space" {
    guid: str, name: str, organization_guid: str, created_at: str, updated_at: str,
});
record!(Domain, "domains", "Domain" {
    guid: str, name: str, created_at: str, updated_at: str,
});
record!(Stack, "stacks", "Stack" {
    guid: str, name: str, description: str, is_default: bool, created_at: str, updated_at: str,
});
record!(Buildpack, "buildpacks", "Buildpack" {
    guid: str, name: str, stack: opt, position: int, enabled: bool, locked: bool, state: str,
    filename: opt, sha256: opt, created_at: str, updated_at: str,
});
record!(Job, "jobs", "Job" {
    guid: str, operation: str, state: str, resource_type: str, resource_guid: str, errors: value,
    created_at: str, updated_at: str,
});
record!(App, "apps", "App" {
    guid: str, name: str, space_guid: str, state: str, buildpacks: list, stack: str,
    environment_variables: map, droplet_guid: opt, created_at: str, updated_at: str,
});
record!(Process, "processes", "Process" {
    guid: str, app_guid: str, r#type: str, command: opt, instances: int, memory_in_mb: int,
    disk_in_mb: int, health_check_type: str, health_check_endpoint: opt,
    health_check_timeout: optint, health_check_invocation_timeout: optint, version: str,
    created_at: str, updated_at: str,
});
record!(Package, "packages", "Package" {
    guid: str, app_guid: str, r#type: str, state: str, sha256: opt, error: opt,
    created_at: str, updated_at: str,
});
record!(Build, "builds", "Build" {
    guid: str, app_guid: str, package_guid: str, droplet_guid: opt, state: str, error: opt,
    buildpacks: list, stack: str, staging_memory_in_mb: int, staging_disk_in_mb: int,
    created_by_guid: str, created_by_name: str, created_by_email: str,
    created_at: str, updated_at: str,
});
record!(Droplet, "droplets", "Droplet" {
    guid: str, app_guid: str, package_guid: str, build_guid: str, state: str, error: opt,
    process_types: map, buildpacks: value, execution_metadata: str, sha256: opt, stack: str,
    created_at: str, updated_at: str,
});
record!(Route, "routes", "Route" {
    guid: str, host: str, path: str, domain_guid: str, space_guid: str,
    created_at: str, updated_at: str,
});
record!(Destination, "route_destinations", "Destination" {
    guid: str, route_guid: str, app_guid: str, process_type: str, port: int, protocol: str,
    created_at: str, updated_at: str,
});
