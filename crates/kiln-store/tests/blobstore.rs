//! The blobstore contract, against both stores: a directory and a real
//! S3 server (moto on 127.0.0.1). A blob is whole or absent, the source
//! file is taken over only on success, keys cannot escape.

use kiln_store::testing::MotoS3;
use kiln_store::{Blobstore, FsBlobstore, StoreError};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// A file of `len` bytes that are not all alike, in the store's scratch dir.
async fn staged(
    store: &dyn Blobstore,
    name: &str,
    len: usize,
    seed: u8,
) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let path = store.scratch_dir().join(name);
    tokio::fs::write(&path, &bytes).await.unwrap();
    (path, bytes)
}

async fn read_all(store: &dyn Blobstore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open(key)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

async fn contract(store: &dyn Blobstore) {
    // Small (one PUT) and large (multipart on S3), each read back whole.
    for (key, len) in [
        ("packages/small", 1000),
        ("droplets/large", 20 * 1024 * 1024 + 17),
    ] {
        let (src, bytes) = staged(store, "upload", len, 7).await;
        let info = store.put_file(key, &src).await.unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
        assert!(!src.exists(), "the source is taken over");
        assert!(store.exists(key).await.unwrap());
        assert!(
            read_all(store, key).await == bytes,
            "{key} reads back whole"
        );
    }
    // Replacing a blob.
    let (src, bytes) = staged(store, "again", 500, 99).await;
    store.put_file("packages/small", &src).await.unwrap();
    assert!(read_all(store, "packages/small").await == bytes);
    // Absent blobs and deletes.
    assert!(matches!(
        store.open("packages/none").await,
        Err(StoreError::BlobNotFound { .. })
    ));
    assert!(!store.exists("packages/none").await.unwrap());
    store.delete("packages/small").await.unwrap();
    store.delete("packages/small").await.unwrap();
    assert!(!store.exists("packages/small").await.unwrap());
    // Keys that could escape or hide are refused, with nothing stored.
    for bad in [
        "", "../x", "a/../b", "/abs", "a//b", ".hidden", "a/.b", "sp ace",
    ] {
        let (src, _) = staged(store, "bad", 10, 1).await;
        assert!(
            matches!(
                store.put_file(bad, &src).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
        assert!(src.exists(), "a refused put keeps its source");
    }
    tokio::fs::remove_file(store.scratch_dir().join("bad"))
        .await
        .unwrap();
    // Reads leave nothing behind in the scratch dir.
    assert_eq!(files_in(store.scratch_dir()), 0);
}

#[tokio::test]
async fn a_directory_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobstore::new(dir.path().join("blobs")).await.unwrap();
    contract(&store).await;
}

/// A fresh bucket on `moto`, with its scratch directory.
async fn bucket(moto: &MotoS3) -> (tempfile::TempDir, kiln_store::S3Blobstore) {
    let dir = tempfile::tempdir().unwrap();
    let store = moto
        .blobstore("kiln-blobs", dir.path().join("scratch"))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn an_s3_bucket_keeps_the_contract() {
    let Some(moto) = MotoS3::start().await else {
        return;
    };
    let (_dir, store) = bucket(&moto).await;
    contract(&store).await;
}

#[tokio::test]
async fn an_s3_store_that_is_down_fails_clearly_and_keeps_the_source() {
    let Some(mut moto) = MotoS3::start().await else {
        return;
    };
    let (_dir, store) = bucket(&moto).await;
    moto.kill();
    for len in [100, 9 * 1024 * 1024] {
        let (src, _) = staged(&store, "upload", len, 3).await;
        let started = std::time::Instant::now();
        let err = store.put_file("droplets/d", &src).await.unwrap_err();
        assert!(matches!(err, StoreError::ObjectStore { .. }), "{err}");
        assert!(err.to_string().contains("kiln-blobs/droplets/d"), "{err}");
        assert!(src.exists(), "a failed put keeps its source for a retry");
        eprintln!(
            "put of {len} bytes to a dead store failed in {:?}: {err}",
            started.elapsed()
        );
    }
    assert!(matches!(
        store.open("droplets/d").await,
        Err(StoreError::ObjectStore { .. })
    ));
}

#[tokio::test]
async fn blobstore_urls_choose_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}", dir.path().join("a").display());
    let store = kiln_store::open_blobstore(Some(&file_url), dir.path())
        .await
        .unwrap();
    let (src, bytes) = staged(&*store, "x", 10, 0).await;
    store.put_file("k", &src).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("a/k")).unwrap(), bytes);
    let store = kiln_store::open_blobstore(None, dir.path()).await.unwrap();
    assert!(store.scratch_dir().starts_with(dir.path().join("blobs")));
    for bad in ["ftp://x/y", "file://host/x", "s3://", "s3://b?colour=red"] {
        let err = kiln_store::open_blobstore(Some(bad), dir.path())
            .await
            .err();
        assert!(
            matches!(err, Some(StoreError::InvalidUrl { .. })),
            "{bad}: {err:?}"
        );
    }
}
