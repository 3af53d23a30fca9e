//! Rolling and canary deployments and revisions, with the test playing the
//! cell: it places instances through the BBS and reports them RUNNING, and
//! the API's deployment updater (a real background loop) moves on.

use super::{Kiln, PASSWORD, error_of, stage, staging_result, start, zip_of};
use kiln_bbs::{ActualLrpFilter, BbsClient};
use kiln_model::ActualLrpState;
use kiln_model::bbs::{ActualLrpInstanceKey, ActualLrpNetInfo};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Places what is unplaced and reports every CLAIMED instance of `lrp`
/// RUNNING, as a cell whose instances pass their health check at once.
async fn run_claimed(kiln: &Kiln, lrp: &str) {
    kiln.bbs.heartbeat_cell(super::cell()).await.unwrap();
    kiln.bbs.converge().await.unwrap();
    let filter = ActualLrpFilter {
        process_guid: Some(lrp.to_string()),
        ..ActualLrpFilter::default()
    };
    for a in kiln.bbs.actual_lrps(filter).await.unwrap() {
        if a.state != ActualLrpState::Claimed {
            continue;
        }
        let key: ActualLrpInstanceKey = a.instance_key.clone().unwrap();
        let net = ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: Vec::new(),
            instance_address: String::new(),
        };
        kiln.bbs.start_actual_lrp(&a.key, &key, net).await.unwrap();
    }
}

async fn running(kiln: &Kiln, lrp: &str) -> usize {
    let filter = ActualLrpFilter {
        process_guid: Some(lrp.to_string()),
        ..ActualLrpFilter::default()
    };
    kiln.bbs
        .actual_lrps(filter)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.state == ActualLrpState::Running)
        .count()
}

/// The desired instance count of a DesiredLrp, None once it is gone.
async fn desired(kiln: &Kiln, lrp: &str) -> Option<u32> {
    kiln.bbs
        .desired_lrp_by_process_guid(lrp)
        .await
        .ok()
        .map(|l| l.instances)
}

async fn deploy(kiln: &Kiln, body: Value) -> Value {
    let (status, d) = kiln.post("/v3/deployments", body).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    d
}

