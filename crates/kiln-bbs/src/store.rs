//! The BBS's SQL: one function per read or write, rows mapped to
//! kiln-model types here and nowhere else. Callers hold the BBS write lock
//! for writes; state changes are checked with kiln-model's `transition_to`.

use crate::{ActualLrpFilter, BbsError};
use kiln_model::bbs::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, CellWork, DesiredLrp, LrpAssignment, Nanos,
    Task, TaskDefinition,
};
use kiln_model::{ActualLrpState, TaskState, TransitionError};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

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

fn task_from_row(row: &SqliteRow) -> Result<Task, BbsError> {
    Ok(Task {
        task_guid: row.try_get("task_guid")?,
        domain: row.try_get("domain")?,
        definition: serde_json::from_str(row.try_get("definition")?)?,
        state: decode_state(row.try_get("state")?)?,
        cell_id: row.try_get("cell_id")?,
        result: row.try_get("result")?,
        failed: row.try_get("failed")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn task(pool: &SqlitePool, task_guid: &str) -> Result<Option<Task>, BbsError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_guid = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(task_guid)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(task_from_row).transpose()
}

pub async fn tasks(pool: &SqlitePool, domain: Option<&str>) -> Result<Vec<Task>, BbsError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR domain = ?1) ORDER BY created_at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(domain)
        .fetch_all(pool)
        .await?;
    rows.iter().map(task_from_row).collect()
}

pub async fn insert_task(
    pool: &SqlitePool,
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
        "INSERT INTO tasks (task_guid, domain, definition, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&task.task_guid)
    .bind(&task.domain)
    .bind(serde_json::to_string(&task.definition)?)
    .bind(task.state.as_str())
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(task)
}

async fn write_task(pool: &SqlitePool, t: &Task) -> Result<(), BbsError> {
    sqlx::query(
        "UPDATE tasks SET state = ?, cell_id = ?, result = ?, failed = ?, failure_reason = ?, updated_at = ? WHERE task_guid = ?",
    )
    .bind(t.state.as_str())
    .bind(&t.cell_id)
    .bind(&t.result)
    .bind(t.failed)
    .bind(&t.failure_reason)
    .bind(t.updated_at)
    .bind(&t.task_guid)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn place_task(
    pool: &SqlitePool,
    t: &Task,
    cell_id: &str,
    now: Nanos,
) -> Result<Task, BbsError> {
    let mut next = t.clone();
    next.cell_id = cell_id.into();
    next.updated_at = now;
    write_task(pool, &next).await?;
    Ok(next)
}

pub async fn set_task_state(
    pool: &SqlitePool,
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
    pool: &SqlitePool,
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

pub async fn delete_task(pool: &SqlitePool, task_guid: &str) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM tasks WHERE task_guid = ?")
        .bind(task_guid)
        .execute(pool)
        .await?;
    Ok(())
}

// ---- desired lrps ----

pub async fn desired_lrp(
    pool: &SqlitePool,
    process_guid: &str,
) -> Result<Option<DesiredLrp>, BbsError> {
    let row = sqlx::query("SELECT definition FROM desired_lrps WHERE process_guid = ?")
        .bind(process_guid)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(Some(serde_json::from_str(row.try_get("definition")?)?)),
        None => Ok(None),
    }
}

pub async fn desired_lrps(
    pool: &SqlitePool,
    domain: Option<&str>,
) -> Result<Vec<DesiredLrp>, BbsError> {
    let rows = sqlx::query(
        "SELECT definition FROM desired_lrps WHERE (?1 IS NULL OR domain = ?1) ORDER BY created_at",
    )
    .bind(domain)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok(serde_json::from_str(row.try_get("definition")?)?))
        .collect()
}

