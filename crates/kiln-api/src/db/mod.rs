//! The CCDB, and the only SQL in kiln-api: its schema (embedded migrations),
//! one row type per table that decodes state columns into `kiln-model`
//! enums once ([`rows`]), generic reads and filtered lists, generic writes,
//! and [`transition`], the one compare-and-set path every state change
//! takes. The SQL is written so PostgreSQL accepts it too: no `rowid` (rows
//! carry a `seq`), no `INSERT OR IGNORE` (`ON CONFLICT DO NOTHING`).

pub mod metadata;
mod rows;
pub mod settings;

pub use rows::*;

use crate::error::{ApiError, ApiResult};
use kiln_store::{Executor, Pool, Row};

pub const MIGRATIONS: &[kiln_store::MigrationStep] = &[
    (
        1,
        "ccdb tables",
        include_str!("../../migrations/0001_ccdb.sql"),
    ),
    (
        2,
        "creation order column",
        include_str!("../../migrations/0002_seq.sql"),
    ),
    (
        3,
        "suspended orgs and spaces",
        include_str!("../../migrations/0003_suspended.sql"),
    ),
    (
        4,
        "deployments and revisions",
        include_str!("../../migrations/0004_deployments.sql"),
    ),
    (
        5,
        "tasks and audit events",
        include_str!("../../migrations/0005_tasks_audit_events.sql"),
    ),
    (
        6,
        "docker lifecycle",
        include_str!("../../migrations/0006_docker.sql"),
    ),
    (
        7,
        "users, cc users and roles",
        include_str!("../../migrations/0007_users_roles.sql"),
    ),
    (
        8,
        "services and quotas",
        include_str!("../../migrations/0008_services_quotas.sql"),
    ),
    (
        9,
        "metadata, environment variable groups, feature flags",
        include_str!("../../migrations/0009_metadata_flags_domains.sql"),
    ),
    (
        10,
        "app features (ssh, revisions)",
        include_str!("../../migrations/0010_app_features.sql"),
    ),
    (
        11,
        "private domains and their shared organizations, space ssh",
        include_str!("../../migrations/0011_private_domains.sql"),
    ),
    (
        12,
        "sidecars",
        include_str!("../../migrations/0012_sidecars.sql"),
    ),
    (
        13,
        "space quotas",
        include_str!("../../migrations/0013_space_quotas.sql"),
    ),
    (
        14,
        "droplets' buildpack sidecars",
        include_str!("../../migrations/0014_droplet_sidecars.sql"),
    ),
    (
        15,
        "seq from a sequence on PostgreSQL",
        include_str!("../../migrations/0015_seq_sequence.sql"),
    ),
    (
        16,
        "what was checked of droplets cells PUT into the blobstore",
        include_str!("../../migrations/0016_droplet_blob_checks.sql"),
    ),
];

/// A table row with a guid, readable generically.
pub trait Record: Sized + Send + Unpin {
    const TABLE: &'static str;
    /// The name used in `<Resource> not found`.
    const RESOURCE: &'static str;
    fn from_row(row: &Row) -> Result<Self, sqlx::Error>;
}

/// Which quota an org or a space has (`organization_quota_assignments`,
/// `space_quota_assignments`): one row per holder, `guid` being the
/// holder's. CC's org and space quotas are one shape with a scope; the
/// assignment reads and writes are one code for both.
pub trait QuotaHolding: Record {
    /// (holder's guid, quota's guid).
    fn into_pair(self) -> (String, String);
}

/// A row with a `state` column whose moves `kiln-model` rules.
pub trait Stateful: Record {
    type State: StateMachine;
}

/// A state enum: its spelling and its transition rule.
pub trait StateMachine: Copy + Send + Sync + 'static {
    fn as_str(self) -> &'static str;
    fn check(self, to: Self) -> Result<Self, kiln_model::TransitionError>;
}

macro_rules! state_machine {
    ($($ty:path),+) => {$(
        impl StateMachine for $ty {
            fn as_str(self) -> &'static str { <$ty>::as_str(self) }
            fn check(self, to: Self) -> Result<Self, kiln_model::TransitionError> {
                self.transition_to(to)
            }
        }
    )+};
}
state_machine!(
    kiln_model::PackageState,
    kiln_model::BuildState,
    kiln_model::DropletState,
    kiln_model::DeploymentState,
    kiln_model::AppTaskState
);

