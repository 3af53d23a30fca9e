//! `Prefer: wait=N` on a build and on process stats: the answer is held
//! until staging ends or an instance starts, and only when asked.

use super::{PASSWORD, cell, cell_upload, staging_result, start, zip_of};
use kiln_bbs::{ActualLrpFilter, BbsClient};
use kiln_model::bbs::ActualLrpNetInfo;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn builds_and_stats_answer_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = Arc::new(start(dir.path(), 1 << 20, Some(PASSWORD)).await);
    let bp = kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let app = kiln.create_app("waits", None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let pkg = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let (_, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    let guid = build["guid"].as_str().unwrap().to_string();
    let path = format!("{}/v3/builds/{guid}", kiln.url);

    // Not asked: at once, STAGING, nothing applied.
    let (status, now) = kiln.send(kiln.http.get(&path)).await;
    assert_eq!(
        (status, now["state"].as_str()),
        (StatusCode::OK, Some("STAGING"))
    );

    // Asked: held while STAGING, answered once the result is recorded.
    let held = {
        let kiln = kiln.clone();
        let path = path.clone();
        tokio::spawn(async move {
            kiln.send(kiln.http.get(&path).header("Prefer", "wait=20"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a STAGING build must be held");
    let task = kiln.bbs.task_by_guid(&guid).await.unwrap();
    kiln.bbs.heartbeat_cell(cell()).await.unwrap();
    kiln.bbs.converge().await.unwrap();
    assert!(kiln.bbs.start_task(&guid, "cell-1").await.unwrap());
    let up = cell_upload(&kiln, &task.definition.uploads[0], b"droplet").await;
    assert!(up.status().is_success());
    kiln.bbs
        .complete_task(&guid, "cell-1", false, "", &result)
        .await
        .unwrap();
    let (status, staged) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(staged["state"], "STAGED", "{staged}");

    // Stats: held while no instance runs, answered when one starts.
    let droplet = staged["droplet"]["guid"].as_str().unwrap();
    let rel = format!("/v3/apps/{app_guid}/relationships/current_droplet");
    kiln.patch(&rel, json!({"data": {"guid": droplet}})).await;
    kiln.post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    let stats = format!(
        "{}/v3/processes/{}/stats",
        kiln.url,
        web["guid"].as_str().unwrap()
    );
    kiln.bbs.converge().await.unwrap();
    let held = {
        let kiln = kiln.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            kiln.send(kiln.http.get(&stats).header("Prefer", "wait=20"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "stats with nothing running must be held"
    );
    let lrp = super::web_lrp_guid(&kiln, &app_guid).await;
    let actual = kiln
        .bbs
        .actual_lrps(ActualLrpFilter {
            process_guid: Some(lrp),
            ..ActualLrpFilter::default()
        })
        .await
        .unwrap()
        .remove(0);
    let net = ActualLrpNetInfo {
        address: "127.0.0.1".into(),
        ports: Vec::new(),
        instance_address: String::new(),
    };
    kiln.bbs
        .start_actual_lrp(&actual.key, actual.instance_key.as_ref().unwrap(), net)
        .await
        .unwrap();
    let (status, body) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resources"][0]["state"], "RUNNING", "{body}");
    // Something runs: answered at once even when asked to wait.
    let (_, body) = kiln
        .send(kiln.http.get(&stats).header("Prefer", "wait=20"))
        .await;
    assert_eq!(body["resources"][0]["state"], "RUNNING");
    Arc::try_unwrap(kiln).ok().unwrap().stop().await;
}
