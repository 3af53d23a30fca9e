//! `kiln migrate`'s copying, against the real things: a SQLite file into a
//! real PostgreSQL server, and a blob directory into a real S3 server
//! (moto), both on 127.0.0.1.

use kiln_store::copy::{copy_blobs, copy_database, row_counts};
use kiln_store::testing::{MotoS3, Postgres};
use kiln_store::{Blobstore, Database, FsBlobstore, MigrationStep, OpenOptions, Pool, Sql};
use sqlx::Row as _;
use tokio::io::AsyncReadExt;

const STEPS: &[MigrationStep] = &[
    (
        1,
        "things",
        "CREATE TABLE things (guid TEXT PRIMARY KEY, note TEXT, \
         size INTEGER NOT NULL, flag BOOLEAN NOT NULL DEFAULT 0);",
    ),
    (
        2,
        "counters",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);\
         INSERT INTO counters (name, value) VALUES ('n', 0);",
    ),
];

async fn open(db: &Database, steps: &[MigrationStep]) -> Pool {
    kiln_store::open(db, steps, OpenOptions::default())
        .await
        .unwrap()
}

/// More rows than one INSERT batch, a value past 32 bits, NULLs and flags.
async fn fill(pool: &Pool, n: i64) {
    let mut q = Sql::new("INSERT INTO things (guid, note, size, flag) ");
    q.push_values(0..n, |mut row, i| {
        let note = (i % 3 != 0).then(|| format!("note 'quoted' {i}"));
        row.push_bind(format!("g{i:04}"))
            .push_bind(note)
            .push_bind(5_000_000_000 + i)
            .push_bind(i % 2 == 0);
    });
    q.build().execute(pool).await.unwrap();
    sqlx::query("UPDATE counters SET value = 41")
        .execute(pool)
        .await
        .unwrap();
}

async fn things(pool: &Pool) -> Vec<(String, Option<String>, i64, i64)> {
    sqlx::query("SELECT guid, note, size, CAST(flag AS BIGINT) FROM things ORDER BY guid")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_is_copied_into_postgres_whole_or_not_at_all() {
    let Some(pg) = Postgres::shared().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = open(&Database::Sqlite(dir.path().join("db.sqlite")), STEPS).await;
    fill(&source, 450).await;
    let target_db = pg.fresh_database().await.component("unused", "things");
    let target = open(&target_db, STEPS).await;

    // Not committed: the target keeps what its migrations seeded.
    let copied = copy_database(&source, &target).await.unwrap();
    drop(copied);
    assert!(things(&target).await.is_empty());
    let seeded: i64 = sqlx::query_scalar("SELECT value FROM counters")
        .fetch_one(&target)
        .await
        .unwrap();
    assert_eq!(seeded, 0);

    // Committed: every row, every value, and the counts said so.
    let copied = copy_database(&source, &target).await.unwrap();
    let counts: Vec<(String, u64, u64)> = copied
        .counts
        .iter()
        .map(|c| (c.table.clone(), c.source, c.target))
        .collect();
    assert_eq!(
        counts,
        vec![("counters".into(), 1, 1), ("things".into(), 450, 450)]
    );
    copied.transaction.commit().await.unwrap();
    assert_eq!(things(&target).await, things(&source).await);
    assert_eq!(
        row_counts(&target).await.unwrap(),
        row_counts(&source).await.unwrap()
    );
    let counter: i64 = sqlx::query_scalar("SELECT value FROM counters")
        .fetch_one(&target)
        .await
        .unwrap();
    assert_eq!(counter, 41);
}

/// A table numbered by `seq` as the CCDB's are (migration 15 there): on
/// PostgreSQL a trigger takes each new row's number from `kiln_seq`.
const SEQ_STEPS: &[MigrationStep] = &[(
    1,
    "items",
    "CREATE TABLE items (guid TEXT PRIMARY KEY, seq INTEGER NOT NULL DEFAULT 0);
-- postgres: CREATE SEQUENCE kiln_seq;
-- postgres: CREATE FUNCTION kiln_next_seq() RETURNS trigger LANGUAGE plpgsql AS $$
-- postgres: BEGIN
-- postgres:   IF COALESCE(current_setting('kiln.copying', true), '') <> 'on' THEN
-- postgres:     NEW.seq := nextval('kiln_seq');
-- postgres:   END IF;
-- postgres:   RETURN NEW;
-- postgres: END $$;
-- postgres: CREATE TRIGGER items_seq BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION kiln_next_seq();
SELECT 1;",
)];

/// A copy keeps the rows' `seq` numbers (the order lists show), and rows
/// created after it are numbered past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_seq_numbers_are_kept_and_new_rows_come_after_them() {
    let Some(pg) = Postgres::shared().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = open(&Database::Sqlite(dir.path().join("db.sqlite")), SEQ_STEPS).await;
    for (guid, seq) in [("a", 10_i64), ("b", 20), ("c", 30)] {
        sqlx::query("INSERT INTO items (guid, seq) VALUES ($1, $2)")
            .bind(guid)
            .bind(seq)
            .execute(&source)
            .await
            .unwrap();
    }
    let target_db = pg.fresh_database().await.component("unused", "items");
    let target = open(&target_db, SEQ_STEPS).await;
    copy_database(&source, &target)
        .await
        .unwrap()
        .transaction
        .commit()
        .await
        .unwrap();
    let new =
        "INSERT INTO items (guid, seq) VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM items))";
    sqlx::query(new).bind("d").execute(&target).await.unwrap();
    let seqs: Vec<(String, i64)> = sqlx::query("SELECT guid, seq FROM items ORDER BY seq")
        .fetch_all(&target)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let guids: Vec<&str> = seqs.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(guids, ["a", "b", "c", "d"], "{seqs:?}");
    assert_eq!(
        &seqs[..3],
        [("a".into(), 10), ("b".into(), 20), ("c".into(), 30)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_at_different_migrations_are_refused_and_nothing_changes() {
    let Some(pg) = Postgres::shared().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = open(&Database::Sqlite(dir.path().join("db.sqlite")), STEPS).await;
    fill(&source, 3).await;
    let target_db = pg.fresh_database().await.component("unused", "things");
    let target = open(&target_db, &STEPS[..1]).await;
    let e = copy_database(&source, &target)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("migrations"), "{e}");
    assert!(things(&target).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_directory_is_copied_into_s3_streamed() {
    let Some(moto) = MotoS3::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let from = FsBlobstore::new(dir.path().join("blobs")).await.unwrap();
    // One blob above the multipart threshold, and keys in subdirectories.
    let big: Vec<u8> = (0..kiln_store::MULTIPART_THRESHOLD + 4096)
        .map(|i| (i % 251) as u8)
        .collect();
    let blobs = [
        ("packages/p1", b"package".to_vec()),
        ("droplets/d1", big),
        ("buildpack_cache/app/stack", b"cache".to_vec()),
    ];
    for (key, bytes) in &blobs {
        let src = from.scratch_dir().join("x");
        tokio::fs::write(&src, bytes).await.unwrap();
        from.put_file(key, &src).await.unwrap();
    }
    let to = moto
        .blobstore("migrated", dir.path().join("s3-scratch"))
        .await
        .unwrap();
    let copied = copy_blobs(&from, &to).await.unwrap();
    assert_eq!(copied.blobs, 3);
    for (key, bytes) in &blobs {
        let mut got = Vec::new();
        to.open(key)
            .await
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert!(got == *bytes, "{key} differs");
    }
    // The source is left as it was.
    assert_eq!(from.keys().await.unwrap().len(), 3);
}