impl StateMachine for kiln_model::AppState {
    fn as_str(self) -> &'static str {
        kiln_model::AppState::as_str(self)
    }
    /// Desired app state has no rules: any move is legal.
    fn check(self, to: Self) -> Result<Self, kiln_model::TransitionError> {
        Ok(to)
    }
}

/// A value written to a column.
#[derive(Debug, Clone)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(Some(v.to_string()))
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(Some(v.clone()))
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(Some(v))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::Text(v)
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        Val::Text(v.map(str::to_string))
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(Some(v))
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::Int(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}

/// A JSON column's text.
pub fn json_text<T: serde::Serialize>(v: &T) -> Val {
    Val::Text(Some(serde_json::to_string(v).unwrap_or_default()))
}

pub(crate) use kiln_store::Sql;

impl From<Val> for kiln_store::Arg {
    fn from(v: Val) -> Self {
        match v {
            Val::Text(t) => kiln_store::Arg::Text(t),
            Val::Int(i) => kiln_store::Arg::Int(i),
            // Flags are integers 0/1 on both engines.
            Val::Bool(b) => kiln_store::Arg::Int(Some(i64::from(b))),
        }
    }
}

/// A list filter, always on a column of the listed table: the column's
/// value is one of `values`, or (`via`) the column is one of the `pick`
/// column of rows of another table whose `by` column is one of `values`.
#[derive(Debug, Clone)]
pub enum Cond {
    In(&'static str, Vec<String>),
    Via {
        column: &'static str,
        table: &'static str,
        pick: &'static str,
        by: &'static str,
        values: Vec<String>,
    },
    /// `column op value`, op one of `<`, `<=`, `>`, `>=` (timestamp
    /// filters such as `created_ats[gt]`).
    Cmp(&'static str, &'static str, String),
    /// A `label_selector` requirement on the listed table's `guid`.
    Label(metadata::LabelRequirement),
    /// `column IS NULL`.
    Null(&'static str),
    /// Any one of the conditions holds (an empty list: none does).
    Any(Vec<Cond>),
}

fn push_in(q: &mut Sql, values: &[String]) {
    q.push(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(v);
    }
    // `IN ()` is not SQL: an empty filter matches nothing.
    if values.is_empty() {
        q.push("NULL");
    }
    q.push(")");
}

/// Integer columns that `Cond::In` compares with text: list filters
/// (`?versions=`, `?sequence_ids=`) and the `internal` flag of domains.
const INTEGER_FILTER_COLUMNS: [&str; 3] = ["version", "sequence_id", "internal"];

fn push_cond(q: &mut Sql, c: &Cond) {
    match c {
        Cond::In(column, values) => {
            // Filter values arrive as text; PostgreSQL compares an integer
            // column (a revision's version, a task's sequence id) with text
            // only as text.
            if INTEGER_FILTER_COLUMNS.contains(column) {
                q.push(&format!("CAST({column} AS TEXT)"));
            } else {
                q.push(column);
            }
            push_in(q, values);
        }
        Cond::Via {
            column,
            table,
            pick,
            by,
            values,
        } => {
            q.push(&format!(
                "{column} IN (SELECT {pick} FROM {table} WHERE {by}"
            ));
            push_in(q, values);
            q.push(")");
        }
        Cond::Cmp(column, op, value) => {
            debug_assert!(["<", "<=", ">", ">="].contains(op));
            q.push(&format!("{column} {op} "));
            q.bind(value);
        }
        Cond::Label(r) => metadata::push_requirement(q, r),
        Cond::Null(column) => {
            q.push(&format!("{column} IS NULL"));
        }
        Cond::Any(any) => {
            q.push("(");
            if any.is_empty() {
                q.push("1 = 0");
            }
            for (i, c) in any.iter().enumerate() {
                if i > 0 {
                    q.push(" OR ");
                }
                push_cond(q, c);
            }
            q.push(")");
        }
    }
}

fn push_where(q: &mut Sql, conds: &[Cond]) {
    for (i, c) in conds.iter().enumerate() {
        q.push(if i == 0 { " WHERE " } else { " AND " });
        push_cond(q, c);
    }
}

/// How a page is ordered: a column (ascending, or descending) and then
/// creation order, reversed when descending, as `web::paginate` orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub column: &'static str,
    pub descending: bool,
}

/// Integer columns a list may be ordered by (no collation applies).
const INTEGER_ORDER_COLUMNS: [&str; 1] = ["position"];

/// One page (1-based) of `per_page` rows matching every condition, and how
/// many match in all: LIMIT/OFFSET and COUNT in SQL, so a long list is
/// never read whole.
pub async fn page<T: Record>(
    pool: &Pool,
    conds: &[Cond],
    order: Option<Order>,
    page: usize,
    per_page: usize,
) -> ApiResult<(Vec<T>, i64)> {
    use sqlx::Row as _;
    let mut count = Sql::new(format!("SELECT COUNT(*) FROM {}", T::TABLE));
    push_where(&mut count, conds);
    let total: i64 = count.query().fetch_one(pool).await?.try_get(0)?;
    let mut q = Sql::new(format!("SELECT * FROM {}", T::TABLE));
    push_where(&mut q, conds);
    match order {
        Some(Order { column, descending }) => {
            let dir = if descending { "DESC" } else { "ASC" };
            // Text sorts by bytes on both engines, so a page holds the
            // same rows on SQLite and PostgreSQL.
            let collate = if INTEGER_ORDER_COLUMNS.contains(&column) {
                ""
            } else {
                kiln_store::engine_specific::byte_order(kiln_store::engine(pool))
            };
            q.push(&format!(" ORDER BY {column}{collate} {dir}, seq {dir}"));
        }
        None => {
            q.push(" ORDER BY seq");
        }
    }
    let per_page = i64::try_from(per_page).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.saturating_sub(1))
        .unwrap_or(i64::MAX)
        .saturating_mul(per_page);
    q.push(" LIMIT ")
        .bind(per_page)
        .push(" OFFSET ")
        .bind(offset);
    let rows = q.query().fetch_all(pool).await?;
    let items = rows.iter().map(T::from_row).collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// Rows matching every condition, oldest first.
pub async fn list<T: Record>(pool: &Pool, conds: &[Cond]) -> ApiResult<Vec<T>> {
    let mut q = Sql::new(format!("SELECT * FROM {}", T::TABLE));
    push_where(&mut q, conds);
    q.push(" ORDER BY seq");
    let rows = q.query().fetch_all(pool).await?;
    Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
}

/// Domains that orgs `orgs` may see and use: every shared domain (no
/// owner), those they own and those shared with them (CC's
/// `DomainFetcher.fetch_all_for_orgs`).
pub fn domains_of_orgs(orgs: Vec<String>) -> Cond {
    Cond::Any(vec![
        Cond::Null("owning_organization_guid"),
        Cond::In("owning_organization_guid", orgs.clone()),
        Cond::Via {
            column: "guid",
            table: "domain_shared_organizations",
            pick: "domain_guid",
            by: "organization_guid",
            values: orgs,
        },
    ])
}

/// The outcome of a write on a table with a unique name: a unique-constraint
/// violation becomes Cloud Foundry's 422 with `taken` as its detail, so two
/// racing creates cannot both succeed and neither sees a 500.
pub fn unique_or_taken<T>(
    result: Result<T, ApiError>,
    taken: impl FnOnce() -> String,
) -> ApiResult<T> {
    match result {
        Err(ApiError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            Err(ApiError::unprocessable(taken()))
        }
        other => other,
    }
}

pub async fn find<T: Record>(pool: &Pool, guid: &str) -> ApiResult<Option<T>> {
    let sql = format!("SELECT * FROM {} WHERE guid = $1", T::TABLE);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(guid)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(T::from_row).transpose()?)
}

