//! Rows created at once get distinct `seq`s (lists are ordered by it). On
//! PostgreSQL each insert's own `MAX(seq) + 1` reads a snapshot of its own,
//! so concurrent inserts got one number; a sequence numbers them there
//! (CCDB migration 15), through a trigger every table with `seq` has.

use super::*;
use kiln_store::Engine;

/// Inserts as `db::insert` writes them, all made before any commits.
const INSERT: &str = "INSERT INTO organizations (guid, name, created_at, updated_at, seq) \
     VALUES ($1, $2, $3, $3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM organizations))";
const AT_ONCE: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_get_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let databases = databases(dir.path())
        .await
        .unwrap_or_else(|| kiln_store::DatabaseUrl::SqliteDir(dir.path().to_path_buf()));
    let ccdb = databases.component("api/ccdb.sqlite", "ccdb");
    let options = kiln_store::OpenOptions {
        max_connections: AT_ONCE as u32,
        ..Default::default()
    };
    let pool = kiln_store::connect(&ccdb, options).await.unwrap();
    // PostgreSQL: every insert waits for the others before it commits, so
    // each read the same rows. (SQLite has one writer: they queue.)
    let on_postgres = kiln_store::engine(&pool) == Engine::Postgres;
    let barrier = Arc::new(tokio::sync::Barrier::new(AT_ONCE));
    let inserts = (0..AT_ONCE).map(|i| {
        let (pool, barrier) = (pool.clone(), barrier.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(INSERT)
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(format!("seq-org-{i}"))
                .bind("2026-11-30T00:00:00Z")
                .execute(&mut *tx)
                .await
                .unwrap();
            if on_postgres {
                barrier.wait().await;
            }
            tx.commit().await.unwrap();
        }
    });
    futures_util::future::join_all(inserts).await;

    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM organizations ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let distinct: std::collections::BTreeSet<i64> = seqs.iter().copied().collect();
    assert!(seqs.len() >= AT_ONCE, "{seqs:?}");
    assert_eq!(distinct.len(), seqs.len(), "shared seqs: {seqs:?}");

    if on_postgres {
        let untriggered: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND column_name = 'seq' \
             AND table_name NOT IN (SELECT event_object_table FROM information_schema.triggers \
             WHERE trigger_schema = current_schema() AND trigger_name = event_object_table || '_seq')",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            untriggered.is_empty(),
            "tables whose seq no trigger numbers: {untriggered:?}"
        );
    }
    pool.close().await;
    kiln.stop().await;
}