/// Plays the cell for the new LRP until the deployment leaves `state`,
/// checking at every step that the old and the new instances together
/// never fall below `target` (no capacity lost while they overlap).
async fn drive(kiln: &Kiln, guid: &str, old: &str, new: &str, target: u32, state: &str) -> Value {
    let path = format!("/v3/deployments/{guid}");
    for _ in 0..400 {
        run_claimed(kiln, new).await;
        let serving = desired(kiln, old).await.unwrap_or(0) + running(kiln, new).await as u32;
        assert!(serving >= target, "only {serving} instances serve");
        let (_, d) = kiln.get(&path).await;
        if d["state"] != state {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("deployment {guid} stayed {state}");
}

#[tokio::test]
async fn rolling_canary_cancel_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let app = kiln.create_app("rolling", None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let mut droplets = Vec::new();
    for file in ["one", "two", "three"] {
        let pkg = kiln.new_package(&app_guid).await;
        kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", file)])))
            .await;
        let build = stage(&kiln, &pkg, Ok(&result)).await;
        droplets.push(build["droplet"]["guid"].as_str().unwrap().to_string());
    }
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    let web_guid = web["guid"].as_str().unwrap().to_string();

    // A stopped app: the deployment starts it and is DEPLOYED at once.
    let d0 = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[0]}, "relationships": {"app": {"data": {"guid": app_guid}}}}),
    )
    .await;
    assert_eq!(d0["state"], "DEPLOYED", "{d0}");
    assert_eq!(d0["status"]["value"], "FINALIZED");
    assert_eq!(d0["status"]["reason"], "DEPLOYED");
    assert_eq!(d0["strategy"], "rolling");
    assert_eq!(d0["revision"]["version"], 1);
    let (_, a) = kiln.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(a["state"], "STARTED");
    assert_eq!(
        a["relationships"]["current_droplet"]["data"]["guid"],
        droplets[0]
    );
    let scale = format!("/v3/processes/{web_guid}/actions/scale");
    assert!(
        kiln.post(&scale, json!({"instances": 3}))
            .await
            .0
            .is_success()
    );
    let first = super::web_lrp_guid(&kiln, &app_guid).await;
    run_claimed(&kiln, &first).await;
    assert_eq!(running(&kiln, &first).await, 3);

    // Bad requests change nothing.
    let app_rel = json!({"app": {"data": {"guid": app_guid}}});
    for (body, detail) in [
        (
            json!({"strategy": "blue-green", "relationships": app_rel}),
            "Strategy 'blue-green'",
        ),
        (
            json!({"options": {"max_in_flight": 0}, "relationships": app_rel}),
            "Max in flight",
        ),
        (
            json!({"droplet": {"guid": droplets[1]}, "revision": {"guid": "x"}, "relationships": app_rel}),
            "Cannot set both",
        ),
        (
            json!({"droplet": {"guid": "nope"}, "relationships": app_rel}),
            "Invalid droplet",
        ),
        (
            json!({"relationships": {"app": {"data": {"guid": "nope"}}}}),
            "Unable to use app",
        ),
    ] {
        let (status, e) = kiln.post("/v3/deployments", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(error_of(&e).2.contains(detail), "{e}");
    }
    let (_, list) = kiln.get("/v3/deployments").await;
    assert_eq!(list["pagination"]["total_results"], 1);
    assert_eq!(super::cf_apps_lrps(&kiln.bbs).await, vec![first.clone()]);

    // Rolling, one at a time: the new LRP grows as the old one shrinks,
    // and never are fewer than 3 instances serving.
    let d1 = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[1]}, "strategy": "rolling", "options": {"max_in_flight": 1}, "relationships": app_rel}),
    )
    .await;
    assert_eq!(d1["state"], "DEPLOYING", "{d1}");
    assert_eq!(
        d1["status"],
        json!({"value": "ACTIVE", "reason": "DEPLOYING", "details": d1["status"]["details"]})
    );
    assert_eq!(d1["previous_droplet"]["guid"], droplets[0]);
    assert_eq!(d1["droplet"]["guid"], droplets[1]);
    assert_eq!(d1["new_processes"][0]["type"], "web");
    let second = super::web_lrp_guid(&kiln, &app_guid).await;
    assert_ne!(second, first);
    assert_eq!(desired(&kiln, &first).await, Some(3));
    assert_eq!(desired(&kiln, &second).await, Some(1));
    let (status, e) = kiln.post(&scale, json!({"instances": 5})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(&e).2.contains("deployment is in flight"), "{e}");
    let d1guid = d1["guid"].as_str().unwrap();
    let done = drive(&kiln, d1guid, &first, &second, 3, "DEPLOYING").await;
    assert_eq!(done["state"], "DEPLOYED", "{done}");
    assert_eq!(done["status"]["value"], "FINALIZED");
    assert_eq!(done["status"]["reason"], "DEPLOYED");
    // The old LRP goes once the deployment is DEPLOYED (sync after the move).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while super::cf_apps_lrps(&kiln.bbs).await != vec![second.clone()] {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(desired(&kiln, &second).await, Some(3));

    // A canary: one new instance, then PAUSED with the old one whole.
    let d2 = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[2]}, "strategy": "canary", "relationships": app_rel}),
    )
    .await;
    let d2guid = d2["guid"].as_str().unwrap().to_string();
    let third = super::web_lrp_guid(&kiln, &app_guid).await;
    let paused = drive(&kiln, &d2guid, &second, &third, 3, "DEPLOYING").await;
    assert_eq!(paused["state"], "PAUSED", "{paused}");
    assert_eq!(paused["status"]["value"], "ACTIVE");
    assert_eq!(paused["status"]["reason"], "PAUSED");
    assert_eq!(desired(&kiln, &second).await, Some(3));
    assert_eq!(desired(&kiln, &third).await, Some(1));

    // Cancel: the previous droplet runs again, the canary goes.
    let cancel = format!("/v3/deployments/{d2guid}/actions/cancel");
    assert_eq!(kiln.post(&cancel, json!({})).await.0, StatusCode::OK);
    let (_, canceled) = kiln.get(&format!("/v3/deployments/{d2guid}")).await;
    assert_eq!(canceled["state"], "CANCELED");
    assert_eq!(canceled["status"]["value"], "FINALIZED");
    assert_eq!(canceled["status"]["reason"], "CANCELED");
    assert_eq!(super::cf_apps_lrps(&kiln.bbs).await, vec![second.clone()]);
    assert_eq!(desired(&kiln, &second).await, Some(3));
    assert_eq!(super::web_lrp_guid(&kiln, &app_guid).await, second);
    let (_, a) = kiln.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(
        a["relationships"]["current_droplet"]["data"]["guid"],
        droplets[1]
    );
    let (status, e) = kiln.post(&cancel, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error_of(&e).2.contains("FINALIZED and reason: CANCELED"),
        "{e}"
    );
    let cont = format!("/v3/deployments/{d2guid}/actions/continue");
    assert_eq!(
        kiln.post(&cont, json!({})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // A canary continued runs to the end.
    let d3 = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[2]}, "strategy": "canary", "options": {"max_in_flight": 2}, "relationships": app_rel}),
    )
    .await;
    let d3guid = d3["guid"].as_str().unwrap().to_string();
    let fourth = super::web_lrp_guid(&kiln, &app_guid).await;
    let paused = drive(&kiln, &d3guid, &second, &fourth, 3, "DEPLOYING").await;
    assert_eq!(paused["state"], "PAUSED");
    let cont = format!("/v3/deployments/{d3guid}/actions/continue");
    assert_eq!(kiln.post(&cont, json!({})).await.0, StatusCode::OK);
    let done = drive(&kiln, &d3guid, &second, &fourth, 3, "DEPLOYING").await;
    assert_eq!(done["state"], "DEPLOYED", "{done}");

    // A deployment superseded by a newer one.
    let d4 = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[0]}, "relationships": app_rel}),
    )
    .await;
    let d5 = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[1]}, "relationships": app_rel}),
    )
    .await;
    let (_, d4) = kiln
        .get(&format!("/v3/deployments/{}", d4["guid"].as_str().unwrap()))
        .await;
    assert_eq!(d4["state"], "DEPLOYED");
    assert_eq!(d4["status"]["reason"], "SUPERSEDED");
    assert_eq!(d5["state"], "DEPLOYING");
    let (_, active) = kiln
        .get(&format!(
            "/v3/deployments?app_guids={app_guid}&status_values=ACTIVE"
        ))
        .await;
    assert_eq!(active["pagination"]["total_results"], 1);
    assert_eq!(active["resources"][0]["guid"], d5["guid"]);

    // Stopping the app ends it.
    let stop = format!("/v3/apps/{app_guid}/actions/stop");
    assert_eq!(kiln.post(&stop, json!({})).await.0, StatusCode::OK);
    let (_, d5) = kiln
        .get(&format!("/v3/deployments/{}", d5["guid"].as_str().unwrap()))
        .await;
    assert_eq!(d5["state"], "CANCELED");
    assert!(super::cf_apps_lrps(&kiln.bbs).await.is_empty());

    // One revision per deployment, with its droplet and environment.
    let (_, revs) = kiln.get(&format!("/v3/apps/{app_guid}/revisions")).await;
    let versions: Vec<i64> = revs["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    assert_eq!(revs["resources"][0]["description"], "Initial revision.");
    assert_eq!(revs["resources"][1]["droplet"]["guid"], droplets[1]);
    assert_eq!(
        revs["resources"][1]["processes"]["web"]["command"],
        "python app.py"
    );
    let (_, only2) = kiln
        .get(&format!("/v3/apps/{app_guid}/revisions?versions=2"))
        .await;
    assert_eq!(only2["pagination"]["total_results"], 1);
    let env_link = only2["resources"][0]["links"]["environment_variables"]["href"]
        .as_str()
        .unwrap()
        .trim_start_matches(&kiln.url)
        .to_string();
    let (status, env) = kiln.get(&env_link).await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["var"], json!({}));

    // Deploying a revision brings back its droplet.
    kiln.post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    let rev1 = revs["resources"][0]["guid"].as_str().unwrap();
    let back = deploy(
        &kiln,
        json!({"revision": {"guid": rev1}, "relationships": app_rel}),
    )
    .await;
    assert_eq!(back["droplet"]["guid"], droplets[0]);
    let (_, revs) = kiln.get(&format!("/v3/apps/{app_guid}/revisions")).await;
    assert_eq!(
        revs["resources"][6]["description"],
        "Rolled back to revision 1."
    );
    kiln.stop().await;
}

