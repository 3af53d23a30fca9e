//! apply_manifest with `services:`: the named user-provided instances are
//! bound (with a binding name when given) and reach `VCAP_SERVICES`; an
//! instance already bound stays as it is; an unknown instance or binding
//! parameters fail the request, naming the instance, and change nothing.

use super::{PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn manifest_services_are_bound_before_the_app_starts() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    for (name, uri) in [("db", "postgres://h/db"), ("cache", "redis://h")] {
        let (status, si) = kiln
            .post(
                "/v3/service_instances",
                json!({"type": "user-provided", "name": name, "credentials": {"uri": uri},
                    "relationships": {"space": {"data": {"guid": space}}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{si}");
    }
    let manifest = "applications:
- name: svc
  services:
  - db
  - name: cache
    binding_name: fast
";
    let job = kiln.applied(&space, manifest).await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let app = kiln.app_named(&space, "svc").await;
    let app = app[0]["guid"].as_str().unwrap().to_string();
    let bindings = async || {
        let (status, list) = kiln
            .get(&format!("/v3/service_credential_bindings?app_guids={app}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let mut names: Vec<(Value, Value)> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["name"].clone(), b["guid"].clone()))
            .collect();
        names.sort_by_key(|(n, _)| n.to_string());
        names
    };
    let first = bindings().await;
    assert_eq!(
        first.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        vec![json!("fast"), Value::Null],
        "{first:?}"
    );
    let (_, env) = kiln.get(&format!("/v3/apps/{app}/env")).await;
    let mut names: Vec<&str> = env["system_env_json"]["VCAP_SERVICES"]["user-provided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["instance_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cache", "db"], "{env}");

    // Applying it again keeps the same bindings.
    let job = kiln.applied(&space, manifest).await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert_eq!(bindings().await, first);

    // An unknown instance or parameters: 422 naming it, nothing changed.
    for (bad, detail) in [
        (
            "applications:\n- name: svc\n  instances: 3\n  services: [db, nosuch]\n",
            "For application 'svc': Service instance 'nosuch' not found",
        ),
        (
            "applications:\n- name: svc\n  instances: 3\n  services: [{name: db, parameters: {a: 1}}]\n",
            "For application 'svc': Binding parameters are not supported for user-provided service instances",
        ),
        (
            "applications:\n- name: other\n  services: [nosuch]\n",
            "For application 'other': Service instance 'nosuch' not found",
        ),
    ] {
        let (status, _, body) = kiln.apply_manifest(&space, "application/x-yaml", bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error_of(&v).2, detail, "{body}");
    }
    let (_, web) = kiln.get(&format!("/v3/apps/{app}/processes/web")).await;
    assert_eq!(web["instances"], 1, "{web}");
    assert!(kiln.app_named(&space, "other").await.is_empty());
    assert_eq!(bindings().await, first);
    kiln.stop().await;
}
