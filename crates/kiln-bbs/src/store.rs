//! The BBS's SQL: one function per read or write, rows mapped to
//! kiln-model types here and nowhere else. Callers hold the BBS write lock
//! for writes; state changes are checked with kiln-model's `transition_to`,
//! or, for the batched writes of convergence and the auction, by the
//! statement's own compare-and-set on the state they were computed from.
//!
//! Storage errors become `BbsError` only through [`db`] and [`decode`].

use crate::{ActualLrpFilter, BbsError};
use kiln_model::bbs::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, DesiredLrp, Nanos, Task,
    TaskDefinition,
};
use kiln_model::{ActualLrpState, TaskState, TransitionError};
use kiln_store::{Connection, Pool, QueryBuilder, Row as DbRow};
use sqlx::Row as _;

/// The one conversion of a storage error into the BBS's error.
pub(crate) fn db(e: sqlx::Error) -> BbsError {
    // The error crosses the API boundary as text: no sqlx type leaves
    // this crate.
    BbsError::Store(e.to_string())
}

/// The one conversion of a record (de)serialisation error.
pub(crate) fn decode(e: serde_json::Error) -> BbsError {
    BbsError::Store(format!("record decode: {e}"))
}

/// Rows per multi-row statement: well under SQLite's bound-parameter
/// limit, and few parameters per statement: binding a statement's
/// parameters by name costs the square of their number (sqlx looks each
/// one's name up in SQLite's list), 4% of a re-placement's CPU at 100
/// rows of five.
const ROWS_PER_STATEMENT: usize = 50;

fn decode_state<S: std::str::FromStr<Err = TransitionError>>(value: &str) -> Result<S, BbsError> {
    value
        .parse()
        .map_err(|e: TransitionError| BbsError::InvalidRequest(e.to_string()))
}

fn task_transition(t: &Task, to: TaskState) -> Result<TaskState, BbsError> {
    t.state
        .transition_to(to)
        .map_err(|source| BbsError::InvalidTransition {
            kind: "task",
            guid: t.task_guid.clone(),
            source,
        })
}

// ---- tasks ----

const TASK_COLUMNS: &str = "task_guid, domain, definition, state, cell_id, result, failed, failure_reason, created_at, updated_at";

