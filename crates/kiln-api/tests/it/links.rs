//! Every link Kiln advertises is served: from `GET /` and `GET /v3`, and
//! from the `links` of every resource a push-and-bind flow makes (and of
//! what those links lead to), no link is answered by the router's
//! fallback (CF-NotFound "Unknown request", 10000: no route for the path
//! or its method). A resource that is not there (an app's current droplet
//! before it has one) is CC's ResourceNotFound, which is allowed.

use super::{Kiln, PASSWORD, error_of, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, VecDeque};

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

/// A pushed app with a route, a bound user-provided service, a task, a
/// sidecar, a role and quotas: resources of every kind the flow makes.
async fn push_and_bind(kiln: &Kiln) {
    let bp = guid(&kiln.create_buildpack("python", None).await);
    let app = guid(&kiln.create_app("walked", None).await);
    super::droplet_made_current(kiln, &app, &bp).await;
    let space = kiln.space_guid().await;
    let (_, domains) = kiln.get("/v3/domains").await;
    let domain = guid(&domains["resources"][0]);
    let made = [
        (
            "/v3/routes",
            json!({"host": "walked", "relationships": {"space": {"data": {"guid": space}},
                "domain": {"data": {"guid": domain}}}}),
        ),
        (
            "/v3/service_instances",
            json!({"type": "user-provided", "name": "db", "credentials": {"u": "p"},
                "relationships": {"space": {"data": {"guid": space}}}}),
        ),
        (
            &format!("/v3/apps/{app}/tasks"),
            json!({"command": "echo hi"}),
        ),
        (
            &format!("/v3/apps/{app}/sidecars"),
            json!({"name": "side", "command": "sleep 1", "process_types": ["web"]}),
        ),
        ("/v3/organization_quotas", json!({"name": "walked"})),
    ];
    let mut guids = Vec::new();
    for (path, body) in made {
        let (status, v) = kiln.post(path, body).await;
        assert!(status.is_success(), "{path}: {status} {v}");
        guids.push(guid(&v));
    }
    let (route, si) = (&guids[0], &guids[1]);
    let (status, v) = kiln
        .post(
            &format!("/v3/routes/{route}/destinations"),
            json!({"destinations": [{"app": {"guid": app}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = kiln
        .post(
            "/v3/service_credential_bindings",
            json!({"type": "app", "relationships": {"app": {"data": {"guid": app}},
                "service_instance": {"data": {"guid": si}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (_, orgs) = kiln.get("/v3/organizations").await;
    let org = guid(&orgs["resources"][0]);
    let (status, v) = kiln
        .post(
            "/v3/space_quotas",
            json!({"name": "walked", "relationships": {"organization": {"data": {"guid": org}},
                "spaces": {"data": [{"guid": space}]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Every `links` entry anywhere in `v`: (method, path below `base`).
fn links_in(base: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(links)) = map.get("links") {
                for link in links.values() {
                    let Some(href) = link["href"].as_str() else {
                        continue;
                    };
                    // Only links into this API (`support` is empty, the UAA
                    // and log cache are this server too).
                    let Some(path) = href.strip_prefix(base) else {
                        continue;
                    };
                    let method = link["method"].as_str().unwrap_or("GET");
                    let path = if path.is_empty() { "/" } else { path };
                    out.push((method.to_string(), path.to_string()));
                }
            }
            for (k, inner) in map {
                if k != "links" {
                    links_in(base, inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| links_in(base, i, out)),
        _ => {}
    }
}

/// Links CC's root advertises without a method although only POST is
/// routed (as in CC: `GET /v3/resource_matches` is its "Unknown request").
const POST_ONLY: [&str; 1] = ["/v3/resource_matches"];

/// Calls `method path`. A link with a method other than GET gets a body
/// that is not JSON, so what it would do is refused (400) while its route
/// still answers; only a missing route answers "Unknown request".
async fn follow(kiln: &Kiln, method: &str, path: &str) -> (StatusCode, Value) {
    let method = match Method::from_bytes(method.as_bytes()).unwrap() {
        Method::GET if POST_ONLY.contains(&path) => Method::POST,
        m => m,
    };
    let url = format!("{}{path}", kiln.url);
    let mut req = kiln.http.request(method.clone(), url);
    if method != Method::GET {
        req = req.header("content-type", "application/json").body("{");
    }
    kiln.send(req).await
}

#[tokio::test]
async fn every_advertised_link_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    push_and_bind(&kiln).await;
    let mut queue: VecDeque<(String, String)> = VecDeque::new();
    queue.push_back(("GET".into(), "/".into()));
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unserved = Vec::new();
    // Bounded: the flow makes a few dozen resources.
    while let Some((method, path)) = queue.pop_front() {
        if !seen.insert((method.clone(), path.clone())) || seen.len() > 2000 {
            continue;
        }
        let (status, v) = follow(&kiln, &method, &path).await;
        let unknown = status == StatusCode::NOT_FOUND
            && v.is_object()
            && v["errors"].is_array()
            && error_of(&v).0 == 10000;
        if unknown || status == StatusCode::METHOD_NOT_ALLOWED {
            unserved.push(format!("{method} {path}: {status}"));
            continue;
        }
        if method == "GET" && status.is_success() {
            let mut found = Vec::new();
            links_in(&kiln.url, &v, &mut found);
            queue.extend(found);
        }
    }
    assert!(
        seen.len() > 60,
        "the walk reached the flow's resources: {seen:?}"
    );
    assert!(
        unserved.is_empty(),
        "advertised but not served: {unserved:#?}"
    );
    kiln.stop().await;
}