pub async fn get<T: Record>(pool: &Pool, guid: &str) -> ApiResult<T> {
    find(pool, guid)
        .await?
        .ok_or_else(|| ApiError::not_found(T::RESOURCE))
}

/// Every row, oldest first.
pub async fn all<T: Record>(pool: &Pool) -> ApiResult<Vec<T>> {
    list(pool, &[]).await
}

/// Rows whose `column` equals `value`, oldest first.
pub async fn where_eq<T: Record>(
    pool: &Pool,
    column: &'static str,
    value: &str,
) -> ApiResult<Vec<T>> {
    list(pool, &[Cond::In(column, vec![value.to_string()])]).await
}

/// The first row whose columns equal the values, oldest first.
pub async fn first_where<T: Record>(
    pool: &Pool,
    eq: &[(&'static str, &str)],
) -> ApiResult<Option<T>> {
    let conds: Vec<Cond> = eq
        .iter()
        .map(|(c, v)| Cond::In(c, vec![v.to_string()]))
        .collect();
    Ok(list(pool, &conds).await?.into_iter().next())
}

pub async fn count<'e, T: Record>(exec: impl Executor<'e>) -> ApiResult<i64> {
    let sql = format!("SELECT COUNT(*) FROM {}", T::TABLE);
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(exec)
        .await?;
    Ok(n)
}

fn insert_sql<T: Record>(values: Vec<(&'static str, Val)>) -> Sql {
    let columns: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
    let mut q = Sql::new(format!("INSERT INTO {} ({}", T::TABLE, columns.join(", ")));
    q.push(", seq) VALUES (");
    for (i, (_, v)) in values.into_iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(v);
    }
    q.push(&format!(
        ", (SELECT COALESCE(MAX(seq), 0) + 1 FROM {}))",
        T::TABLE
    ));
    q
}

/// Inserts one row (its `seq` follows the newest).
pub async fn insert<'e, T: Record>(
    exec: impl Executor<'e>,
    values: Vec<(&'static str, Val)>,
) -> ApiResult<()> {
    insert_sql::<T>(values).query().execute(exec).await?;
    Ok(())
}

/// Inserts one row unless it would break a unique constraint; returns
/// whether it was inserted.
pub async fn insert_if_absent<'e, T: Record>(
    exec: impl Executor<'e>,
    values: Vec<(&'static str, Val)>,
) -> ApiResult<bool> {
    let mut q = insert_sql::<T>(values);
    q.push(" ON CONFLICT DO NOTHING");
    Ok(q.query().execute(exec).await?.rows_affected() == 1)
}

fn push_sets(q: &mut Sql, sets: Vec<(&'static str, Val)>) {
    for (i, (c, v)) in sets.into_iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push(&format!("{c} = "));
        q.bind(v);
    }
}

/// Sets columns of the rows whose `column` equals `value`; returns how many
/// rows changed. Never a state column: those move through [`transition`].
pub async fn update_where<'e, T: Record>(
    exec: impl Executor<'e>,
    column: &'static str,
    value: &str,
    sets: Vec<(&'static str, Val)>,
) -> ApiResult<u64> {
    debug_assert!(sets.iter().all(|(c, _)| *c != "state"));
    let mut q = Sql::new(format!("UPDATE {} SET ", T::TABLE));
    push_sets(&mut q, sets);
    q.push(&format!(" WHERE {column} = "));
    q.bind(value);
    Ok(q.query().execute(exec).await?.rows_affected())
}

/// Sets columns of every row. Never a state column.
pub async fn update_all<'e, T: Record>(
    exec: impl Executor<'e>,
    sets: Vec<(&'static str, Val)>,
) -> ApiResult<u64> {
    debug_assert!(sets.iter().all(|(c, _)| *c != "state"));
    let mut q = Sql::new(format!("UPDATE {} SET ", T::TABLE));
    push_sets(&mut q, sets);
    Ok(q.query().execute(exec).await?.rows_affected())
}

/// Sets columns of one row (by guid), with `updated_at` now.
pub async fn update<'e, T: Record>(
    exec: impl Executor<'e>,
    guid: &str,
    mut sets: Vec<(&'static str, Val)>,
) -> ApiResult<u64> {
    sets.push(("updated_at", crate::util::now().into()));
    update_where::<T>(exec, "guid", guid, sets).await
}

/// Deletes the rows whose `column` equals `value`.
pub async fn delete_where<'e, T: Record>(
    exec: impl Executor<'e>,
    column: &'static str,
    value: &str,
) -> ApiResult<u64> {
    let sql = format!("DELETE FROM {} WHERE {column} = $1", T::TABLE);
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .execute(exec)
        .await?
        .rows_affected())
}