fn task_from_row(row: &DbRow) -> Result<Task, BbsError> {
    Ok(Task {
        task_guid: row.try_get("task_guid").map_err(db)?,
        domain: row.try_get("domain").map_err(db)?,
        definition: serde_json::from_str(row.try_get("definition").map_err(db)?).map_err(decode)?,
        state: decode_state(row.try_get("state").map_err(db)?)?,
        cell_id: row.try_get("cell_id").map_err(db)?,
        result: row.try_get("result").map_err(db)?,
        failed: row.try_get::<i64, _>("failed").map_err(db)? != 0,
        failure_reason: row.try_get("failure_reason").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

pub async fn task(pool: &Pool, task_guid: &str) -> Result<Option<Task>, BbsError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_guid = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(task_guid)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.as_ref().map(task_from_row).transpose()
}

pub async fn tasks(pool: &Pool, domain: Option<&str>) -> Result<Vec<Task>, BbsError> {
    // One statement per shape, so the domain filter can use its index.
    let rows = match domain {
        Some(domain) => {
            let sql =
                format!("SELECT {TASK_COLUMNS} FROM tasks WHERE domain = $1 ORDER BY created_at");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(domain)
                .fetch_all(pool)
                .await
        }
        None => {
            let sql = format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY created_at");
            sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await
        }
    }
    .map_err(db)?;
    rows.iter().map(task_from_row).collect()
}

/// Tasks still to place or running: what the auction and convergence need.
pub async fn open_tasks(pool: &Pool) -> Result<Vec<Task>, BbsError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('PENDING', 'RUNNING') ORDER BY created_at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(task_from_row).collect()
}

/// Places a PENDING task on a cell unless it changed since it was read
/// (cancelled, or placed by another round). Whether it was placed.
pub async fn place_task_if_pending(
    conn: &mut Connection,
    task_guid: &str,
    cell_id: &str,
    now: Nanos,
) -> Result<Option<Task>, BbsError> {
    let sql = format!(
        "UPDATE tasks SET cell_id = $1, updated_at = $2 \
         WHERE task_guid = $3 AND state = 'PENDING' AND cell_id = '' RETURNING {TASK_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cell_id)
        .bind(now)
        .bind(task_guid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(task_from_row).transpose()
}

/// Fails a PENDING, unplaced task (it fits on no cell).
pub async fn fail_task_if_unplaced(
    conn: &mut Connection,
    task_guid: &str,
    failure_reason: &str,
    now: Nanos,
) -> Result<Option<Task>, BbsError> {
    let sql = format!(
        "UPDATE tasks SET state = 'COMPLETED', failed = 1, failure_reason = $1, updated_at = $2 \
         WHERE task_guid = $3 AND state = 'PENDING' AND cell_id = '' RETURNING {TASK_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(failure_reason)
        .bind(now)
        .bind(task_guid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(task_from_row).transpose()
}

pub async fn insert_task(
    pool: &Pool,
    task_guid: &str,
    domain: &str,
    definition: TaskDefinition,
    now: Nanos,
) -> Result<Task, BbsError> {
    let task = Task {
        task_guid: task_guid.into(),
        domain: domain.into(),
        definition,
        state: TaskState::Pending,
        cell_id: String::new(),
        result: String::new(),
        failed: false,
        failure_reason: String::new(),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO tasks (task_guid, domain, definition, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&task.task_guid)
    .bind(&task.domain)
    .bind(serde_json::to_string(&task.definition).map_err(decode)?)
    .bind(task.state.as_str())
    .bind(now)
    .bind(now)
    .execute(pool)
    .await.map_err(db)?;
    Ok(task)
}

async fn write_task(pool: &Pool, t: &Task) -> Result<(), BbsError> {
    sqlx::query(
        "UPDATE tasks SET state = $1, cell_id = $2, result = $3, failed = $4, failure_reason = $5, updated_at = $6 WHERE task_guid = $7",
    )
    .bind(t.state.as_str())
    .bind(&t.cell_id)
    .bind(&t.result)
    .bind(i64::from(t.failed))
    .bind(&t.failure_reason)
    .bind(t.updated_at)
    .bind(&t.task_guid)
    .execute(pool)
    .await.map_err(db)?;
    Ok(())
}

pub async fn set_task_state(
    pool: &Pool,
    t: &Task,
    to: TaskState,
    now: Nanos,
) -> Result<Task, BbsError> {
    let mut next = t.clone();
    next.state = task_transition(t, to)?;
    next.updated_at = now;
    write_task(pool, &next).await?;
    Ok(next)
}

pub async fn complete_task(
    pool: &Pool,
    t: &Task,
    failed: bool,
    failure_reason: &str,
    result: &str,
    now: Nanos,
) -> Result<Task, BbsError> {
    let mut next = t.clone();
    next.state = task_transition(t, TaskState::Completed)?;
    next.failed = failed;
    next.failure_reason = failure_reason.into();
    // Diego keeps the first 10 KB of the result file.
    next.result = result
        .chars()
        .scan(0usize, |n, c| {
            *n += c.len_utf8();
            (*n <= 10 * 1024).then_some(c)
        })
        .collect();
    next.updated_at = now;
    write_task(pool, &next).await?;
    Ok(next)
}

pub async fn delete_task(pool: &Pool, task_guid: &str) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM tasks WHERE task_guid = $1")
        .bind(task_guid)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

// ---- desired lrps ----

pub async fn desired_lrp(pool: &Pool, process_guid: &str) -> Result<Option<DesiredLrp>, BbsError> {
    let row = sqlx::query("SELECT definition FROM desired_lrps WHERE process_guid = $1")
        .bind(process_guid)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    match row {
        Some(row) => Ok(Some(
            serde_json::from_str(row.try_get("definition").map_err(db)?).map_err(decode)?,
        )),
        None => Ok(None),
    }
}

pub async fn desired_lrps(pool: &Pool, domain: Option<&str>) -> Result<Vec<DesiredLrp>, BbsError> {
    let rows = match domain {
        Some(domain) => {
            sqlx::query("SELECT definition FROM desired_lrps WHERE domain = $1 ORDER BY created_at")
                .bind(domain)
                .fetch_all(pool)
                .await
        }
        None => {
            sqlx::query("SELECT definition FROM desired_lrps ORDER BY created_at")
                .fetch_all(pool)
                .await
        }
    }
    .map_err(db)?;
    rows.iter()
        .map(|row| serde_json::from_str(row.try_get("definition").map_err(db)?).map_err(decode))
        .collect()
}

/// Inserts the DesiredLrp; false if one with its guid exists.
pub async fn insert_desired_lrp(
    pool: &mut Connection,
    d: &DesiredLrp,
    now: Nanos,
) -> Result<bool, BbsError> {
    let done = sqlx::query(
        "INSERT INTO desired_lrps (process_guid, domain, instances, definition, created_at, updated_at, modification_tag) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&d.process_guid)
    .bind(&d.domain)
    .bind(i64::from(d.instances))
    .bind(serde_json::to_string(d).map_err(decode)?)
    .bind(now)
    .bind(now)
    // Starts at the creation time, so a DesiredLrp removed and desired
    // again under the same guid never matches a cached older copy.
    .bind(now)
    .execute(pool)
    .await.map_err(db)?;
    Ok(done.rows_affected() == 1)
}

/// Rewrites the DesiredLrp and bumps its modification tag, so cached
/// decoded copies are replaced.
pub async fn update_desired_lrp(
    pool: &mut Connection,
    d: &DesiredLrp,
    now: Nanos,
) -> Result<(), BbsError> {
    sqlx::query(
        "UPDATE desired_lrps SET instances = $1, definition = $2, updated_at = $3, \
         modification_tag = modification_tag + 1 WHERE process_guid = $4",
    )
    .bind(i64::from(d.instances))
    .bind(serde_json::to_string(d).map_err(decode)?)
    .bind(now)
    .bind(&d.process_guid)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn delete_desired_lrp(pool: &Pool, process_guid: &str) -> Result<(), BbsError> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("DELETE FROM actual_lrps WHERE process_guid = $1")
        .bind(process_guid)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM desired_lrps WHERE process_guid = $1")
        .bind(process_guid)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(())
}

// ---- actual lrps ----

const ACTUAL_COLUMNS: &str = "process_guid, instance_index, domain, state, instance_guid, cell_id, net_info, crash_count, crash_reason, placement_error, since";

fn actual_from_row(row: &DbRow) -> Result<ActualLrp, BbsError> {
    let instance_guid: String = row.try_get("instance_guid").map_err(db)?;
    let cell_id: String = row.try_get("cell_id").map_err(db)?;
    let net_info: String = row.try_get("net_info").map_err(db)?;
    let index: i64 = row.try_get("instance_index").map_err(db)?;
    let crash_count: i64 = row.try_get("crash_count").map_err(db)?;
    Ok(ActualLrp {
        key: ActualLrpKey {
            process_guid: row.try_get("process_guid").map_err(db)?,
            index: index as u32,
            domain: row.try_get("domain").map_err(db)?,
        },
        instance_key: (!instance_guid.is_empty()).then_some(ActualLrpInstanceKey {
            instance_guid,
            cell_id,
        }),
        net_info: if net_info.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&net_info).map_err(decode)?)
        },
        state: decode_state::<ActualLrpState>(row.try_get("state").map_err(db)?)?,
        crash_count: crash_count as u32,
        crash_reason: row.try_get("crash_reason").map_err(db)?,
        placement_error: row.try_get("placement_error").map_err(db)?,
        since: row.try_get("since").map_err(db)?,
        presence: Default::default(),
    })
}

pub async fn actual_lrp(pool: &Pool, key: &ActualLrpKey) -> Result<Option<ActualLrp>, BbsError> {
    let sql = format!(
        "SELECT {ACTUAL_COLUMNS} FROM actual_lrps WHERE process_guid = $1 AND instance_index = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&key.process_guid)
        .bind(i64::from(key.index))
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.as_ref().map(actual_from_row).transpose()
}

/// One ActualLrp, read inside a transaction (what a batch is about to
/// change).
pub async fn actual_lrp_in(
    conn: &mut Connection,
    process_guid: &str,
    index: u32,
) -> Result<Option<ActualLrp>, BbsError> {
    let sql = format!(
        "SELECT {ACTUAL_COLUMNS} FROM actual_lrps WHERE process_guid = $1 AND instance_index = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(process_guid)
        .bind(i64::from(index))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(actual_from_row).transpose()
}

pub async fn actual_lrps(
    pool: &Pool,
    filter: &ActualLrpFilter,
) -> Result<Vec<ActualLrp>, BbsError> {
    // Only the filters given become conditions, so each can use its index.
    let conditions: Vec<(&str, &str)> = [
        ("domain", &filter.domain),
        ("process_guid", &filter.process_guid),
        ("cell_id", &filter.cell_id),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.as_deref().map(|v| (column, v)))
    .collect();
    let mut sql = format!("SELECT {ACTUAL_COLUMNS} FROM actual_lrps");
    for (i, (column, _)) in conditions.iter().enumerate() {
        sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        sql.push_str(column);
        sql.push_str(&format!(" = ${}", i + 1));
    }
    sql.push_str(" ORDER BY process_guid, instance_index");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (_, value) in &conditions {
        query = query.bind(*value);
    }
    let rows = query.fetch_all(pool).await.map_err(db)?;
    rows.iter().map(actual_from_row).collect()
}

/// Creates UNCLAIMED ActualLrps for these indices of `d`, skipping any that
/// exist; the ones created.
pub async fn insert_unclaimed(
    conn: &mut Connection,
    d: &DesiredLrp,
    indices: &[u32],
    now: Nanos,
) -> Result<Vec<ActualLrp>, BbsError> {
    let mut created = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new(
            "INSERT INTO actual_lrps (process_guid, instance_index, domain, state, since) ",
        );
        query.push_values(chunk, |mut row, index| {
            row.push_bind(&d.process_guid)
                .push_bind(i64::from(*index))
                .push_bind(&d.domain)
                .push_bind(ActualLrpState::Unclaimed.as_str())
                .push_bind(now);
        });
        query.push(" ON CONFLICT DO NOTHING RETURNING ");
        query.push(ACTUAL_COLUMNS);
        let rows = query.build().fetch_all(&mut *conn).await.map_err(db)?;
        for row in &rows {
            created.push(actual_from_row(row)?);
        }
    }
    Ok(created)
}

/// Deletes the ActualLrps of `process_guid` from index `from` on (scaling
/// down); the keys deleted.
pub async fn delete_indices_from(
    conn: &mut Connection,
    process_guid: &str,
    from: u32,
) -> Result<Vec<ActualLrpKey>, BbsError> {
    let rows = sqlx::query(
        "DELETE FROM actual_lrps WHERE process_guid = $1 AND instance_index >= $2 \
         RETURNING process_guid, instance_index, domain",
    )
    .bind(process_guid)
    .bind(i64::from(from))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter().map(key_from_row).collect()
}

/// (process guid, index): an ActualLrp's place, as the tables key it.
pub type Slot = (String, u32);

fn slot_from_row(row: &DbRow) -> Result<Slot, BbsError> {
    let index: i64 = row.try_get("instance_index").map_err(db)?;
    Ok((row.try_get("process_guid").map_err(db)?, index as u32))
}

fn key_from_row(row: &DbRow) -> Result<ActualLrpKey, BbsError> {
    let index: i64 = row.try_get("instance_index").map_err(db)?;
    Ok(ActualLrpKey {
        process_guid: row.try_get("process_guid").map_err(db)?,
        index: index as u32,
        domain: row.try_get("domain").map_err(db)?,
    })
}

pub async fn update_actual_lrp<'e, E>(executor: E, a: &ActualLrp) -> Result<(), BbsError>
where
    E: sqlx::Executor<'e, Database = kiln_store::Db>,
{
    let (instance_guid, cell_id) = a
        .instance_key
        .as_ref()
        .map_or((String::new(), String::new()), |ik| {
            (ik.instance_guid.clone(), ik.cell_id.clone())
        });
    let net_info = match &a.net_info {
        Some(n) => serde_json::to_string(n).map_err(decode)?,
        None => String::new(),
    };
    sqlx::query(
        "UPDATE actual_lrps SET state = $1, instance_guid = $2, cell_id = $3, net_info = $4, crash_count = $5, \
         crash_reason = $6, placement_error = $7, since = $8 WHERE process_guid = $9 AND instance_index = $10",
    )
    .bind(a.state.as_str())
    .bind(instance_guid)
    .bind(cell_id)
    .bind(net_info)
    .bind(i64::from(a.crash_count))
    .bind(&a.crash_reason)
    .bind(&a.placement_error)
    .bind(a.since)
    .bind(&a.key.process_guid)
    .bind(i64::from(a.key.index))
    .execute(executor)
    .await.map_err(db)?;
    Ok(())
}

// The batched statements below return slots, not rows; these are the
// records they leave, built from the record before (held in memory) the
// way the statements change it: decoding 25,000 rows again per step of a
// re-placement cost more than the statements themselves.

/// The record [`claim_unclaimed`] leaves.
pub fn claimed_from(
    before: &ActualLrp,
    instance_key: ActualLrpInstanceKey,
    now: Nanos,
) -> ActualLrp {
    ActualLrp {
        state: ActualLrpState::Claimed,
        instance_key: Some(instance_key),
        placement_error: String::new(),
        since: now,
        ..before.clone()
    }
}

/// The record [`unclaim_many_if_unchanged`] leaves.
pub fn unclaimed_from(before: &ActualLrp, now: Nanos) -> ActualLrp {
    ActualLrp {
        state: ActualLrpState::Unclaimed,
        instance_key: None,
        net_info: None,
        since: now,
        ..before.clone()
    }
}

/// The record [`move_many_if_unchanged`] leaves: as if sent back to
/// UNCLAIMED and then claimed.
pub fn moved_from(before: &ActualLrp, instance_key: ActualLrpInstanceKey, now: Nanos) -> ActualLrp {
    ActualLrp {
        state: ActualLrpState::Claimed,
        instance_key: Some(instance_key),
        net_info: None,
        placement_error: String::new(),
        since: now,
        ..before.clone()
    }
}

/// The record [`start_many`] leaves.
pub fn started_from(
    before: &ActualLrp,
    instance_key: ActualLrpInstanceKey,
    net_info: ActualLrpNetInfo,
    now: Nanos,
) -> ActualLrp {
    let since = if before.state == ActualLrpState::Running {
        before.since
    } else {
        now
    };
    ActualLrp {
        state: ActualLrpState::Running,
        instance_key: Some(instance_key),
        net_info: Some(net_info),
        placement_error: String::new(),
        since,
        ..before.clone()
    }
}

/// One cell's report that an instance runs, for [`start_many`].
pub struct StartReport<'a> {
    pub key: &'a ActualLrpKey,
    pub instance_key: &'a ActualLrpInstanceKey,
    pub net_info: String,
}

/// UNCLAIMED, or CLAIMED/RUNNING under the reporting instance key, →
/// RUNNING with its net info (`since` changes only when the state does),
/// for many reports in one statement per [`ROWS_PER_STATEMENT`]: the
/// slots that became (or stayed) RUNNING, with the instance guid that now
/// holds each. Reports for one index by two instances are resolved by the
/// statement (one wins). Only the slot comes back, not the record: the
/// caller holds the record before (the mirror) and knows what changed, so
/// no row is decoded again.
pub async fn start_many(
    conn: &mut Connection,
    reports: &[StartReport<'_>],
    now: Nanos,
) -> Result<Vec<(Slot, String)>, BbsError> {
    let mut started = Vec::with_capacity(reports.len());
    for chunk in reports.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new("WITH v(pg, ix, ig, cell, net) AS (");
        query.push_values(chunk, |mut row, r| {
            row.push_bind(r.key.process_guid.as_str())
                .push_bind(i64::from(r.key.index))
                .push_bind(r.instance_key.instance_guid.as_str())
                .push_bind(r.instance_key.cell_id.as_str())
                .push_bind(r.net_info.as_str());
        });
        query.push(
            ") UPDATE actual_lrps SET state = 'RUNNING', instance_guid = v.ig, cell_id = v.cell, \
             net_info = v.net, placement_error = '', \
             since = CASE WHEN actual_lrps.state = 'RUNNING' THEN actual_lrps.since ELSE ",
        );
        query.push_bind(now);
        query.push(
            " END FROM v WHERE actual_lrps.process_guid = v.pg AND actual_lrps.instance_index = v.ix \
             AND (actual_lrps.state = 'UNCLAIMED' OR (actual_lrps.state IN ('CLAIMED', 'RUNNING') \
             AND actual_lrps.instance_guid = v.ig AND actual_lrps.cell_id = v.cell)) \
             RETURNING process_guid, instance_index, instance_guid",
        );
        for row in query.build().fetch_all(&mut *conn).await.map_err(db)? {
            let instance_guid: String = row.try_get("instance_guid").map_err(db)?;
            started.push((slot_from_row(&row)?, instance_guid));
        }
    }
    Ok(started)
}

// ---- cells ----

/// The tasks placed on a cell that are PENDING (to start) or RUNNING.
pub async fn cell_tasks(pool: &Pool, cell_id: &str) -> Result<Vec<Task>, BbsError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE cell_id = $1 AND state IN ('PENDING', 'RUNNING') ORDER BY created_at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cell_id)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(task_from_row).collect()
}

/// The ActualLrps CLAIMED by or RUNNING on a cell, in one query.
#[cfg(test)]
pub async fn cell_actuals(pool: &Pool, cell_id: &str) -> Result<Vec<ActualLrp>, BbsError> {
    let sql = format!(
        "SELECT {ACTUAL_COLUMNS} FROM actual_lrps WHERE cell_id = $1 AND state IN ('CLAIMED', 'RUNNING') \
         ORDER BY process_guid, instance_index"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cell_id)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(actual_from_row).collect()
}

// ---- what convergence and the auction read, once per pass ----

/// What convergence needs of an ActualLrp, without decoding the rest.
#[derive(Debug, Clone)]
pub struct ActualSummary {
    pub process_guid: String,
    pub index: u32,
    pub state: ActualLrpState,
    pub instance_guid: String,
    pub cell_id: String,
    pub crash_count: u32,
    pub since: Nanos,
}

#[cfg(test)]
fn summary_from_row(row: &DbRow) -> Result<ActualSummary, BbsError> {
    let index: i64 = row.try_get("instance_index").map_err(db)?;
    let crash_count: i64 = row.try_get("crash_count").map_err(db)?;
    Ok(ActualSummary {
        process_guid: row.try_get("process_guid").map_err(db)?,
        index: index as u32,
        state: decode_state(row.try_get("state").map_err(db)?)?,
        instance_guid: row.try_get("instance_guid").map_err(db)?,
        cell_id: row.try_get("cell_id").map_err(db)?,
        crash_count: crash_count as u32,
        since: row.try_get("since").map_err(db)?,
    })
}

#[cfg(test)]
const SUMMARY_COLUMNS: &str =
    "process_guid, instance_index, state, instance_guid, cell_id, crash_count, since";

// Convergence's questions of the tables. A pass asks them of the mirror
// (`Mirror::convergence_plan`); the tests ask both and compare.

#[cfg(test)]
/// Instances whose DesiredLrp is gone or no longer has their index.
pub async fn extra_instances(pool: &Pool) -> Result<Vec<(String, u32)>, BbsError> {
    let rows = sqlx::query(
        "SELECT a.process_guid, a.instance_index FROM actual_lrps a \
         LEFT JOIN desired_lrps d ON d.process_guid = a.process_guid \
         WHERE d.process_guid IS NULL OR a.instance_index >= d.instances",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let index: i64 = row.try_get("instance_index").map_err(db)?;
            Ok((row.try_get("process_guid").map_err(db)?, index as u32))
        })
        .collect()
}

#[cfg(test)]
/// For each DesiredLrp lacking ActualLrps for some of its indices: its guid
/// and those indices.
pub async fn missing_instances(pool: &Pool) -> Result<Vec<(String, Vec<u32>)>, BbsError> {
    let rows = sqlx::query(
        "SELECT d.process_guid, d.instances FROM desired_lrps d WHERE d.instances > \
         (SELECT COUNT(*) FROM actual_lrps a WHERE a.process_guid = d.process_guid \
          AND a.instance_index < d.instances)",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut missing = Vec::with_capacity(rows.len());
    for row in &rows {
        let guid: String = row.try_get("process_guid").map_err(db)?;
        let instances: i64 = row.try_get("instances").map_err(db)?;
        let present: Vec<i64> =
            sqlx::query_scalar("SELECT instance_index FROM actual_lrps WHERE process_guid = $1")
                .bind(&guid)
                .fetch_all(pool)
                .await
                .map_err(db)?;
        let indices = (0..instances as u32)
            .filter(|i| !present.contains(&i64::from(*i)))
            .collect();
        missing.push((guid, indices));
    }
    Ok(missing)
}

#[cfg(test)]
/// CLAIMED or RUNNING instances on a cell not in `live`.
pub async fn on_cells_other_than(
    pool: &Pool,
    live: &std::collections::HashSet<String>,
) -> Result<Vec<ActualSummary>, BbsError> {
    let mut query = QueryBuilder::new(format!(
        "SELECT {SUMMARY_COLUMNS} FROM actual_lrps WHERE state IN ('CLAIMED', 'RUNNING')"
    ));
    // `NOT IN ()` is not SQL (and `NOT IN (NULL)` matches nothing): with no
    // live cell, every placed instance is on a cell other than a live one.
    if !live.is_empty() {
        query.push(" AND cell_id NOT IN (");
        let mut list = query.separated(", ");
        for cell in live {
            list.push_bind(cell);
        }
        query.push(")");
    }
    let rows = query.build().fetch_all(pool).await.map_err(db)?;
    rows.iter().map(summary_from_row).collect()
}

#[cfg(test)]
/// CRASHED instances (the converger applies the back-off).
pub async fn crashed(pool: &Pool) -> Result<Vec<ActualSummary>, BbsError> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM actual_lrps WHERE state = 'CRASHED'");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(summary_from_row).collect()
}

/// An UNCLAIMED instance as the auction needs it.
#[derive(Debug, Clone)]
pub struct Unclaimed {
    pub process_guid: String,
    pub index: u32,
    pub placement_error: String,
}

#[cfg(test)]
pub async fn unclaimed(pool: &Pool) -> Result<Vec<Unclaimed>, BbsError> {
    let rows = sqlx::query(
        "SELECT process_guid, instance_index, placement_error FROM actual_lrps WHERE state = 'UNCLAIMED'",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let index: i64 = row.try_get("instance_index").map_err(db)?;
            Ok(Unclaimed {
                process_guid: row.try_get("process_guid").map_err(db)?,
                index: index as u32,
                placement_error: row.try_get("placement_error").map_err(db)?,
            })
        })
        .collect()
}