/// The deployment is in the CCDB: an API that restarts mid-deployment
/// keeps both DesiredLrps (its reconcile on start does not undo the
/// deployment) and its updater carries on.
#[tokio::test]
async fn a_deployment_survives_an_api_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let app = kiln.create_app("durable-deploy", None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let mut droplets = Vec::new();
    for file in ["one", "two"] {
        let pkg = kiln.new_package(&app_guid).await;
        kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", file)])))
            .await;
        let build = stage(&kiln, &pkg, Ok(&result)).await;
        droplets.push(build["droplet"]["guid"].as_str().unwrap().to_string());
    }
    let app_rel = json!({"app": {"data": {"guid": app_guid}}});
    deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[0]}, "relationships": app_rel}),
    )
    .await;
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    let scale = format!(
        "/v3/processes/{}/actions/scale",
        web["guid"].as_str().unwrap()
    );
    assert!(
        kiln.post(&scale, json!({"instances": 2}))
            .await
            .0
            .is_success()
    );
    let first = super::web_lrp_guid(&kiln, &app_guid).await;
    run_claimed(&kiln, &first).await;
    let d = deploy(
        &kiln,
        json!({"droplet": {"guid": droplets[1]}, "relationships": app_rel}),
    )
    .await;
    let guid = d["guid"].as_str().unwrap().to_string();
    let second = super::web_lrp_guid(&kiln, &app_guid).await;
    kiln.stop().await;

    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let (_, d) = kiln.get(&format!("/v3/deployments/{guid}")).await;
    assert_eq!(d["state"], "DEPLOYING", "{d}");
    assert_eq!(desired(&kiln, &first).await, Some(2));
    assert_eq!(desired(&kiln, &second).await, Some(1));
    let done = drive(&kiln, &guid, &first, &second, 2, "DEPLOYING").await;
    assert_eq!(done["state"], "DEPLOYED", "{done}");
    kiln.stop().await;
}
