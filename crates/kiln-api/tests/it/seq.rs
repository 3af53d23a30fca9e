//! Rows created at once get distinct `seq`s (lists are ordered by it). On
//! PostgreSQL each insert's own `MAX(seq) + 1` could give two concurrent
//! inserts one number; a sequence numbers them there (CCDB migration 16),
//! through a trigger every table with a `seq` column has.

use super::*;
use kiln_store::Engine;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_get_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let creates =
        (0..24).map(|i| kiln.post("/v3/organizations", json!({"name": format!("seq-org-{i}")})));
    for (status, body) in futures_util::future::join_all(creates).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let databases = databases(dir.path())
        .await
        .unwrap_or_else(|| kiln_store::DatabaseUrl::SqliteDir(dir.path().to_path_buf()));
    let ccdb = databases.component("api/ccdb.sqlite", "ccdb");
    let pool = kiln_store::connect(&ccdb, kiln_store::OpenOptions::default())
        .await
        .unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM organizations ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let distinct: std::collections::BTreeSet<i64> = seqs.iter().copied().collect();
    assert!(seqs.len() >= 24, "{seqs:?}");
    assert_eq!(distinct.len(), seqs.len(), "shared seqs: {seqs:?}");

    if kiln_store::engine(&pool) == Engine::Postgres {
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
