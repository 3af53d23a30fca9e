//! The SQL seam: one pool type ([`Pool`], sqlx's `Any`) over SQLite (the
//! embedded default) and PostgreSQL (a shared cluster database), so every
//! component keeps one set of queries. Statements number their
//! placeholders `$1, $2, …`, which both engines accept (sqlx's `Any`
//! arguments would write `?`, which PostgreSQL refuses).
//!
//! Everything that differs between the engines is in [`engine_specific`],
//! and nowhere else.

use crate::StoreError;
use sqlx::migrate::Migrator;
use std::path::{Path, PathBuf};

pub use sqlx::Any as Db;
pub use sqlx::any::AnyRow as Row;
pub use sqlx::{AnyConnection as Connection, AnyPool as Pool};

/// An executor on a Kiln database: `&Pool`, `&mut Connection` or a
/// transaction's connection (`&mut *tx`).
pub trait Executor<'c>: sqlx::Executor<'c, Database = Db> {}
impl<'c, T: sqlx::Executor<'c, Database = Db>> Executor<'c> for T {}

/// One schema step: version, description, SQL (embedded with `include_str!`).
pub type MigrationStep = (i64, &'static str, &'static str);

/// The pool limit when none is configured: enough for the API's and the
/// BBS's concurrent requests, few enough that several nodes fit under
/// PostgreSQL's default `max_connections` (100).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// The two engines Kiln runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Where one component's database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://USER:PASS@HOST:PORT/DB`) and the
    /// schema this component's tables live in (its `search_path`), so the
    /// CCDB and the BBS share one database without sharing table names.
    Postgres { url: String, schema: String },
}

impl Database {
    pub fn engine(&self) -> Engine {
        match self {
            Database::Sqlite(_) => Engine::Sqlite,
            Database::Postgres { .. } => Engine::Postgres,
        }
    }

    /// The URL with any password replaced, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres { url, schema } => {
                let shown = match url::Url::parse(url) {
                    Ok(mut u) if u.password().is_some() => {
                        let _ = u.set_password(Some("REDACTED"));
                        u.to_string()
                    }
                    Ok(u) => u.to_string(),
                    Err(_) => "postgres://(unparsable)".to_string(),
                };
                format!("{shown} (schema {schema})")
            }
        }
    }
}

/// A `--database-url`: where the CCDB and the BBS database live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://DIR`: `DIR/ccdb.sqlite` and `DIR/bbs.sqlite`.
    SqliteDir(PathBuf),
    /// `postgres://…` (or `postgresql://…`): one database, a schema per
    /// component.
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidDatabaseUrl {
            url: redact(url),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path.contains('?') {
                return Err(invalid("a SQLite URL is sqlite://DIRECTORY (no options)"));
            }
            return Ok(DatabaseUrl::SqliteDir(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
            if parsed.host_str().is_none_or(str::is_empty)
                || parsed.path().trim_start_matches('/').is_empty()
            {
                return Err(invalid(
                    "a PostgreSQL URL is postgres://USER:PASS@HOST:PORT/DATABASE",
                ));
            }
            if parsed.query_pairs().any(|(k, _)| k == "options") {
                return Err(invalid(
                    "Kiln sets the connection's options (search_path) itself",
                ));
            }
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        Err(invalid(
            "Kiln's database is SQLite (sqlite://DIR) or PostgreSQL (postgres://…)",
        ))
    }

    /// The database of one component: `file` under a SQLite directory, or
    /// `schema` in the PostgreSQL database.
    pub fn component(&self, file: &str, schema: &str) -> Database {
        match self {
            DatabaseUrl::SqliteDir(dir) => Database::Sqlite(dir.join(file)),
            DatabaseUrl::Postgres(url) => Database::Postgres {
                url: url.clone(),
                schema: schema.to_string(),
            },
        }
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        _ if url.contains('@') => "(a URL with credentials)".to_string(),
        _ => url.to_string(),
    }
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a committed row survives `kill -9` and power loss.
    Full,
    /// `synchronous=NORMAL` (in WAL mode): a committed row survives `kill -9`;
    /// the last commits may be lost on power loss, and the database stays
    /// consistent. For state that is rebuilt from its owners when lost.
    /// (SQLite only: PostgreSQL's durability is its server's setting.)
    Normal,
}

/// How a pool is opened.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub durability: Durability,
    pub max_connections: u32,
    /// PostgreSQL: the BBS lock owner every connection writes as (the
    /// session setting `kiln.bbs_owner`); the BBS tables' fence trigger
    /// (BBS migration 5) refuses its writes unless it holds a live lease.
    pub lease_owner: Option<uuid::Uuid>,
    /// SQLite: each connection's page cache in KiB (`cache_size = -N`);
    /// None keeps SQLite's 2 MiB. A transaction that dirties more pages
    /// than its cache holds spills them into the log before it commits,
    /// and reads that miss it go to the file: a database written in large
    /// bursts (the BBS) wants its working set in it. Grown as used.
    pub sqlite_cache_kib: Option<u32>,
    /// SQLite: the log size in pages at which a commit also checkpoints
    /// (`wal_autocheckpoint`); None keeps SQLite's 1,000 pages (4 MB). A
    /// database whose owner checkpoints at calm moments raises it, so its
    /// bursts do not stop to fold the log back midway; the bound stays,
    /// for an owner that finds no calm moment.
    pub sqlite_wal_autocheckpoint: Option<u32>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: Durability::Full,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            lease_owner: None,
            sqlite_cache_kib: None,
            sqlite_wal_autocheckpoint: None,
        }
    }
}