/// Gives `holder` (an org or a space) the quota `quota_guid`, its only one.
pub async fn assign_quota<A: QuotaHolding>(
    conn: &mut kiln_store::Connection,
    holder: &str,
    quota_guid: &str,
) -> ApiResult<()> {
    delete_where::<A>(&mut *conn, "guid", holder).await?;
    let now = crate::util::now();
    insert::<A>(
        &mut *conn,
        vec![
            ("guid", holder.into()),
            ("quota_guid", quota_guid.into()),
            ("created_at", now.as_str().into()),
            ("updated_at", now.into()),
        ],
    )
    .await
}

/// The orgs or spaces that have quota `quota_guid`.
pub async fn quota_holders<A: QuotaHolding>(
    pool: &Pool,
    quota_guid: &str,
) -> ApiResult<Vec<String>> {
    let rows = where_eq::<A>(pool, "quota_guid", quota_guid).await?;
    Ok(rows.into_iter().map(|a| a.into_pair().0).collect())
}

/// The quota of each of `holders` that has one (holder → quota).
pub async fn quotas_of<A: QuotaHolding>(
    pool: &Pool,
    holders: &[String],
) -> ApiResult<std::collections::HashMap<String, String>> {
    let rows = list::<A>(pool, &[Cond::In("guid", holders.to_vec())]).await?;
    Ok(rows.into_iter().map(A::into_pair).collect())
}

