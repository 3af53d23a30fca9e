//! Moving a platform's state from one store to another (`kiln migrate`):
//! every table of a database into the same tables of another, inside one
//! transaction on the target and verified by row counts before anyone may
//! commit it; and every blob of a directory into another blobstore,
//! streamed through a scratch file (never a whole blob in memory).
//!
//! Both sides must be at the same migration: the caller runs the target's
//! (and the source's) migrations first, and this module compares them.

use crate::blobstore::io;
use crate::db::engine_specific;
use crate::{Blobstore, Db, Engine, FsBlobstore, Pool, Row, Sql, StoreError, engine};
use futures_util::TryStreamExt;
use sqlx::Row as _;
use std::collections::BTreeMap;

/// Rows per `INSERT`: well under PostgreSQL's 65535 placeholders for the
/// widest table, and few enough that a batch's values are small.
const ROWS_PER_INSERT: usize = 200;

/// sqlx's own bookkeeping: each side keeps its own (and they must agree).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// One table's rows on both sides once copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: String,
    pub source: u64,
    pub target: u64,
}

/// A copy made but not committed: the caller commits every database's
/// copy together once all of them are verified, or drops them all.
pub struct CopiedDatabase {
    pub transaction: sqlx::Transaction<'static, Db>,
    pub counts: Vec<TableCount>,
}

/// How a column's values travel. Kiln's schemas use INTEGER (and BOOLEAN
/// as 0/1) and TEXT only; anything else is refused rather than guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

fn copy_error(what: &str) -> impl Fn(sqlx::Error) -> StoreError + use<> {
    let what = what.to_string();
    move |e| StoreError::Copy {
        what: what.clone(),
        reason: e.to_string(),
    }
}

fn refused(what: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Copy {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// The tables of the pool's database (its schema on PostgreSQL), by
/// name, without sqlx's migration bookkeeping.
pub async fn tables(pool: &Pool) -> Result<Vec<String>, StoreError> {
    let sql = match engine(pool) {
        Engine::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name"
        }
        Engine::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             ORDER BY table_name"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .map_err(copy_error("listing tables"))?;
    Ok(names
        .into_iter()
        .filter(|t| t != MIGRATIONS_TABLE)
        .collect())
}

/// Rows per table.
pub async fn row_counts(pool: &Pool) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    for table in tables(pool).await? {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quoted(&table)
        )))
        .fetch_one(pool)
        .await
        .map_err(copy_error(&format!("counting {table}")))?;
        counts.insert(table, n as u64);
    }
    Ok(counts)
}

/// The migration versions applied to the pool's database, in order.
pub async fn applied_migrations(pool: &Pool) -> Result<Vec<i64>, StoreError> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(copy_error("reading the applied migrations"))
}

/// Table names come from the databases' own catalogues, but are quoted
/// anyway so that no name is ever read as SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table's columns and how their values travel, in table order.
async fn columns(pool: &Pool, table: &str) -> Result<Vec<(String, Kind)>, StoreError> {
    let sql = match engine(pool) {
        Engine::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
        Engine::Postgres => {
            "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 \
             ORDER BY ordinal_position"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql)
        .bind(table)
        .fetch_all(pool)
        .await
        .map_err(copy_error(&format!("reading the columns of {table}")))?;
    rows.into_iter()
        .map(|(name, ty)| {
            let upper = ty.to_ascii_uppercase();
            let kind = if upper.contains("INT") || upper == "BOOLEAN" {
                Kind::Int
            } else if upper.contains("TEXT") || upper.contains("CHAR") {
                Kind::Text
            } else {
                return Err(refused(
                    &format!("{table}.{name}"),
                    format!("a column of type {ty}, which Kiln's schemas do not use"),
                ));
            };
            Ok((name, kind))
        })
        .collect()
}

/// Copies every table of `from` into the same tables of `to`, inside one
/// transaction on `to` that first empties them (rows its migrations
/// seeded, or older rows the caller chose to replace). The counts are
/// checked in that transaction; it is returned uncommitted.
pub async fn copy_database(from: &Pool, to: &Pool) -> Result<CopiedDatabase, StoreError> {
    let (source_migrations, target_migrations) = (
        applied_migrations(from).await?,
        applied_migrations(to).await?,
    );
    if source_migrations != target_migrations {
        return Err(refused(
            "the database",
            format!(
                "the source has migrations {source_migrations:?} and the target \
                 {target_migrations:?}; run the same Kiln on both"
            ),
        ));
    }
    let source_tables = tables(from).await?;
    let target_tables = tables(to).await?;
    if source_tables != target_tables {
        return Err(refused(
            "the database",
            format!("the source has tables {source_tables:?} and the target {target_tables:?}"),
        ));
    }
    let mut tx = to.begin().await.map_err(copy_error("starting the copy"))?;
    engine_specific::begin_copy(&mut tx)
        .await
        .map_err(copy_error("starting the copy"))?;
    let mut counts = Vec::with_capacity(source_tables.len());
    for table in &source_tables {
        counts.push(copy_table(from, to, &mut tx, table).await?);
    }
    engine_specific::end_copy(&mut tx)
        .await
        .map_err(copy_error("numbering rows after the copy"))?;
    Ok(CopiedDatabase {
        transaction: tx,
        counts,
    })
}

/// One table: empty it on the target, stream the source's rows over in
/// batches, and compare the counts.
async fn copy_table(
    from: &Pool,
    to: &Pool,
    tx: &mut sqlx::Transaction<'static, Db>,
    table: &str,
) -> Result<TableCount, StoreError> {
    let target_columns = columns(to, table).await?;
    let mut source_names: Vec<String> = columns(from, table)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut target_names: Vec<String> = target_columns.iter().map(|(n, _)| n.clone()).collect();
    source_names.sort();
    target_names.sort();
    if source_names != target_names {
        return Err(refused(
            table,
            format!("the source has columns {source_names:?} and the target {target_names:?}"),
        ));
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {}",
        quoted(table)
    )))
    .execute(&mut **tx)
    .await
    .map_err(copy_error(&format!("emptying {table} on the target")))?;

    let source = count(from, table).await?;
    let select = select_all(table, &target_columns);
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(from);
    let mut batch: Vec<Row> = Vec::with_capacity(ROWS_PER_INSERT);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(copy_error(&format!("reading {table}")))?
    {
        batch.push(row);
        if batch.len() == ROWS_PER_INSERT {
            insert(tx, table, &target_columns, &batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        insert(tx, table, &target_columns, &batch).await?;
    }
    drop(rows);

    let target: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        quoted(table)
    )))
    .fetch_one(&mut **tx)
    .await
    .map_err(copy_error(&format!("counting {table} on the target")))?;
    let counted = TableCount {
        table: table.to_string(),
        source,
        target: target as u64,
    };
    if counted.source != counted.target {
        return Err(refused(
            table,
            format!(
                "{} rows in the source but {} in the target after the copy",
                counted.source, counted.target
            ),
        ));
    }
    Ok(counted)
}

