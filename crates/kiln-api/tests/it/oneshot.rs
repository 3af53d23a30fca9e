//! Requests handed straight to `Api::router()` with `oneshot`: no port, no
//! server task, no background loops (axum's `examples/testing`). For what
//! needs only the router: discovery, tokens, authentication errors.

use super::{PASSWORD, STACK, error_of};
use axum::body::Body;
use http::{Request, StatusCode, header};
use kiln_api::{Api, ApiConfig, ApiDeps};
use kiln_bbs::Bbs;
use kiln_store::FsBlobstore;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

/// Links only: nothing is ever sent to this address.
const BASE: &str = "http://127.0.0.1:9022";

async fn router(dir: &Path) -> axum::Router {
    let bbs = Bbs::open(&dir.join("bbs.sqlite")).await.unwrap();
    let blobstore = Arc::new(FsBlobstore::new(dir.join("blobs")).await.unwrap());
    let api = Api::open(
        ApiConfig {
            data_dir: dir.join("api"),
            external_url: BASE.into(),
            domain: "localhost".into(),
            stack: STACK.into(),
            admin_password: Some(PASSWORD.into()),
            max_package_bytes: 1 << 20,
            staging_timeout_ms: 60_000,
            db_encryption_key_file: None,
        },
        ApiDeps {
            bbs: Arc::new(bbs),
            blobstore,
            logs: Arc::new(kiln_logs::LogStore::default()),
        },
    )
    .await
    .unwrap();
    api.router()
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

async fn call(router: &axum::Router, req: Request<Body>) -> Answer {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn get(path: &str, auth: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    req.body(Body::empty()).unwrap()
}

/// `POST /oauth/token` with a form body and optional HTTP Basic client.
fn token_request(form: &str, basic: Option<&str>) -> Request<Body> {
    use base64::Engine;
    let mut req = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(credentials) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        req = req.header(header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    req.body(Body::from(form.to_string())).unwrap()
}

fn password_grant(password: &str) -> String {
    format!("grant_type=password&username=admin&password={password}&scope=")
}

#[tokio::test]
async fn discovery_tokens_and_auth_errors() {
    let dir = tempfile::tempdir().unwrap();
    let api = router(dir.path()).await;

    let root = call(&api, get("/", None)).await;
    assert!(root.headers.contains_key("x-vcap-request-id"));
    let links = &root.body["links"];
    assert_eq!(links["cloud_controller_v3"]["href"], format!("{BASE}/v3"));
    assert_eq!(links["cloud_controller_v3"]["meta"]["version"], "3.180.0");
    for k in ["login", "uaa", "log_cache", "self"] {
        assert_eq!(links[k]["href"], BASE, "{k}");
    }
    for k in [
        "network_policy_v1",
        "logging",
        "app_ssh",
        "credhub",
        "routing",
    ] {
        assert!(links[k].is_null(), "{k}");
    }
    assert_eq!(call(&api, get("/v3/info", None)).await.body["name"], "kiln");
    let login = call(&api, get("/login", None)).await;
    assert_eq!(login.body["prompts"]["password"][0], "password");

    // Token contents.
    let tokens = call(&api, token_request(&password_grant(PASSWORD), Some("cf:"))).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let tokens = tokens.body;
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 1199);
    let access = tokens["access_token"].as_str().unwrap();
    let payload = access.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["user_name"], "admin");
    assert_eq!(claims["origin"], "uaa");
    assert!(
        claims["user_id"].is_string() && claims["exp"].is_number() && claims["scope"].is_array()
    );

    // Bad password.
    let bad = call(&api, token_request(&password_grant("wrong"), Some("cf:"))).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad.body,
        json!({"error": "unauthorized", "error_description": "Bad credentials"})
    );

    // Refresh grant (no client credentials at all), and a refresh token is
    // not an access token.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = format!("grant_type=refresh_token&refresh_token={refresh}");
    assert_eq!(
        call(&api, token_request(&form, None)).await.status,
        StatusCode::OK
    );
    let r = call(&api, get("/v3/apps", Some(&format!("bearer {refresh}")))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&r.body).0, 1000);

    // Missing and invalid tokens.
    let r = call(&api, get("/v3/apps", None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&r.body),
        (
            10002,
            "CF-NotAuthenticated".into(),
            "Authentication error".into()
        )
    );
    let r = call(&api, get("/v3/apps", Some("bearer nope"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&r.body),
        (
            1000,
            "CF-InvalidAuthToken".into(),
            "Invalid Auth Token".into()
        )
    );
    // Scheme is case-insensitive.
    let bearer = format!("Bearer {access}");
    let r = call(&api, get("/v3/apps", Some(&bearer))).await;
    assert_eq!(r.status, StatusCode::OK);

    // Only the `cf` client with an empty secret.
    let r = call(
        &api,
        token_request(&password_grant(PASSWORD), Some("other:x")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "invalid_client");

    // A known path with a method CC does not route is an unknown request.
    let put = Request::put("/v3/apps")
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::empty())
        .unwrap();
    let r = call(&api, put).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&r.body).1, "CF-NotFound");

    // Unknown route, and a trailing slash.
    let r = call(&api, get("/v3/nonsense", Some(&bearer))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        error_of(&r.body),
        (10000, "CF-NotFound".into(), "Unknown request".into())
    );
    let r = call(&api, get("/v3/deployments/?app_guids=x", Some(&bearer))).await;
    assert_eq!(r.status, StatusCode::OK);
    let stacks = call(&api, get("/v3/stacks", Some(&bearer))).await.body;
    assert_eq!(stacks["resources"][0]["name"], STACK);
    assert_eq!(stacks["resources"][0]["default"], true);
    let domains = call(&api, get("/v3/domains?names=localhost", Some(&bearer))).await;
    assert_eq!(domains.body["pagination"]["total_results"], 1);

    // Log cache.
    let info = call(&api, get("/api/v1/info", None)).await;
    assert_eq!(info.body["version"], "3.0.0");
    let read = "/api/v1/read/nobody?start_time=-6795364578871345152&envelope_types=LOG";
    let logs = call(&api, get(read, Some(&bearer))).await;
    assert_eq!(logs.status, StatusCode::OK);
    assert_eq!(logs.body, json!({"envelopes": {"batch": []}}));
}