#[cfg(test)]
/// How many instances of each process each cell holds, and how many of
/// them are still starting (CLAIMED): the cells' load for the auction.
pub struct CellProcessLoad {
    pub cell_id: String,
    pub process_guid: String,
    pub instances: u32,
    pub starting: u32,
}

#[cfg(test)]
pub async fn cell_process_loads(pool: &Pool) -> Result<Vec<CellProcessLoad>, BbsError> {
    let rows = sqlx::query(
        "SELECT cell_id, process_guid, COUNT(*) AS instances, \
         CAST(SUM(CASE WHEN state = 'CLAIMED' THEN 1 ELSE 0 END) AS BIGINT) AS starting \
         FROM actual_lrps \
         WHERE state IN ('CLAIMED', 'RUNNING') GROUP BY cell_id, process_guid",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let instances: i64 = row.try_get("instances").map_err(db)?;
            let starting: i64 = row.try_get("starting").map_err(db)?;
            Ok(CellProcessLoad {
                cell_id: row.try_get("cell_id").map_err(db)?,
                process_guid: row.try_get("process_guid").map_err(db)?,
                instances: instances as u32,
                starting: starting as u32,
            })
        })
        .collect()
}

// ---- batched compare-and-set writes (convergence and the auction) ----

/// An auction decision: this UNCLAIMED instance goes to this cell.
pub struct Claim<'a> {
    pub process_guid: &'a str,
    pub index: u32,
    pub instance_guid: String,
    pub cell_id: &'a str,
}

