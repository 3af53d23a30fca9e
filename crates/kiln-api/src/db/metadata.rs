//! Labels and annotations of every resource (`metadata_labels`,
//! `metadata_annotations`, keyed by the resource's guid), and label
//! selectors as SQL conditions on a listed table's `guid`.

use super::Sql;
use crate::error::ApiResult;
use kiln_store::{Connection, Pool};
use std::collections::{BTreeMap, HashMap};

/// One key of a metadata patch: `value` `None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub prefix: String,
    pub name: String,
    pub value: Option<String>,
}

/// What a request's `metadata` changes (CC merges: keys not named stay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch {
    pub labels: Vec<Entry>,
    pub annotations: Vec<Entry>,
}

/// A resource's labels and annotations, keys spelled `prefix/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    /// `key=v`, `key==v`, `key in (v1,v2)`.
    In,
    /// `key!=v`, `key notin (v1,v2)`: also rows without the key.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    NotExists,
}

/// One requirement of a `label_selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub prefix: String,
    pub name: String,
    pub op: LabelOp,
    pub values: Vec<String>,
}

const TABLES: [&str; 2] = ["metadata_labels", "metadata_annotations"];

/// Applies a patch to the resource `guid`: sets the keys with a value,
/// deletes those with none.
pub async fn apply(conn: &mut Connection, guid: &str, patch: &Patch) -> ApiResult<()> {
    for (table, entries) in TABLES.iter().zip([&patch.labels, &patch.annotations]) {
        for e in entries {
            match &e.value {
                Some(value) => {
                    let sql = format!(
                        "INSERT INTO {table} (resource_guid, key_prefix, key_name, value) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (resource_guid, key_prefix, key_name) \
                         DO UPDATE SET value = excluded.value"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(guid)
                        .bind(&e.prefix)
                        .bind(&e.name)
                        .bind(value)
                        .execute(&mut *conn)
                        .await?;
                }
                None => {
                    let sql = format!(
                        "DELETE FROM {table} WHERE resource_guid = $1 AND key_prefix = $2 AND key_name = $3"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(guid)
                        .bind(&e.prefix)
                        .bind(&e.name)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

fn spelled(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// The metadata of each of `guids` that has any.
pub async fn read(pool: &Pool, guids: &[String]) -> ApiResult<HashMap<String, Metadata>> {
    let mut out: HashMap<String, Metadata> = HashMap::new();
    if guids.is_empty() {
        return Ok(out);
    }
    for (i, table) in TABLES.iter().enumerate() {
        // SQLite binds at most 32766 parameters, PostgreSQL 65535; a page
        // holds at most 5000.
        for chunk in guids.chunks(5000) {
            let mut q = Sql::new(format!(
                "SELECT resource_guid, key_prefix, key_name, value FROM {table} WHERE resource_guid"
            ));
            super::push_in(&mut q, chunk);
            q.push(" ORDER BY key_prefix, key_name");
            let rows = q.query().fetch_all(pool).await?;
            for row in rows {
                use sqlx::Row as _;
                let guid: String = row.try_get(0)?;
                let prefix: String = row.try_get(1)?;
                let name: String = row.try_get(2)?;
                let value: String = row.try_get(3)?;
                let m = out.entry(guid).or_default();
                let map = if i == 0 {
                    &mut m.labels
                } else {
                    &mut m.annotations
                };
                map.insert(spelled(&prefix, &name), value);
            }
        }
    }
    Ok(out)
}

/// `guid [NOT] IN (resources with the label [and one of the values])`.
pub(super) fn push_requirement(q: &mut Sql, r: &LabelRequirement) {
    let negated = matches!(r.op, LabelOp::NotIn | LabelOp::NotExists);
    q.push(if negated { "guid NOT IN" } else { "guid IN" });
    q.push(" (SELECT resource_guid FROM metadata_labels WHERE key_prefix = ");
    q.bind(&r.prefix);
    q.push(" AND key_name = ");
    q.bind(&r.name);
    if matches!(r.op, LabelOp::In | LabelOp::NotIn) {
        q.push(" AND value");
        super::push_in(q, &r.values);
    }
    q.push(")");
}