async fn count(pool: &Pool, table: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        quoted(table)
    )))
    .fetch_one(pool)
    .await
    .map_err(copy_error(&format!("counting {table}")))?;
    Ok(n as u64)
}

/// Every column cast to the type the target stores, so a value SQLite
/// kept with another type (its columns are loosely typed) still decodes.
fn select_all(table: &str, columns: &[(String, Kind)]) -> String {
    let list: Vec<String> = columns
        .iter()
        .map(|(name, kind)| {
            let ty = match kind {
                Kind::Int => "BIGINT",
                Kind::Text => "TEXT",
            };
            format!("CAST({} AS {ty})", quoted(name))
        })
        .collect();
    format!("SELECT {} FROM {}", list.join(", "), quoted(table))
}

async fn insert(
    tx: &mut sqlx::Transaction<'static, Db>,
    table: &str,
    columns: &[(String, Kind)],
    rows: &[Row],
) -> Result<(), StoreError> {
    let names: Vec<String> = columns.iter().map(|(n, _)| quoted(n)).collect();
    let mut sql = Sql::new(format!(
        "INSERT INTO {} ({}) ",
        quoted(table),
        names.join(", ")
    ));
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let mut args = Vec::with_capacity(columns.len());
        for (i, (name, kind)) in columns.iter().enumerate() {
            let decoded = match kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i).map(crate::Arg::Int),
                Kind::Text => row.try_get::<Option<String>, _>(i).map(crate::Arg::Text),
            };
            args.push(decoded.map_err(copy_error(&format!("reading {table}.{name}")))?);
        }
        values.push(args);
    }
    sql.push_values(values, |mut row, args| {
        for arg in args {
            row.push_bind(arg);
        }
    });
    sql.build()
        .execute(&mut **tx)
        .await
        .map_err(copy_error(&format!("writing {table} on the target")))?;
    Ok(())
}

/// What [`copy_blobs`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobsCopied {
    pub blobs: u64,
    pub bytes: u64,
}

/// Copies every blob of the directory `from` under the same key in `to`,
/// each streamed through `to`'s scratch directory, and checks that each
/// one is there afterwards. Re-running it copies them again (a blob's
/// key names one content), so an interrupted copy is simply run again.
pub async fn copy_blobs(from: &FsBlobstore, to: &dyn Blobstore) -> Result<BlobsCopied, StoreError> {
    let mut copied = BlobsCopied::default();
    for key in from.keys().await? {
        let mut source = from.open(&key).await?;
        let scratch = to
            .scratch_dir()
            .join(format!("migrate-{}", uuid::Uuid::new_v4().simple()));
        let written: Result<(), StoreError> = async {
            let mut file = tokio::fs::File::create(&scratch)
                .await
                .map_err(io(&scratch))?;
            tokio::io::copy(&mut source, &mut file)
                .await
                .map_err(io(&scratch))?;
            file.sync_all().await.map_err(io(&scratch))
        }
        .await;
        let put = match written {
            Ok(()) => to.put_file(&key, &scratch).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&scratch).await;
        let info = put?;
        if !to.exists(&key).await? {
            return Err(refused(
                &format!("blob {key}"),
                "the target does not have it after the upload",
            ));
        }
        copied.blobs += 1;
        copied.bytes += info.size;
    }
    Ok(copied)
}