#[tokio::test]
async fn list_filters_select_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let api = router(dir.path()).await;
    let tokens = call(&api, token_request(&password_grant(PASSWORD), Some("cf:"))).await;
    let bearer = format!("bearer {}", tokens.body["access_token"].as_str().unwrap());
    let json_post = |path: &str, body: Value| {
        Request::post(path)
            .header(header::AUTHORIZATION, &bearer)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let orgs = call(&api, get("/v3/organizations?names=kiln", Some(&bearer))).await;
    let org = orgs.body["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let spaces = call(&api, get("/v3/spaces?names=dev", Some(&bearer))).await;
    let space = spaces.body["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut apps = Vec::new();
    for name in ["a", "b", "c"] {
        let body = json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}});
        let created = call(&api, json_post("/v3/apps", body)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        apps.push(created.body["guid"].as_str().unwrap().to_string());
    }
    let names = |v: &Value| -> Vec<String> {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |query: String| get(&format!("/v3/apps?{query}"), Some(&bearer));
    let all = call(&api, q(format!("organization_guids={org}")))
        .await
        .body;
    assert_eq!(names(&all), ["a", "b", "c"]);
    assert_eq!(all["pagination"]["total_results"], 3);
    let two = call(&api, q(format!("names=c,a&space_guids={space}")))
        .await
        .body;
    assert_eq!(names(&two), ["a", "c"]);
    assert_eq!(two["pagination"]["total_results"], 2);
    let none = call(&api, q("organization_guids=elsewhere".into()))
        .await
        .body;
    assert_eq!(none["pagination"]["total_results"], 0);
    let empty = call(&api, q("names=".into())).await.body;
    assert_eq!(empty["pagination"]["total_results"], 0);
    // Processes by the space of their app: one web process per app.
    let web = call(
        &api,
        get(
            &format!("/v3/processes?space_guids={space}&app_guids={}", apps[1]),
            Some(&bearer),
        ),
    )
    .await
    .body;
    assert_eq!(web["pagination"]["total_results"], 1);
    assert_eq!(web["resources"][0]["type"], "web");
    assert_eq!(
        web["resources"][0]["relationships"]["app"]["data"]["guid"],
        apps[1]
    );
}

/// A logged-in admin talking to a router.
struct Admin {
    api: axum::Router,
    bearer: String,
}

impl Admin {
    async fn new(dir: &Path) -> Admin {
        let api = router(dir).await;
        let tokens = call(&api, token_request(&password_grant(PASSWORD), Some("cf:"))).await;
        let bearer = format!("bearer {}", tokens.body["access_token"].as_str().unwrap());
        Admin { api, bearer }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, &self.bearer)
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        call(&self.api, req.body(body).unwrap()).await
    }

    /// Follows a 202's job and expects it COMPLETE.
    async fn job_completes(&self, answer: &Answer) {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        let location = answer.headers[header::LOCATION].to_str().unwrap();
        let path = location.strip_prefix(BASE).unwrap();
        let job = self.send("GET", path, None).await;
        assert_eq!(job.body["state"], "COMPLETE", "{}", job.body);
    }
}

