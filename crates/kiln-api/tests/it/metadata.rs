//! Labels and annotations, `label_selector`, environment variable groups,
//! env var names, feature flags, usage summaries, and every advertised
//! link answering.

use super::roles::{call, grant, new_app, new_org, new_space, new_user};
use super::{Kiln, PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

async fn labeled_apps(kiln: &Kiln, selector: &str) -> Vec<String> {
    let (status, v) = kiln
        .get(&format!("/v3/apps?label_selector={selector}&per_page=5000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{selector}: {v}");
    names(&v)
}

#[tokio::test]
async fn labels_persist_merge_and_select_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "meta-org").await;
    let space = new_space(&kiln, &org, "meta-space").await;
    let rel = json!({"space": {"data": {"guid": space}}});
    let (status, a) = kiln
        .post(
            "/v3/apps",
            json!({"name": "a", "relationships": rel,
                   "metadata": {"labels": {"env": "prod", "example.com/tier": "web"},
                                "annotations": {"contact": "ops team <ops@example.com>"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["metadata"]["labels"]["env"], "prod");
    assert_eq!(a["metadata"]["labels"]["example.com/tier"], "web");
    assert_eq!(
        a["metadata"]["annotations"]["contact"],
        "ops team <ops@example.com>"
    );
    let a_guid = a["guid"].as_str().unwrap().to_string();
    for (name, env) in [("b", Some("dev")), ("c", None)] {
        let labels = env.map_or(json!({}), |e| json!({"env": e}));
        let (status, v) = kiln
            .post(
                "/v3/apps",
                json!({"name": name, "relationships": rel, "metadata": {"labels": labels}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }

    // PATCH merges: a new key is added, null deletes, the rest stays.
    let (status, v) = kiln
        .patch(
            &format!("/v3/apps/{a_guid}"),
            json!({"metadata": {"labels": {"example.com/tier": null, "team": "core"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["metadata"]["labels"],
        json!({"env": "prod", "team": "core"})
    );
    let (_, again) = kiln.get(&format!("/v3/apps/{a_guid}")).await;
    assert_eq!(again["metadata"], v["metadata"]);

    // Every operator of label_selector.
    for (selector, expect) in [
        ("env=prod", vec!["a"]),
        ("env==dev", vec!["b"]),
        ("env!=prod", vec!["b", "c"]),
        ("env in (prod,dev)", vec!["a", "b"]),
        ("env notin (prod)", vec!["b", "c"]),
        ("env", vec!["a", "b"]),
        ("!env", vec!["c"]),
        ("env,team=core", vec!["a"]),
    ] {
        let encoded = selector.replace(' ', "%20");
        assert_eq!(labeled_apps(&kiln, &encoded).await, expect, "{selector}");
    }

    // Other resources keep theirs and lists of them select too.
    let (status, s) = kiln
        .patch(
            &format!("/v3/spaces/{space}"),
            json!({"metadata": {"labels": {"kind": "team"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    let (_, spaces) = kiln.get("/v3/spaces?label_selector=kind=team").await;
    assert_eq!(names(&spaces), ["meta-space"]);
    let (_, stacks) = kiln.get("/v3/stacks").await;
    let stack = stacks["resources"][0]["guid"].as_str().unwrap().to_string();
    let (status, st) = kiln
        .patch(
            &format!("/v3/stacks/{stack}"),
            json!({"metadata": {"annotations": {"note": "default"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{st}");
    assert_eq!(st["metadata"]["annotations"]["note"], "default");
    let (user, _) = new_user(&kiln, "labeled-user").await;
    let (status, u) = kiln
        .patch(
            &format!("/v3/users/{user}"),
            json!({"metadata": {"labels": {"team": "core"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    let (_, users) = kiln.get("/v3/users?label_selector=team=core").await;
    assert_eq!(users["resources"][0]["guid"], user.as_str());
    assert_eq!(users["pagination"]["total_results"], 1);
    let (_, web) = kiln.get(&format!("/v3/apps/{a_guid}/processes/web")).await;
    let (status, p) = kiln
        .patch(
            &format!("/v3/processes/{}", web["guid"].as_str().unwrap()),
            json!({"metadata": {"labels": {"size": "s"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (_, procs) = kiln.get("/v3/processes?label_selector=size=s").await;
    assert_eq!(procs["pagination"]["total_results"], 1, "{procs}");

    // Bad metadata: CC's 422 texts, and nothing changes.
    for (metadata, detail) in [
        (
            json!({"labels": {"a b": "x"}}),
            "Metadata label key error: 'a b' contains invalid characters",
        ),
        (
            json!({"labels": {"cloudfoundry.org/x": "y"}}),
            "Metadata label key error: prefix 'cloudfoundry.org' is reserved",
        ),
        (
            json!({"labels": {"ok": "x".repeat(64)}}),
            "Metadata label value error: 'xxxxxxxx...' is greater than 63 characters",
        ),
        (
            json!({"annotations": {"ok": "x".repeat(5001)}}),
            "Metadata annotation value error: 'xxxxxxxx...' is greater than 5000 characters",
        ),
        (
            json!({"labels": {"a/b/c": "x"}}),
            "Metadata label key error: key has more than one '/'",
        ),
        (
            json!({"tags": {}}),
            "Metadata has unexpected field(s): 'tags'",
        ),
        (json!("x"), "Metadata must be an object"),
    ] {
        let (status, v) = kiln
            .patch(
                &format!("/v3/apps/{a_guid}"),
                json!({"name": "renamed", "metadata": metadata}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(error_of(&v).2, detail);
    }
    let (_, same) = kiln.get(&format!("/v3/apps/{a_guid}")).await;
    assert_eq!(same["name"], "a");
    assert_eq!(same["metadata"], v["metadata"]);

    // Bad selectors: CC's 400.
    for (selector, detail) in [
        ("", "Missing label_selector value"),
        ("a%3Cb", "Invalid label_selector value"),
        ("a!b=c", "Invalid label_selector value"),
        (
            "cloudfoundry.org/a=b",
            "prefix 'cloudfoundry.org' is reserved",
        ),
    ] {
        let (status, v) = kiln
            .get(&format!("/v3/apps?label_selector={selector}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{selector}: {v}");
        let (code, _, got) = error_of(&v);
        assert_eq!(code, 10005);
        assert_eq!(got, format!("The query parameter is invalid: {detail}"));
    }
    kiln.stop().await;
}

#[tokio::test]
async fn a_space_developer_selects_only_in_its_space() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "sel-org").await;
    let mine = new_space(&kiln, &org, "mine").await;
    let theirs = new_space(&kiln, &org, "theirs").await;
    for (space, name) in [(&mine, "m"), (&theirs, "t")] {
        let (status, v) = kiln
            .post(
                "/v3/apps",
                json!({"name": name, "relationships": {"space": {"data": {"guid": space}}},
                       "metadata": {"labels": {"env": "prod"}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let (user, token) = new_user(&kiln, "selector-dev").await;
    grant(
        &kiln,
        &kiln.token,
        "organization_user",
        &user,
        ("organization", &org),
    )
    .await;
    grant(
        &kiln,
        &kiln.token,
        "space_developer",
        &user,
        ("space", &mine),
    )
    .await;
    let (status, v) = call(
        &kiln,
        &token,
        "GET",
        "/v3/apps?label_selector=env=prod",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&v), ["m"]);
    kiln.stop().await;
}

#[tokio::test]
async fn environment_variable_groups_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let (status, g) = kiln.get("/v3/environment_variable_groups/running").await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(g["name"], "running");
    assert_eq!(g["var"], json!({}));
    let (status, g) = kiln
        .patch(
            "/v3/environment_variable_groups/running",
            json!({"var": {"SHARED": "group", "GROUP_ONLY": "g", "GONE": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let (_, g) = kiln
        .patch(
            "/v3/environment_variable_groups/running",
            json!({"var": {"GONE": null}}),
        )
        .await;
    assert_eq!(g["var"], json!({"SHARED": "group", "GROUP_ONLY": "g"}));
    for (body, detail) in [
        (
            json!({"var": {"VCAP_X": "1"}}),
            "Var cannot start with VCAP_",
        ),
        (json!({"var": {"PORT": "1"}}), "Var cannot set PORT"),
        (
            json!({"var": {"N": 1}}),
            "Non-string value in environment variable for key 'N', value '1'",
        ),
    ] {
        let (status, v) = kiln
            .patch("/v3/environment_variable_groups/staging", body)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(error_of(&v).2, detail);
    }
    let (status, v) = kiln.get("/v3/environment_variable_groups/other").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");

    let org = new_org(&kiln, "env-org").await;
    let space = new_space(&kiln, &org, "env-space").await;
    let app = new_app(&kiln, &space, "env-app").await;
    let (status, v) = kiln
        .patch(
            &format!("/v3/apps/{app}/environment_variables"),
            json!({"var": {"SHARED": "app"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, env) = kiln.get(&format!("/v3/apps/{app}/env")).await;
    assert_eq!(
        env["running_env_json"],
        json!({"SHARED": "group", "GROUP_ONLY": "g"})
    );
    assert_eq!(env["environment_variables"], json!({"SHARED": "app"}));

    // CF refuses these names wherever an app's variables are set.
    for (key, detail) in [
        ("PORT", "cannot set PORT"),
        ("vcap_services", "cannot start with VCAP_"),
        ("VMC_X", "cannot start with VMC_"),
        ("", "key must be a minimum length of 1"),
    ] {
        let (status, v) = kiln
            .patch(
                &format!("/v3/apps/{app}/environment_variables"),
                json!({"var": {key: "1"}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(error_of(&v).2, format!("Var {detail}"));
        let (status, v) = kiln
            .post(
                "/v3/apps",
                json!({"name": "refused", "environment_variables": {key: "1"},
                       "relationships": {"space": {"data": {"guid": space}}}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(error_of(&v).2, format!("Environment variables {detail}"));
    }
    let (_, env) = kiln.get(&format!("/v3/apps/{app}/env")).await;
    assert_eq!(env["environment_variables"], json!({"SHARED": "app"}));
    let (_, apps) = kiln.get("/v3/apps?names=refused").await;
    assert_eq!(apps["pagination"]["total_results"], 0);
    kiln.stop().await;
}

#[tokio::test]
async fn feature_flags_are_listed_set_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let (status, list) = kiln.get("/v3/feature_flags?per_page=100").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let flag = |name: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(flag("user_org_creation")["enabled"], false);
    assert_eq!(flag("app_scaling")["enabled"], true);
    let (status, _) = kiln.get("/v3/feature_flags/no_such_flag").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A developer, then the flags turned off.
    let org = new_org(&kiln, "ff-org").await;
    let space = new_space(&kiln, &org, "ff-space").await;
    let app = new_app(&kiln, &space, "ff-app").await;
    let (user, token) = new_user(&kiln, "ff-dev").await;
    grant(
        &kiln,
        &kiln.token,
        "organization_user",
        &user,
        ("organization", &org),
    )
    .await;
    grant(
        &kiln,
        &kiln.token,
        "space_developer",
        &user,
        ("space", &space),
    )
    .await;
    let (status, v) = call(
        &kiln,
        &token,
        "PATCH",
        "/v3/feature_flags/app_scaling",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = kiln
        .patch(
            "/v3/feature_flags/app_scaling",
            json!({"enabled": false, "custom_error_message": "scaling is frozen"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["enabled"], false);
    assert_eq!(v["custom_error_message"], "scaling is frozen");
    assert!(v["updated_at"].is_string());
    let scale = format!("/v3/apps/{app}/processes/web/actions/scale");
    let (status, v) = call(&kiln, &token, "POST", &scale, Some(json!({"instances": 2}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        error_of(&v),
        (
            330002,
            "CF-FeatureDisabled".into(),
            "Feature Disabled: scaling is frozen".into()
        )
    );
    // Admins pass app_scaling.
    let (status, v) = kiln.post(&scale, json!({"instances": 2})).await;
    assert!(status.is_success(), "{v}");

    kiln.patch("/v3/feature_flags/task_creation", json!({"enabled": false}))
        .await;
    let (status, v) = call(
        &kiln,
        &token,
        "POST",
        &format!("/v3/apps/{app}/tasks"),
        Some(json!({"command": "true"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(error_of(&v).2, "Feature Disabled: task_creation");

    kiln.patch("/v3/feature_flags/diego_docker", json!({"enabled": false}))
        .await;
    let (status, v) = kiln
        .post(
            "/v3/apps",
            json!({"name": "img", "lifecycle": {"type": "docker", "data": {}},
                   "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(error_of(&v).2, "Feature Disabled: diego_docker");

    // user_org_creation: off refuses a user, on makes it the org's manager.
    let (status, _) = call(
        &kiln,
        &token,
        "POST",
        "/v3/organizations",
        Some(json!({"name": "by-dev"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    kiln.patch(
        "/v3/feature_flags/user_org_creation",
        json!({"enabled": true}),
    )
    .await;
    let (status, o) = call(
        &kiln,
        &token,
        "POST",
        "/v3/organizations",
        Some(json!({"name": "by-dev"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let (status, v) = call(
        &kiln,
        &token,
        "PATCH",
        &format!("/v3/organizations/{}", o["guid"].as_str().unwrap()),
        Some(json!({"name": "by-dev-renamed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let (status, v) = kiln
        .patch("/v3/feature_flags/app_scaling", json!({"enabled": "yes"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    kiln.stop().await;
}

#[tokio::test]
async fn usage_summaries_count_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "use-org").await;
    let space = new_space(&kiln, &org, "use-space").await;
    let (_, domains) = kiln.get("/v3/domains").await;
    let (status, r) = kiln
        .post(
            "/v3/routes",
            json!({"host": "use", "relationships": {"space": {"data": {"guid": space}},
                   "domain": {"data": {"guid": domains["resources"][0]["guid"]}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let (status, u) = kiln.get("/v3/info/usage_summary").await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["usage_summary"]["routes"], 1);
    assert_eq!(u["usage_summary"]["started_instances"], 0);
    assert_eq!(u["usage_summary"]["domains"], 1);
    let (status, u) = kiln
        .get(&format!("/v3/organizations/{org}/usage_summary"))
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["usage_summary"]["routes"], 1);
    assert_eq!(u["usage_summary"]["domains"], 0);
    // An org's domains are the private ones it owns.
    let private = json!({"name": "usage.example.test",
        "relationships": {"organization": {"data": {"guid": org}}}});
    let (status, d) = kiln.post("/v3/domains", private).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let (_, u) = kiln
        .get(&format!("/v3/organizations/{org}/usage_summary"))
        .await;
    assert_eq!(u["usage_summary"]["domains"], 1);
    // CC's check-route.
    let domain = domains["resources"][0]["guid"].as_str().unwrap();
    for (query, taken) in [
        ("host=use", true),
        ("host=free", false),
        ("host=use&path=/x", false),
    ] {
        let (status, v) = kiln
            .get(&format!("/v3/domains/{domain}/route_reservations?{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v, json!({"matching_route": taken}), "{query}");
    }
    let (status, _) = kiln
        .get("/v3/organizations/00000000-0000-0000-0000-000000000000/usage_summary")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kiln.stop().await;
}

/// Every `href` under `links` of a document (templated ones skipped).
fn hrefs(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(links)) = o.get("links") {
                for l in links.values() {
                    let method = l["method"].as_str().unwrap_or("GET").to_string();
                    if let Some(h) = l["href"].as_str()
                        && !h.is_empty()
                    {
                        out.push((method, h.to_string()));
                    }
                }
            }
            o.values().for_each(|v| hrefs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| hrefs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_advertised_link_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "link-org").await;
    let space = new_space(&kiln, &org, "link-space").await;
    let app = new_app(&kiln, &space, "link-app").await;
    kiln.new_package(&app).await;
    let mut todo = vec![("GET".to_string(), format!("{}/", kiln.url))];
    let mut seen = std::collections::BTreeSet::new();
    let mut broken = Vec::new();
    while let Some((method, href)) = todo.pop() {
        // Only reads are followed: an action link is checked to be routed.
        let path = href
            .strip_prefix(&kiln.url)
            .unwrap_or_else(|| panic!("a link off this server: {href}"));
        let path = if path.is_empty() { "/" } else { path }.to_string();
        if !seen.insert((method.clone(), path.clone())) || seen.len() > 400 {
            continue;
        }
        // CC's `/v3` links `resource_matches`, which only takes POST.
        if path == "/v3/resource_matches" {
            continue;
        }
        let body = (method != "GET").then(|| json!({"kiln_probe": true}));
        let (status, v) = call(&kiln, &kiln.token, &method, &path, body).await;
        let unknown = status == StatusCode::NOT_FOUND && error_of(&v).2 == "Unknown request";
        if unknown || status.is_server_error() {
            broken.push(format!("{method} {path}: {status} {v}"));
            continue;
        }
        if method == "GET" {
            let mut found = Vec::new();
            hrefs(&v, &mut found);
            todo.extend(found);
        }
    }
    assert!(seen.len() > 20, "walked only {seen:?}");
    assert!(
        broken.is_empty(),
        "advertised but not served:\n{}",
        broken.join("\n")
    );
    kiln.stop().await;
}
