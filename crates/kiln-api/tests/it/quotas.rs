//! Organization quotas: CF's default quota on every org, create/update/
//! apply/delete with CC's rules, and the limits enforced with CC's words on
//! app start, process scale and route create.

use super::roles::{call, new_org, new_space};
use super::{Kiln, PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

/// A staged app of `memory` MB × `instances` in `space`, stopped.
async fn staged_app(kiln: &Kiln, space: &str, name: &str, bp: &str) -> String {
    let (status, app) = kiln
        .post(
            "/v3/apps",
            json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app = guid(&app);
    super::droplet_made_current(kiln, &app, bp).await;
    app
}

async fn scale(kiln: &Kiln, app: &str, body: Value) -> (StatusCode, Value) {
    kiln.post(&format!("/v3/apps/{app}/processes/web/actions/scale"), body)
        .await
}

fn assert_422(status: StatusCode, v: &Value, detail: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_of(v).2, detail, "{v}");
}

#[tokio::test]
async fn org_quotas_are_applied_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = guid(&kiln.create_buildpack("python", None).await);

    // CF's default quota, on the bootstrap org and on every new one.
    let (_, list) = kiln.get("/v3/organization_quotas?names=default").await;
    let default = &list["resources"][0];
    assert_eq!(default["apps"]["total_memory_in_mb"], 10240, "{default}");
    assert_eq!(default["routes"]["total_routes"], 1000, "{default}");
    assert_eq!(default["apps"]["per_process_memory_in_mb"], Value::Null);
    let org = new_org(&kiln, "limited").await;
    let in_default = default["relationships"]["organizations"]["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(in_default, 1, "the bootstrap org: {default}");
    let (_, d) = kiln
        .get(&format!("/v3/organization_quotas/{}", guid(default)))
        .await;
    let orgs = &d["relationships"]["organizations"]["data"];
    assert!(
        orgs.as_array().unwrap().iter().any(|o| o["guid"] == org),
        "{d}"
    );

    // Create: CC's checks; a refused create changes nothing.
    for (body, detail) in [
        (json!({"apps": {}}), "Name can't be blank"),
        (
            json!({"name": "q", "apps": {"total_memory_in_mb": -1}}),
            "Apps Total memory in mb must be an integer greater than or equal to 0",
        ),
        (
            json!({"name": "q", "apps": {"colour": 1}}),
            "Apps Unknown field(s): 'colour'",
        ),
        (json!({"name": "q", "nope": 1}), "Unknown field(s): 'nope'"),
        (
            json!({"name": "default"}),
            "Organization Quota 'default' already exists.",
        ),
        (
            json!({"name": "q", "relationships": {"organizations": {"data": [{"guid": "nowhere"}]}}}),
            "Organizations with guids [\"nowhere\"] do not exist, or you do not have access to them.",
        ),
    ] {
        let (status, v) = kiln.post("/v3/organization_quotas", body).await;
        assert_422(status, &v, detail);
    }
    let (_, all) = kiln.get("/v3/organization_quotas").await;
    assert_eq!(all["pagination"]["total_results"], 1, "{all}");
    let (status, q) = kiln
        .post(
            "/v3/organization_quotas",
            json!({"name": "small", "apps": {"total_memory_in_mb": 512, "per_process_memory_in_mb": 256, "total_instances": 3},
                "routes": {"total_routes": 1},
                "relationships": {"organizations": {"data": [{"guid": org}]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    assert_eq!(q["apps"]["total_memory_in_mb"], 512);
    assert_eq!(q["services"]["paid_services_allowed"], true);
    assert_eq!(
        q["relationships"]["organizations"]["data"],
        json!([{"guid": org}])
    );
    let (_, by_org) = kiln
        .get(&format!("/v3/organization_quotas?organization_guids={org}"))
        .await;
    assert_eq!(by_org["resources"][0]["name"], "small", "{by_org}");

    // Enforced: start, scale, routes, in CC's words; nothing changes.
    let space = new_space(&kiln, &org, "s").await;
    let a = staged_app(&kiln, &space, "a", &bp).await;
    let b = staged_app(&kiln, &space, "b", &bp).await;
    let (status, v) = scale(&kiln, &a, json!({"memory_in_mb": 512})).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a stopped app is not counted: {v}"
    );
    let (status, v) = kiln
        .post(&format!("/v3/apps/{a}/actions/start"), json!({}))
        .await;
    assert_422(status, &v, "memory instance_memory_limit_exceeded");
    let (_, app) = kiln.get(&format!("/v3/apps/{a}")).await;
    assert_eq!(app["state"], "STOPPED");
    scale(&kiln, &a, json!({"memory_in_mb": 256})).await;
    let (status, v) = kiln
        .post(&format!("/v3/apps/{a}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = scale(&kiln, &a, json!({"instances": 3})).await;
    assert_422(status, &v, "memory quota_exceeded");
    let (_, web) = kiln.get(&format!("/v3/apps/{a}/processes/web")).await;
    assert_eq!(web["instances"], 1, "a refused scale changes nothing");
    let (status, v) = scale(&kiln, &a, json!({"instances": 2})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    scale(&kiln, &b, json!({"memory_in_mb": 1})).await;
    let (status, v) = kiln
        .post(&format!("/v3/apps/{b}/actions/start"), json!({}))
        .await;
    assert_422(status, &v, "memory quota_exceeded");
    kiln.patch(
        &format!("/v3/organization_quotas/{}", guid(&q)),
        json!({"apps": {"total_memory_in_mb": null}}),
    )
    .await;
    let (status, v) = scale(&kiln, &a, json!({"instances": 3})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = kiln
        .post(&format!("/v3/apps/{b}/actions/start"), json!({}))
        .await;
    assert_422(status, &v, "app_instance_limit app_instance_limit_exceeded");

    let (_, domains) = kiln.get("/v3/domains").await;
    let domain = guid(&domains["resources"][0]);
    let route = |host: &str| json!({"host": host, "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain}}}});
    let (status, v) = kiln.post("/v3/routes", route("one")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = kiln.post("/v3/routes", route("two")).await;
    assert_422(
        status,
        &v,
        "Routes quota exceeded for organization 'limited'.",
    );

    // Delete: not while an org has it; then 202 and gone.
    let path = format!("/v3/organization_quotas/{}", guid(&q));
    let (status, v) = call(&kiln, &kiln.token, "DELETE", &path, None).await;
    assert_422(
        status,
        &v,
        "This quota is applied to one or more organizations. Remove this quota from all organizations before deleting.",
    );
    let (status, v) = kiln
        .post(
            &format!(
                "/v3/organization_quotas/{}/relationships/organizations",
                guid(default)
            ),
            json!({"data": [{"guid": org}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["guid"] == org),
        "{v}"
    );
    let (status, _) = call(&kiln, &kiln.token, "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = kiln.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kiln.stop().await;
}