fn unprocessable(answer: &Answer) -> String {
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    let (code, title, detail) = error_of(&answer.body);
    assert_eq!((code, title.as_str()), (10008, "CF-UnprocessableEntity"));
    detail
}

#[tokio::test]
async fn orgs_and_spaces_are_created_renamed_and_deleted_with_cf_rules() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::new(dir.path()).await;

    // Create an org; its name is unique.
    let org = admin
        .send("POST", "/v3/organizations", Some(json!({"name": "team"})))
        .await;
    assert_eq!(org.status, StatusCode::CREATED, "{}", org.body);
    assert_eq!(org.body["name"], "team");
    assert_eq!(org.body["suspended"], false);
    let org_guid = org.body["guid"].as_str().unwrap().to_string();
    let again = admin
        .send("POST", "/v3/organizations", Some(json!({"name": "team"})))
        .await;
    assert_eq!(unprocessable(&again), "Organization 'team' already exists.");
    for (body, detail) in [
        (json!({"name": ""}), "Name can't be blank"),
        (
            json!({"name": "x".repeat(256)}),
            "Name is too long (maximum is 255 characters)",
        ),
        (
            json!({"name": "a\tb"}),
            "Name must not contain escaped characters",
        ),
        (
            json!({"name": "t", "color": "red"}),
            "Unknown field(s): 'color'",
        ),
    ] {
        let refused = admin.send("POST", "/v3/organizations", Some(body)).await;
        assert_eq!(unprocessable(&refused), detail);
    }
    let orgs = admin.send("GET", "/v3/organizations", None).await.body;
    assert_eq!(
        orgs["pagination"]["total_results"], 2,
        "nothing refused was kept"
    );

    // Spaces: unique per org, in an org that exists.
    let space_body = |name: &str, org: &str| json!({"name": name, "relationships": {"organization": {"data": {"guid": org}}}});
    let space = admin
        .send("POST", "/v3/spaces", Some(space_body("dev", &org_guid)))
        .await;
    assert_eq!(space.status, StatusCode::CREATED, "{}", space.body);
    assert_eq!(
        space.body["relationships"]["organization"]["data"]["guid"],
        org_guid
    );
    let space_guid = space.body["guid"].as_str().unwrap().to_string();
    let dup = admin
        .send("POST", "/v3/spaces", Some(space_body("dev", &org_guid)))
        .await;
    assert_eq!(unprocessable(&dup), "Name must be unique per organization");
    let nowhere = admin
        .send("POST", "/v3/spaces", Some(space_body("x", "no-such-org")))
        .await;
    assert_eq!(
        unprocessable(&nowhere),
        "Invalid organization. Ensure the organization exists and you have access to it."
    );
    let other = admin
        .send("POST", "/v3/spaces", Some(space_body("prod", &org_guid)))
        .await;
    assert_eq!(other.status, StatusCode::CREATED);

    // Renames, and their conflicts.
    let renamed = admin
        .send(
            "PATCH",
            &format!("/v3/spaces/{space_guid}"),
            Some(json!({"name": "staging"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "staging");
    let clash = admin
        .send(
            "PATCH",
            &format!("/v3/spaces/{space_guid}"),
            Some(json!({"name": "prod"})),
        )
        .await;
    assert_eq!(
        unprocessable(&clash),
        "Organization 'team' already contains a space with name 'prod'."
    );
    let taken = admin
        .send(
            "PATCH",
            &format!("/v3/organizations/{org_guid}"),
            Some(json!({"name": "kiln"})),
        )
        .await;
    assert_eq!(
        unprocessable(&taken),
        "Organization name 'kiln' is already taken."
    );
    let suspended = admin
        .send(
            "PATCH",
            &format!("/v3/organizations/{org_guid}"),
            Some(json!({"name": "team2", "suspended": true})),
        )
        .await;
    assert_eq!(suspended.body["name"], "team2");
    assert_eq!(suspended.body["suspended"], true);
    let missing = admin
        .send("PATCH", "/v3/spaces/nope", Some(json!({"name": "a"})))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&missing.body).2, "Space not found");

    // Deleting a space deletes its apps and routes.
    let app = admin
        .send(
            "POST",
            "/v3/apps",
            Some(
                json!({"name": "web", "relationships": {"space": {"data": {"guid": space_guid}}}}),
            ),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.body);
    let app_guid = app.body["guid"].as_str().unwrap().to_string();
    let domains = admin.send("GET", "/v3/domains", None).await.body;
    let domain = domains["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let route = admin
        .send(
            "POST",
            "/v3/routes",
            Some(json!({"host": "web", "relationships": {
                "space": {"data": {"guid": space_guid}},
                "domain": {"data": {"guid": domain}},
            }})),
        )
        .await;
    assert_eq!(route.status, StatusCode::CREATED, "{}", route.body);
    let deleted = admin
        .send("DELETE", &format!("/v3/spaces/{space_guid}"), None)
        .await;
    admin.job_completes(&deleted).await;
    for gone in [
        format!("/v3/spaces/{space_guid}"),
        format!("/v3/apps/{app_guid}"),
        format!("/v3/routes/{}", route.body["guid"].as_str().unwrap()),
    ] {
        assert_eq!(
            admin.send("GET", &gone, None).await.status,
            StatusCode::NOT_FOUND,
            "{gone}"
        );
    }

    // Deleting the org deletes the spaces left in it.
    let deleted = admin
        .send("DELETE", &format!("/v3/organizations/{org_guid}"), None)
        .await;
    admin.job_completes(&deleted).await;
    let left = admin
        .send(
            "GET",
            &format!("/v3/spaces?organization_guids={org_guid}"),
            None,
        )
        .await;
    assert_eq!(left.body["pagination"]["total_results"], 0);
    let gone = admin
        .send("GET", &format!("/v3/organizations/{org_guid}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = admin
        .send("DELETE", &format!("/v3/organizations/{org_guid}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn docker_apps_packages_and_builds_keep_the_password_to_themselves() {
    use kiln_bbs::BbsClient;
    let dir = tempfile::tempdir().unwrap();
    let bbs = Arc::new(Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap());
    let blobstore = Arc::new(FsBlobstore::new(dir.path().join("blobs")).await.unwrap());
    let api = Api::open(
        ApiConfig {
            data_dir: dir.path().join("api"),
            external_url: BASE.into(),
            domain: "localhost".into(),
            stack: STACK.into(),
            admin_password: Some(PASSWORD.into()),
            max_package_bytes: 1 << 20,
            staging_timeout_ms: 60_000,
            db_encryption_key_file: None,
        },
        ApiDeps {
            bbs: bbs.clone(),
            blobstore,
            logs: Arc::new(kiln_logs::LogStore::default()),
        },
    )
    .await
    .unwrap()
    .router();
    let tokens = call(&api, token_request(&password_grant(PASSWORD), Some("cf:"))).await;
    let admin = Admin {
        api,
        bearer: format!("bearer {}", tokens.body["access_token"].as_str().unwrap()),
    };
    let spaces = admin.send("GET", "/v3/spaces?names=dev", None).await;
    let space = spaces.body["resources"][0]["guid"].clone();
    const SECRET: &str = "s3cr3t-registry-password";

    // An app with the docker lifecycle shows empty lifecycle data.
    let app = admin
        .send(
            "POST",
            "/v3/apps",
            Some(
                json!({"name": "img", "relationships": {"space": {"data": {"guid": space}}},
                        "lifecycle": {"type": "docker", "data": {}}}),
            ),
        )
        .await;
    assert_eq!(app.status, StatusCode::CREATED, "{}", app.body);
    assert_eq!(app.body["lifecycle"], json!({"type": "docker", "data": {}}));
    let app_guid = app.body["guid"].as_str().unwrap().to_string();
    let detail = unprocessable(
        &admin
            .send(
                "PATCH",
                &format!("/v3/apps/{app_guid}"),
                Some(json!({"lifecycle": {"type": "buildpack", "data": {}}})),
            )
            .await,
    );
    assert_eq!(detail, "Lifecycle type cannot be changed");
    let detail = unprocessable(
        &admin
            .send(
                "POST",
                "/v3/apps",
                Some(
                    json!({"name": "x", "relationships": {"space": {"data": {"guid": space}}},
                            "lifecycle": {"type": "docker", "data": {"stack": "s"}}}),
                ),
            )
            .await,
    );
    assert!(detail.contains("empty"), "{detail}");

    // Bad packages change nothing.
    let package = |body: Value| admin.send("POST", "/v3/packages", Some(body));
    let rel = json!({"app": {"data": {"guid": app_guid}}});
    for (body, why) in [
        (
            json!({"type": "bits", "relationships": rel}),
            "Type must be 'docker'",
        ),
        (
            json!({"type": "docker", "data": {}, "relationships": rel}),
            "image",
        ),
        (
            json!({"type": "docker", "data": {"image": " "}, "relationships": rel}),
            "Image required",
        ),
        (
            json!({"type": "docker", "data": {"image": "r/i", "username": "u"}, "relationships": rel}),
            "both",
        ),
        (
            json!({"type": "oci", "relationships": rel}),
            "Type must be one of",
        ),
    ] {
        let detail = unprocessable(&package(body.clone()).await);
        assert!(detail.contains(why), "{body}: {detail}");
    }
    let listed = admin.send("GET", "/v3/packages", None).await;
    assert_eq!(listed.body["pagination"]["total_results"], 0);

    // A docker package is READY at once; its password is stored, shown as ***.
    let created = package(json!({"type": "docker", "relationships": rel,
        "data": {"image": "127.0.0.1:5000/team/app:v1", "username": "user", "password": SECRET}}))
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["state"], "READY");
    assert_eq!(
        created.body["data"],
        json!({"image": "127.0.0.1:5000/team/app:v1", "username": "user", "password": "***"})
    );
    let package_guid = created.body["guid"].as_str().unwrap().to_string();

    // Its build is a docker build whose staging Task resolves the image on
    // the cell with the credentials, and prints none of them.
    let build = admin
        .send(
            "POST",
            "/v3/builds",
            Some(json!({"package": {"guid": package_guid}})),
        )
        .await;
    assert_eq!(build.status, StatusCode::CREATED, "{}", build.body);
    assert_eq!(
        build.body["lifecycle"],
        json!({"type": "docker", "data": {}})
    );
    let build_guid = build.body["guid"].as_str().unwrap();
    let task = bbs.task_by_guid(build_guid).await.unwrap();
    let resolve = task
        .definition
        .resolve_image
        .clone()
        .expect("a resolve step");
    assert_eq!(resolve.image, "127.0.0.1:5000/team/app:v1");
    assert_eq!(
        (resolve.username.as_str(), resolve.password.expose()),
        ("user", SECRET)
    );
    assert_eq!(
        task.definition.rootfs.to_string(),
        "docker://127.0.0.1:5000/team/app#v1"
    );
    assert!(task.definition.run.path.is_empty() && task.definition.downloads.is_empty());
    assert!(
        !format!("{task:?}").contains(SECRET),
        "Debug shows the password"
    );

    // No answer of the API carries the password.
    for path in [
        format!("/v3/packages/{package_guid}"),
        "/v3/packages".into(),
        format!("/v3/apps/{app_guid}/packages"),
        format!("/v3/builds/{build_guid}"),
        "/v3/audit_events".into(),
    ] {
        let answer = admin.send("GET", &path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert!(!answer.body.to_string().contains(SECRET), "{path} shows it");
    }

    // At rest it is sealed: the raw row holds no plain text, nor does any
    // byte of the database's files.
    let ccdb = dir.path().join("api/ccdb.sqlite");
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", ccdb.display()))
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT docker_password FROM packages WHERE guid = ?")
        .bind(&package_guid)
        .fetch_one(&raw)
        .await
        .unwrap();
    assert!(stored.starts_with("kiln-enc:v1:"), "{stored}");
    assert!(!stored.contains(SECRET));
    for file in ["ccdb.sqlite", "ccdb.sqlite-wal"] {
        let bytes = std::fs::read(dir.path().join("api").join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{file} holds the password"
        );
    }
    let key = dir.path().join("api/db-encryption-key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the generated key is private");

    // A password stored in plain text before (an older CCDB) is sealed
    // when the API opens, and staging still gets it (another app: the
    // first one's build is still staging).
    let app = admin
        .send(
            "POST",
            "/v3/apps",
            Some(
                json!({"name": "img2", "relationships": {"space": {"data": {"guid": space}}},
                        "lifecycle": {"type": "docker", "data": {}}}),
            ),
        )
        .await;
    let rel = json!({"app": {"data": {"guid": app.body["guid"]}}});
    let created = admin
        .send(
            "POST",
            "/v3/packages",
            Some(json!({"type": "docker", "relationships": rel,
                "data": {"image": "127.0.0.1:5000/team/app:v1", "username": "user", "password": "x"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let package_guid = created.body["guid"].as_str().unwrap().to_string();
    const OLD: &str = "plain-text-from-before";
    sqlx::query("UPDATE packages SET docker_password = ? WHERE guid = ?")
        .bind(OLD)
        .bind(&package_guid)
        .execute(&raw)
        .await
        .unwrap();
    let reopened = Api::open(
        ApiConfig {
            data_dir: dir.path().join("api"),
            external_url: BASE.into(),
            domain: "localhost".into(),
            stack: STACK.into(),
            admin_password: Some(PASSWORD.into()),
            max_package_bytes: 1 << 20,
            staging_timeout_ms: 60_000,
            db_encryption_key_file: None,
        },
        ApiDeps {
            bbs: bbs.clone(),
            blobstore: Arc::new(FsBlobstore::new(dir.path().join("blobs")).await.unwrap()),
            logs: Arc::new(kiln_logs::LogStore::default()),
        },
    )
    .await
    .unwrap()
    .router();
    let stored: String = sqlx::query_scalar("SELECT docker_password FROM packages WHERE guid = ?")
        .bind(&package_guid)
        .fetch_one(&raw)
        .await
        .unwrap();
    assert!(
        stored.starts_with("kiln-enc:v1:") && !stored.contains(OLD),
        "{stored}"
    );
    let admin = Admin {
        api: reopened,
        bearer: admin.bearer,
    };
    let build = admin
        .send(
            "POST",
            "/v3/builds",
            Some(json!({"package": {"guid": package_guid}})),
        )
        .await;
    assert_eq!(build.status, StatusCode::CREATED, "{}", build.body);
    let task = bbs
        .task_by_guid(build.body["guid"].as_str().unwrap())
        .await
        .unwrap();
    let resolve = task.definition.resolve_image.expect("a resolve step");
    assert_eq!(resolve.password.expose(), OLD);

    // An operator's key file that is not there stops the API opening.
    let missing = Api::open(
        ApiConfig {
            data_dir: dir.path().join("api"),
            external_url: BASE.into(),
            domain: "localhost".into(),
            stack: STACK.into(),
            admin_password: Some(PASSWORD.into()),
            max_package_bytes: 1 << 20,
            staging_timeout_ms: 60_000,
            db_encryption_key_file: Some(dir.path().join("no-such-key")),
        },
        ApiDeps {
            bbs: bbs.clone(),
            blobstore: Arc::new(FsBlobstore::new(dir.path().join("blobs")).await.unwrap()),
            logs: Arc::new(kiln_logs::LogStore::default()),
        },
    )
    .await;
    let err = missing
        .err()
        .expect("a missing key file is an error")
        .to_string();
    assert!(err.contains("db encryption key"), "{err}");
}