pub async fn insert_desired_lrp(
    pool: &SqlitePool,
    d: &DesiredLrp,
    now: Nanos,
) -> Result<(), BbsError> {
    sqlx::query(
        "INSERT INTO desired_lrps (process_guid, domain, instances, definition, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&d.process_guid)
    .bind(&d.domain)
    .bind(i64::from(d.instances))
    .bind(serde_json::to_string(d)?)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn update_desired_lrp(
    pool: &SqlitePool,
    d: &DesiredLrp,
    now: Nanos,
) -> Result<(), BbsError> {
    sqlx::query("UPDATE desired_lrps SET instances = ?, definition = ?, updated_at = ? WHERE process_guid = ?")
        .bind(i64::from(d.instances))
        .bind(serde_json::to_string(d)?)
        .bind(now)
        .bind(&d.process_guid)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_desired_lrp(pool: &SqlitePool, process_guid: &str) -> Result<(), BbsError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM actual_lrps WHERE process_guid = ?")
        .bind(process_guid)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM desired_lrps WHERE process_guid = ?")
        .bind(process_guid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

// ---- actual lrps ----

const ACTUAL_COLUMNS: &str = "process_guid, instance_index, domain, state, instance_guid, cell_id, net_info, crash_count, crash_reason, placement_error, since";

fn actual_from_row(row: &SqliteRow) -> Result<ActualLrp, BbsError> {
    let instance_guid: String = row.try_get("instance_guid")?;
    let cell_id: String = row.try_get("cell_id")?;
    let net_info: String = row.try_get("net_info")?;
    let index: i64 = row.try_get("instance_index")?;
    let crash_count: i64 = row.try_get("crash_count")?;
    Ok(ActualLrp {
        key: ActualLrpKey {
            process_guid: row.try_get("process_guid")?,
            index: index as u32,
            domain: row.try_get("domain")?,
        },
        instance_key: (!instance_guid.is_empty()).then_some(ActualLrpInstanceKey {
            instance_guid,
            cell_id,
        }),
        net_info: if net_info.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&net_info)?)
        },
        state: decode_state::<ActualLrpState>(row.try_get("state")?)?,
        crash_count: crash_count as u32,
        crash_reason: row.try_get("crash_reason")?,
        placement_error: row.try_get("placement_error")?,
        since: row.try_get("since")?,
    })
}

pub async fn actual_lrp(
    pool: &SqlitePool,
    key: &ActualLrpKey,
) -> Result<Option<ActualLrp>, BbsError> {
    let sql = format!(
        "SELECT {ACTUAL_COLUMNS} FROM actual_lrps WHERE process_guid = ? AND instance_index = ?"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&key.process_guid)
        .bind(i64::from(key.index))
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(actual_from_row).transpose()
}

pub async fn actual_lrps(
    pool: &SqlitePool,
    filter: &ActualLrpFilter,
) -> Result<Vec<ActualLrp>, BbsError> {
    let sql = format!(
        "SELECT {ACTUAL_COLUMNS} FROM actual_lrps \
         WHERE (?1 IS NULL OR domain = ?1) AND (?2 IS NULL OR process_guid = ?2) AND (?3 IS NULL OR cell_id = ?3) \
         ORDER BY process_guid, instance_index"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.domain.as_deref())
        .bind(filter.process_guid.as_deref())
        .bind(filter.cell_id.as_deref())
        .fetch_all(pool)
        .await?;
    rows.iter().map(actual_from_row).collect()
}

pub async fn insert_unclaimed(
    pool: &SqlitePool,
    d: &DesiredLrp,
    index: u32,
    now: Nanos,
) -> Result<ActualLrp, BbsError> {
    sqlx::query(
        "INSERT INTO actual_lrps (process_guid, instance_index, domain, state, since) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&d.process_guid)
    .bind(i64::from(index))
    .bind(&d.domain)
    .bind(ActualLrpState::Unclaimed.as_str())
    .bind(now)
    .execute(pool)
    .await?;
    Ok(ActualLrp {
        key: ActualLrpKey {
            process_guid: d.process_guid.clone(),
            index,
            domain: d.domain.clone(),
        },
        instance_key: None,
        net_info: None,
        state: ActualLrpState::Unclaimed,
        crash_count: 0,
        crash_reason: String::new(),
        placement_error: String::new(),
        since: now,
    })
}

pub async fn update_actual_lrp(pool: &SqlitePool, a: &ActualLrp) -> Result<(), BbsError> {
    let (instance_guid, cell_id) = a
        .instance_key
        .as_ref()
        .map_or((String::new(), String::new()), |ik| {
            (ik.instance_guid.clone(), ik.cell_id.clone())
        });
    let net_info = match &a.net_info {
        Some(n) => serde_json::to_string(n)?,
        None => String::new(),
    };
    sqlx::query(
        "UPDATE actual_lrps SET state = ?, instance_guid = ?, cell_id = ?, net_info = ?, crash_count = ?, \
         crash_reason = ?, placement_error = ?, since = ? WHERE process_guid = ? AND instance_index = ?",
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
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn delete_actual_lrp(pool: &SqlitePool, key: &ActualLrpKey) -> Result<(), BbsError> {
    sqlx::query("DELETE FROM actual_lrps WHERE process_guid = ? AND instance_index = ?")
        .bind(&key.process_guid)
        .bind(i64::from(key.index))
        .execute(pool)
        .await?;
    Ok(())
}

// ---- cells ----

pub async fn cell_work(pool: &SqlitePool, cell_id: &str) -> Result<CellWork, BbsError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE cell_id = ? AND state IN ('PENDING', 'RUNNING') ORDER BY created_at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cell_id)
        .fetch_all(pool)
        .await?;
    let tasks = rows
        .iter()
        .map(task_from_row)
        .collect::<Result<Vec<_>, _>>()?;

    let sql = format!(
        "SELECT {ACTUAL_COLUMNS} FROM actual_lrps WHERE cell_id = ? AND state IN ('CLAIMED', 'RUNNING') \
         ORDER BY process_guid, instance_index"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cell_id)
        .fetch_all(pool)
        .await?;
    let mut lrps = Vec::with_capacity(rows.len());
    for row in &rows {
        let actual = actual_from_row(row)?;
        if let Some(desired) = desired_lrp(pool, &actual.key.process_guid).await? {
            lrps.push(LrpAssignment { actual, desired });
        }
    }
    Ok(CellWork { tasks, lrps })
}