/// Stops sharing a private domain with an org.
pub async fn delete_share<'e>(
    exec: impl Executor<'e>,
    domain_guid: &str,
    org_guid: &str,
) -> ApiResult<()> {
    sqlx::query(
        "DELETE FROM domain_shared_organizations WHERE domain_guid = $1 AND organization_guid = $2",
    )
    .bind(domain_guid)
    .bind(org_guid)
    .execute(exec)
    .await?;
    Ok(())
}

/// The one compare-and-set path for a state change: moves the row `guid`
/// from `from` to `to` (refused unless kiln-model's rule allows it), setting
/// `also` and `updated_at` with it, only if the row is still in `from`.
/// Returns whether this call made the move (false: another writer moved the
/// row first, or it is gone).
pub async fn transition<'e, T: Stateful>(
    exec: impl Executor<'e>,
    guid: &str,
    from: T::State,
    to: T::State,
    also: Vec<(&'static str, Val)>,
) -> ApiResult<bool> {
    let to = from.check(to)?;
    let mut q = Sql::new(format!("UPDATE {} SET state = ", T::TABLE));
    q.bind(to.as_str());
    q.push(", ");
    let mut sets = also;
    sets.push(("updated_at", crate::util::now().into()));
    push_sets(&mut q, sets);
    q.push(" WHERE guid = ");
    q.bind(guid);
    q.push(" AND state = ");
    q.bind(from.as_str());
    Ok(q.query().execute(exec).await?.rows_affected() == 1)
}

