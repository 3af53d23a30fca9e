//! Private domains: an org's managers create them, share them with orgs
//! they also manage, and only those orgs see them and put routes on them;
//! CC's rules and words for names, collisions, sharing and deletion.

use super::roles::{call, grant, new_org, new_space, new_user};
use super::{Kiln, PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

fn private(name: &str, org: &str) -> Value {
    json!({"name": name, "relationships": {"organization": {"data": {"guid": org}}}})
}

fn assert_error(status: StatusCode, v: &Value, want: StatusCode, detail: &str) {
    assert_eq!(status, want, "{v}");
    assert!(error_of(v).2.contains(detail), "want {detail:?}: {v}");
}

async fn route(
    kiln: &Kiln,
    token: &str,
    space: &str,
    domain: &str,
    host: &str,
) -> (StatusCode, Value) {
    let body = json!({"host": host, "relationships": {"space": {"data": {"guid": space}},
        "domain": {"data": {"guid": domain}}}});
    call(kiln, token, "POST", "/v3/routes", Some(body)).await
}

fn names(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

/// Users: a manager of org A, a developer in a space of org B.
struct World {
    org_a: String,
    org_b: String,
    space_a: String,
    space_b: String,
    manager_a: String,
    dev_b: String,
}

async fn world(kiln: &Kiln) -> World {
    let org_a = new_org(kiln, "domain-a").await;
    let org_b = new_org(kiln, "domain-b").await;
    let space_a = new_space(kiln, &org_a, "sa").await;
    let space_b = new_space(kiln, &org_b, "sb").await;
    let (mgr, manager_a) = new_user(kiln, "manager-a").await;
    let (status, v) = grant(
        kiln,
        &kiln.token,
        "organization_manager",
        &mgr,
        ("organization", &org_a),
    )
    .await;
    assert!(status.is_success(), "{v}");
    let (dev, dev_b) = new_user(kiln, "dev-b").await;
    grant(
        kiln,
        &kiln.token,
        "organization_user",
        &dev,
        ("organization", &org_b),
    )
    .await;
    let (status, v) = grant(
        kiln,
        &kiln.token,
        "space_developer",
        &dev,
        ("space", &space_b),
    )
    .await;
    assert!(status.is_success(), "{v}");
    World {
        org_a,
        org_b,
        space_a,
        space_b,
        manager_a,
        dev_b,
    }
}

#[tokio::test]
async fn private_domains_are_created_with_ccs_rules_and_words() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let w = world(&kiln).await;
    let mgr = w.manager_a.as_str();

    let (status, d) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("A.Example.test", &w.org_a)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!(d["name"], "a.example.test");
    assert_eq!(
        d["relationships"]["organization"]["data"]["guid"],
        w.org_a.as_str()
    );
    assert_eq!(
        d["relationships"]["shared_organizations"]["data"],
        json!([])
    );
    assert!(
        d["links"]["shared_organizations"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/relationships/shared_organizations")
    );
    assert_eq!(d["internal"], false);

    // Refusals, each changing nothing.
    let before =
        call(&kiln, &kiln.token, "GET", "/v3/domains", None).await.1["pagination"]["total_results"]
            .clone();
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("a.example.test", &w.org_a)),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "The domain name \"a.example.test\" is already in use",
    );
    let (s, v) = call(
        &kiln,
        &kiln.token,
        "POST",
        "/v3/domains",
        Some(private("x.a.example.test", &w.org_b)),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "The domain name \"x.a.example.test\" cannot be created because \"a.example.test\" is already reserved by another domain",
    );
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("localhost", &w.org_a)),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Name must contain at least one \".\"",
    );
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(json!({"name": 5, "relationships": {"organization": {"data": {"guid": w.org_a}}}})),
    )
    .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid type");
    let mut unknown = private("u.example.test", &w.org_a);
    unknown["wildcard"] = json!(true);
    let (s, v) = call(&kiln, mgr, "POST", "/v3/domains", Some(unknown)).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Unknown field(s): 'wildcard'",
    );
    let mut internal = private("i.example.test", &w.org_a);
    internal["internal"] = json!(true);
    let (s, v) = call(&kiln, mgr, "POST", "/v3/domains", Some(internal)).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Cannot associate an internal domain with an organization",
    );
    let r = kiln
        .http
        .post(format!("{}/v3/domains", kiln.url))
        .bearer_auth(mgr)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A shared domain is an admin's; an org the caller cannot see is CC's 422.
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(json!({"name": "shared.example.test"})),
    )
    .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "You are not authorized");
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("b.example.test", &w.org_b)),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid organization",
    );
    let (s, v) = call(
        &kiln,
        &w.dev_b,
        "POST",
        "/v3/domains",
        Some(private("b.example.test", &w.org_b)),
    )
    .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "You are not authorized");
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("c.example.test", "no-such-org")),
    )
    .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "does not exist");
    let after =
        call(&kiln, &kiln.token, "GET", "/v3/domains", None).await.1["pagination"]["total_results"]
            .clone();
    assert_eq!(before, after);

    // The flag: managers need private_domain_creation, admins do not.
    let (s, v) = kiln
        .patch(
            "/v3/feature_flags/private_domain_creation",
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("f.example.test", &w.org_a)),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::FORBIDDEN,
        "Feature Disabled: private_domain_creation",
    );
    let (s, v) = kiln
        .post("/v3/domains", private("f.example.test", &w.org_a))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, shared) = kiln
        .post(
            "/v3/domains",
            json!({"name": "shared.example.test", "metadata": {"labels": {"tier": "gold"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{shared}");
    assert_eq!(shared["relationships"]["organization"]["data"], Value::Null);
    assert_eq!(shared["metadata"]["labels"]["tier"], "gold");
    kiln.stop().await;
}

#[tokio::test]
async fn private_domains_are_seen_shared_routed_and_deleted_by_their_orgs() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let w = world(&kiln).await;
    let mgr = w.manager_a.as_str();
    let (_, d) = call(
        &kiln,
        mgr,
        "POST",
        "/v3/domains",
        Some(private("a.example.test", &w.org_a)),
    )
    .await;
    let domain = guid(&d);

    // Org B's developer neither sees it nor uses it.
    let (_, list) = call(&kiln, &w.dev_b, "GET", "/v3/domains", None).await;
    assert!(
        !names(&list).contains(&"a.example.test".to_string()),
        "{list}"
    );
    let (s, v) = call(
        &kiln,
        &w.dev_b,
        "GET",
        &format!("/v3/domains/{domain}"),
        None,
    )
    .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "Domain not found");
    let reservations = format!("/v3/domains/{domain}/route_reservations?host=www");
    let (s, v) = call(&kiln, &w.dev_b, "GET", &reservations, None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "Domain not found");
    let (s, v) = route(&kiln, &w.dev_b, &w.space_b, &domain, "www").await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid domain. Ensure that the domain exists",
    );
    // Org A's spaces take routes on it, with a host or bare.
    let (s, bare) = route(&kiln, &kiln.token, &w.space_a, &domain, "").await;
    assert_eq!(s, StatusCode::CREATED, "{bare}");
    assert_eq!(bare["url"], "a.example.test");
    let (_, list) = call(
        &kiln,
        mgr,
        "GET",
        &format!("/v3/organizations/{}/domains", w.org_a),
        None,
    )
    .await;
    assert!(
        names(&list).contains(&"a.example.test".to_string()),
        "{list}"
    );
    let (_, default) = call(
        &kiln,
        mgr,
        "GET",
        &format!("/v3/organizations/{}/domains/default", w.org_a),
        None,
    )
    .await;
    assert_eq!(
        default["relationships"]["organization"]["data"],
        Value::Null,
        "{default}"
    );

    // Sharing: only with orgs the caller manages.
    let share = format!("/v3/domains/{domain}/relationships/shared_organizations");
    let to_b = json!({"data": [{"guid": w.org_b}]});
    let (s, v) = call(&kiln, mgr, "POST", &share, Some(to_b.clone())).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "does not exist, or you do not have access to it",
    );
    let (s, v) = call(&kiln, &w.dev_b, "POST", &share, Some(to_b.clone())).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "Domain not found");
    let (s, v) = call(
        &kiln,
        mgr,
        "POST",
        &share,
        Some(json!({"data": [{"guid": w.org_a}]})),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Domain cannot be shared with owning organization.",
    );
    let (s, v) = call(&kiln, mgr, "POST", &share, Some(json!({"data": "x"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = kiln.post(&share, to_b.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!([{"guid": w.org_b}]));
    // The manager of A reads the domain but not org B: its share is hidden.
    let (_, seen) = call(&kiln, mgr, "GET", &share, None).await;
    assert_eq!(seen["data"], json!([]), "{seen}");

    // Now org B sees and uses it.
    let (s, v) = call(
        &kiln,
        &w.dev_b,
        "GET",
        &format!("/v3/domains/{domain}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["relationships"]["shared_organizations"]["data"],
        json!([{"guid": w.org_b}])
    );
    let (s, in_b) = route(&kiln, &w.dev_b, &w.space_b, &domain, "www").await;
    assert_eq!(s, StatusCode::CREATED, "{in_b}");
    let (_, r) = call(&kiln, &w.dev_b, "GET", &reservations, None).await;
    assert_eq!(r["matching_route"], true);

    // Unsharing and deleting wait for what uses the share.
    let unshare = format!("{share}/{}", w.org_b);
    let (s, v) = call(&kiln, mgr, "DELETE", &unshare, None).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "does not exist or you do not have access to it.",
    );
    let (s, v) = call(&kiln, &kiln.token, "DELETE", &unshare, None).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Delete the routes before unsharing.",
    );
    let (s, v) = call(&kiln, mgr, "DELETE", &format!("/v3/domains/{domain}"), None).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Unshare before deleting.",
    );
    let (s, v) = call(
        &kiln,
        &w.dev_b,
        "DELETE",
        &format!("/v3/domains/{domain}"),
        None,
    )
    .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "You are not authorized");
    let (s, v) = call(
        &kiln,
        &w.dev_b,
        "DELETE",
        &format!("/v3/routes/{}", guid(&in_b)),
        None,
    )
    .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = call(&kiln, mgr, "DELETE", &format!("{share}/{}", w.org_a), None).await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Ensure the domain is shared to this organization.",
    );
    let (s, v) = call(&kiln, &kiln.token, "DELETE", &unshare, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = call(
        &kiln,
        &w.dev_b,
        "GET",
        &format!("/v3/domains/{domain}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The delete takes the domain's routes with it.
    let (s, v) = call(&kiln, mgr, "DELETE", &format!("/v3/domains/{domain}"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, _) = kiln.get(&format!("/v3/routes/{}", guid(&bare))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = kiln.get(&format!("/v3/domains/{domain}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    kiln.stop().await;
}

#[tokio::test]
async fn an_org_delete_takes_its_private_domains() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "gone").await;
    let (s, d) = kiln
        .post("/v3/domains", private("gone.example.test", &org))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let (s, v) = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("/v3/organizations/{org}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, _) = kiln.get(&format!("/v3/domains/{}", guid(&d))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The name is free again.
    let other = new_org(&kiln, "next").await;
    let (s, v) = kiln
        .post("/v3/domains", private("gone.example.test", &other))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    kiln.stop().await;
}

#[tokio::test]
async fn a_private_domains_metadata_is_changed_by_its_orgs_managers() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let w = world(&kiln).await;
    let (s, d) = kiln
        .post("/v3/domains", private("labels.example.test", &w.org_a))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let path = format!("/v3/domains/{}", guid(&d));
    let labels = json!({"metadata": {"labels": {"team": "a"}}});
    let (s, v) = call(&kiln, &w.manager_a, "PATCH", &path, Some(labels.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["labels"]["team"], "a", "{v}");
    // A bad body from who may is CC's 422, and changes nothing.
    let bad = json!({"metadata": {"labels": "team"}});
    let (s, v) = call(&kiln, &w.manager_a, "PATCH", &path, Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = call(
        &kiln,
        &w.manager_a,
        "PATCH",
        &path,
        Some(json!({"name": "x"})),
    )
    .await;
    assert_error(
        s,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Unknown field(s): 'name'",
    );
    // Who cannot see it learns nothing; a shared domain is the admins'.
    let (s, v) = call(&kiln, &w.dev_b, "PATCH", &path, Some(labels.clone())).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "Domain not found");
    let (_, shared) = kiln.get("/v3/domains?names=localhost").await;
    let shared = format!("/v3/domains/{}", guid(&shared["resources"][0]));
    let (s, v) = call(&kiln, &w.manager_a, "PATCH", &shared, Some(labels)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (_, v) = kiln.get(&path).await;
    assert_eq!(v["metadata"]["labels"], json!({"team": "a"}), "{v}");
    kiln.stop().await;
}

#[tokio::test]
async fn a_public_suffix_is_no_private_domain() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let w = world(&kiln).await;
    for name in ["github.io", "co.uk"] {
        let body = Some(private(name, &w.org_a));
        let (s, v) = call(&kiln, &w.manager_a, "POST", "/v3/domains", body).await;
        assert_error(
            s,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "The \"{name}\" domain is reserved and cannot be used for org-scoped domains."
            ),
        );
        let (_, l) = kiln.get(&format!("/v3/domains?names={name}")).await;
        assert_eq!(l["pagination"]["total_results"], 0, "{l}");
    }
    let body = Some(private("mine.github.io", &w.org_a));
    let (s, v) = call(&kiln, &w.manager_a, "POST", "/v3/domains", body).await;
    assert_eq!(s, StatusCode::CREATED, "a name under a suffix is free: {v}");
    kiln.stop().await;
}
