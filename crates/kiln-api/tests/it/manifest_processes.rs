//! apply_manifest with several process types: each its own command, scale
//! and health check; a later manifest updates them; a bad entry is refused.

use super::{PASSWORD, start};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn processes_of_several_types_are_created_and_updated() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    let manifest = "applications:
- name: multi
  processes:
  - type: web
    instances: 2
    command: ./web
  - type: worker
    command: ./work --queue mail
    instances: 3
    memory: 128M
    disk_quota: 512M
    health-check-type: process
  - type: clock
    command: ./tick
    health-check-type: http
    health-check-http-endpoint: /alive
    timeout: 30
";
    let job = kiln.applied(&space, manifest).await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let app = kiln.app_named(&space, "multi").await;
    let app = app[0]["guid"].as_str().unwrap().to_string();
    let process = async |ptype: &str| {
        let (status, p) = kiln.get(&format!("/v3/apps/{app}/processes/{ptype}")).await;
        assert_eq!(status, StatusCode::OK, "{ptype}: {p}");
        p
    };
    let web = process("web").await;
    assert_eq!(
        (&web["instances"], &web["command"]),
        (&json!(2), &json!("./web"))
    );
    let worker = process("worker").await;
    assert_eq!(
        (
            &worker["command"],
            &worker["instances"],
            &worker["memory_in_mb"],
            &worker["disk_in_mb"],
            &worker["health_check"]["type"]
        ),
        (
            &json!("./work --queue mail"),
            &json!(3),
            &json!(128),
            &json!(512),
            &json!("process")
        ),
        "{worker}"
    );
    let clock = process("clock").await;
    assert_eq!(clock["instances"], 0, "created without instances: {clock}");
    assert_eq!(clock["health_check"]["type"], "http", "{clock}");
    assert_eq!(
        clock["health_check"]["data"]["endpoint"], "/alive",
        "{clock}"
    );
    assert_eq!(clock["health_check"]["data"]["timeout"], 30, "{clock}");

    // A second manifest changes the worker; what it leaves out stays.
    let job = kiln
        .applied(
            &space,
            "applications:\n- name: multi\n  processes:\n  - type: worker\n    instances: 1\n",
        )
        .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let worker = process("worker").await;
    assert_eq!(
        (&worker["instances"], &worker["command"]),
        (&json!(1), &json!("./work --queue mail"))
    );
    let (_, all) = kiln.get(&format!("/v3/apps/{app}/processes")).await;
    assert_eq!(all["resources"].as_array().unwrap().len(), 3, "{all}");

    // A process entry without a type, or with a bad value, is refused.
    for bad in [
        "applications:\n- name: multi\n  processes:\n  - command: x\n",
        "applications:\n- name: multi\n  processes:\n  - type: worker\n    instances: -1\n",
    ] {
        let (status, _, body) = kiln.apply_manifest(&space, "application/x-yaml", bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    assert_eq!(process("worker").await["instances"], 1);
    kiln.stop().await;
}