/// The engine a pool talks to.
pub fn engine(pool: &Pool) -> Engine {
    match pool.connect_options().database_url.scheme() {
        "sqlite" => Engine::Sqlite,
        _ => Engine::Postgres,
    }
}

/// The engine a connection talks to (in a transaction: `&*tx`).
pub fn connection_engine(conn: &Connection) -> Engine {
    match conn.backend_name() {
        "SQLite" => Engine::Sqlite,
        _ => Engine::Postgres,
    }
}

/// Builds a migrator from SQL embedded in the binary, so the one `kiln`
/// binary carries every component's schema and needs no files beside it.
/// The SQL is as written (SQLite's checksums stay those of existing data
/// dirs); [`open`] translates it for PostgreSQL.
pub fn migrator(steps: &[MigrationStep]) -> Migrator {
    migrator_for(Engine::Sqlite, steps)
}

fn migrator_for(engine: Engine, steps: &[MigrationStep]) -> Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};
    Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, description, sql)| {
                let sql = engine_specific::ddl(engine, sql);
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Opens (creating if needed) the SQLite database at `path` with full
/// durability and applies `steps`. WAL mode: a committed row survives
/// `kill -9` and power loss, and readers do not block the writer.
pub async fn open_database(path: &Path, steps: &[MigrationStep]) -> Result<Pool, StoreError> {
    open(
        &Database::Sqlite(path.to_path_buf()),
        steps,
        OpenOptions::default(),
    )
    .await
}

/// Opens `database`'s pool as it is, applying no migration: for tools
/// (`kiln migrate`) that read or fill a database whose owner has already
/// migrated it.
pub async fn connect(database: &Database, options: OpenOptions) -> Result<Pool, StoreError> {
    sqlx::any::install_default_drivers();
    engine_specific::pool_options(database, options)
        .connect(&engine_specific::connect_url(database))
        .await
        .map_err(|source| StoreError::Database {
            url: database.redacted(),
            source,
        })
}

/// Opens `database`'s pool and applies `steps`. Safe when several nodes
/// open one empty PostgreSQL database at once: the migrator holds
/// PostgreSQL's advisory lock while it runs, so each step runs once.
pub async fn open(
    database: &Database,
    steps: &[MigrationStep],
    options: OpenOptions,
) -> Result<Pool, StoreError> {
    sqlx::any::install_default_drivers();
    let shown = database.redacted();
    if let Database::Sqlite(path) = database
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let pool = engine_specific::pool_options(database, options)
        .connect(&engine_specific::connect_url(database))
        .await
        .map_err(|source| StoreError::Database {
            url: shown.clone(),
            source,
        })?;
    let mut migrator = migrator_for(database.engine(), steps);
    if let Database::Postgres { schema, .. } = database {
        migrator.create_schema(schema.clone());
    }
    migrator
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate { url: shown, source })?;
    Ok(pool)
}

/// Whether an error means the database could not be reached (down,
/// restarting, refusing connections, the pool exhausted) rather than that
/// a statement was wrong: callers answer "unavailable, retry" for these.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| engine_specific::is_unavailable_code(&code)),
        _ => false,
    }
}

/// The one place where SQL or settings differ between SQLite and
/// PostgreSQL. Queries elsewhere are written once for both.
pub mod engine_specific {
    use super::{Database, Durability, Engine, OpenOptions};
    use sqlx::Executor as _;
    use sqlx::any::AnyPoolOptions;
    use std::time::Duration;

    /// How long a request waits for a pooled connection before it fails
    /// (as 503) rather than hanging while the database is away.
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

    /// How long a SQLite statement waits for the database's write lock.
    const BUSY_TIMEOUT_MS: u32 = 10_000;

    /// How long a checkpoint waits for readers to move on.
    const CHECKPOINT_BUSY_TIMEOUT_MS: u32 = 250;