/// Locks the app's row until the transaction `conn` is in ends, so a
/// counter read from the app's rows and then written (the next task
/// sequence id, the next revision) is taken by one transaction at a time.
/// PostgreSQL: `SELECT … FOR UPDATE` (READ COMMITTED lets two transactions
/// read the same maximum otherwise). SQLite: nothing to lock, its write
/// transactions are serial.
async fn lock_app(conn: &mut kiln_store::Connection, app_guid: &str) -> ApiResult<()> {
    let lock = kiln_store::engine_specific::for_update(kiln_store::connection_engine(conn));
    if !lock.is_empty() {
        let sql = format!("SELECT guid FROM apps WHERE guid = $1{lock}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(app_guid)
            .fetch_optional(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The version an app's next revision takes (its newest plus one), the
/// app's row locked until `conn`'s transaction ends.
pub async fn next_revision_version(
    conn: &mut kiln_store::Connection,
    app_guid: &str,
) -> ApiResult<i64> {
    lock_app(conn, app_guid).await?;
    let (n,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) + 1 FROM revisions WHERE app_guid = $1")
            .bind(app_guid)
            .fetch_one(&mut *conn)
            .await?;
    Ok(n)
}

/// The sequence id an app's next task takes (its newest plus one; CC
/// starts at 1), the app's row locked until `conn`'s transaction ends.
pub async fn next_task_sequence_id(
    conn: &mut kiln_store::Connection,
    app_guid: &str,
) -> ApiResult<i64> {
    lock_app(conn, app_guid).await?;
    let (n,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(sequence_id), 0) + 1 FROM tasks WHERE app_guid = $1")
            .bind(app_guid)
            .fetch_one(&mut *conn)
            .await?;
    Ok(n)
}

/// Moves every buildpack at `position` or after one place down (CC's
/// BuildpackCreate makes room this way).
pub async fn shift_buildpacks_from<'e>(exec: impl Executor<'e>, position: i64) -> ApiResult<()> {
    sqlx::query("UPDATE buildpacks SET position = position + 1 WHERE position >= $1")
        .bind(position)
        .execute(exec)
        .await?;
    Ok(())
}

/// Memory (instances × MB) and instances of the started apps' processes in
/// an org, leaving out the processes of `except_app` (whose new figures the
/// caller adds).
pub async fn org_usage<'e>(
    exec: impl Executor<'e>,
    org_guid: &str,
    except_app: &str,
) -> ApiResult<(i64, i64)> {
    let (memory, instances): (i64, i64) = sqlx::query_as(
        // CAST: PostgreSQL's SUM of BIGINTs is a NUMERIC.
        "SELECT CAST(COALESCE(SUM(p.instances * p.memory_in_mb), 0) AS BIGINT), \
         CAST(COALESCE(SUM(p.instances), 0) AS BIGINT) \
         FROM processes p JOIN apps a ON a.guid = p.app_guid JOIN spaces s ON s.guid = a.space_guid \
         WHERE s.organization_guid = $1 AND a.state = 'STARTED' AND a.guid <> $2",
    )
    .bind(org_guid)
    .bind(except_app)
    .fetch_one(exec)
    .await?;
    Ok((memory, instances))
}

/// The memory (MB) and instances a space's started apps other than
/// `except_app` run.
pub async fn space_usage<'e>(
    exec: impl Executor<'e>,
    space_guid: &str,
    except_app: &str,
) -> ApiResult<(i64, i64)> {
    let (memory, instances): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(p.instances * p.memory_in_mb), 0) AS BIGINT), \
         CAST(COALESCE(SUM(p.instances), 0) AS BIGINT) \
         FROM processes p JOIN apps a ON a.guid = p.app_guid \
         WHERE a.space_guid = $1 AND a.state = 'STARTED' AND a.guid <> $2",
    )
    .bind(space_guid)
    .bind(except_app)
    .fetch_one(exec)
    .await?;
    Ok((memory, instances))
}

/// How many tasks are PENDING or RUNNING in a space and in its org (CC's
/// `running_and_pending_tasks_count`, which its per-app task limit
/// compares against).
pub async fn live_tasks<'e>(
    exec: impl Executor<'e>,
    space_guid: &str,
    org_guid: &str,
) -> ApiResult<(i64, i64)> {
    let (space, org): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN a.space_guid = $1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COUNT(*) AS BIGINT) \
         FROM tasks t JOIN apps a ON a.guid = t.app_guid JOIN spaces s ON s.guid = a.space_guid \
         WHERE s.organization_guid = $2 AND t.state IN ('PENDING', 'RUNNING')",
    )
    .bind(space_guid)
    .bind(org_guid)
    .fetch_one(exec)
    .await?;
    Ok((space, org))
}

/// How many routes the spaces of an org hold.
pub async fn org_routes<'e>(exec: impl Executor<'e>, org_guid: &str) -> ApiResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM routes r JOIN spaces s ON s.guid = r.space_guid \
         WHERE s.organization_guid = $1",
    )
    .bind(org_guid)
    .fetch_one(exec)
    .await?;
    Ok(n)
}

