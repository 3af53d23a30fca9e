//! Users, roles and authorization: UAA users and their tokens, CC's role
//! rules, a space developer's day, and the table every authenticated route
//! is in (a route missing from it fails `every_route_is_in_the_table`).

use super::{Kiln, PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A request as the holder of `token`, through the router.
pub(super) async fn call(
    kiln: &Kiln,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("bearer {token}"));
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    let r = kiln
        .router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let v = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    });
    (status, v)
}

pub(super) async fn token_for(kiln: &Kiln, username: &str, password: &str) -> (StatusCode, Value) {
    let r = kiln
        .http
        .post(format!("{}/oauth/token", kiln.url))
        .basic_auth("cf", Some(""))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// A new UAA user and CC user; returns its guid and an access token.
pub(super) async fn new_user(kiln: &Kiln, name: &str) -> (String, String) {
    let (status, u) = call(
        kiln,
        &kiln.token,
        "POST",
        "/Users",
        Some(json!({"userName": name, "password": "pw-1", "emails": [{"value": format!("{name}@example.com")}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{u}");
    let guid = u["id"].as_str().unwrap().to_string();
    let (status, cc) = call(
        kiln,
        &kiln.token,
        "POST",
        "/v3/users",
        Some(json!({"guid": guid})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{cc}");
    let (status, t) = token_for(kiln, name, "pw-1").await;
    assert_eq!(status, StatusCode::OK, "{t}");
    (guid, t["access_token"].as_str().unwrap().to_string())
}

pub(super) async fn grant(
    kiln: &Kiln,
    token: &str,
    kind: &str,
    user: &str,
    scope: (&str, &str),
) -> (StatusCode, Value) {
    let body = json!({
        "type": kind,
        "relationships": {"user": {"data": {"guid": user}}, scope.0: {"data": {"guid": scope.1}}},
    });
    call(kiln, token, "POST", "/v3/roles", Some(body)).await
}

pub(super) async fn admin_post(kiln: &Kiln, path: &str, body: Value) -> Value {
    let (status, v) = call(kiln, &kiln.token, "POST", path, Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

pub(super) async fn new_org(kiln: &Kiln, name: &str) -> String {
    guid(&admin_post(kiln, "/v3/organizations", json!({"name": name})).await)
}

pub(super) async fn new_space(kiln: &Kiln, org: &str, name: &str) -> String {
    guid(
        &admin_post(
            kiln,
            "/v3/spaces",
            json!({"name": name, "relationships": {"organization": {"data": {"guid": org}}}}),
        )
        .await,
    )
}

pub(super) async fn new_app(kiln: &Kiln, space: &str, name: &str) -> String {
    guid(
        &admin_post(
            kiln,
            "/v3/apps",
            json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await,
    )
}

#[tokio::test]
async fn users_tokens_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    // The admin's token carries the admin scope.
    let (_, admin) = token_for(&kiln, "admin", PASSWORD).await;
    assert!(
        admin["scope"]
            .as_str()
            .unwrap()
            .contains("cloud_controller.admin")
    );

    let (guid, token) = new_user(&kiln, "dana").await;
    let (_, t) = token_for(&kiln, "dana", "pw-1").await;
    assert_eq!(t["scope"], "cloud_controller.read cloud_controller.write");
    // Bad input changes nothing: a taken name, a missing password.
    let (status, dup) = call(
        &kiln,
        &kiln.token,
        "POST",
        "/Users",
        Some(json!({"userName": "dana", "password": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    assert_eq!(dup["error"], "scim_resource_already_exists");
    let (status, e) = call(
        &kiln,
        &kiln.token,
        "POST",
        "/Users",
        Some(json!({"userName": "eve"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(
        token_for(&kiln, "eve", "").await.0,
        StatusCode::UNAUTHORIZED
    );
    // Only admins create users.
    let (status, e) = call(
        &kiln,
        &token,
        "POST",
        "/Users",
        Some(json!({"userName": "eve", "password": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    let (status, e) = call(
        &kiln,
        &token,
        "POST",
        "/v3/users",
        Some(json!({"guid": "x"})),
    )
    .await;
    assert_eq!(error_of(&e).0, 10003, "{status} {e}");
    // CC's users: the guid is UAA's id, a second create is refused.
    let (status, u) = call(
        &kiln,
        &kiln.token,
        "GET",
        &format!("/v3/users/{guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["username"], "dana");
    assert_eq!(u["origin"], "uaa");
    let (status, e) = call(
        &kiln,
        &kiln.token,
        "POST",
        "/v3/users",
        Some(json!({"guid": guid})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (_, list) = call(&kiln, &kiln.token, "GET", "/v3/users?usernames=dana", None).await;
    assert_eq!(list["resources"].as_array().unwrap().len(), 1, "{list}");
    // A user with no role sees itself and nobody else.
    let (_, mine) = call(&kiln, &token, "GET", "/v3/users", None).await;
    let names: Vec<&str> = mine["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dana"]);

    // A password change revokes the user's earlier tokens.
    let (status, _) = call(&kiln, &token, "GET", "/v3/apps", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = call(
        &kiln,
        &token,
        "PUT",
        &format!("/Users/{guid}/password"),
        Some(json!({"oldPassword": "wrong", "password": "pw-2"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");
    let (status, e) = call(
        &kiln,
        &token,
        "PUT",
        &format!("/Users/{guid}/password"),
        Some(json!({"oldPassword": "pw-1", "password": "pw-2"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (status, e) = call(&kiln, &token, "GET", "/v3/apps", None).await;
    assert_eq!(
        (status, error_of(&e).0),
        (StatusCode::UNAUTHORIZED, 1000),
        "{e}"
    );
    assert_eq!(
        token_for(&kiln, "dana", "pw-1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(token_for(&kiln, "dana", "pw-2").await.0, StatusCode::OK);

    // Deleting the CC user takes its roles; it is gone.
    let (status, _) = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("/v3/users/{guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = call(
        &kiln,
        &kiln.token,
        "GET",
        &format!("/v3/users/{guid}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kiln.stop().await;
}

#[tokio::test]
async fn roles_follow_cloud_controllers_rules() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "team").await;
    let space = new_space(&kiln, &org, "web").await;
    let (ann, ann_token) = new_user(&kiln, "ann").await; // org manager
    let (bob, bob_token) = new_user(&kiln, "bob").await; // space manager
    let (cat, cat_token) = new_user(&kiln, "cat").await; // developer
    let admin = kiln.token.clone();

    // A space role needs the org user role first, in CC's words.
    let (status, e) = grant(&kiln, &admin, "space_developer", &cat, ("space", &space)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&e).2,
        "Users cannot be assigned roles in a space if they do not have a role in that space's organization."
    );
    for u in [&ann, &bob, &cat] {
        let (status, r) = grant(
            &kiln,
            &admin,
            "organization_user",
            u,
            ("organization", &org),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(
            r["relationships"]["organization"]["data"]["guid"],
            org.as_str()
        );
        assert!(r["relationships"]["space"]["data"].is_null());
    }
    // A duplicate is a 422; an unknown type too; nothing changes.
    let (status, e) = grant(
        &kiln,
        &admin,
        "organization_user",
        &cat,
        ("organization", &org),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&e).2,
        "User 'cat' already has 'organization_user' role in organization 'team'."
    );
    let (status, _) = grant(&kiln, &admin, "space_wizard", &cat, ("space", &space)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = grant(
        &kiln,
        &admin,
        "space_developer",
        &cat,
        ("organization", &org),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Who may grant: not an org user; an org manager anything in its org; a
    // space manager its space's roles only.
    let (status, e) = grant(
        &kiln,
        &ann_token,
        "organization_manager",
        &ann,
        ("organization", &org),
    )
    .await;
    assert_eq!(
        (status, error_of(&e).0),
        (StatusCode::FORBIDDEN, 10003),
        "{e}"
    );
    assert_eq!(
        grant(
            &kiln,
            &admin,
            "organization_manager",
            &ann,
            ("organization", &org)
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (status, r) = grant(&kiln, &ann_token, "space_manager", &bob, ("space", &space)).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let (status, dev_role) = grant(
        &kiln,
        &bob_token,
        "space_developer",
        &cat,
        ("space", &space),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{dev_role}");
    let (status, _) = grant(
        &kiln,
        &bob_token,
        "organization_auditor",
        &cat,
        ("organization", &org),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = grant(&kiln, &cat_token, "space_auditor", &bob, ("space", &space)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // By username and origin (as `cf set-space-role` sends).
    let body = json!({"type": "space_auditor", "relationships": {
        "user": {"data": {"username": "ann", "origin": "uaa"}},
        "space": {"data": {"guid": space}}}});
    let (status, r) = call(&kiln, &bob_token, "POST", "/v3/roles", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    // A space nobody showed the granter: 422 as CC, not a hint it exists.
    let other = new_space(&kiln, &new_org(&kiln, "elsewhere").await, "x").await;
    let (status, e) = grant(
        &kiln,
        &ann_token,
        "space_developer",
        &cat,
        ("space", &other),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(error_of(&e).2.starts_with("Invalid space."), "{e}");

    // Lists: filters and includes, and each caller sees its orgs' roles.
    let (_, l) = call(
        &kiln,
        &admin,
        "GET",
        &format!(
            "/v3/roles?types=space_developer,space_manager&space_guids={space}&include=user,space"
        ),
        None,
    )
    .await;
    let types: Vec<&str> = l["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["space_manager", "space_developer"], "{l}");
    let mut users: Vec<&str> = l["included"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["bob", "cat"]);
    assert_eq!(l["included"]["spaces"][0]["guid"], space.as_str());
    let (_, seen) = call(&kiln, &cat_token, "GET", "/v3/roles", None).await;
    assert_eq!(seen["pagination"]["total_results"], 7, "{seen}");
    let (_, seen) = call(
        &kiln,
        &ann_token,
        "GET",
        &format!("/v3/roles?space_guids={other}"),
        None,
    )
    .await;
    assert_eq!(seen["pagination"]["total_results"], 0, "{seen}");

    // Revoking: the developer may not; its space manager may; the org
    // membership cannot go while space roles remain.
    let dev_role = guid(&dev_role);
    let (status, _) = call(
        &kiln,
        &cat_token,
        "DELETE",
        &format!("/v3/roles/{dev_role}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, cat_org) = call(
        &kiln,
        &admin,
        "GET",
        &format!("/v3/roles?user_guids={cat}&types=organization_user"),
        None,
    )
    .await;
    let cat_org = cat_org["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = call(
        &kiln,
        &admin,
        "DELETE",
        &format!("/v3/roles/{cat_org}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = call(
        &kiln,
        &bob_token,
        "DELETE",
        &format!("/v3/roles/{dev_role}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = call(&kiln, &admin, "GET", &format!("/v3/roles/{dev_role}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A deleted space takes its roles with it.
    let (status, _) = call(
        &kiln,
        &admin,
        "DELETE",
        &format!("/v3/spaces/{space}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, left) = call(
        &kiln,
        &admin,
        "GET",
        &format!("/v3/roles?space_guids={space}"),
        None,
    )
    .await;
    assert_eq!(left["pagination"]["total_results"], 0, "{left}");
    kiln.stop().await;
}

#[tokio::test]
async fn a_space_developer_works_only_in_their_space() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let admin = kiln.token.clone();
    let org = new_org(&kiln, "acme").await;
    let mine = new_space(&kiln, &org, "mine").await;
    let theirs = new_space(&kiln, &org, "theirs").await;
    let (dev, token) = new_user(&kiln, "devon").await;
    grant(
        &kiln,
        &admin,
        "organization_user",
        &dev,
        ("organization", &org),
    )
    .await;
    let (status, _) = grant(&kiln, &admin, "space_developer", &dev, ("space", &mine)).await;
    assert_eq!(status, StatusCode::CREATED);
    let foreign_app = new_app(&kiln, &theirs, "secret").await;

    // The developer pushes in its space with raw v3 calls.
    let (status, app) = call(
        &kiln,
        &token,
        "POST",
        "/v3/apps",
        Some(json!({"name": "web", "relationships": {"space": {"data": {"guid": mine}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app = guid(&app);
    let (status, pkg) = call(
        &kiln,
        &token,
        "POST",
        "/v3/packages",
        Some(json!({"type": "bits", "relationships": {"app": {"data": {"guid": app}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{pkg}");
    let (status, env) = call(
        &kiln,
        &token,
        "PATCH",
        &format!("/v3/apps/{app}/environment_variables"),
        Some(json!({"var": {"A": "1"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{env}");
    let (status, r) = call(
        &kiln,
        &token,
        "POST",
        &format!("/v3/apps/{app}/processes/web/actions/scale"),
        Some(json!({"instances": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");

    // Another space's app does not exist for it, in every way it may ask.
    for path in [
        format!("/v3/apps/{foreign_app}"),
        format!("/v3/apps/{foreign_app}/env"),
        format!("/api/v1/read/{foreign_app}"),
    ] {
        let (status, e) = call(&kiln, &token, "GET", &path, None).await;
        assert_eq!(
            (status, error_of(&e).2.as_str()),
            (StatusCode::NOT_FOUND, "App not found"),
            "{path}: {e}"
        );
    }
    let (status, e) = call(
        &kiln,
        &token,
        "POST",
        &format!("/v3/apps/{foreign_app}/actions/stop"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let (status, e) = call(
        &kiln,
        &token,
        "POST",
        "/v3/apps",
        Some(json!({"name": "x", "relationships": {"space": {"data": {"guid": theirs}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Lists hold only what it sees (filtered in the query).
    let (_, apps) = call(&kiln, &token, "GET", "/v3/apps", None).await;
    let names: Vec<&str> = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    let (_, apps) = call(
        &kiln,
        &token,
        "GET",
        &format!("/v3/apps?space_guids={theirs}"),
        None,
    )
    .await;
    assert_eq!(apps["pagination"]["total_results"], 0);
    let (_, spaces) = call(&kiln, &token, "GET", "/v3/spaces", None).await;
    assert_eq!(spaces["pagination"]["total_results"], 1, "{spaces}");
    let (_, orgs) = call(&kiln, &token, "GET", "/v3/organizations", None).await;
    assert_eq!(orgs["resources"][0]["name"], "acme", "{orgs}");
    assert_eq!(orgs["pagination"]["total_results"], 1);
    let (_, procs) = call(&kiln, &token, "GET", "/v3/processes", None).await;
    assert_eq!(procs["pagination"]["total_results"], 1, "{procs}");
    // Audit events: only its space's (the foreign app's creation is hidden).
    let (_, events) = call(&kiln, &token, "GET", "/v3/audit_events", None).await;
    let events = events["resources"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["space"]["guid"] == json!(mine)),
        "{events:?}"
    );
    let (_, tasks) = call(&kiln, &token, "GET", "/v3/tasks", None).await;
    assert_eq!(tasks["pagination"]["total_results"], 0, "{tasks}");
    // The admin still sees everything.
    let (_, all) = call(&kiln, &admin, "GET", "/v3/apps", None).await;
    assert_eq!(all["pagination"]["total_results"], 2);
    kiln.stop().await;
}
