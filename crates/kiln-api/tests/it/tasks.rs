//! Tasks (`run-task`) and audit events, with the test playing the cell:
//! it places and runs BBS Tasks and crashes instances through `BbsClient`
//! as a cell would, and the API's loops (real) record what follows.

use super::{Kiln, PASSWORD, error_of, stage, staging_result, start, zip_of};
use kiln_bbs::{ActualLrpFilter, BbsClient};
use kiln_model::ActualLrpState;
use kiln_model::bbs::ActualLrp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

/// An app with a staged current droplet (web: `python app.py`); returns
/// (app guid, droplet guid).
async fn app_with_droplet(kiln: &Kiln, name: &str) -> (String, String) {
    let bp = kiln.create_buildpack("python", None).await;
    let app = kiln.create_app(name, None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let droplet = super::droplet_made_current(kiln, &app_guid, bp["guid"].as_str().unwrap()).await;
    (app_guid, droplet)
}

async fn run_task(kiln: &Kiln, app_guid: &str, body: Value) -> Value {
    let (status, t) = kiln.post(&format!("/v3/apps/{app_guid}/tasks"), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{t}");
    t
}

/// Places the task and starts it on the test's cell.
async fn start_on_cell(kiln: &Kiln, task_guid: &str) {
    kiln.bbs.heartbeat_cell(super::cell()).await.unwrap();
    kiln.bbs.converge().await.unwrap();
    assert!(kiln.bbs.start_task(task_guid, "cell-1").await.unwrap());
}

/// Whether the BBS Task is deleted within a few seconds.
async fn bbs_task_gone(kiln: &Kiln, guid: &str) -> bool {
    for _ in 0..200 {
        if kiln.bbs.task_by_guid(guid).await.is_err() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

async fn task_state(kiln: &Kiln, guid: &str, state: &str) -> Value {
    kiln.wait_for(&format!("/v3/tasks/{guid}"), |t| t["state"] == state)
        .await
}

#[tokio::test]
async fn tasks_run_fail_cancel_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;

    // Without a droplet there is nothing to run.
    let bare = kiln.create_app("bare", None).await;
    let bare_guid = bare["guid"].as_str().unwrap();
    let (status, body) = kiln
        .post(
            &format!("/v3/apps/{bare_guid}/tasks"),
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body),
        (
            10008,
            "CF-UnprocessableEntity".into(),
            "Task must have a droplet. Specify droplet or assign current droplet to app.".into()
        )
    );

    let (app_guid, droplet) = app_with_droplet(&kiln, "worker").await;
    let tasks_path = format!("/v3/apps/{app_guid}/tasks");

    // Bad requests are refused and change nothing.
    for (body, detail) in [
        (json!({"name": "x"}), "No command or template provided"),
        (
            json!({"command": "true", "memory_in_mb": 0}),
            "Memory in mb must be greater than 0",
        ),
        (
            json!({"command": "true", "disk_in_mb": 4096}),
            "Cannot request disk_in_mb greater than 2048",
        ),
        (json!({"command": "true", "name": "a\nb"}), "name format"),
    ] {
        let (status, err) = kiln.post(&tasks_path, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert!(error_of(&err).2.contains(detail), "{body}: {err}");
    }
    let (status, _) = kiln
        .post(&tasks_path, json!({"command": "true", "colour": "red"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, err) = kiln
        .post(
            &tasks_path,
            json!({"template": {"process": {"guid": "no-such-process"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = kiln
        .post("/v3/apps/no-such-app/tasks", json!({"command": "true"}))
        .await;
    assert_eq!(
        (status, error_of(&err).2),
        (StatusCode::NOT_FOUND, "App not found".into())
    );
    assert_eq!(
        kiln.get(&tasks_path).await.1["pagination"]["total_results"],
        0
    );

    // A task that succeeds: PENDING, RUNNING once a cell runs it, SUCCEEDED.
    let ok = run_task(
        &kiln,
        &app_guid,
        json!({"command": "echo hi", "name": "migrate", "memory_in_mb": 128}),
    )
    .await;
    assert_eq!(ok["state"], "PENDING", "{ok}");
    assert_eq!(ok["sequence_id"], 1);
    assert_eq!(ok["name"], "migrate");
    assert_eq!(ok["command"], "echo hi");
    assert_eq!(ok["memory_in_mb"], 128);
    assert_eq!(ok["disk_in_mb"], 1024);
    assert_eq!(ok["droplet_guid"], droplet);
    assert!(ok["result"]["failure_reason"].is_null());
    assert_eq!(ok["relationships"]["app"]["data"]["guid"], app_guid);
    let ok_guid = ok["guid"].as_str().unwrap().to_string();
    assert!(
        ok["links"]["cancel"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v3/tasks/{ok_guid}/actions/cancel"))
    );

    // Its BBS Task: cf-tasks, the droplet's download and the launcher, as
    // the web DesiredLrp has them, with the task's command and log source.
    let bbs_task = kiln.bbs.task_by_guid(&ok_guid).await.unwrap();
    assert_eq!(bbs_task.domain, "cf-tasks");
    let def = &bbs_task.definition;
    assert_eq!(def.log_guid, app_guid);
    assert_eq!(def.log_source, "APP/TASK/migrate");
    assert_eq!((def.memory_mb, def.disk_mb), (128, 1024));
    assert_eq!(def.downloads.len(), 1);
    assert_eq!(def.downloads[0].to, "/home/vcap");
    assert!(
        def.downloads[0]
            .from
            .contains(&format!("/internal/v4/droplets/{droplet}/download"))
    );
    assert_eq!(def.run.args[..3], ["lifecycle", "launcher", "app"]);
    assert_eq!(def.run.args[3], "echo hi");
    let vcap = def
        .run
        .env
        .iter()
        .find(|e| e.name == "VCAP_APPLICATION")
        .unwrap();
    assert!(vcap.value.contains(&app_guid));

    start_on_cell(&kiln, &ok_guid).await;
    task_state(&kiln, &ok_guid, "RUNNING").await;
    kiln.bbs
        .complete_task(&ok_guid, "cell-1", false, "", "")
        .await
        .unwrap();
    let done = task_state(&kiln, &ok_guid, "SUCCEEDED").await;
    assert!(done["result"]["failure_reason"].is_null());
    // Resolved and deleted from the BBS once recorded.
    assert!(
        bbs_task_gone(&kiln, &ok_guid).await,
        "the bbs task was not deleted"
    );

    // A task that fails: FAILED with the cell's reason.
    let bad = run_task(&kiln, &app_guid, json!({"command": "exit 3"})).await;
    assert_eq!(bad["sequence_id"], 2);
    assert_eq!(bad["name"].as_str().unwrap().len(), 8, "a generated name");
    let bad_guid = bad["guid"].as_str().unwrap().to_string();
    start_on_cell(&kiln, &bad_guid).await;
    kiln.bbs
        .complete_task(&bad_guid, "cell-1", true, "Exited with status 3", "")
        .await
        .unwrap();
    let failed = task_state(&kiln, &bad_guid, "FAILED").await;
    assert_eq!(failed["result"]["failure_reason"], "Exited with status 3");

    // A long one cancelled: CANCELING at once, then FAILED.
    let web = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await
        .1;
    let long = run_task(
        &kiln,
        &app_guid,
        json!({"name": "long", "template": {"process": {"guid": web["guid"]}}}),
    )
    .await;
    assert_eq!(long["command"], "python app.py", "the template's command");
    assert_eq!(long["sequence_id"], 3);
    let long_guid = long["guid"].as_str().unwrap().to_string();
    start_on_cell(&kiln, &long_guid).await;
    task_state(&kiln, &long_guid, "RUNNING").await;
    let (status, canceling) = kiln
        .post(&format!("/v3/tasks/{long_guid}/actions/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{canceling}");
    assert!(
        ["CANCELING", "FAILED"].contains(&canceling["state"].as_str().unwrap()),
        "{canceling}"
    );
    let cancelled = task_state(&kiln, &long_guid, "FAILED").await;
    assert_eq!(cancelled["result"]["failure_reason"], "task was cancelled");
    assert!(
        bbs_task_gone(&kiln, &long_guid).await,
        "the cancelled bbs task is resolved and deleted"
    );
    // An ended task cannot be cancelled.
    let (status, err) = kiln
        .post(&format!("/v3/tasks/{long_guid}/actions/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&err).2,
        "Task state is FAILED and therefore cannot be canceled"
    );

    // Lists and filters.
    let (_, all) = kiln.get("/v3/tasks").await;
    assert_eq!(all["pagination"]["total_results"], 3);
    let (_, by_name) = kiln.get(&format!("{tasks_path}?names=migrate")).await;
    assert_eq!(by_name["resources"][0]["guid"], ok_guid.as_str());
    assert_eq!(by_name["pagination"]["total_results"], 1);
    let (_, by_state) = kiln.get("/v3/tasks?states=FAILED").await;
    assert_eq!(by_state["pagination"]["total_results"], 2);
    let (_, by_seq) = kiln.get(&format!("{tasks_path}?sequence_ids=2")).await;
    assert_eq!(by_seq["resources"][0]["guid"], bad_guid.as_str());
    let (_, by_guid) = kiln.get(&format!("/v3/tasks?guids={long_guid}")).await;
    assert_eq!(by_guid["pagination"]["total_results"], 1);
    let (_, newest) = kiln
        .get(&format!("{tasks_path}?order_by=-created_at&per_page=1"))
        .await;
    assert_eq!(newest["resources"][0]["sequence_id"], 3);
    let (_, other_app) = kiln.get(&format!("/v3/apps/{bare_guid}/tasks")).await;
    assert_eq!(other_app["pagination"]["total_results"], 0);
    let space = kiln.space_guid().await;
    let (_, in_space) = kiln.get(&format!("/v3/tasks?space_guids={space}")).await;
    assert_eq!(in_space["pagination"]["total_results"], 3);
    let (_, in_other) = kiln.get("/v3/tasks?space_guids=elsewhere").await;
    assert_eq!(in_other["pagination"]["total_results"], 0);
    let (status, _) = kiln.get("/v3/tasks/no-such-task").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = kiln.get("/v3/apps/no-such-app/tasks").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Each creation and the cancel are audit events, the command hidden.
    let (_, events) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={app_guid}&types=audit.app.task.create,audit.app.task.cancel"
        ))
        .await;
    let kinds: Vec<&str> = events["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "audit.app.task.create",
            "audit.app.task.create",
            "audit.app.task.create",
            "audit.app.task.cancel"
        ]
    );
    let first = &events["resources"][0];
    assert_eq!(first["data"]["task_guid"], ok_guid.as_str());
    assert_eq!(first["data"]["request"]["name"], "migrate");
    assert_eq!(first["data"]["request"]["command"], "[PRIVATE DATA HIDDEN]");
    assert!(!events.to_string().contains("echo hi"));

    // Deleting the app removes its tasks.
    let (status, _) = kiln
        .send(kiln.http.delete(format!("{}/v3/apps/{app_guid}", kiln.url)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        kiln.get("/v3/tasks").await.1["pagination"]["total_results"],
        0
    );
    kiln.stop().await;
}

fn event_types(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn audit_events_record_app_changes_with_actor_and_censored_requests() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    let (_, app) = kiln
        .post(
            "/v3/apps",
            json!({"name": "audited", "environment_variables": {"DB_PASSWORD": "hunter2"},
                   "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let (_, created) = kiln
        .get(&format!(
            "/v3/audit_events?types=audit.app.create&target_guids={app_guid}"
        ))
        .await;
    assert_eq!(created["pagination"]["total_results"], 1, "{created}");
    let e = &created["resources"][0];
    assert_eq!(
        e["target"],
        json!({"guid": app_guid, "type": "app", "name": "audited"})
    );
    assert_eq!(e["actor"]["type"], "user");
    assert_eq!(e["actor"]["name"], "admin");
    assert!(e["actor"]["guid"].as_str().is_some_and(|g| !g.is_empty()));
    assert_eq!(e["space"]["guid"], space.as_str());
    assert!(e["organization"]["guid"].as_str().is_some());
    assert_eq!(e["data"]["request"]["name"], "audited");
    assert_eq!(
        e["data"]["request"]["environment_variables"],
        "[PRIVATE DATA HIDDEN]"
    );
    let guid = e["guid"].as_str().unwrap();
    assert!(
        e["links"]["self"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v3/audit_events/{guid}"))
    );
    let (status, one) = kiln.get(&format!("/v3/audit_events/{guid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["guid"], guid);
    let (status, err) = kiln.get("/v3/audit_events/no-such-event").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&err).2, "Event not found");

    let (status, _) = kiln
        .patch(
            &format!("/v3/apps/{app_guid}/environment_variables"),
            json!({"var": {"API_KEY": "sekrit"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = kiln
        .patch(
            &format!("/v3/apps/{app_guid}"),
            json!({"name": "audited-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Staging, the droplet, a start, a scale and a stop.
    let bp = kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let pkg = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let build = stage(&kiln, &pkg, Ok(&result)).await;
    let droplet = build["droplet"]["guid"].as_str().unwrap();
    kiln.patch(
        &format!("/v3/apps/{app_guid}/relationships/current_droplet"),
        json!({"data": {"guid": droplet}}),
    )
    .await;
    kiln.post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    let web_guid = web["guid"].as_str().unwrap();
    let (status, _) = kiln
        .post(
            &format!("/v3/processes/{web_guid}/actions/scale"),
            json!({"instances": 2}),
        )
        .await;
    assert!(status.is_success(), "{status}");
    kiln.post(&format!("/v3/apps/{app_guid}/actions/stop"), json!({}))
        .await;

    let (_, all) = kiln
        .get(&format!("/v3/audit_events?target_guids={app_guid}"))
        .await;
    assert_eq!(
        event_types(&all),
        [
            "audit.app.create",
            "audit.app.update",
            "audit.app.update",
            "audit.app.package.create",
            "audit.app.package.upload",
            "audit.app.build.create",
            "audit.app.droplet.mapped",
            "audit.app.start",
            "audit.app.process.scale",
            "audit.app.stop",
        ]
    );
    let text = all.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("sekrit"),
        "{text}"
    );
    let scale = &all["resources"][8];
    assert_eq!(scale["data"]["process_guid"], web_guid);
    assert_eq!(scale["data"]["process_type"], "web");
    assert_eq!(scale["data"]["request"], json!({"instances": 2}));
    assert_eq!(scale["target"]["name"], "audited-2");
    assert_eq!(
        all["resources"][6]["data"]["request"]["droplet_guid"],
        droplet
    );
    assert_eq!(all["resources"][5]["data"]["package_guid"], pkg.as_str());

    // Filters: newest first, by space and org, by time.
    let (_, newest) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={app_guid}&order_by=-created_at&per_page=1"
        ))
        .await;
    assert_eq!(newest["resources"][0]["type"], "audit.app.stop");
    let org = all["resources"][0]["organization"]["guid"]
        .as_str()
        .unwrap();
    for filter in [
        format!("space_guids={space}"),
        format!("organization_guids={org}"),
    ] {
        let (_, l) = kiln
            .get(&format!("/v3/audit_events?types=audit.app.start&{filter}"))
            .await;
        assert_eq!(l["pagination"]["total_results"], 1, "{filter}");
    }
    let (_, none) = kiln
        .get("/v3/audit_events?types=audit.app.start&space_guids=elsewhere")
        .await;
    assert_eq!(none["pagination"]["total_results"], 0);
    let (_, before) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={app_guid}&created_ats%5Blt%5D=2000-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(before["pagination"]["total_results"], 0);
    let (_, after) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={app_guid}&created_ats[gt]=2000-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(after["pagination"]["total_results"], 10);
    let (status, _) = kiln.get("/v3/audit_events?created_ats[gt]=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Spaces and their deletion.
    let (_, s) = kiln
        .post(
            "/v3/spaces",
            json!({"name": "qa", "relationships": {"organization": {"data": {"guid": org}}}}),
        )
        .await;
    let qa = s["guid"].as_str().unwrap().to_string();
    let (status, _) = kiln
        .send(kiln.http.delete(format!("{}/v3/spaces/{qa}", kiln.url)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, space_events) = kiln
        .get(&format!("/v3/audit_events?target_guids={qa}"))
        .await;
    assert_eq!(
        event_types(&space_events),
        ["audit.space.create", "audit.space.delete-request"]
    );
    kiln.stop().await;
}

/// Places the instance of `lrp` at index 0 and crashes it, as its cell
/// would report.
async fn crash_once(bbs: &kiln_bbs::Bbs, lrp: &str, reason: &str) -> ActualLrp {
    bbs.converge().await.unwrap();
    let filter = ActualLrpFilter {
        process_guid: Some(lrp.to_string()),
        ..ActualLrpFilter::default()
    };
    let a = bbs.actual_lrps(filter.clone()).await.unwrap().remove(0);
    assert_eq!(a.state, ActualLrpState::Claimed, "{a:?}");
    let ik = a.instance_key.clone().unwrap();
    bbs.crash_actual_lrp(&a.key, &ik, reason).await.unwrap();
    a
}

async fn crash_events(kiln: &Kiln, app_guid: &str) -> Value {
    kiln.get(&format!(
        "/v3/audit_events?types=audit.app.process.crash&target_guids={app_guid}"
    ))
    .await
    .1
}

async fn api_lines(kiln: &Kiln, app_guid: &str) -> Vec<String> {
    use base64::Engine;
    let (_, logs) = kiln
        .get(&format!(
            "/api/v1/read/{app_guid}?start_time=0&envelope_types=LOG"
        ))
        .await;
    logs["envelopes"]["batch"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tags"]["source_type"] == "API")
        .map(|e| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(e["log"]["payload"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        })
        .collect()
}

async fn restart(kiln: Kiln, dir: &Path) -> Kiln {
    kiln.stop().await;
    start(dir, 1 << 20, Some(PASSWORD)).await
}

#[tokio::test]
async fn crashes_become_audit_events_once() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let (app_guid, _) = app_with_droplet(&kiln, "crashy").await;
    kiln.post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    let lrp = super::web_lrp_guid(&kiln, &app_guid).await;
    kiln.bbs.heartbeat_cell(super::cell()).await.unwrap();
    let crashed = crash_once(&kiln.bbs, &lrp, "APP/PROC/WEB: Exited with status 3").await;

    let events = kiln
        .wait_for(
            &format!("/v3/audit_events?types=audit.app.process.crash&target_guids={app_guid}"),
            |l| l["pagination"]["total_results"] == 1,
        )
        .await;
    let e = &events["resources"][0];
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    assert_eq!(
        e["actor"],
        json!({"guid": web["guid"], "type": "process", "name": "web"})
    );
    assert_eq!(e["target"]["guid"], app_guid.as_str());
    let data = &e["data"];
    assert_eq!(data["index"], 0);
    assert_eq!(data["exit_status"], 3);
    assert_eq!(
        data["exit_description"],
        "APP/PROC/WEB: Exited with status 3"
    );
    assert_eq!(data["reason"], "CRASHED");
    assert_eq!(data["crash_count"], 1);
    assert_eq!(data["cell_id"], "cell-1");
    assert_eq!(
        data["instance"],
        crashed.instance_key.unwrap().instance_guid.as_str()
    );
    assert_eq!(data["version"], web["version"]);
    assert!(
        api_lines(&kiln, &app_guid)
            .await
            .contains(&"Process has crashed with type: \"web\"".to_string())
    );

    // Two more crashes: the third leaves it CRASHED (Diego's back-off).
    for count in [2, 3] {
        crash_once(&kiln.bbs, &lrp, "Exited with status 1").await;
        kiln.wait_for(
            &format!("/v3/audit_events?types=audit.app.process.crash&target_guids={app_guid}"),
            |l| l["pagination"]["total_results"] == count,
        )
        .await;
    }
    // A restart reads the CRASHED instance again: no second event.
    let kiln = restart(kiln, dir.path()).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        crash_events(&kiln, &app_guid).await["pagination"]["total_results"],
        3
    );
    kiln.stop().await;
}

#[tokio::test]
async fn a_crash_missed_while_the_api_was_down_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let (app_guid, _) = app_with_droplet(&kiln, "unseen").await;
    kiln.post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    let lrp = super::web_lrp_guid(&kiln, &app_guid).await;
    kiln.stop().await;

    // The API is down; the BBS records three crashes (the last CRASHED).
    // The same BBS database the API used (SQLite file or PostgreSQL).
    let databases = super::databases(dir.path()).await.unwrap();
    let bbs = kiln_bbs::Bbs::open_on(
        &databases.component("bbs.sqlite", "bbs"),
        kiln_store::DEFAULT_MAX_CONNECTIONS,
        Default::default(),
    )
    .await
    .unwrap();
    bbs.heartbeat_cell(super::cell()).await.unwrap();
    for _ in 0..3 {
        crash_once(&bbs, &lrp, "Exited with status 7").await;
    }
    drop(bbs);

    for _ in 0..2 {
        let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
        let events = kiln
            .wait_for(
                &format!("/v3/audit_events?types=audit.app.process.crash&target_guids={app_guid}"),
                |l| l["pagination"]["total_results"] == 1,
            )
            .await;
        let data = &events["resources"][0]["data"];
        assert_eq!(
            (data["crash_count"].clone(), data["exit_status"].clone()),
            (json!(3), json!(7))
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            crash_events(&kiln, &app_guid).await["pagination"]["total_results"],
            1
        );
        kiln.stop().await;
    }
}