/// How many routes a space holds.
pub async fn space_routes<'e>(exec: impl Executor<'e>, space_guid: &str) -> ApiResult<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM routes WHERE space_guid = $1")
        .bind(space_guid)
        .fetch_one(exec)
        .await?;
    Ok(n)
}

/// The last buildpack position (1 when there are none).
pub async fn last_buildpack_position<'e>(exec: impl Executor<'e>) -> ApiResult<i64> {
    let (last,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(position), 1) FROM buildpacks")
        .fetch_one(exec)
        .await?;
    Ok(last)
}

/// Moves the buildpacks at positions `low..=high` by `shift` (a move
/// within the order; CC's `move_to`).
pub async fn shift_buildpacks_between<'e>(
    exec: impl Executor<'e>,
    shift: i64,
    low: i64,
    high: i64,
) -> ApiResult<()> {
    sqlx::query("UPDATE buildpacks SET position = position + $1 WHERE position BETWEEN $2 AND $3")
        .bind(shift)
        .bind(low)
        .bind(high)
        .execute(exec)
        .await?;
    Ok(())
}

/// Closes the gap a deleted buildpack at `position` left.
pub async fn close_buildpack_gap<'e>(exec: impl Executor<'e>, position: i64) -> ApiResult<()> {
    sqlx::query("UPDATE buildpacks SET position = position - 1 WHERE position > $1")
        .bind(position)
        .execute(exec)
        .await?;
    Ok(())
}

