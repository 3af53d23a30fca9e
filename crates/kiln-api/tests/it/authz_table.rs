//! The authorization table: every authenticated route × each role × a
//! resource in the caller's own space (or org) and one in a foreign org,
//! with the answer expected. The routes are read from `Api::router()`'s
//! source, so a new route fails `every_route_is_in_the_table` until it has
//! a row.
//!
//! Expectations: `Y` the route's rule lets the caller through (the handler
//! answered: not 401/403, not the target's 404, not CC's 422 for an
//! invisible relationship); `F` 403 (CF-NotAuthorized 10003 in CF's
//! envelope); `D` 404 `<Resource> not found`; `U` 422 "Invalid <thing>.
//! Ensure that the <thing> exists and you have access to it." (a create
//! naming what the caller cannot see). Mutations that the caller may make
//! carry an unknown field, so the handler refuses them and nothing changes;
//! a delete the caller may make gets a fresh resource of its own.

use super::roles::{call, grant, new_app, new_org, new_space, new_user};
use super::{Kiln, PASSWORD, error_of, stage, staging_result, start, zip_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The roles, in the order of a row's `own` column: space developer,
/// auditor and supporter of the own space, manager of the own org, and a
/// plain member (organization_user) of it.
const ROLES: [&str; 5] = [
    "space_developer",
    "space_auditor",
    "space_supporter",
    "organization_manager",
    "organization_user",
];

/// (method, route, own space's expectations by role, foreign expectation).
const TABLE: &[(&str, &str, &str, char)] = &[
    ("GET", "/v3/organizations", "YYYYY", 'Y'),
    ("POST", "/v3/organizations", "FFFFF", 'F'),
    ("GET", "/v3/organizations/{guid}", "YYYYY", 'D'),
    ("PATCH", "/v3/organizations/{guid}", "FFFYF", 'D'),
    ("DELETE", "/v3/organizations/{guid}", "FFFFF", 'D'),
    ("GET", "/v3/organizations/{guid}/domains", "YYYYY", 'D'),
    (
        "GET",
        "/v3/organizations/{guid}/domains/default",
        "YYYYY",
        'D',
    ),
    ("GET", "/v3/spaces", "YYYYY", 'Y'),
    ("POST", "/v3/spaces", "FFFYF", 'U'),
    ("GET", "/v3/spaces/{guid}", "YYYYD", 'D'),
    ("GET", "/v3/spaces/{guid}/features", "YYYYD", 'D'),
    ("GET", "/v3/spaces/{guid}/features/{name}", "YYYYD", 'D'),
    ("PATCH", "/v3/spaces/{guid}/features/{name}", "FFFYD", 'D'),
    ("PATCH", "/v3/spaces/{guid}", "FFFYD", 'D'),
    ("DELETE", "/v3/spaces/{guid}", "FFFYD", 'D'),
    ("POST", "/v3/spaces/{guid}/manifest_diff", "YFFFD", 'D'),
    (
        "POST",
        "/v3/spaces/{guid}/actions/apply_manifest",
        "YFFFD",
        'D',
    ),
    ("GET", "/v3/domains", "YYYYY", 'Y'),
    // A side's domain is a private domain of its org.
    ("POST", "/v3/domains", "FFFYF", 'U'),
    ("GET", "/v3/domains/{guid}", "YYYYY", 'D'),
    ("DELETE", "/v3/domains/{guid}", "FFFYF", 'D'),
    (
        "GET",
        "/v3/domains/{guid}/relationships/shared_organizations",
        "YYYYY",
        'D',
    ),
    (
        "POST",
        "/v3/domains/{guid}/relationships/shared_organizations",
        "FFFYF",
        'D',
    ),
    (
        "DELETE",
        "/v3/domains/{guid}/relationships/shared_organizations/{org_guid}",
        "FFFYF",
        'D',
    ),
    ("GET", "/v3/stacks", "YYYYY", 'Y'),
    ("GET", "/v3/stacks/{guid}", "YYYYY", 'Y'),
    ("GET", "/v3/jobs/{guid}", "YYYYY", 'Y'),
    ("GET", "/v3/feature_flags", "YYYYY", 'Y'),
    ("GET", "/v3/deployments", "YYYYY", 'Y'),
    ("POST", "/v3/deployments", "YFYFU", 'U'),
    ("GET", "/v3/deployments/{guid}", "YYYYD", 'D'),
    (
        "POST",
        "/v3/deployments/{guid}/actions/cancel",
        "YFYFD",
        'D',
    ),
    (
        "POST",
        "/v3/deployments/{guid}/actions/continue",
        "YFYFD",
        'D',
    ),
    ("GET", "/v3/revisions/{guid}", "YYYYD", 'D'),
    (
        "GET",
        "/v3/revisions/{guid}/environment_variables",
        "YFFFD",
        'D',
    ),
    ("GET", "/v3/buildpacks", "YYYYY", 'Y'),
    ("POST", "/v3/buildpacks", "FFFFF", 'F'),
    ("GET", "/v3/buildpacks/{guid}", "YYYYY", 'Y'),
    ("PATCH", "/v3/buildpacks/{guid}", "FFFFF", 'F'),
    ("DELETE", "/v3/buildpacks/{guid}", "FFFFF", 'F'),
    ("GET", "/v3/apps/{guid}/features", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/features/{name}", "YYYYD", 'D'),
    ("PATCH", "/v3/apps/{guid}/features/{name}", "YFFFD", 'D'),
    ("GET", "/v3/apps/{guid}/ssh_enabled", "YYYYD", 'D'),
    ("POST", "/v3/buildpacks/{guid}/upload", "FFFFF", 'F'),
    ("GET", "/v3/apps", "YYYYY", 'Y'),
    ("POST", "/v3/apps", "YFFFU", 'U'),
    ("GET", "/v3/apps/{guid}", "YYYYD", 'D'),
    ("PATCH", "/v3/apps/{guid}", "YFFFD", 'D'),
    ("DELETE", "/v3/apps/{guid}", "YFFFD", 'D'),
    ("POST", "/v3/apps/{guid}/actions/start", "YFYFD", 'D'),
    ("POST", "/v3/apps/{guid}/actions/stop", "YFYFD", 'D'),
    ("POST", "/v3/apps/{guid}/actions/restart", "YFYFD", 'D'),
    (
        "GET",
        "/v3/apps/{guid}/relationships/current_droplet",
        "YYYYD",
        'D',
    ),
    (
        "PATCH",
        "/v3/apps/{guid}/relationships/current_droplet",
        "YFFFD",
        'D',
    ),
    ("GET", "/v3/apps/{guid}/droplets/current", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/processes", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/processes/{ptype}", "YYYYD", 'D'),
    (
        "POST",
        "/v3/apps/{guid}/processes/{ptype}/actions/scale",
        "YFYFD",
        'D',
    ),
    ("GET", "/v3/apps/{guid}/routes", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/packages", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/droplets", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/builds", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/env", "YFFFD", 'D'),
    ("GET", "/v3/apps/{guid}/revisions", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/environment_variables", "YFFFD", 'D'),
    (
        "PATCH",
        "/v3/apps/{guid}/environment_variables",
        "YFFFD",
        'D',
    ),
    ("GET", "/v3/processes", "YYYYY", 'Y'),
    ("GET", "/v3/processes/{guid}", "YYYYD", 'D'),
    ("PATCH", "/v3/processes/{guid}", "YFFFD", 'D'),
    ("GET", "/v3/processes/{guid}/stats", "YYYYD", 'D'),
    ("POST", "/v3/processes/{guid}/actions/scale", "YFYFD", 'D'),
    ("GET", "/v3/processes/{guid}/sidecars", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/sidecars", "YYYYD", 'D'),
    ("POST", "/v3/apps/{guid}/sidecars", "YFFFD", 'D'),
    ("GET", "/v3/sidecars/{guid}", "YYYYD", 'D'),
    ("PATCH", "/v3/sidecars/{guid}", "YFFFD", 'D'),
    ("DELETE", "/v3/sidecars/{guid}", "YFFFD", 'D'),
    ("GET", "/v3/packages", "YYYYY", 'Y'),
    ("POST", "/v3/packages", "YFFFU", 'U'),
    ("GET", "/v3/packages/{guid}", "YYYYD", 'D'),
    ("GET", "/v3/packages/{guid}/droplets", "YYYYD", 'D'),
    ("POST", "/v3/packages/{guid}/upload", "YFFFD", 'D'),
    ("POST", "/v3/resource_matches", "YYYYY", 'Y'),
    ("GET", "/v3/builds", "YYYYY", 'Y'),
    ("POST", "/v3/builds", "YFYFU", 'U'),
    ("GET", "/v3/builds/{guid}", "YYYYD", 'D'),
    ("GET", "/v3/droplets", "YYYYY", 'Y'),
    ("GET", "/v3/droplets/{guid}", "YYYYD", 'D'),
    ("POST", "/v3/droplets", "YFFFU", 'U'),
    ("POST", "/v3/droplets/{guid}/upload", "YFFFD", 'D'),
    ("GET", "/v3/droplets/{guid}/download", "YFFFD", 'D'),
    ("GET", "/v3/routes", "YYYYY", 'Y'),
    ("POST", "/v3/routes", "YFFFU", 'U'),
    ("GET", "/v3/routes/{guid}", "YYYYD", 'D'),
    ("DELETE", "/v3/routes/{guid}", "YFFFD", 'D'),
    ("GET", "/v3/routes/{guid}/destinations", "YYYYD", 'D'),
    ("POST", "/v3/routes/{guid}/destinations", "YFFFD", 'D'),
    (
        "DELETE",
        "/v3/routes/{guid}/destinations/{dguid}",
        "YFFFD",
        'D',
    ),
    // Labels and annotations, settings, usage (issue 14).
    ("PATCH", "/v3/packages/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/builds/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/droplets/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/routes/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/deployments/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/revisions/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/tasks/{guid}", "YFFFD", 'D'),
    ("PATCH", "/v3/domains/{guid}", "FFFYF", 'D'),
    ("PATCH", "/v3/stacks/{guid}", "FFFFF", 'F'),
    ("PATCH", "/v3/users/{guid}", "FFFFF", 'F'),
    ("GET", "/v3/feature_flags/{name}", "YYYYY", 'Y'),
    ("PATCH", "/v3/feature_flags/{name}", "FFFFF", 'F'),
    (
        "GET",
        "/v3/environment_variable_groups/{name}",
        "YYYYY",
        'Y',
    ),
    (
        "PATCH",
        "/v3/environment_variable_groups/{name}",
        "FFFFF",
        'F',
    ),
    ("GET", "/v3/info/usage_summary", "FFFFF", 'F'),
    (
        "GET",
        "/v3/organizations/{guid}/usage_summary",
        "YYYYY",
        'D',
    ),
    ("GET", "/v3/domains/{guid}/route_reservations", "YYYYY", 'D'),
    ("GET", "/v3/packages/{guid}/download", "YFFFD", 'D'),
    ("GET", "/v3/apps/{guid}/revisions/deployed", "YYYYD", 'D'),
    ("GET", "/v3/apps/{guid}/manifest", "YFFFD", 'D'),
    (
        "POST",
        "/v3/apps/{guid}/actions/clear_buildpack_cache",
        "YFFFD",
        'D',
    ),
    ("GET", "/v3/apps/{guid}/tasks", "YYYYD", 'D'),
    ("POST", "/v3/apps/{guid}/tasks", "YFFFD", 'D'),
    ("GET", "/v3/tasks", "YYYYY", 'Y'),
    ("GET", "/v3/tasks/{guid}", "YYYYD", 'D'),
    ("POST", "/v3/tasks/{guid}/actions/cancel", "YFFFD", 'D'),
    ("PUT", "/v3/tasks/{guid}/cancel", "YFFFD", 'D'),
    ("GET", "/v3/audit_events", "YYYYY", 'Y'),
    ("GET", "/v3/audit_events/{guid}", "YYYYD", 'D'),
    ("GET", "/v3/service_instances", "YYYYY", 'Y'),
    ("POST", "/v3/service_instances", "YFFFU", 'U'),
    ("GET", "/v3/service_instances/{guid}", "YYYYD", 'D'),
    ("PATCH", "/v3/service_instances/{guid}", "YFFFD", 'D'),
    ("DELETE", "/v3/service_instances/{guid}", "YFFFD", 'D'),
    (
        "GET",
        "/v3/service_instances/{guid}/credentials",
        "YFFFD",
        'D',
    ),
    ("GET", "/v3/service_credential_bindings", "YYYYY", 'Y'),
    ("POST", "/v3/service_credential_bindings", "YFFFU", 'U'),
    (
        "GET",
        "/v3/service_credential_bindings/{guid}",
        "YYYYD",
        'D',
    ),
    (
        "DELETE",
        "/v3/service_credential_bindings/{guid}",
        "YFFFD",
        'D',
    ),
    (
        "GET",
        "/v3/service_credential_bindings/{guid}/details",
        "YDDDD",
        'D',
    ),
    (
        "GET",
        "/v3/service_credential_bindings/{guid}/parameters",
        "YYYYD",
        'D',
    ),
    ("GET", "/v3/organization_quotas", "YYYYY", 'Y'),
    ("POST", "/v3/organization_quotas", "FFFFF", 'F'),
    ("GET", "/v3/organization_quotas/{guid}", "YYYYY", 'Y'),
    ("PATCH", "/v3/organization_quotas/{guid}", "FFFFF", 'F'),
    ("DELETE", "/v3/organization_quotas/{guid}", "FFFFF", 'F'),
    (
        "POST",
        "/v3/organization_quotas/{guid}/relationships/organizations",
        "FFFFF",
        'F',
    ),
    // A side's space quota is its org's, applied to its space: seen by the
    // space's members and the org's managers, changed by the managers.
    ("GET", "/v3/space_quotas", "YYYYY", 'Y'),
    ("POST", "/v3/space_quotas", "FFFYF", 'U'),
    ("GET", "/v3/space_quotas/{guid}", "YYYYD", 'D'),
    ("PATCH", "/v3/space_quotas/{guid}", "FFFYD", 'D'),
    ("DELETE", "/v3/space_quotas/{guid}", "FFFYD", 'D'),
    (
        "POST",
        "/v3/space_quotas/{guid}/relationships/spaces",
        "FFFYD",
        'D',
    ),
    (
        "DELETE",
        "/v3/space_quotas/{guid}/relationships/spaces/{space_guid}",
        "FFFYD",
        'D',
    ),
    ("POST", "/Users", "FFFFF", 'F'),
    ("PUT", "/Users/{guid}/password", "FFFFF", 'F'),
    ("GET", "/v3/users", "YYYYY", 'Y'),
    ("POST", "/v3/users", "FFFFF", 'F'),
    ("GET", "/v3/users/{guid}", "YYYYY", 'D'),
    ("DELETE", "/v3/users/{guid}", "FFFFF", 'F'),
    ("GET", "/v3/roles", "YYYYY", 'Y'),
    ("POST", "/v3/roles", "YYYYY", 'Y'),
    ("GET", "/v3/roles/{guid}", "YYYYD", 'D'),
    ("DELETE", "/v3/roles/{guid}", "FFFYD", 'D'),
    ("GET", "/api/v1/read/{source_id}", "YYYYD", 'D'),
];

/// Routes served without a token (UAA's token endpoint, discovery, the
/// signed `/internal/v4` URLs cells use).
fn is_open(path: &str) -> bool {
    [
        "/",
        "/v3",
        "/v3/info",
        "/login",
        "/oauth/token",
        "/api/v1/info",
    ]
    .contains(&path)
        || path.starts_with("/internal/")
}

/// Every (method, path) `Api::router()` routes, read from its source.
fn routed() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let mut out = Vec::new();
    for chunk in src.split(".route(").skip(1) {
        let chunk = chunk.split(".route").next().unwrap();
        let path = chunk.split('"').nth(1).unwrap().to_string();
        for m in ["get", "post", "patch", "put", "delete"] {
            let needle = format!("{m}(");
            let called = chunk.match_indices(&needle).any(|(i, _)| {
                i == 0 || !chunk[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
            if called {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_in_the_table() {
    let routes = routed();
    assert!(routes.len() > 80, "the source reader found only {routes:?}");
    let missing: Vec<_> = routes
        .iter()
        .filter(|(m, p)| !is_open(p) && !TABLE.iter().any(|(tm, tp, ..)| tm == m && tp == p))
        .collect();
    assert!(
        missing.is_empty(),
        "routes with no row in the authorization table: {missing:#?}"
    );
    let stale: Vec<_> = TABLE
        .iter()
        .filter(|(m, p, ..)| !routes.iter().any(|(rm, rp)| rm == m && rp == p))
        .collect();
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:#?}"
    );
}

/// The guids a side (own or foreign) offers, by the route's collection.
type Side = BTreeMap<&'static str, String>;

/// An org, a space, and a staged, deployed app with a route in it; a role
/// and a user there.
async fn side(kiln: &Kiln, name: &str, result: &str, domain: &str) -> Side {
    let org = new_org(kiln, &format!("{name}-org")).await;
    let space = new_space(kiln, &org, &format!("{name}-space")).await;
    let app = new_app(kiln, &space, &format!("{name}-app")).await;
    let pkg = kiln.new_package(&app).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let build = stage(kiln, &pkg, Ok(result)).await;
    let droplet = build["droplet"]["guid"].as_str().unwrap().to_string();
    let (status, d) = kiln
        .post(
            "/v3/deployments",
            json!({"droplet": {"guid": droplet}, "relationships": {"app": {"data": {"guid": app}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let (_, web) = kiln.get(&format!("/v3/apps/{app}/processes/web")).await;
    let (status, route) = kiln
        .post(
            "/v3/routes",
            json!({"host": name, "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{route}");
    let (status, task) = kiln
        .post(&format!("/v3/apps/{app}/tasks"), json!({"command": "true"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let (_, events) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={app}&types=audit.app.create"
        ))
        .await;
    let event = events["resources"][0]["guid"].as_str().unwrap().to_string();
    let (user, _) = new_user(kiln, &format!("{name}-member")).await;
    grant(
        kiln,
        &kiln.token,
        "organization_user",
        &user,
        ("organization", &org),
    )
    .await;
    let (_, role) = grant(kiln, &kiln.token, "space_auditor", &user, ("space", &space)).await;
    let instance = new_instance(kiln, &space, &format!("{name}-db")).await;
    let binding = new_binding(kiln, &app, &instance).await;
    let sidecar = new_sidecar(kiln, &app, &format!("{name}-sidecar")).await;
    let private = new_private_domain(kiln, &org, &format!("{name}.private.test")).await;
    let space_quota = new_space_quota(kiln, &org, &format!("{name}-quota"), &[&space]).await;
    let s = |v: &Value| v["guid"].as_str().unwrap().to_string();
    BTreeMap::from([
        ("domains", private),
        ("organizations", org),
        ("spaces", space),
        ("apps", app.clone()),
        ("read", app),
        ("packages", pkg),
        ("builds", s(&build)),
        ("droplets", droplet),
        ("deployments", s(&d)),
        (
            "revisions",
            d["revision"]["guid"].as_str().unwrap().to_string(),
        ),
        ("processes", s(&web)),
        ("routes", s(&route)),
        ("roles", s(&role)),
        ("tasks", s(&task)),
        ("audit_events", event),
        ("users", user.clone()),
        ("Users", user),
        ("service_instances", instance),
        ("service_credential_bindings", binding),
        ("sidecars", sidecar),
        ("space_quotas", space_quota),
    ])
}

/// A space quota of `org` on `spaces`, made by the admin.
async fn new_space_quota(kiln: &Kiln, org: &str, name: &str, spaces: &[&str]) -> String {
    let spaces: Vec<Value> = spaces.iter().map(|s| json!({"guid": s})).collect();
    let (status, q) = kiln
        .post(
            "/v3/space_quotas",
            json!({"name": name, "relationships": {"organization": {"data": {"guid": org}},
                "spaces": {"data": spaces}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    q["guid"].as_str().unwrap().to_string()
}

/// A sidecar of `app`'s web processes, made by the admin.
async fn new_sidecar(kiln: &Kiln, app: &str, name: &str) -> String {
    let (status, s) = kiln
        .post(
            &format!("/v3/apps/{app}/sidecars"),
            json!({"name": name, "command": "true", "process_types": ["web"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s["guid"].as_str().unwrap().to_string()
}

/// A private domain of `org`, made by the admin.
async fn new_private_domain(kiln: &Kiln, org: &str, name: &str) -> String {
    let (status, d) = kiln
        .post(
            "/v3/domains",
            json!({"name": name, "relationships": {"organization": {"data": {"guid": org}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    d["guid"].as_str().unwrap().to_string()
}

/// A user-provided service instance in `space`, made by the admin.
async fn new_instance(kiln: &Kiln, space: &str, name: &str) -> String {
    let (status, si) = kiln
        .post(
            "/v3/service_instances",
            json!({"type": "user-provided", "name": name, "credentials": {"k": "v"},
                "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{si}");
    si["guid"].as_str().unwrap().to_string()
}

/// A binding of `instance` to `app`, made by the admin.
async fn new_binding(kiln: &Kiln, app: &str, instance: &str) -> String {
    let (status, b) = kiln
        .post(
            "/v3/service_credential_bindings",
            json!({"type": "app", "relationships": {"app": {"data": {"guid": app}},
                "service_instance": {"data": {"guid": instance}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    b["guid"].as_str().unwrap().to_string()
}

/// The collection a route's `{guid}` belongs to.
fn collection(route: &str) -> &str {
    let mut parts = route.trim_start_matches('/').split('/');
    match parts.next() {
        Some("v3") => parts.next().unwrap(),
        Some("api") => "read",
        Some(other) => other,
        None => "",
    }
}

fn is_destructive(method: &str, route: &str) -> bool {
    method == "DELETE" && route.matches('{').count() == 1
}

/// A fresh thing for a delete the caller may make, where the caller's role
/// still applies (in the own space or org).
async fn fresh(kiln: &Kiln, route: &str, own: &Side, n: usize) -> String {
    let space = &own["spaces"];
    match collection(route) {
        "apps" => new_app(kiln, space, &format!("fresh-{n}")).await,
        "spaces" => new_space(kiln, &own["organizations"], &format!("fresh-{n}")).await,
        "organizations" => new_org(kiln, &format!("fresh-{n}")).await,
        "users" => new_user(kiln, &format!("fresh-{n}")).await.0,
        "routes" => {
            let (_, domains) = kiln.get("/v3/domains").await;
            let (_, r) = kiln
                .post(
                    "/v3/routes",
                    json!({"host": format!("fresh-{n}"), "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domains["resources"][0]["guid"]}}}}),
                )
                .await;
            r["guid"].as_str().unwrap().to_string()
        }
        "roles" => {
            let (user, _) = new_user(kiln, &format!("fresh-{n}")).await;
            grant(
                kiln,
                &kiln.token,
                "organization_user",
                &user,
                ("organization", &own["organizations"]),
            )
            .await;
            let (_, r) = grant(kiln, &kiln.token, "space_auditor", &user, ("space", space)).await;
            r["guid"].as_str().unwrap().to_string()
        }
        "service_instances" => new_instance(kiln, space, &format!("fresh-{n}")).await,
        "sidecars" => {
            let app = new_app(kiln, space, &format!("fresh-{n}")).await;
            new_sidecar(kiln, &app, &format!("fresh-{n}")).await
        }
        "domains" => {
            let name = format!("fresh-{n}.own.test");
            new_private_domain(kiln, &own["organizations"], &name).await
        }
        "organization_quotas" => {
            let (_, q) = kiln
                .post(
                    "/v3/organization_quotas",
                    json!({"name": format!("fresh-{n}")}),
                )
                .await;
            q["guid"].as_str().unwrap().to_string()
        }
        "space_quotas" => {
            new_space_quota(kiln, &own["organizations"], &format!("fresh-{n}"), &[]).await
        }
        "service_credential_bindings" => {
            let app = new_app(kiln, space, &format!("fresh-{n}")).await;
            let si = new_instance(kiln, space, &format!("fresh-{n}")).await;
            new_binding(kiln, &app, &si).await
        }
        "buildpacks" => {
            let (_, b) = kiln
                .post("/v3/buildpacks", json!({"name": format!("fresh-{n}")}))
                .await;
            b["guid"].as_str().unwrap().to_string()
        }
        other => panic!("no fresh {other}"),
    }
}

/// The request body: a create's relationship to the side's thing, and an
/// unknown field so an allowed request changes nothing.
fn body(method: &str, route: &str, s: &Side) -> Option<Value> {
    if method == "GET" || method == "DELETE" {
        return None;
    }
    let rel =
        |k: &str, g: &str| json!({"relationships": {k: {"data": {"guid": g}}}, "kiln_probe": true});
    Some(match route {
        "/v3/spaces" | "/v3/domains" | "/v3/space_quotas" => {
            rel("organization", &s["organizations"])
        }
        "/v3/apps" | "/v3/routes" | "/v3/service_instances" => rel("space", &s["spaces"]),
        "/v3/packages" | "/v3/deployments" | "/v3/service_credential_bindings" | "/v3/droplets" => {
            rel("app", &s["apps"])
        }
        "/v3/builds" => json!({"package": {"guid": s["packages"]}, "kiln_probe": true}),
        "/Users/{guid}/password" => json!({"oldPassword": "pw-1", "password": "pw-2"}),
        _ => json!({"kiln_probe": true}),
    })
}

fn path_of(route: &str, guid: &str) -> String {
    route
        .replacen("{guid}", guid, 1)
        .replacen("{source_id}", guid, 1)
        .replacen("{name}", guid, 1)
        .replace("{ptype}", "web")
        .replace("{name}", "ssh")
        .replace("{dguid}", "00000000-0000-0000-0000-000000000000")
        .replace("{space_guid}", "00000000-0000-0000-0000-000000000000")
}

fn resource_of(route: &str) -> &'static str {
    match collection(route) {
        "organizations" => "Organization",
        "spaces" => "Space",
        "apps" | "read" => "App",
        "processes" => "Process",
        "packages" => "Package",
        "builds" => "Build",
        "droplets" => "Droplet",
        "routes" => "Route",
        "deployments" => "Deployment",
        "revisions" => "Revision",
        "roles" => "Role",
        "users" => "User",
        "tasks" => "Task",
        "audit_events" => "Event",
        "domains" => "Domain",
        "service_instances" => "Service instance",
        "service_credential_bindings" => "Service credential binding",
        "organization_quotas" => "Organization quota",
        "space_quotas" => "Space quota",
        "sidecars" => "Sidecar",
        _ => "-",
    }
}

/// Whether the answer is the expectation; `Err` says what came instead.
fn holds(expect: char, route: &str, status: StatusCode, v: &Value) -> Result<(), String> {
    let (code, _, detail) = if v.get("errors").is_some() {
        error_of(v)
    } else {
        (0, String::new(), String::new())
    };
    let hidden =
        status == StatusCode::NOT_FOUND && detail == format!("{} not found", resource_of(route));
    let invisible =
        status == StatusCode::UNPROCESSABLE_ENTITY && detail.contains("Ensure that the");
    let ok = match expect {
        'Y' => !matches!(status.as_u16(), 401 | 403) && !hidden && !invisible,
        'F' => status == StatusCode::FORBIDDEN && (code == 0 || code == 10003),
        'D' => hidden && code == 10010,
        'U' => invisible,
        other => panic!("unknown expectation {other}"),
    };
    ok.then_some(()).ok_or_else(|| format!("{status} {v}"))
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let (_, domains) = kiln.get("/v3/domains").await;
    let domain = domains["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let own = side(&kiln, "own", &result, &domain).await;
    let foreign = side(&kiln, "far", &result, &domain).await;
    // Shared things anyone reads.
    let (_, stacks) = kiln.get("/v3/stacks").await;
    let r = kiln
        .http
        .delete(format!(
            "{}/v3/apps/{}",
            kiln.url,
            new_app(&kiln, &foreign["spaces"], "gone").await
        ))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    let job = r.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let mut shared = Side::new();
    shared.insert("domains", domain);
    shared.insert(
        "stacks",
        stacks["resources"][0]["guid"].as_str().unwrap().to_string(),
    );
    shared.insert("buildpacks", bp["guid"].as_str().unwrap().to_string());
    shared.insert("jobs", job);
    // An unused quota: an admin's allowed delete removes it.
    let (status, quota) = kiln
        .post("/v3/organization_quotas", json!({"name": "probe-quota"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{quota}");
    shared.insert(
        "organization_quotas",
        quota["guid"].as_str().unwrap().to_string(),
    );
    shared.insert("feature_flags", "app_scaling".into());
    shared.insert("environment_variable_groups", "running".into());

    // The callers, each with one role on the own side.
    let mut callers = Vec::new();
    for role in ROLES {
        let (user, token) = new_user(&kiln, role).await;
        let org = &own["organizations"];
        if role != "organization_manager" {
            grant(
                &kiln,
                &kiln.token,
                "organization_user",
                &user,
                ("organization", org),
            )
            .await;
        }
        let (status, r) = if role.starts_with("space_") {
            grant(&kiln, &kiln.token, role, &user, ("space", &own["spaces"])).await
        } else {
            grant(&kiln, &kiln.token, role, &user, ("organization", org)).await
        };
        assert!(status.is_success() || role == "organization_user", "{r}");
        callers.push(token);
    }

    let mut failures = Vec::new();
    let mut n = 0;
    let guid_of = |s: &Side, route: &str| {
        let c = collection(route);
        s.get(c).or(shared.get(c)).cloned().unwrap_or_default()
    };
    for (method, route, expected, far) in TABLE {
        let cases = ROLES
            .iter()
            .zip(expected.chars())
            .zip(&callers)
            .map(|((role, e), token)| (*role, e, token.as_str()))
            .chain(std::iter::once(("admin", 'Y', kiln.token.as_str())));
        for (role, expect, token) in cases {
            // Own side, with a fresh target when an allowed delete would
            // remove the fixture.
            n += 1;
            let target = if expect == 'Y' && is_destructive(method, route) {
                fresh(&kiln, route, &own, n).await
            } else {
                guid_of(&own, route)
            };
            let (status, v) = call(
                &kiln,
                token,
                method,
                &path_of(route, &target).replace("{org_guid}", &own["organizations"]),
                body(method, route, &own),
            )
            .await;
            if let Err(got) = holds(expect, route, status, &v) {
                failures.push(format!(
                    "{method} {route} as {role} (own): expected {expect}, got {got}"
                ));
            }
            if role == "admin" {
                continue;
            }
            let (status, v) = call(
                &kiln,
                token,
                method,
                &path_of(route, &guid_of(&foreign, route))
                    .replace("{org_guid}", &foreign["organizations"]),
                body(method, route, &foreign),
            )
            .await;
            if let Err(got) = holds(*far, route, status, &v) {
                failures.push(format!(
                    "{method} {route} as {role} (foreign): expected {far}, got {got}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    kiln.stop().await;
}
