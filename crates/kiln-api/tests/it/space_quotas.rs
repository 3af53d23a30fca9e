//! Space quotas: made, changed, applied and removed by the org's managers
//! with CC's rules and words, seen only by who reads a space they are on
//! (or manages the org), and enforced beside the org's quota on app start,
//! process scale and route create.

use super::roles::{call, grant, new_org, new_space, new_user};
use super::{Kiln, PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

fn assert_422(status: StatusCode, v: &Value, detail: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_of(v).2, detail, "{v}");
}

/// A staged, stopped app in `space`.
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

fn quota_body(name: &str, org: &str, spaces: &[&str]) -> Value {
    let spaces: Vec<Value> = spaces.iter().map(|s| json!({"guid": s})).collect();
    json!({"name": name, "relationships": {"organization": {"data": {"guid": org}},
        "spaces": {"data": spaces}}})
}

/// A user with `role` in `scope`, and its token.
async fn member(kiln: &Kiln, name: &str, org: &str, role: (&str, &str, &str)) -> String {
    let (user, token) = new_user(kiln, name).await;
    grant(
        kiln,
        &kiln.token,
        "organization_user",
        &user,
        ("organization", org),
    )
    .await;
    let (status, r) = grant(kiln, &kiln.token, role.0, &user, (role.1, role.2)).await;
    assert!(status.is_success(), "{r}");
    token
}

