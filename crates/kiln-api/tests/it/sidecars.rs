//! Sidecars: CC's shapes, rules and words on `/v3/apps/:guid/sidecars`,
//! `/v3/sidecars/:guid` and `/v3/processes/:guid/sidecars`; `sidecars:` in
//! a manifest; and the sidecar in the DesiredLrp of the next start, run
//! through the launcher.

use super::roles::call;
use super::{PASSWORD, error_of, stage, staging_result, start, zip_of};
use kiln_bbs::BbsClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn assert_422(status: StatusCode, v: &Value, detail: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_of(v).2, detail, "{v}");
}

#[tokio::test]
async fn sidecars_follow_cloud_controller_and_reach_the_desired_lrp() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    let bp = kiln.create_buildpack("python", None).await;
    let app = kiln.create_app("car", None).await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, web) = kiln.get(&format!("/v3/apps/{app}/processes/web")).await;
    let web_memory = web["memory_in_mb"].as_i64().unwrap();
    let sidecars = format!("/v3/apps/{app}/sidecars");

    let (status, v) = kiln
        .post(
            &sidecars,
            json!({"name": "big", "command": "x", "process_types": ["web"], "memory_in_mb": web_memory}),
        )
        .await;
    assert_422(
        status,
        &v,
        "The memory allocation defined is too large to run with the dependent \"web\" process",
    );
    let (status, v) = kiln
        .post(&sidecars, json!({"name": "x", "process_types": ["web"]}))
        .await;
    assert_422(status, &v, "Command can't be blank");

    let (status, s) = kiln
        .post(
            &sidecars,
            json!({"name": "proxy", "command": "./proxy --port 9000",
                "process_types": ["worker", "web"], "memory_in_mb": 64}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let guid = s["guid"].as_str().unwrap().to_string();
    // Scaling web to no more than its sidecars' memory is refused, and
    // changes nothing.
    let web_guid = web["guid"].as_str().unwrap();
    let (status, v) = kiln
        .post(
            &format!("/v3/processes/{web_guid}/actions/scale"),
            json!({"memory_in_mb": 64}),
        )
        .await;
    assert_422(
        status,
        &v,
        "The requested memory allocation is not large enough to run all of your sidecar processes",
    );
    let (_, after) = kiln.get(&format!("/v3/processes/{web_guid}")).await;
    assert_eq!(after["memory_in_mb"], json!(web_memory), "{after}");
    assert_eq!(
        (
            &s["name"],
            &s["command"],
            &s["process_types"],
            &s["memory_in_mb"],
            &s["origin"],
            &s["relationships"]["app"]["data"]["guid"]
        ),
        (
            &json!("proxy"),
            &json!("./proxy --port 9000"),
            &json!(["web", "worker"]),
            &json!(64),
            &json!("user"),
            &json!(app)
        ),
        "{s}"
    );
    let (status, v) = kiln
        .post(
            &sidecars,
            json!({"name": "proxy", "command": "y", "process_types": ["web"]}),
        )
        .await;
    assert_422(
        status,
        &v,
        "Sidecar with name 'proxy' already exists for given app",
    );
    // Together the web sidecars must stay below web's memory.
    let (status, v) = kiln
        .post(
            &sidecars,
            json!({"name": "second", "command": "y", "process_types": ["web"], "memory_in_mb": web_memory - 64}),
        )
        .await;
    assert_422(
        status,
        &v,
        "The memory allocation defined is too large to run with the dependent \"web\" process",
    );

    let (_, list) = kiln.get(&sidecars).await;
    assert_eq!(list["pagination"]["total_results"], 1, "{list}");
    let (_, list) = kiln
        .get(&format!(
            "/v3/processes/{}/sidecars",
            web["guid"].as_str().unwrap()
        ))
        .await;
    assert_eq!(list["resources"][0]["guid"], json!(guid), "{list}");
    let (status, one) = kiln.get(&format!("/v3/sidecars/{guid}")).await;
    assert_eq!((status, &one["name"]), (StatusCode::OK, &json!("proxy")));
    let (status, one) = kiln
        .patch(
            &format!("/v3/sidecars/{guid}"),
            json!({"command": "./proxy --port 9001", "process_types": ["web"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        (&one["command"], &one["process_types"], &one["memory_in_mb"]),
        (&json!("./proxy --port 9001"), &json!(["web"]), &json!(64))
    );

    // A manifest's sidecar is made, and one of the same name updated.
    let job = kiln
        .applied(
            &space,
            "applications:\n- name: car\n  sidecars:\n  - name: proxy\n    process_types: [web]\n    command: ./proxy --port 9002\n  - name: logger\n    process_types: [web]\n    command: ./log\n    memory: 32M\n",
        )
        .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let (_, list) = kiln.get(&sidecars).await;
    let mut got: Vec<(String, String)> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["command"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("logger".to_string(), "./log".to_string()),
            ("proxy".to_string(), "./proxy --port 9002".to_string())
        ]
    );

    // The next start carries both, through the launcher.
    super::droplet_made_current(&kiln, &app, bp["guid"].as_str().unwrap()).await;
    let (status, v) = kiln
        .post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let lrp_guid = super::web_lrp_guid(&kiln, &app).await;
    let lrp = kiln
        .bbs
        .desired_lrp_by_process_guid(&lrp_guid)
        .await
        .unwrap();
    let mut names: Vec<&str> = lrp.sidecars.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["logger", "proxy"]);
    let proxy = lrp.sidecars.iter().find(|s| s.name == "proxy").unwrap();
    assert_eq!(proxy.path, lrp.action.path);
    assert_eq!(
        proxy.args,
        ["lifecycle", "launcher", "app", "./proxy --port 9002", ""]
    );

    // Delete: 204, then 404; the app's delete takes the rest.
    let (status, _) = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("/v3/sidecars/{guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = kiln.get(&format!("/v3/sidecars/{guid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(error_of(&v).2, "Sidecar not found");
    kiln.stop().await;
}

/// A staging result whose buildpacks declared `sidecars`.
fn result_with_sidecars(bp_guid: &str, sidecars: Value) -> String {
    let mut result: Value = serde_json::from_str(&staging_result(bp_guid)).unwrap();
    result["sidecars"] = sidecars;
    result.to_string()
}

#[tokio::test]
async fn buildpack_sidecars_come_and_go_with_the_current_droplet() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let bp_guid = bp["guid"].as_str().unwrap();
    let app = kiln.create_app("bpcar", None).await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let sidecars = format!("/v3/apps/{app}/sidecars");
    let (status, v) = kiln
        .post(
            &sidecars,
            json!({"name": "proxy", "command": "./proxy", "process_types": ["web"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (_, web) = kiln.get(&format!("/v3/apps/{app}/processes/web")).await;
    let web_memory = web["memory_in_mb"].as_i64().unwrap();

    let droplet_declaring = |declared: Value| {
        let kiln = &kiln;
        let app = app.clone();
        async move {
            let pkg = kiln.new_package(&app).await;
            kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
                .await;
            let result = result_with_sidecars(bp_guid, declared);
            let build = stage(kiln, &pkg, Ok(&result)).await;
            assert_eq!(build["state"], "STAGED", "{build}");
            build["droplet"]["guid"].as_str().unwrap().to_string()
        }
    };
    let make_current = |droplet: String| {
        let kiln = &kiln;
        let app = app.clone();
        async move {
            kiln.patch(
                &format!("/v3/apps/{app}/relationships/current_droplet"),
                json!({"data": {"guid": droplet}}),
            )
            .await
        }
    };
    let listed = || async {
        let (_, list) = kiln.get(&sidecars).await;
        let mut got: Vec<(String, String, Value, Value)> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["origin"].as_str().unwrap().to_string(),
                    s["process_types"].clone(),
                    s["memory_in_mb"].clone(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    };

    // The droplet's sidecar joins the user's once the droplet is current.
    let first = droplet_declaring(json!([
        {"name": "agent", "process_types": ["web"], "command": "./agent --fast", "memory": 32}
    ]))
    .await;
    assert_eq!(listed().await.len(), 1, "staging alone makes no sidecar");
    let (status, v) = make_current(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        listed().await,
        [
            (
                "agent".into(),
                "buildpack".into(),
                json!(["web"]),
                json!(32)
            ),
            ("proxy".into(), "user".into(), json!(["web"]), json!(null)),
        ]
    );
    // It runs beside web, logged under its own name.
    let (status, v) = kiln
        .post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let lrp_guid = super::web_lrp_guid(&kiln, &app).await;
    let lrp = kiln
        .bbs
        .desired_lrp_by_process_guid(&lrp_guid)
        .await
        .unwrap();
    let agent = lrp.sidecars.iter().find(|s| s.name == "agent").unwrap();
    assert_eq!(
        agent.args,
        ["lifecycle", "launcher", "app", "./agent --fast", ""]
    );
    assert_eq!(agent.log_source, "APP/PROC/WEB/SIDECAR/AGENT");

    // The next droplet's buildpack sidecars replace the previous droplet's.
    let second = droplet_declaring(json!([
        {"name": "tracer", "process_types": ["web"], "command": "./tracer"}
    ]))
    .await;
    let (status, v) = make_current(second.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let after_second = listed().await;
    assert_eq!(
        after_second,
        [
            ("proxy".into(), "user".into(), json!(["web"]), json!(null)),
            (
                "tracer".into(),
                "buildpack".into(),
                json!(["web"]),
                json!(null)
            ),
        ]
    );

    // A buildpack's sidecar named like a user's, or one that would use all
    // of web's memory, is refused with CC's words, and changes nothing.
    let clash = droplet_declaring(json!([
        {"name": "proxy", "process_types": ["web"], "command": "./other"}
    ]))
    .await;
    let (status, v) = make_current(clash).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        error_of(&v).2,
        "Buildpack defined sidecar 'proxy' conflicts with an existing user-defined sidecar. Consider renaming 'proxy'."
    );
    let greedy = droplet_declaring(json!([
        {"name": "hog", "process_types": ["web"], "command": "./hog", "memory": web_memory}
    ]))
    .await;
    let (status, v) = make_current(greedy).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        error_of(&v).2,
        "The sidecar memory allocation defined is too large to run with the dependent \"web\" process"
    );
    assert_eq!(listed().await, after_second);
    let (_, current) = kiln.get(&format!("/v3/apps/{app}/droplets/current")).await;
    assert_eq!(current["guid"], json!(second), "{current}");
    kiln.stop().await;
}
