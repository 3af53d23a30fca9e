//! Expiring, per-cell tokens and key rotation, over real HTTP on
//! 127.0.0.1: the server reads its keys from a directory as `kiln server`
//! does, and `kiln bbs issue-token` / `kiln bbs rotate-key` are the
//! `kiln_bbs::auth` functions called here.

use kiln_bbs::auth::{self, Keys};
use kiln_bbs::{Bbs, BbsClient, BbsConfig, BbsError};
use kiln_bbs_client::{Credentials, HttpBbsClient};
use kiln_logs::{LogSink, LogStore};
use kiln_model::bbs::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn cell(cell_id: &str) -> CellPresence {
    CellPresence {
        cell_id: cell_id.into(),
        address: "127.0.0.2".into(),
        capacity: CellCapacity {
            memory_mb: 4096,
            disk_mb: 100_000,
            containers: 250,
        },
        rootfs_providers: vec!["preloaded:s".to_string().try_into().unwrap()],
    }
}

/// A BBS server whose keys and credentials live in `<dir>/bbs`; the
/// all-in-one credentials.
async fn serve(dir: &Path, stop: &CancellationToken) -> Credentials {
    let bbs = Bbs::open_with(&dir.join("bbs.sqlite"), BbsConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys_dir = dir.join("bbs");
    let (_, credentials) = auth::ensure_credentials(&keys_dir, &url).unwrap();
    let keys = Keys::from_dir(&keys_dir).unwrap();
    let logs: Arc<dyn LogSink> = Arc::new(LogStore::default());
    tokio::spawn(kiln_bbs::server::serve(
        listener,
        bbs,
        logs,
        keys,
        stop.clone(),
    ));
    credentials
}

fn refused(result: Result<(), BbsError>, words: &str) {
    match result {
        Err(BbsError::Unauthorized(reason)) => {
            assert!(reason.contains(words), "{reason:?} should say {words:?}")
        }
        other => panic!("expected a refusal saying {words:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cell_token_acts_only_for_its_cell_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    serve(dir.path(), &stop).await;
    let keys = dir.path().join("bbs");
    let creds = auth::issue_credentials(&keys, "cell-a", Duration::from_secs(1)).unwrap();
    let a = HttpBbsClient::from_credentials(&creds, None).unwrap();

    a.heartbeat_cell(cell("cell-a")).await.unwrap();
    a.cells().await.unwrap();
    refused(
        a.heartbeat_cell(cell("cell-b")).await,
        "issued for another cell",
    );
    refused(a.evacuate_cell("cell-b").await, "issued for another cell");
    // Bad input changes nothing: cell-b was never present.
    let ids: Vec<String> = a
        .cells()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cell_id)
        .collect();
    assert_eq!(ids, ["cell-a"]);

    // Past its lifetime (whole seconds), the node is told why.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refused(a.heartbeat_cell(cell("cell-a")).await, "expired");
    assert!(matches!(
        a.cells().await,
        Err(BbsError::Unauthorized(reason)) if reason.contains("expired")
    ));
    assert!(auth::issue_credentials(&keys, "not a cell id", Duration::from_secs(60)).is_err());
    stop.cancel();
}

#[tokio::test]
async fn a_key_rotation_keeps_running_cells_working_through_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let all = serve(dir.path(), &stop).await;
    let keys = dir.path().join("bbs");
    // Two cells mid-session: one that holds its token only, one that can
    // read its credentials file again.
    let fixed = HttpBbsClient::from_credentials(&all, None).unwrap();
    let file = dir.path().join("cell-b.credentials");
    auth::issue_credentials(&keys, "cell-b", Duration::from_secs(3600))
        .unwrap()
        .write(&file)
        .unwrap();
    let rereading = HttpBbsClient::from_credentials(&Credentials::read(&file).unwrap(), None)
        .unwrap()
        .with_credentials_file(file.clone());
    fixed.heartbeat_cell(cell("cell-a")).await.unwrap();
    rereading.heartbeat_cell(cell("cell-b")).await.unwrap();

    // Rotate while the server runs: both keep working within the grace.
    auth::rotate_key(&keys, Duration::from_secs(1)).unwrap();
    fixed.heartbeat_cell(cell("cell-a")).await.unwrap();
    rereading.heartbeat_cell(cell("cell-b")).await.unwrap();
    let reissued = Credentials::read(&keys.join("credentials")).unwrap();
    assert_ne!(reissued.token, all.token, "re-issued under the new key");
    HttpBbsClient::from_credentials(&reissued, None)
        .unwrap()
        .cells()
        .await
        .unwrap();
    // cell-b's operator hands it new credentials during the grace period.
    auth::issue_credentials(&keys, "cell-b", Duration::from_secs(3600))
        .unwrap()
        .write(&file)
        .unwrap();

    // After the grace: the old key's tokens are refused, and say why; the
    // cell that re-reads its file carries on with the new token.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refused(fixed.heartbeat_cell(cell("cell-a")).await, "rotated out");
    rereading.heartbeat_cell(cell("cell-b")).await.unwrap();
    rereading.cells().await.unwrap();
    stop.cancel();
}