/// An app feature's flag; `column` is one of the feature columns
/// (`enable_ssh`, `revisions_enabled`), never user input.
pub async fn app_feature<'e>(
    exec: impl Executor<'e>,
    app_guid: &str,
    column: &'static str,
) -> ApiResult<bool> {
    debug_assert!(["enable_ssh", "revisions_enabled"].contains(&column));
    let sql = format!("SELECT {column} FROM apps WHERE guid = $1");
    let (enabled,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(app_guid)
        .fetch_one(exec)
        .await?;
    Ok(enabled != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::PackageState;

    async fn ccdb(dir: &tempfile::TempDir) -> Pool {
        kiln_store::open_database(&dir.path().join("ccdb.sqlite"), MIGRATIONS)
            .await
            .unwrap()
    }

    async fn package(pool: &Pool, guid: &str, app: &str, state: PackageState) {
        insert::<Package>(
            pool,
            vec![
                ("guid", guid.into()),
                ("app_guid", app.into()),
                ("type", "bits".into()),
                ("state", state.as_str().into()),
                ("sha256", Val::Text(None)),
                ("error", Val::Text(None)),
                ("created_at", "2026-01-01T00:00:00Z".into()),
                ("updated_at", "2026-01-01T00:00:00Z".into()),
            ],
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_state_moves_once_and_only_by_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ccdb(&dir).await;
        package(&pool, "p", "a", PackageState::AwaitingUpload).await;
        let (from, to) = (PackageState::AwaitingUpload, PackageState::ProcessingUpload);
        assert!(
            transition::<Package>(&pool, "p", from, to, vec![])
                .await
                .unwrap()
        );
        // The same move again finds the row moved: the second writer loses.
        assert!(
            !transition::<Package>(&pool, "p", from, to, vec![])
                .await
                .unwrap()
        );
        // An illegal move is refused before any write.
        let illegal = transition::<Package>(&pool, "p", to, PackageState::Expired, vec![]).await;
        assert!(
            matches!(illegal, Err(ApiError::Transition(_))),
            "{illegal:?}"
        );
        let moved = transition::<Package>(
            &pool,
            "p",
            to,
            PackageState::Ready,
            vec![("sha256", "abc".into())],
        )
        .await
        .unwrap();
        assert!(moved);
        let p = get::<Package>(&pool, "p").await.unwrap();
        assert_eq!(p.state, PackageState::Ready);
        assert_eq!(p.sha256.as_deref(), Some("abc"));
        assert!(
            !transition::<Package>(&pool, "gone", from, to, vec![])
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn lists_filter_in_sql_and_keep_creation_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ccdb(&dir).await;
        for (guid, app, state) in [
            ("p3", "a1", PackageState::Ready),
            ("p1", "a2", PackageState::AwaitingUpload),
            ("p2", "a1", PackageState::AwaitingUpload),
        ] {
            package(&pool, guid, app, state).await;
        }
        let guids = |rows: Vec<Package>| rows.into_iter().map(|p| p.guid).collect::<Vec<_>>();
        assert_eq!(guids(all(&pool).await.unwrap()), ["p3", "p1", "p2"]);
        let a1 = Cond::In("app_guid", vec!["a1".into()]);
        let awaiting = Cond::In("state", vec!["AWAITING_UPLOAD".into()]);
        assert_eq!(
            guids(list(&pool, std::slice::from_ref(&a1)).await.unwrap()),
            ["p3", "p2"]
        );
        assert_eq!(guids(list(&pool, &[a1, awaiting]).await.unwrap()), ["p2"]);
        // An empty filter (`?guids=`) matches nothing, not everything.
        let none = list::<Package>(&pool, &[Cond::In("guid", vec![])])
            .await
            .unwrap();
        assert!(none.is_empty());
        // A filter through another table: packages of apps in space s1.
        for (guid, space) in [("a1", "s1"), ("a2", "s2")] {
            insert::<App>(
                &pool,
                vec![
                    ("guid", guid.into()),
                    ("name", guid.into()),
                    ("space_guid", space.into()),
                    ("state", "STOPPED".into()),
                    ("buildpacks", "[]".into()),
                    ("stack", "s".into()),
                    ("environment_variables", "{}".into()),
                    ("created_at", "2026-01-01T00:00:00Z".into()),
                    ("updated_at", "2026-01-01T00:00:00Z".into()),
                ],
            )
            .await
            .unwrap();
        }
        let in_s1 = Cond::Via {
            column: "app_guid",
            table: "apps",
            pick: "guid",
            by: "space_guid",
            values: vec!["s1".into()],
        };
        assert_eq!(guids(list(&pool, &[in_s1]).await.unwrap()), ["p3", "p2"]);
    }

    #[tokio::test]
    async fn unique_rows_are_taken_or_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ccdb(&dir).await;
        let org = |guid: &str| {
            vec![
                ("guid", Val::from(guid)),
                ("name", "kiln".into()),
                ("created_at", "t".into()),
                ("updated_at", "t".into()),
            ]
        };
        assert!(
            insert_if_absent::<Organization>(&pool, org("o1"))
                .await
                .unwrap()
        );
        assert!(
            !insert_if_absent::<Organization>(&pool, org("o2"))
                .await
                .unwrap()
        );
        let again = insert::<Organization>(&pool, org("o3")).await;
        let taken = unique_or_taken(again, || "taken".into()).unwrap_err();
        assert!(taken.to_string().contains("taken"), "{taken}");
        assert_eq!(count::<Organization>(&pool).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_upgraded_ccdb_keeps_its_creation_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ccdb.sqlite");
        // A CCDB written before `seq` existed, rows inserted in this order.
        let old = kiln_store::open_database(&path, &MIGRATIONS[..1])
            .await
            .unwrap();
        for name in ["zeta", "alpha", "mid"] {
            sqlx::query(
                "INSERT INTO domains (guid, name, created_at, updated_at) VALUES ($1, $2, 't', 't')",
            )
            .bind(name)
            .bind(name)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;
        let pool = ccdb(&dir).await;
        insert::<Domain>(
            &pool,
            vec![
                ("guid", "new".into()),
                ("name", "new".into()),
                ("created_at", "t".into()),
                ("updated_at", "t".into()),
            ],
        )
        .await
        .unwrap();
        let names: Vec<String> = all::<Domain>(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["zeta", "alpha", "mid", "new"]);
    }

    #[tokio::test]
    async fn an_unknown_stored_state_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ccdb(&dir).await;
        package(&pool, "p", "a", PackageState::Ready).await;
        // Written behind the row types' back, as a corrupt file would be.
        sqlx::query("UPDATE packages SET state = 'MELTED'")
            .execute(&pool)
            .await
            .unwrap();
        assert!(matches!(
            get::<Package>(&pool, "p").await,
            Err(ApiError::Database(sqlx::Error::Decode(_)))
        ));
    }
}