    /// Migrations are written in SQLite's dialect, which PostgreSQL accepts
    /// but for the column types: INTEGER is 32 bits there (the BBS stores
    /// nanosecond timestamps) and BOOLEAN is a type of its own (Kiln's
    /// flags are integers 0/1 on both engines). And the CCDB's migration 2
    /// numbered existing rows by SQLite's `rowid`: a PostgreSQL database
    /// starts empty, so there is nothing to number (`0`). Translated word
    /// by word. Lines that start with [`POSTGRES_ONLY`] are comments to
    /// SQLite and statements to PostgreSQL (the marker is removed).
    pub fn ddl(engine: Engine, sql: &str) -> String {
        match engine {
            Engine::Sqlite => sql.to_string(),
            Engine::Postgres => replace_words(
                &postgres_lines(sql),
                &[("INTEGER", "BIGINT"), ("BOOLEAN", "BIGINT"), ("ROWID", "0")],
            ),
        }
    }

    /// The marker of a migration line that runs on PostgreSQL only.
    pub const POSTGRES_ONLY: &str = "-- postgres: ";

    fn postgres_lines(sql: &str) -> String {
        sql.lines()
            .map(|line| line.strip_prefix(POSTGRES_ONLY).unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The sequence that numbers new rows' `seq` on PostgreSQL (CCDB
    /// migration 15: a trigger before each insert takes the next value;
    /// an insert's own `MAX(seq) + 1` gave concurrent inserts one number).
    pub const SEQ_SEQUENCE: &str = "kiln_seq";

    /// Before a copy into a PostgreSQL database (in the copy's
    /// transaction): the `seq` triggers keep the copied numbers.
    pub async fn begin_copy(conn: &mut super::Connection) -> sqlx::Result<()> {
        if super::connection_engine(conn) == Engine::Postgres {
            conn.execute("SET LOCAL kiln.copying = 'on'").await?;
        }
        Ok(())
    }

    /// After a copy into a PostgreSQL database (in the copy's
    /// transaction): the `seq` sequence, where there is one, moves past
    /// every copied `seq`, so rows created later sort after them.
    pub async fn end_copy(conn: &mut super::Connection) -> sqlx::Result<()> {
        if super::connection_engine(conn) != Engine::Postgres {
            return Ok(());
        }
        let sequences: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.sequences \
             WHERE sequence_schema = current_schema() AND sequence_name = $1",
        )
        .bind(SEQ_SEQUENCE)
        .fetch_one(&mut *conn)
        .await?;
        if sequences == 0 {
            return Ok(());
        }
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND column_name = 'seq'",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut top: i64 = 0;
        for table in tables {
            let sql = format!(
                "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM \"{}\"",
                table.replace('"', "\"\"")
            );
            let max: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await?;
            top = top.max(max);
        }
        if top > 0 {
            let sql = format!("SELECT setval('{SEQ_SEQUENCE}', $1)");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(top)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    fn replace_words(sql: &str, table: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            let upper = word.to_ascii_uppercase();
            match table.iter().find(|(from, _)| *from == upper) {
                Some((_, to)) => out.push_str(to),
                None => out.push_str(word),
            }
            word.clear();
        };
        for c in sql.chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        out
    }

    /// The URL sqlx's `Any` driver connects with. SQLite: created if
    /// missing. PostgreSQL: the component's schema first on the
    /// `search_path` of every connection, reconnects included.
    pub fn connect_url(database: &Database) -> String {
        match database {
            Database::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Database::Postgres { url, schema } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    /// Pool settings, and SQLite's per-connection pragmas: WAL (readers do
    /// not block the writer), the durability asked for, foreign keys, a
    /// wait for the write lock instead of an immediate SQLITE_BUSY, temp
    /// storage in memory, and the page cache and checkpoint bound asked for.
    pub fn pool_options(database: &Database, options: OpenOptions) -> AnyPoolOptions {
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT);
        match database {
            Database::Postgres { .. } => match options.lease_owner {
                None => pool,
                Some(owner) => {
                    // A uuid's text is safe to inline.
                    let set = format!("SET kiln.bbs_owner = '{owner}'");
                    pool.after_connect(move |conn, _| {
                        let set = set.clone();
                        Box::pin(async move {
                            conn.execute(sqlx::AssertSqlSafe(set)).await?;
                            Ok(())
                        })
                    })
                }
            },
            Database::Sqlite(_) => {
                let synchronous = match options.durability {
                    Durability::Full => "FULL",
                    Durability::Normal => "NORMAL",
                };
                // temp_store=MEMORY: the statement journals of multi-row
                // statements inside a transaction stay off the disk.
                let mut pragmas = format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; \
                     PRAGMA temp_store = MEMORY;"
                );
                if let Some(kib) = options.sqlite_cache_kib {
                    pragmas.push_str(&format!(" PRAGMA cache_size = -{kib};"));
                }
                if let Some(pages) = options.sqlite_wal_autocheckpoint {
                    pragmas.push_str(&format!(" PRAGMA wal_autocheckpoint = {pages};"));
                }
                pool.after_connect(move |conn, _| {
                    let pragmas = pragmas.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                        Ok(())
                    })
                })
            }
        }
    }