/// UNCLAIMED → CLAIMED for each claim whose instance is still UNCLAIMED;
/// the slots claimed (the caller builds the records from what it holds).
pub async fn claim_unclaimed(
    conn: &mut Connection,
    claims: &[Claim<'_>],
    now: Nanos,
) -> Result<Vec<Slot>, BbsError> {
    let mut claimed = Vec::with_capacity(claims.len());
    for chunk in claims.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new("WITH v(pg, ix, ig, cell) AS (");
        query.push_values(chunk, |mut row, c| {
            row.push_bind(c.process_guid)
                .push_bind(i64::from(c.index))
                .push_bind(c.instance_guid.as_str())
                .push_bind(c.cell_id);
        });
        query.push(
            ") UPDATE actual_lrps SET state = 'CLAIMED', instance_guid = v.ig, cell_id = v.cell, \
             placement_error = '', since = ",
        );
        query.push_bind(now);
        query.push(
            " FROM v WHERE actual_lrps.process_guid = v.pg AND actual_lrps.instance_index = v.ix \
             AND actual_lrps.state = 'UNCLAIMED' RETURNING process_guid, instance_index",
        );
        for row in query.build().fetch_all(&mut *conn).await.map_err(db)? {
            claimed.push(slot_from_row(&row)?);
        }
    }
    Ok(claimed)
}