#[tokio::test]
async fn space_quotas_are_managed_by_org_managers_and_seen_by_space_members() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "sq-org").await;
    let s1 = new_space(&kiln, &org, "s1").await;
    let s2 = new_space(&kiln, &org, "s2").await;
    let far_org = new_org(&kiln, "sq-far").await;
    let far = new_space(&kiln, &far_org, "far").await;
    let manager = member(
        &kiln,
        "sq-mgr",
        &org,
        ("organization_manager", "organization", &org),
    )
    .await;
    let dev1 = member(&kiln, "sq-dev1", &org, ("space_developer", "space", &s1)).await;
    let dev2 = member(&kiln, "sq-dev2", &org, ("space_developer", "space", &s2)).await;

    // Refused creates change nothing, each in CC's words.
    for (token, body, status, detail) in [
        (
            &manager,
            json!({"relationships": {"organization": {"data": {"guid": org}}}}),
            422,
            "Name can't be blank",
        ),
        (
            &manager,
            json!({"name": "q"}),
            422,
            "Relationships 'relationships' is not an object",
        ),
        (
            &manager,
            json!({"name": "q", "relationships": {"organization": {"guid": org}}}),
            422,
            "Relationships Organization must be structured like this: \"organization: {\"data\": {\"guid\": \"valid-guid\"}}\"",
        ),
        (
            &manager,
            json!({"name": "q", "domains": {}, "relationships": {"organization": {"data": {"guid": org}}}}),
            422,
            "Unknown field(s): 'domains'",
        ),
        (
            &manager,
            json!({"name": "q", "apps": {"total_memory_in_mb": "lots"}, "relationships": {"organization": {"data": {"guid": org}}}}),
            422,
            "Apps Total memory in mb must be an integer greater than or equal to 0",
        ),
        (
            &manager,
            json!({"name": "q", "routes": {"colour": 1}, "relationships": {"organization": {"data": {"guid": org}}}}),
            422,
            "Routes Unknown field(s): 'colour'",
        ),
        (
            &manager,
            quota_body("q", &org, &[&far]),
            422,
            &format!(
                "Spaces with guids [\"{far}\"] do not exist within the organization specified, or you do not have access to them."
            ),
        ),
        (
            &kiln.token,
            quota_body("q", "nowhere", &[]),
            422,
            "Organization with guid 'nowhere' does not exist, or you do not have access to it.",
        ),
        (
            &dev1,
            quota_body("q", &org, &[]),
            403,
            "You are not authorized to perform the requested action",
        ),
        (
            &manager,
            quota_body("q", &far_org, &[]),
            422,
            "Invalid organization. Ensure that the organization exists and you have access to it.",
        ),
    ] {
        let (got, v) = call(&kiln, token, "POST", "/v3/space_quotas", Some(body)).await;
        assert_eq!(got.as_u16(), status, "{v}");
        assert_eq!(error_of(&v).2, detail, "{v}");
    }
    let (status, v) = call(&kiln, &manager, "POST", "/v3/space_quotas", None).await;
    assert_422(status, &v, "Name can't be blank");
    let (_, all) = kiln.get("/v3/space_quotas").await;
    assert_eq!(all["pagination"]["total_results"], 0, "{all}");

    // A manager makes one on s1: CC's shape, unnamed limits unlimited.
    let mut body = quota_body("small", &org, &[&s1]);
    body["apps"] =
        json!({"total_memory_in_mb": 512, "per_process_memory_in_mb": 256, "total_instances": 2});
    body["routes"] = json!({"total_routes": 1});
    let (status, q) = call(&kiln, &manager, "POST", "/v3/space_quotas", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    let qg = guid(&q);
    assert_eq!(q["apps"]["total_memory_in_mb"], 512, "{q}");
    assert_eq!(q["apps"]["per_app_tasks"], Value::Null, "{q}");
    assert_eq!(q["services"]["paid_services_allowed"], true, "{q}");
    assert_eq!(q["routes"]["total_reserved_ports"], Value::Null, "{q}");
    assert!(q.get("domains").is_none(), "{q}");
    assert_eq!(
        q["relationships"]["organization"]["data"]["guid"],
        org.as_str()
    );
    assert_eq!(q["relationships"]["spaces"]["data"], json!([{"guid": s1}]));
    assert!(
        q["links"]["organization"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&org)
    );
    let (status, v) = call(
        &kiln,
        &manager,
        "POST",
        "/v3/space_quotas",
        Some(quota_body("small", &org, &[])),
    )
    .await;
    assert_422(status, &v, "Space Quota 'small' already exists.");
    // Names are unique per org only.
    let (status, other) = kiln
        .post("/v3/space_quotas", quota_body("small", &far_org, &[]))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");

    // Seen by s1's developer, not by s2's (404, not 403); filters.
    let path = format!("/v3/space_quotas/{qg}");
    let (status, v) = call(&kiln, &dev1, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(&kiln, &dev2, "GET", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(error_of(&v).2, "Space quota not found");
    let (_, l) = call(&kiln, &dev2, "GET", "/v3/space_quotas", None).await;
    assert_eq!(l["pagination"]["total_results"], 0, "{l}");
    let (_, l) = call(&kiln, &dev1, "GET", "/v3/space_quotas", None).await;
    assert_eq!(l["pagination"]["total_results"], 1, "{l}");
    let (_, l) = call(&kiln, &manager, "GET", "/v3/space_quotas", None).await;
    assert_eq!(
        l["pagination"]["total_results"], 1,
        "the other org's is unseen: {l}"
    );
    for (filter, n) in [
        (format!("space_guids={s1}"), 1),
        (format!("space_guids={s2}"), 0),
        (format!("organization_guids={org}"), 1),
        ("names=small".to_string(), 2),
        ("names=big".to_string(), 0),
    ] {
        let (_, l) = kiln.get(&format!("/v3/space_quotas?{filter}")).await;
        assert_eq!(l["pagination"]["total_results"], n, "{filter}: {l}");
    }

    // Who may change: not a developer (403, and nothing changes).
    let (status, v) = call(&kiln, &dev1, "PATCH", &path, Some(json!({"name": "mine"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = call(&kiln, &dev2, "PATCH", &path, Some(json!({"name": "mine"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = call(
        &kiln,
        &manager,
        "PATCH",
        &path,
        Some(json!({"relationships": {}})),
    )
    .await;
    assert_422(status, &v, "Unknown field(s): 'relationships'");
    let (status, v) = call(&kiln, &manager, "PATCH", &path, Some(json!({"name": ""}))).await;
    assert_422(status, &v, "Name can't be blank");
    let (_, same) = kiln.get(&path).await;
    assert_eq!(same["name"], "small", "{same}");

    // Apply and remove, CC's words.
    let apply = format!("{path}/relationships/spaces");
    let (status, v) = call(
        &kiln,
        &manager,
        "POST",
        &apply,
        Some(json!({"data": [{"guid": far}]})),
    )
    .await;
    assert_422(
        status,
        &v,
        &format!("Spaces with guids [\"{far}\"] do not exist, or you do not have access to them."),
    );
    let (status, v) = kiln.post(&apply, json!({"data": [{"guid": far}]})).await;
    assert_422(
        status,
        &v,
        "Space quotas cannot be applied outside of their owning organization.",
    );
    let (status, v) = call(
        &kiln,
        &dev1,
        "POST",
        &apply,
        Some(json!({"data": [{"guid": s2}]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = call(
        &kiln,
        &manager,
        "POST",
        &apply,
        Some(json!({"data": [{"guid": s2}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["links"]["self"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/relationships/spaces")
    );
    let (status, _) = call(&kiln, &dev2, "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "s2's developer sees it now");
    let remove_s2 = format!("{apply}/{s2}");
    let (status, v) = call(&kiln, &dev2, "DELETE", &remove_s2, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = call(&kiln, &manager, "DELETE", &remove_s2, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, v) = call(&kiln, &manager, "DELETE", &remove_s2, None).await;
    assert_422(
        status,
        &v,
        &format!(
            "Unable to remove quota from space with guid '{s2}'. Ensure the space quota is applied to this space."
        ),
    );

    // Delete: not while a space has it; then 202 and gone.
    let (status, v) = call(&kiln, &manager, "DELETE", &path, None).await;
    assert_422(
        status,
        &v,
        "This quota is applied to one or more spaces. Remove this quota from all spaces before deleting.",
    );
    call(&kiln, &manager, "DELETE", &format!("{apply}/{s1}"), None).await;
    let (status, v) = call(&kiln, &dev1, "DELETE", &path, None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "on no space of dev1's now: {v}"
    );
    let (status, _) = call(&kiln, &manager, "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = kiln.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every change was an audit event, by the manager.
    for (kind, n) in [("create", 1), ("apply", 1), ("remove", 2), ("delete", 1)] {
        let (_, e) = kiln
            .get(&format!(
                "/v3/audit_events?types=audit.space_quota.{kind}&target_guids={qg}"
            ))
            .await;
        assert_eq!(e["pagination"]["total_results"], n, "{kind}: {e}");
        assert_eq!(
            e["resources"][0]["actor"]["name"], "sq-mgr@example.com",
            "{e}"
        );
        assert_eq!(e["resources"][0]["target"]["type"], "space_quota", "{e}");
    }
    // An org delete takes its space quotas.
    let path = format!("/v3/space_quotas/{}", guid(&other));
    let (status, _) = kiln.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("/v3/organizations/{far_org}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = kiln.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kiln.stop().await;
}

#[tokio::test]
async fn space_quotas_are_enforced_beside_the_org_quota() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = guid(&kiln.create_buildpack("python", None).await);
    let org = new_org(&kiln, "enforced").await;
    let s1 = new_space(&kiln, &org, "s1").await;
    let s2 = new_space(&kiln, &org, "s2").await;
    let mut body = quota_body("small", &org, &[&s1]);
    body["apps"] =
        json!({"total_memory_in_mb": 512, "per_process_memory_in_mb": 256, "total_instances": 2});
    body["routes"] = json!({"total_routes": 1});
    let (status, q) = kiln.post("/v3/space_quotas", body).await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    let qpath = format!("/v3/space_quotas/{}", guid(&q));

    let a = staged_app(&kiln, &s1, "a", &bp).await;
    let (status, v) = scale(&kiln, &a, json!({"memory_in_mb": 512})).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a stopped app is not counted: {v}"
    );
    let (status, v) = kiln
        .post(&format!("/v3/apps/{a}/actions/start"), json!({}))
        .await;
    assert_422(status, &v, "memory space_instance_memory_limit_exceeded");
    let (_, app) = kiln.get(&format!("/v3/apps/{a}")).await;
    assert_eq!(app["state"], "STOPPED", "a refused start changes nothing");
    scale(&kiln, &a, json!({"memory_in_mb": 256})).await;
    let (status, v) = kiln
        .post(&format!("/v3/apps/{a}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Over two limits at once: both, joined as CC joins them.
    let (status, v) = scale(&kiln, &a, json!({"instances": 3})).await;
    assert_422(
        status,
        &v,
        "memory space_quota_exceeded, app_instance_limit space_app_instance_limit_exceeded",
    );
    let (_, web) = kiln.get(&format!("/v3/apps/{a}/processes/web")).await;
    assert_eq!(web["instances"], 1, "a refused scale changes nothing");
    let (status, v) = scale(&kiln, &a, json!({"instances": 2})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");

    // Another space of the org has no space quota: only the org's applies.
    let b = staged_app(&kiln, &s2, "b", &bp).await;
    scale(&kiln, &b, json!({"memory_in_mb": 1024, "instances": 3})).await;
    let (status, v) = kiln
        .post(&format!("/v3/apps/{b}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // An update lifts a limit (null: unlimited); the other still holds.
    let (status, v) = kiln
        .patch(&qpath, json!({"apps": {"total_memory_in_mb": null}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["apps"]["total_memory_in_mb"], Value::Null);
    assert_eq!(
        v["apps"]["total_instances"], 2,
        "untouched limits stay: {v}"
    );
    let (status, v) = scale(&kiln, &a, json!({"instances": 3})).await;
    assert_422(
        status,
        &v,
        "app_instance_limit space_app_instance_limit_exceeded",
    );

    // Routes: the space's limit first, in CC's words; other spaces free.
    let (_, domains) = kiln.get("/v3/domains").await;
    let domain = guid(&domains["resources"][0]);
    let route = |host: &str, space: &str| json!({"host": host, "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain}}}});
    let (status, v) = kiln.post("/v3/routes", route("one", &s1)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = kiln.post("/v3/routes", route("two", &s1)).await;
    assert_422(status, &v, "Routes quota exceeded for space 's1'.");
    let (_, routes) = kiln.get(&format!("/v3/routes?space_guids={s1}")).await;
    assert_eq!(routes["pagination"]["total_results"], 1, "{routes}");
    let (status, v) = kiln.post("/v3/routes", route("two", &s2)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // A removed quota limits nothing; a space delete drops its quota.
    let (status, _) = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("{qpath}/relationships/spaces/{s1}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = scale(&kiln, &a, json!({"instances": 3})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = kiln
        .post(
            &format!("{qpath}/relationships/spaces"),
            json!({"data": [{"guid": s2}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("/v3/spaces/{s2}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, q) = kiln.get(&qpath).await;
    assert_eq!(q["relationships"]["spaces"]["data"], json!([]), "{q}");
    kiln.stop().await;
}

/// `per_app_tasks` of the space's and the org's quota bounds the tasks
/// pending or running at once (CC's MaxAppTasksPolicy, in its words), and
/// orgs and spaces show their quotas in `relationships.quota`.
#[tokio::test]
async fn per_app_tasks_is_enforced_on_task_create() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = guid(&kiln.create_buildpack("python", None).await);
    let org = new_org(&kiln, "tasks").await;
    let s1 = new_space(&kiln, &org, "s1").await;
    let s2 = new_space(&kiln, &org, "s2").await;
    let mut body = quota_body("one-task", &org, &[&s1]);
    body["apps"] = json!({"per_app_tasks": 1});
    let (status, q) = kiln.post("/v3/space_quotas", body).await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    let (_, space) = kiln.get(&format!("/v3/spaces/{s1}")).await;
    assert_eq!(space["relationships"]["quota"]["data"]["guid"], q["guid"]);
    let (_, listed) = kiln
        .get(&format!(
            "/v3/spaces?organization_guids={org}&order_by=name"
        ))
        .await;
    assert_eq!(
        listed["resources"][0]["relationships"]["quota"]["data"]["guid"],
        q["guid"]
    );
    assert!(listed["resources"][1]["relationships"]["quota"]["data"].is_null());

    let a = staged_app(&kiln, &s1, "a", &bp).await;
    let task = json!({"command": "echo hi"});
    let tasks = format!("/v3/apps/{a}/tasks");
    let (status, first) = kiln.post(&tasks, task.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, v) = kiln.post(&tasks, task.clone()).await;
    assert_422(status, &v, "app_task_limit quota exceeded");
    let (_, listed) = kiln.get(&tasks).await;
    assert_eq!(listed["pagination"]["total_results"], 1, "nothing made");
    // The org's quota counts the tasks of all its spaces (a's one too).
    let (status, oq) = kiln
        .post(
            "/v3/organization_quotas",
            json!({"name": "two-tasks", "apps": {"per_app_tasks": 2},
                "relationships": {"organizations": {"data": [{"guid": org}]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{oq}");
    let (_, o) = kiln.get(&format!("/v3/organizations/{org}")).await;
    assert_eq!(
        o["relationships"]["quota"]["data"]["guid"], oq["guid"],
        "{o}"
    );
    let b = staged_app(&kiln, &s2, "b", &bp).await;
    let b_tasks = format!("/v3/apps/{b}/tasks");
    let (status, v) = kiln.post(&b_tasks, task.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = kiln.post(&b_tasks, task).await;
    assert_422(status, &v, "app_task_limit quota exceeded");
    kiln.stop().await;
}