    /// The clause that locks the rows a `SELECT` in a transaction reads
    /// until it commits, for read-then-write transactions (a counter's
    /// next value). PostgreSQL: `FOR UPDATE`. SQLite has no row locks and
    /// needs none: a write transaction holds the database's one write lock.
    pub fn for_update(engine: Engine) -> &'static str {
        match engine {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE",
        }
    }

    /// The database server's clock as unix milliseconds, as an SQL
    /// expression. Leases (the BBS lock) are compared against this clock
    /// only, so nodes whose clocks disagree still agree on who holds one.
    pub fn now_millis(engine: Engine) -> &'static str {
        match engine {
            Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Engine::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The collation clause that makes a text column sort by bytes, as
    /// SQLite always does: PostgreSQL otherwise sorts by the database's
    /// collation (case and accents folded), and a list would page
    /// differently on the two engines.
    pub fn byte_order(engine: Engine) -> &'static str {
        match engine {
            Engine::Sqlite => "",
            Engine::Postgres => " COLLATE \"C\"",
        }
    }

    /// The statements, run in order on one connection, that fold a SQLite
    /// database's write-ahead log back into it and truncate the log file,
    /// for a calm moment: automatic checkpoints never shrink the file,
    /// which kept the size of the busiest burst (159 MB after placing
    /// 250,000 BBS instances). The checkpoint waits for readers only
    /// briefly (it blocks writers while it waits; when readers stay, it
    /// gives up and a later calm moment tries again), then the connection's
    /// usual wait is restored. None on PostgreSQL, whose log the server
    /// manages.
    pub fn wal_checkpoint(engine: Engine) -> Vec<String> {
        match engine {
            Engine::Sqlite => vec![
                format!("PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}"),
                "PRAGMA wal_checkpoint(TRUNCATE)".into(),
                format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"),
            ],
            Engine::Postgres => Vec::new(),
        }
    }

    /// SQLSTATEs (PostgreSQL) that mean the server is going away or not
    /// accepting work: class 08 (connection exception), 57P01..57P03
    /// (admin shutdown, crash shutdown, cannot connect now). SQLite's codes
    /// are numbers; a busy database past its timeout is SQLITE_BUSY (5).
    pub fn is_unavailable_code(code: &str) -> bool {
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "5")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_translated_word_by_word_for_postgres_only() {
        let sql = "CREATE TABLE t (n INTEGER NOT NULL, flag boolean, integers TEXT); -- INTEGER";
        assert_eq!(engine_specific::ddl(Engine::Sqlite, sql), sql);
        assert_eq!(
            engine_specific::ddl(Engine::Postgres, sql),
            "CREATE TABLE t (n BIGINT NOT NULL, flag BIGINT, integers TEXT); -- BIGINT"
        );
        let marked = "-- a comment\n-- postgres: CREATE SEQUENCE s;\nSELECT 1;";
        assert_eq!(engine_specific::ddl(Engine::Sqlite, marked), marked);
        assert_eq!(
            engine_specific::ddl(Engine::Postgres, marked),
            "-- a comment\nCREATE SEQUENCE s;\nSELECT 1;"
        );
    }

    #[test]
    fn database_urls_parse_or_fail_clearly() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/kiln/db").unwrap(),
            DatabaseUrl::SqliteDir("/var/kiln/db".into())
        );
        let pg = DatabaseUrl::parse("postgres://kiln:pw@127.0.0.1:5432/kiln").unwrap();
        assert_eq!(
            pg.component("ccdb.sqlite", "ccdb"),
            Database::Postgres {
                url: "postgres://kiln:pw@127.0.0.1:5432/kiln".into(),
                schema: "ccdb".into()
            }
        );
        for bad in [
            "mysql://x@h/db",
            "postgres://kiln:secret@127.0.0.1:5432",
            "postgres://h/db?options=-c%20x",
            "sqlite://",
            "/plain/path",
        ] {
            let e = DatabaseUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
        let shown = pg.component("f", "bbs").redacted();
        assert!(!shown.contains(":pw@") && shown.contains("bbs"), "{shown}");
    }
}