/// Records why an UNCLAIMED instance could not be placed, if it still is.
pub async fn set_placement_error(
    conn: &mut Connection,
    process_guid: &str,
    index: u32,
    placement_error: &str,
) -> Result<Option<ActualLrp>, BbsError> {
    let sql = format!(
        "UPDATE actual_lrps SET placement_error = $1 \
         WHERE process_guid = $2 AND instance_index = $3 AND state = 'UNCLAIMED' RETURNING {ACTUAL_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(placement_error)
        .bind(process_guid)
        .bind(i64::from(index))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(actual_from_row).transpose()
}

/// Back to UNCLAIMED, if the instance is still as convergence read it
/// (same state, instance guid and `since`): its cell was lost, or its
/// crash back-off is over.
pub async fn unclaim_if_unchanged(
    conn: &mut Connection,
    seen: &ActualSummary,
    now: Nanos,
) -> Result<Option<ActualLrp>, BbsError> {
    let sql = format!(
        "UPDATE actual_lrps SET state = 'UNCLAIMED', instance_guid = '', cell_id = '', net_info = '', since = $1 \
         WHERE process_guid = $2 AND instance_index = $3 AND state = $4 AND instance_guid = $5 AND since = $6 \
         RETURNING {ACTUAL_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(&seen.process_guid)
        .bind(i64::from(seen.index))
        .bind(seen.state.as_str())
        .bind(&seen.instance_guid)
        .bind(seen.since)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(actual_from_row).transpose()
}

/// [`unclaim_if_unchanged`] for many instances, one statement per
/// [`ROWS_PER_STATEMENT`]: each goes back to UNCLAIMED only if still as
/// seen. Returns the slots sent back; the caller holds the records as
/// they were (the mirror, under the write lock), so they are not read
/// again.
pub async fn unclaim_many_if_unchanged(
    conn: &mut Connection,
    seen: &[&ActualSummary],
    now: Nanos,
) -> Result<Vec<Slot>, BbsError> {
    let mut changed = Vec::with_capacity(seen.len());
    for chunk in seen.chunks(ROWS_PER_STATEMENT) {
        // A join on the key, not `(..) IN (VALUES ..)`: SQLite scans the
        // whole table for a row-value IN list (0.1 s per statement at
        // 250,000 instances, 125 statements when 100 cells are lost).
        let mut query = QueryBuilder::new("WITH v(pg, ix, st, ig, sn) AS (");
        query.push_values(chunk, |mut row, a| {
            row.push_bind(a.process_guid.as_str())
                .push_bind(i64::from(a.index))
                .push_bind(a.state.as_str())
                .push_bind(a.instance_guid.as_str())
                .push_bind(a.since);
        });
        query.push(
            ") UPDATE actual_lrps SET state = 'UNCLAIMED', instance_guid = '', cell_id = '', \
             net_info = '', since = ",
        );
        query.push_bind(now);
        query.push(
            " FROM v WHERE actual_lrps.process_guid = v.pg AND actual_lrps.instance_index = v.ix \
             AND actual_lrps.state = v.st AND actual_lrps.instance_guid = v.ig \
             AND actual_lrps.since = v.sn RETURNING process_guid, instance_index",
        );
        for row in query.build().fetch_all(&mut *conn).await.map_err(db)? {
            changed.push(slot_from_row(&row)?);
        }
    }
    Ok(changed)
}

/// A lost cell's instance and the cell the auction chose for it (see
/// [`move_many_if_unchanged`]).
pub struct Move<'a> {
    pub seen: &'a ActualSummary,
    pub instance_guid: String,
    pub cell_id: &'a str,
}

/// Instances of lost cells straight to CLAIMED on the cells the auction
/// chose, each only if still as seen: [`unclaim_many_if_unchanged`] and
/// [`claim_unclaimed`] in one statement per [`ROWS_PER_STATEMENT`], so a
/// re-placed instance's row (and its page in the log) is written once,
/// not twice. Returns the slots moved (records: [`moved_from`]).
pub async fn move_many_if_unchanged(
    conn: &mut Connection,
    moves: &[Move<'_>],
    now: Nanos,
) -> Result<Vec<Slot>, BbsError> {
    let mut moved = Vec::with_capacity(moves.len());
    for chunk in moves.chunks(ROWS_PER_STATEMENT) {
        // A join on the key, as `unclaim_many_if_unchanged`.
        let mut query = QueryBuilder::new("WITH v(pg, ix, st, ig, sn, nig, cell) AS (");
        query.push_values(chunk, |mut row, m| {
            row.push_bind(m.seen.process_guid.as_str())
                .push_bind(i64::from(m.seen.index))
                .push_bind(m.seen.state.as_str())
                .push_bind(m.seen.instance_guid.as_str())
                .push_bind(m.seen.since)
                .push_bind(m.instance_guid.as_str())
                .push_bind(m.cell_id);
        });
        query.push(
            ") UPDATE actual_lrps SET state = 'CLAIMED', instance_guid = v.nig, cell_id = v.cell, \
             net_info = '', placement_error = '', since = ",
        );
        query.push_bind(now);
        query.push(
            " FROM v WHERE actual_lrps.process_guid = v.pg AND actual_lrps.instance_index = v.ix \
             AND actual_lrps.state = v.st AND actual_lrps.instance_guid = v.ig \
             AND actual_lrps.since = v.sn RETURNING process_guid, instance_index",
        );
        for row in query.build().fetch_all(&mut *conn).await.map_err(db)? {
            moved.push(slot_from_row(&row)?);
        }
    }
    Ok(moved)
}

/// Deletes an ActualLrp whose DesiredLrp is gone or no longer has its
/// index, checked in the statement itself so a concurrent scale-up keeps it.
pub async fn delete_if_extra(
    conn: &mut Connection,
    process_guid: &str,
    index: u32,
) -> Result<Option<ActualLrpKey>, BbsError> {
    let row = sqlx::query(
        "DELETE FROM actual_lrps WHERE process_guid = $1 AND instance_index = $2 \
         AND NOT EXISTS (SELECT 1 FROM desired_lrps d WHERE d.process_guid = $1 AND d.instances > $2) \
         RETURNING process_guid, instance_index, domain",
    )
    .bind(process_guid)
    .bind(i64::from(index))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.as_ref().map(key_from_row).transpose()
}

// ---- suspect and evacuating instances kept beside their records ----

/// Why an instance is kept routable beside its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Suspect,
    Evacuating,
}

impl Kept {
    fn as_str(self) -> &'static str {
        match self {
            Kept::Suspect => "SUSPECT",
            Kept::Evacuating => "EVACUATING",
        }
    }
}

