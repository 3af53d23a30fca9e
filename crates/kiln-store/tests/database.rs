//! The SQL seam against both engines: a SQLite file and a real PostgreSQL
//! server on 127.0.0.1 (Debian's, started by the test). One set of
//! statements, migrations applied once, compare-and-set with one winner,
//! and a restarted server reconnected to.

use kiln_store::testing::Postgres;
use kiln_store::{Database, MigrationStep, OpenOptions, Pool, Sql};
use sqlx::Row as _;

const STEPS: &[MigrationStep] = &[
    (
        1,
        "things",
        "CREATE TABLE things (guid TEXT PRIMARY KEY, state TEXT NOT NULL, \
         size INTEGER NOT NULL, flag BOOLEAN NOT NULL DEFAULT 0);",
    ),
    (
        2,
        "counters",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);\
         INSERT INTO counters (name, value) VALUES ('n', 0);",
    ),
];

/// One engine's database for a test; `None` when PostgreSQL is missing
/// (skipped loudly; a failure under KILN_REQUIRE_RUNC=1).
async fn database(engine: &str, dir: &tempfile::TempDir) -> Option<Database> {
    match engine {
        "sqlite" => Some(Database::Sqlite(dir.path().join("db.sqlite"))),
        _ => {
            let pg = Postgres::shared().await?;
            Some(pg.fresh_database().await.component("unused", "things"))
        }
    }
}

async fn open(db: &Database) -> Pool {
    kiln_store::open(db, STEPS, OpenOptions::default())
        .await
        .unwrap()
}

macro_rules! on_both_engines {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )+ }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )+ }
    };
}

on_both_engines!(
    one_statement_runs_on_both_engines,
    a_compare_and_set_has_one_winner,
    a_counter_read_then_written_in_a_transaction_never_repeats,
    text_sorts_by_bytes_on_both_engines,
);

async fn one_statement_runs_on_both_engines(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(engine, &dir).await else {
        return;
    };
    let pool = open(&db).await;
    // A size past 32 bits: INTEGER is 64-bit on both (BIGINT in PostgreSQL).
    let big = 5_000_000_000i64;
    let mut q = Sql::new("INSERT INTO things (guid, state, size, flag) ");
    q.push_values([("a", big, true), ("b", 1, false)], |mut row, (g, n, f)| {
        row.push_bind(g).push_bind("NEW").push_bind(n).push_bind(f);
    });
    q.build().execute(&pool).await.unwrap();
    // A column declared BOOLEAN is read as an integer: sqlx's `Any` does
    // not decode SQLite's BOOLEAN declaration (the CCDB's feature flags).
    let mut q = Sql::new("SELECT guid, size, CAST(flag AS INTEGER) FROM things WHERE guid IN (");
    let mut list = q.separated(", ");
    for g in ["a", "b", "c"] {
        list.push_bind(g);
    }
    q.push(") ORDER BY guid");
    let rows = q.build().fetch_all(&pool).await.unwrap();
    let got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, [("a".into(), big, 1), ("b".into(), 1, 0)]);
    // A unique violation is recognised as such on both.
    let again = sqlx::query("INSERT INTO things (guid, state, size) VALUES ($1, 'x', 0)")
        .bind("a")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, sqlx::Error::Database(e) if e.is_unique_violation()),
        "{again}"
    );
    assert!(!kiln_store::is_unavailable(&again));
}

/// Names in byte order: upper case before lower, accented letters last.
const BYTE_ORDER: [&str; 6] = ["B", "Z", "a", "b", "e", "\u{e9}t\u{e9}"];

async fn text_sorts_by_bytes_on_both_engines(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(engine, &dir).await else {
        return;
    };
    let pool = open(&db).await;
    let engine = kiln_store::engine(&pool);
    // The test server's cluster is `--locale=C`; a column with a
    // linguistic collation stands for a database created with one.
    let column = match engine {
        kiln_store::Engine::Sqlite => "name TEXT NOT NULL",
        kiln_store::Engine::Postgres => "name TEXT COLLATE \"und-x-icu\" NOT NULL",
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE names ({column})"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let mut q = Sql::new("INSERT INTO names (name) ");
    q.push_values(["e", "a", "\u{e9}t\u{e9}", "Z", "b", "B"], |mut row, n| {
        row.push_bind(n);
    });
    q.build().execute(&pool).await.unwrap();
    let sorted = |clause: &str| {
        let sql = format!("SELECT name FROM names ORDER BY name{clause}");
        let pool = pool.clone();
        async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .unwrap();
            rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
        }
    };
    let byte_order = kiln_store::engine_specific::byte_order(engine);
    assert_eq!(sorted(byte_order).await, BYTE_ORDER);
    if engine == kiln_store::Engine::Postgres {
        // Without the clause the column's collation folds case: the
        // clause is what makes the engines agree.
        assert_ne!(sorted("").await, BYTE_ORDER);
    }
}

async fn a_compare_and_set_has_one_winner(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(engine, &dir).await else {
        return;
    };
    let pool = open(&db).await;
    sqlx::query("INSERT INTO things (guid, state, size) VALUES ('t', 'PENDING', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let racers = (0..8).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            sqlx::query(
                "UPDATE things SET state = 'RUNNING', size = $1 WHERE guid = 't' AND state = 'PENDING'",
            )
            .bind(i as i64)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected()
        })
    });
    let mut wins = 0;
    for r in racers {
        wins += r.await.unwrap();
    }
    assert_eq!(wins, 1, "exactly one writer moves the row");
}

/// Two nodes starting together on an empty PostgreSQL database (SQLite is
/// one node's file, opened once by its one server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_opening_an_empty_database_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database("postgres", &dir).await else {
        return;
    };
    let (a, b) = tokio::join!(open(&db), open(&db));
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(applied, STEPS.len() as i64);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counters")
        .fetch_one(&b)
        .await
        .unwrap();
    assert_eq!(n, 1, "the seed row was inserted once");
    // A third start finds everything applied and changes nothing.
    drop(open(&db).await);
}

async fn a_counter_read_then_written_in_a_transaction_never_repeats(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = database(engine, &dir).await else {
        return;
    };
    let pool = open(&db).await;
    let lock = kiln_store::engine_specific::for_update(kiln_store::engine(&pool));
    let takers = (0..6).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let sql = format!("SELECT value FROM counters WHERE name = 'n'{lock}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE counters SET value = $1 WHERE name = 'n'")
                .bind(n + 1)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            n + 1
        })
    });
    let mut taken = Vec::new();
    for t in takers {
        taken.push(t.await.unwrap());
    }
    taken.sort();
    assert_eq!(taken, [1, 2, 3, 4, 5, 6], "every value taken once");
}

/// The database going away and coming back: statements fail with an
/// error callers map to "unavailable", and the same pool answers again
/// once the server is back (sqlx reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_restarted_server_is_reconnected_to() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let db = pg.database("things");
    let pool = open(&db).await;
    sqlx::query("INSERT INTO things (guid, state, size) VALUES ('x', 'A', 1)")
        .execute(&pool)
        .await
        .unwrap();
    tokio::task::block_in_place(|| pg.stop());
    let down = sqlx::query("SELECT COUNT(*) FROM things")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(kiln_store::is_unavailable(&down), "{down:?}");
    tokio::task::block_in_place(|| pg.pg_ctl_start());
    kiln_store::testing::wait_until_answering(&pool).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM things")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
