use kiln_store::{Blobstore, FsBlobstore, StoreError};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn put_open_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobstore::new(dir.path().join("blobs")).await.unwrap();
    let src = store.scratch_dir().join("upload");
    tokio::fs::write(&src, b"hello").await.unwrap();

    let info = store.put_file("droplets/abc-1", &src).await.unwrap();
    assert_eq!(info.size, 5);
    assert_eq!(
        info.sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(!src.exists(), "the scratch file is moved, not copied");

    let mut content = String::new();
    store
        .open("droplets/abc-1")
        .await
        .unwrap()
        .read_to_string(&mut content)
        .await
        .unwrap();
    assert_eq!(content, "hello");
    assert!(store.exists("droplets/abc-1").await.unwrap());

    store.delete("droplets/abc-1").await.unwrap();
    assert!(matches!(
        store.open("droplets/abc-1").await,
        Err(StoreError::BlobNotFound { .. })
    ));
    store.delete("droplets/abc-1").await.unwrap();
}

#[tokio::test]
async fn keys_cannot_leave_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobstore::new(dir.path().join("blobs")).await.unwrap();
    for key in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "",
        "a//b",
        ".scratch/x",
        "a b",
    ] {
        assert!(
            matches!(store.exists(key).await, Err(StoreError::InvalidKey { .. })),
            "{key:?} must be refused"
        );
    }
}

#[tokio::test]
async fn database_migrations_apply_once_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.sqlite");
    let migrations = kiln_store::migrator(&[(1, "init", "CREATE TABLE t (x INTEGER NOT NULL);")]);
    let pool = kiln_store::open_database(&path, &migrations).await.unwrap();
    sqlx::query("INSERT INTO t (x) VALUES (7)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let pool = kiln_store::open_database(&path, &migrations).await.unwrap();
    let (x,): (i64,) = sqlx::query_as("SELECT x FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(x, 7);
}