/// Records a kept instance; a suspect replaces any earlier suspect of its
/// index (one per index).
pub async fn keep_instance(
    conn: &mut Connection,
    kept: Kept,
    a: &ActualLrp,
) -> Result<(), BbsError> {
    let Some(ik) = a.instance_key.as_ref() else {
        return Ok(());
    };
    if kept == Kept::Suspect {
        sqlx::query(
            "DELETE FROM kept_actual_lrps WHERE process_guid = $1 AND instance_index = $2 AND presence = 'SUSPECT'",
        )
        .bind(&a.key.process_guid)
        .bind(i64::from(a.key.index))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    sqlx::query(
        "INSERT INTO kept_actual_lrps (instance_guid, process_guid, instance_index, presence, cell_id, record) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (instance_guid) DO UPDATE SET \
         process_guid = $2, instance_index = $3, presence = $4, cell_id = $5, record = $6",
    )
    .bind(&ik.instance_guid)
    .bind(&a.key.process_guid)
    .bind(i64::from(a.key.index))
    .bind(kept.as_str())
    .bind(&ik.cell_id)
    .bind(serde_json::to_string(a).map_err(decode)?)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// [`keep_instance`] for many suspect instances at once. `replacing`
/// are the slots that already have a suspect instance kept (the caller
/// holds them in memory): only theirs are deleted first, not looked up
/// for every new one (25,000 probes when a tenth of 1,000 cells is lost).
pub async fn keep_suspects(
    conn: &mut Connection,
    suspects: &[ActualLrp],
    replacing: &[&ActualLrpKey],
) -> Result<(), BbsError> {
    for chunk in replacing.chunks(ROWS_PER_STATEMENT) {
        // One suspect per index: an earlier one of the same index goes.
        // Through the slot index (see `unclaim_many_if_unchanged`).
        let mut query = QueryBuilder::new("WITH v(pg, ix) AS (");
        query.push_values(chunk, |mut row, key| {
            row.push_bind(key.process_guid.as_str())
                .push_bind(i64::from(key.index));
        });
        query.push(
            ") DELETE FROM kept_actual_lrps WHERE presence = 'SUSPECT' AND instance_guid IN \
             (SELECT k.instance_guid FROM v JOIN kept_actual_lrps k \
             ON k.process_guid = v.pg AND k.instance_index = v.ix)",
        );
        query.build().execute(&mut *conn).await.map_err(db)?;
    }
    let rows: Vec<(&ActualLrp, &ActualLrpInstanceKey, String)> = suspects
        .iter()
        .filter_map(|a| {
            let ik = a.instance_key.as_ref()?;
            Some(serde_json::to_string(a).map(|json| (a, ik, json)))
        })
        .collect::<Result<_, _>>()
        .map_err(decode)?;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new(
            "INSERT INTO kept_actual_lrps (instance_guid, process_guid, instance_index, presence, cell_id, record) ",
        );
        query.push_values(chunk, |mut row, (a, ik, json)| {
            row.push_bind(ik.instance_guid.as_str())
                .push_bind(a.key.process_guid.as_str())
                .push_bind(i64::from(a.key.index))
                .push_bind(Kept::Suspect.as_str())
                .push_bind(ik.cell_id.as_str())
                .push_bind(json.as_str());
        });
        query.push(
            " ON CONFLICT (instance_guid) DO UPDATE SET process_guid = excluded.process_guid, \
             instance_index = excluded.instance_index, presence = excluded.presence, \
             cell_id = excluded.cell_id, record = excluded.record",
        );
        query.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// Forgets kept instances by instance guid.
pub async fn forget_kept(conn: &mut Connection, instance_guids: &[&str]) -> Result<(), BbsError> {
    for chunk in instance_guids.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new("DELETE FROM kept_actual_lrps WHERE instance_guid IN (");
        let mut list = query.separated(", ");
        for guid in chunk {
            list.push_bind(*guid);
        }
        query.push(")");
        query.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// Every kept instance, as recorded.
pub async fn kept_instances(pool: &Pool) -> Result<Vec<(Kept, ActualLrp)>, BbsError> {
    let rows = sqlx::query("SELECT presence, record FROM kept_actual_lrps")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            let presence: &str = row.try_get("presence").map_err(db)?;
            let kept = match presence {
                "SUSPECT" => Kept::Suspect,
                "EVACUATING" => Kept::Evacuating,
                other => {
                    return Err(BbsError::Store(format!(
                        "kept instance with unknown presence {other:?}"
                    )));
                }
            };
            let record: &str = row.try_get("record").map_err(db)?;
            Ok((kept, serde_json::from_str(record).map_err(decode)?))
        })
        .collect()
}

pub async fn add_evacuating_cell(conn: &mut Connection, cell_id: &str) -> Result<(), BbsError> {
    sqlx::query("INSERT INTO evacuating_cells (cell_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(cell_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn remove_evacuating_cells(
    conn: &mut Connection,
    cell_ids: &[&str],
) -> Result<(), BbsError> {
    for chunk in cell_ids.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new("DELETE FROM evacuating_cells WHERE cell_id IN (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")");
        query.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

pub async fn evacuating_cells(pool: &Pool) -> Result<Vec<String>, BbsError> {
    sqlx::query_scalar("SELECT cell_id FROM evacuating_cells")
        .fetch_all(pool)
        .await
        .map_err(db)
}

/// Folds the database's write-ahead log back into it and shrinks the log
/// file (SQLite; nothing on PostgreSQL), on one connection. Callers hold
/// the write lock, so no write of the BBS waits behind it.
pub async fn checkpoint(pool: &Pool) -> Result<(), BbsError> {
    let statements = kiln_store::engine_specific::wal_checkpoint(kiln_store::engine(pool));
    if statements.is_empty() {
        return Ok(());
    }
    let mut conn = pool.acquire().await.map_err(db)?;
    // Every statement runs even after one fails: the last restores the
    // connection's settings before it goes back to the pool.
    let mut outcome = Ok(());
    for sql in statements {
        let ran = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(db);
        outcome = outcome.and(ran.map(|_| ()));
    }
    outcome
}
