//! The CLI's verbs against a small fake Cloud Foundry v3 API on 127.0.0.1
//! (port 0): it serves only the shapes the CLI reads and records every call,
//! so the tests check which calls a push makes, in which order, with which
//! bodies. The real server is exercised by the `kiln` crate's end-to-end
//! test; this one stays small and fast.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kiln_cli::{AppArgs, Command, CurlArgs, DeleteArgs, LoginArgs, LogsArgs, PushArgs};
use serde_json::{Value, json};
use sha1::Digest;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Fake {
    base: String,
    calls: Vec<String>,
    json_bodies: Vec<(String, Value)>,
    grants: Vec<String>,
    tokens: HashSet<String>,
    apps: Vec<Value>,
    processes: Vec<Value>,
    routes: Vec<Value>,
    packages: HashMap<String, (String, u32)>,
    upload: Option<(Value, Vec<u8>)>,
    builds: HashMap<String, (String, u32)>,
    droplets: HashMap<String, String>,
    stats_polls: HashMap<String, u32>,
    cached: HashSet<String>,
    envelopes: Vec<(i64, String, String, String)>,
    clock: i64,
    /// (start_time, descending, limit, envelopes returned, a build was
    /// staging, how far end_time was behind the time of the read)
    reads: Vec<(i64, bool, u32, usize, bool, Option<i64>)>,
    next_id: u32,
    /// Answer an upload with the package READY, as Kiln does (it processes
    /// the bits before answering); else PROCESSING_UPLOAD, as CC does.
    ready_on_upload: bool,
}

type Shared = Arc<Mutex<Fake>>;

impl Fake {
    fn id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{kind}-{}", self.next_id)
    }

    fn log(&mut self, app: &str, source_type: &str, message: &str) -> i64 {
        self.clock += 1_000;
        let ts = self.clock;
        self.envelopes
            .push((ts, app.into(), source_type.into(), message.into()));
        ts
    }

    fn token(&mut self, lifetime: i64) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let n = self.tokens.len();
        let claims = json!({"exp": now + lifetime, "user_name": "admin", "user_id": "u", "origin": "uaa", "jti": n});
        let token = format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"none"}"#),
            b64.encode(claims.to_string())
        );
        self.tokens.insert(token.clone());
        token
    }
}

fn query(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn page(resources: Vec<Value>) -> Response {
    Json(
        json!({"pagination": {"total_results": resources.len(), "next": null}, "resources": resources}),
    )
}

#[allow(non_snake_case)]
fn Json(value: Value) -> Response {
    axum::Json(value).into_response()
}

fn not_found(detail: &str) -> Response {
    let body =
        json!({"errors": [{"code": 10010, "title": "CF-ResourceNotFound", "detail": detail}]});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn handle(State(fake): State<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path().to_string();
    let headers: HeaderMap = request.headers().clone();
    let q = query(&uri);
    let call = format!("{method} {path}");
    fake.lock().unwrap().calls.push(call.clone());

    // Multipart bodies are read before the lock is taken again.
    let (body, multipart) = if path.ends_with("/upload") {
        let mut multipart = Multipart::from_request(request, &()).await.unwrap();
        let mut fields = HashMap::new();
        while let Some(field) = multipart.next_field().await.unwrap() {
            let name = field.name().unwrap().to_string();
            fields.insert(name, field.bytes().await.unwrap().to_vec());
        }
        (Bytes::new(), Some(fields))
    } else {
        let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .unwrap();
        (bytes, None)
    };
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let mut f = fake.lock().unwrap();
    if !json_body.is_null() {
        f.json_bodies.push((call.clone(), json_body.clone()));
    }
    let base = f.base.clone();
    if path != "/" && path != "/oauth/token" {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bearer "))
            .unwrap_or_default();
        if !f.tokens.contains(token) {
            let body = json!({"errors": [{"code": 1000, "title": "CF-InvalidAuthToken", "detail": "Invalid Auth Token"}]});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", [""]) => Json(json!({"links": {
            "self": {"href": base},
            "cloud_controller_v3": {"href": format!("{base}/v3"), "meta": {"version": "3.180.0"}},
            "login": {"href": base}, "uaa": {"href": base}, "log_cache": {"href": base},
        }})),
        ("POST", ["oauth", "token"]) => {
            assert_eq!(
                headers["authorization"], "Basic Y2Y6",
                "client cf, empty secret"
            );
            let form: HashMap<String, String> = String::from_utf8_lossy(&body)
                .split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let grant = form["grant_type"].clone();
            f.grants.push(grant.clone());
            let ok = match grant.as_str() {
                "password" => form["username"] == "admin" && form["password"] == "secret",
                "refresh_token" => form["refresh_token"] == "r1",
                _ => false,
            };
            if !ok {
                let body = json!({"error": "unauthorized", "error_description": "Bad credentials"});
                return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            }
            // The first token is nearly expired, so the CLI must refresh it.
            let (token, refresh) = if grant == "password" {
                (f.token(30), "r1")
            } else {
                (f.token(3600), "r2")
            };
            Json(
                json!({"access_token": token, "token_type": "bearer", "refresh_token": refresh, "expires_in": 599}),
            )
        }
        ("GET", ["v3", "organizations"]) => page(vec![json!({"guid": "org-1", "name": "kiln"})]),
        ("GET", ["v3", "spaces"]) => {
            assert_eq!(q["organization_guids"], "org-1");
            page(vec![json!({"guid": "space-1", "name": "dev"})])
        }
        ("GET", ["v3", "apps"]) => {
            let apps = f
                .apps
                .iter()
                .filter(|a| q.get("names").is_none_or(|n| a["name"] == n.as_str()))
                .cloned()
                .collect();
            page(apps)
        }
        ("POST", ["v3", "apps"]) => {
            let guid = f.id("app");
            let app = json!({"guid": guid, "name": json_body["name"], "state": "STOPPED",
                             "lifecycle": json_body["lifecycle"]});
            let process = json!({"guid": f.id("proc"), "type": "web", "command": null, "instances": 1,
                                 "memory_in_mb": 1024, "disk_in_mb": 1024, "app": guid});
            f.apps.push(app.clone());
            f.processes.push(process);
            (StatusCode::CREATED, axum::Json(app)).into_response()
        }
        ("GET", ["v3", "apps", guid]) => match f.apps.iter().find(|a| a["guid"] == *guid) {
            Some(app) => Json(app.clone()),
            None => not_found("App not found"),
        },
        ("PATCH", ["v3", "apps", guid]) => {
            let app = f.apps.iter_mut().find(|a| a["guid"] == *guid).unwrap();
            app["lifecycle"] = json_body["lifecycle"].clone();
            Json(app.clone())
        }
        ("POST", ["v3", "apps", guid, "actions", action]) => {
            let app = f.apps.iter_mut().find(|a| a["guid"] == *guid).unwrap();
            app["state"] = json!(if *action == "stop" {
                "STOPPED"
            } else {
                "STARTED"
            });
            Json(app.clone())
        }
        ("GET", ["v3", "apps", guid, "processes"]) => {
            let list = f
                .processes
                .iter()
                .filter(|p| p["app"] == *guid)
                .cloned()
                .collect();
            page(list)
        }
        ("GET", ["v3", "apps", guid, "routes"]) => {
            let list = f
                .routes
                .iter()
                .filter(|r| {
                    r["destinations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|d| d["app"]["guid"] == *guid)
                })
                .cloned()
                .collect();
            page(list)
        }
        ("PATCH", ["v3", "apps", guid, "relationships", "current_droplet"]) => {
            let droplet = json_body["data"]["guid"].as_str().unwrap().to_string();
            f.droplets.insert(guid.to_string(), droplet.clone());
            Json(json!({"data": {"guid": droplet}}))
        }
        ("GET", ["v3", "apps", guid, "droplets", "current"]) => match f.droplets.get(*guid) {
            Some(droplet) => Json(
                json!({"guid": droplet, "state": "STAGED", "created_at": "2026-11-25T07:45:00Z",
                "stack": "fake-stack", "buildpacks": [{"name": "python", "version": "1.0"}],
                "process_types": {"web": "python app.py"}}),
            ),
            None => not_found("Droplet not found"),
        },
        ("POST", ["v3", "processes", guid, "actions", "scale"]) => {
            let process = f.processes.iter_mut().find(|p| p["guid"] == *guid).unwrap();
            for key in ["instances", "memory_in_mb", "disk_in_mb"] {
                if !json_body[key].is_null() {
                    process[key] = json_body[key].clone();
                }
            }
            (StatusCode::ACCEPTED, axum::Json(process.clone())).into_response()
        }
        ("PATCH", ["v3", "processes", guid]) => {
            let process = f.processes.iter_mut().find(|p| p["guid"] == *guid).unwrap();
            process["command"] = json_body["command"].clone();
            Json(process.clone())
        }
        ("GET", ["v3", "processes", guid, "stats"]) => {
            let process = f
                .processes
                .iter()
                .find(|p| p["guid"] == *guid)
                .unwrap()
                .clone();
            let started = f
                .apps
                .iter()
                .any(|a| a["guid"] == process["app"] && a["state"] == "STARTED");
            let polls = f.stats_polls.entry(guid.to_string()).or_default();
            *polls += 1;
            let state = match (started, *polls) {
                (false, _) => "DOWN",
                (true, 1) => "STARTING",
                (true, _) => "RUNNING",
            };
            let instances: Vec<Value> = (0..process["instances"].as_u64().unwrap())
                .map(|i| {
                    json!({"type": "web", "index": i, "state": state, "uptime": 3,
                                "mem_quota": 268435456u64, "disk_quota": 1073741824u64,
                                "usage": {"cpu": 0.01, "mem": 1048576, "disk": 1048576}})
                })
                .collect();
            Json(json!({"resources": instances}))
        }
        ("GET", ["v3", "domains"]) => page(vec![json!({"guid": "dom-1", "name": "localhost"})]),
        ("GET", ["v3", "routes"]) => {
            assert_eq!(q["domain_guids"], "dom-1");
            let list = f
                .routes
                .iter()
                .filter(|r| r["host"] == q["hosts"].as_str())
                .cloned()
                .collect();
            page(list)
        }
        ("POST", ["v3", "routes"]) => {
            let host = json_body["host"].as_str().unwrap().to_string();
            let route = json!({"guid": f.id("route"), "host": host, "path": "",
                               "url": format!("{host}.localhost"), "destinations": []});
            f.routes.push(route.clone());
            (StatusCode::CREATED, axum::Json(route)).into_response()
        }
        ("GET", ["v3", "routes", guid, "destinations"]) => {
            let route = f.routes.iter().find(|r| r["guid"] == *guid).unwrap();
            Json(json!({"destinations": route["destinations"]}))
        }
        ("DELETE", ["v3", "apps", guid]) => {
            f.apps.retain(|a| a["guid"] != *guid);
            let location = format!("{base}/v3/jobs/app_delete-{guid}");
            (StatusCode::ACCEPTED, [("location", location)]).into_response()
        }
        ("GET", ["v3", "jobs", guid]) => {
            Json(json!({"guid": guid, "state": "COMPLETE", "errors": []}))
        }
        ("POST", ["v3", "routes", guid, "destinations"]) => {
            let route = f.routes.iter_mut().find(|r| r["guid"] == *guid).unwrap();
            for d in json_body["destinations"].as_array().unwrap() {
                route["destinations"]
                    .as_array_mut()
                    .unwrap()
                    .push(d.clone());
            }
            Json(json!({"destinations": route["destinations"]}))
        }
        ("POST", ["v3", "resource_matches"]) => {
            let matched: Vec<Value> = json_body["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| f.cached.contains(r["checksum"]["value"].as_str().unwrap()))
                .cloned()
                .collect();
            (
                StatusCode::CREATED,
                axum::Json(json!({"resources": matched})),
            )
                .into_response()
        }
        ("POST", ["v3", "packages"]) => {
            let guid = f.id("pkg");
            f.packages
                .insert(guid.clone(), ("AWAITING_UPLOAD".into(), 0));
            (
                StatusCode::CREATED,
                axum::Json(json!({"guid": guid, "type": "bits", "state": "AWAITING_UPLOAD"})),
            )
                .into_response()
        }
        ("POST", ["v3", "packages", guid, "upload"]) => {
            let fields = multipart.unwrap();
            let resources: Value = serde_json::from_slice(&fields["resources"]).unwrap();
            let bits = fields.get("bits").cloned().unwrap_or_default();
            f.upload = Some((resources, bits));
            let state = if f.ready_on_upload {
                "READY"
            } else {
                "PROCESSING_UPLOAD"
            };
            f.packages.insert(guid.to_string(), (state.into(), 0));
            Json(json!({"guid": guid, "state": state}))
        }
        ("GET", ["v3", "packages", guid]) => {
            let package = f.packages.get_mut(*guid).unwrap();
            package.1 += 1;
            if package.1 > 1 {
                package.0 = "READY".into();
            }
            Json(json!({"guid": guid, "state": package.0}))
        }
        ("POST", ["v3", "builds"]) => {
            let guid = f.id("build");
            let app = f.apps.last().unwrap()["guid"].as_str().unwrap().to_string();
            f.builds.insert(guid.clone(), (app.clone(), 0));
            f.log(&app, "API", "Creating build for app");
            f.log(&app, "STG", "-----> Detecting");
            (
                StatusCode::CREATED,
                axum::Json(json!({"guid": guid, "state": "STAGING", "droplet": null,
                                 "created_at": "2023-11-14T22:13:20Z"})),
            )
                .into_response()
        }
        ("GET", ["v3", "builds", guid]) => {
            let (app, polls) = f.builds.get_mut(*guid).unwrap();
            *polls += 1;
            let (app, polls) = (app.clone(), *polls);
            let name = f.apps.iter().find(|a| a["guid"] == app).unwrap()["name"].clone();
            match polls {
                1 => {
                    f.log(&app, "STG", "-----> Compiling");
                    Json(json!({"guid": guid, "state": "STAGING", "error": null, "droplet": null}))
                }
                _ if name == "nothing" => {
                    Json(json!({"guid": guid, "state": "FAILED", "droplet": null,
                    "error": "NoAppDetectedError - An app was not successfully detected by any available buildpack"}))
                }
                _ => {
                    f.log(&app, "STG", "-----> Done");
                    Json(
                        json!({"guid": guid, "state": "STAGED", "error": null, "droplet": {"guid": "droplet-1"}}),
                    )
                }
            }
        }
        ("GET", ["api", "v1", "read", source]) => {
            let start: i64 = q["start_time"].parse().unwrap();
            let limit: u32 = q["limit"].parse().unwrap();
            let end: Option<i64> = q.get("end_time").map(|e| e.parse().unwrap());
            let descending = q.get("descending").is_some_and(|d| d == "true");
            let mut found: Vec<_> = f
                .envelopes
                .iter()
                .filter(|(ts, app, _, _)| {
                    app == source && *ts >= start && end.is_none_or(|end| *ts < end)
                })
                .cloned()
                .collect();
            if descending {
                found.reverse();
            }
            found.truncate(limit as usize);
            let staging = f.builds.values().any(|(_, polls)| *polls < 2);
            f.reads.push((
                start,
                descending,
                limit,
                found.len(),
                staging,
                end.map(|end| unix_nanos() - end),
            ));
            let b64 = base64::engine::general_purpose::STANDARD;
            let batch: Vec<Value> = found
                .into_iter()
                .map(|(ts, app, source_type, message)| {
                    json!({
                    "timestamp": ts.to_string(), "source_id": app, "instance_id": "0",
                    "deprecated_tags": {}, "tags": {"source_type": source_type},
                    "log": {"payload": b64.encode(message), "type": "OUT"}})
                })
                .collect();
            Json(json!({"envelopes": {"batch": batch}}))
        }
        _ => {
            let body = json!({"errors": [{"code": 10000, "title": "CF-NotFound", "detail": "Unknown request"}]});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

async fn start_fake() -> Shared {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake: Shared = Arc::new(Mutex::new(Fake {
        base,
        clock: 1_700_000_000_000_000_000,
        ..Fake::default()
    }));
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    fake
}

fn write_app(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("hello.txt"), "hello").unwrap();
    std::fs::write(root.join("app.py"), "print('hi')\n").unwrap();
    std::fs::write(root.join("manifest.yml"), "applications: []\n").unwrap();
    std::fs::write(root.join("bin/run"), "#!/bin/sh\nexec python app.py\n").unwrap();
    std::fs::set_permissions(root.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("debug.log"), "noise").unwrap();
    std::fs::write(root.join(".cfignore"), "*.log\n").unwrap();
    std::fs::write(root.join(".git/HEAD"), "ref: main").unwrap();
}

fn push_args(name: &str, path: &Path) -> PushArgs {
    PushArgs::new(name, path)
}

/// `expected` appear in `calls` in this order (other calls may interleave).
fn assert_in_order(calls: &[String], expected: &[&str]) {
    let mut rest = calls.iter();
    for want in expected {
        assert!(
            rest.any(|c| c == want),
            "{want} missing or out of order in\n{}",
            calls.join("\n")
        );
    }
}

#[tokio::test]
async fn login_push_and_the_app_verbs_against_a_fake_api() {
    let fake = start_fake().await;
    let base = fake.lock().unwrap().base.clone();
    let hello_sha1 = hex::encode(sha1::Sha1::digest(b"hello"));
    fake.lock().unwrap().cached.insert(hello_sha1.clone());
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    let app_dir = scratch.path().join("app");
    write_app(&app_dir);

    // Login: links from GET /, password grant, the only org and space.
    let login = LoginArgs {
        api: Some(base.clone()),
        username: "admin".into(),
        password: "secret".into(),
        org: None,
        space: None,
    };
    kiln_cli::run_with_home(Command::Login(login), &home)
        .await
        .unwrap();
    let config_path = home.join("config.json");
    let mode = std::fs::metadata(&config_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config["org"]["name"], "kiln");
    assert_eq!(config["space"]["guid"], "space-1");
    assert_eq!(config["log_cache"], base.as_str());
    assert_eq!(config["user"], "admin");
    // The first token expired within a minute: refreshed before the next call, and saved.
    assert_eq!(fake.lock().unwrap().grants, ["password", "refresh_token"]);
    assert_eq!(config["refresh_token"], "r2");

    // First push: creates everything.
    let mut args = push_args("hello", &app_dir);
    args.buildpacks = vec!["python".into()];
    args.instances = Some(2);
    args.memory = Some(256);
    kiln_cli::run_with_home(Command::Push(Box::new(args)), &home)
        .await
        .unwrap();
    {
        let f = fake.lock().unwrap();
        assert_in_order(
            &f.calls,
            &[
                "GET /v3/apps",
                "POST /v3/apps",
                "POST /v3/processes/proc-2/actions/scale",
                "GET /v3/domains",
                "GET /v3/routes",
                "POST /v3/routes",
                "GET /v3/routes/route-3/destinations",
                "POST /v3/routes/route-3/destinations",
                "POST /v3/resource_matches",
                "POST /v3/packages",
                "POST /v3/packages/pkg-4/upload",
                "GET /v3/packages/pkg-4",
                "POST /v3/builds",
                "GET /v3/builds/build-5",
                "PATCH /v3/apps/app-1/relationships/current_droplet",
                "POST /v3/apps/app-1/actions/restart",
                "GET /v3/processes/proc-2/stats",
                "GET /v3/apps/app-1/droplets/current",
            ],
        );
        let body = |call: &str| {
            f.json_bodies
                .iter()
                .find(|(c, _)| c == call)
                .map(|(_, b)| b.clone())
                .unwrap()
        };
        assert_eq!(
            body("POST /v3/apps"),
            json!({"name": "hello", "relationships": {"space": {"data": {"guid": "space-1"}}},
                   "lifecycle": {"type": "buildpack", "data": {"buildpacks": ["python"], "stack": null}}})
        );
        assert_eq!(
            body("POST /v3/processes/proc-2/actions/scale"),
            json!({"instances": 2, "memory_in_mb": 256})
        );
        assert_eq!(body("POST /v3/routes")["host"], "hello");
        assert_eq!(
            body("POST /v3/routes/route-3/destinations"),
            json!({"destinations": [{"app": {"guid": "app-1", "process": {"type": "web"}}}]})
        );
        assert_eq!(
            body("PATCH /v3/apps/app-1/relationships/current_droplet")["data"]["guid"],
            "droplet-1"
        );

        // Only the unmatched files travel, with their modes; the matched one is listed.
        let (resources, bits) = f.upload.clone().unwrap();
        assert_eq!(
            resources,
            json!([{"checksum": {"value": hello_sha1}, "size_in_bytes": 5, "path": "hello.txt", "mode": "644"}])
        );
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bits)).unwrap();
        let mut names: Vec<String> = (0..zip.len())
            .map(|i| zip.by_index(i).unwrap().name().unwrap().to_string())
            .collect();
        names.sort();
        // manifest.yml is on the cf CLI's default ignore list.
        assert_eq!(names, ["app.py", "bin/", "bin/run"]);
        assert_eq!(
            zip.by_name("bin/run").unwrap().unix_mode().unwrap() & 0o777,
            0o755
        );
        let mut run = String::new();
        zip.by_name("bin/run")
            .unwrap()
            .read_to_string(&mut run)
            .unwrap();
        assert!(run.contains("exec python"));

        // Staging logs were read live (a line came back while the build was
        // still staging), each read resuming after the last line seen and
        // only up to lines that have settled, and once more after staging,
        // up to the last line.
        assert!(
            f.reads[0].1,
            "the follower anchors on the newest line first"
        );
        assert!(
            f.reads.iter().any(|r| !r.1 && r.3 > 0 && r.4),
            "no staging line was read while staging: {:?}",
            f.reads
        );
        let last_line = f.envelopes.last().unwrap().0;
        let follows: Vec<_> = f.reads.iter().filter(|r| !r.1).collect();
        assert!(follows.windows(2).all(|w| w[0].0 <= w[1].0), "{follows:?}");
        // The read after the build left STAGING flushed its last line.
        let flush = follows.last().unwrap();
        assert!(
            !flush.4 && flush.0 <= last_line && flush.3 == 1 && flush.5.is_none(),
            "{follows:?}"
        );
        // Each follow during staging read only lines that had settled:
        // older than the walk delay (two seconds) at the time of the read.
        let settled = |r: &&(i64, bool, u32, usize, bool, Option<i64>)| {
            r.5.is_some_and(|behind| behind >= 2_000_000_000)
        };
        assert!(
            follows[..follows.len() - 1].iter().all(settled),
            "{follows:?}"
        );
        assert!(follows.iter().all(|r| r.2 == 1000));
    }

    // A second push finds the app, its route and its mapping; its upload,
    // answered READY, is not asked about again.
    fake.lock().unwrap().calls.clear();
    fake.lock().unwrap().ready_on_upload = true;
    kiln_cli::run_with_home(Command::Push(Box::new(push_args("hello", &app_dir))), &home)
        .await
        .unwrap();
    {
        let f = fake.lock().unwrap();
        let upload = f.calls.iter().position(|c| c.ends_with("/upload"));
        let build = f.calls.iter().position(|c| c == "POST /v3/builds");
        assert!(upload < build, "{}", f.calls.join("\n"));
        assert!(
            !f.calls[upload.unwrap()..build.unwrap()]
                .iter()
                .any(|c| c.starts_with("GET /v3/packages/")),
            "{}",
            f.calls.join("\n")
        );
        for unwanted in ["POST /v3/apps", "PATCH /v3/apps/app-1", "POST /v3/routes"] {
            assert!(
                !f.calls.iter().any(|c| c == unwanted),
                "{unwanted} on re-push:\n{}",
                f.calls.join("\n")
            );
        }
        assert!(
            !f.calls
                .iter()
                .any(|c| c.starts_with("POST") && c.ends_with("/destinations"))
        );
        assert!(!f.calls.iter().any(|c| c.contains("/actions/scale")));
    }

    // A build that fails says why, with the hint for undetected apps.
    let error = kiln_cli::run_with_home(
        Command::Push(Box::new(push_args("nothing", &app_dir))),
        &home,
    )
    .await
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("NoAppDetectedError"), "{message}");
    assert!(message.contains("kiln buildpacks"), "{message}");

    // The other verbs run against the same shapes.
    let app = || AppArgs {
        name: "hello".into(),
    };
    kiln_cli::run_with_home(Command::Apps, &home).await.unwrap();
    kiln_cli::run_with_home(Command::App(app()), &home)
        .await
        .unwrap();
    kiln_cli::run_with_home(
        Command::Logs(LogsArgs {
            name: "hello".into(),
            recent: true,
        }),
        &home,
    )
    .await
    .unwrap();
    let recent = *fake.lock().unwrap().reads.last().unwrap();
    assert_eq!((recent.0, recent.1, recent.2), (0, true, 1000));
    let curl = CurlArgs {
        path: "/v3/apps".into(),
        method: None,
        headers: Vec::new(),
        data: None,
        include: false,
        fail: true,
    };
    kiln_cli::run_with_home(Command::Curl(curl), &home)
        .await
        .unwrap();
    kiln_cli::run_with_home(Command::Stop(app()), &home)
        .await
        .unwrap();
    assert!(
        fake.lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c == "POST /v3/apps/app-1/actions/stop")
    );
    kiln_cli::run_with_home(
        Command::Delete(DeleteArgs {
            name: "hello".into(),
            force: true,
            routes: false,
        }),
        &home,
    )
    .await
    .unwrap();
    assert_in_order(
        &fake.lock().unwrap().calls,
        &["DELETE /v3/apps/app-1", "GET /v3/jobs/app_delete-app-1"],
    );
    let error = kiln_cli::run_with_home(
        Command::App(AppArgs {
            name: "ghost".into(),
        }),
        &home,
    )
    .await
    .unwrap_err();
    assert_eq!(error.to_string(), "App 'ghost' not found.");

    // Logging out forgets the tokens; verbs then say how to log in.
    kiln_cli::run_with_home(Command::Logout, &home)
        .await
        .unwrap();
    let error = kiln_cli::run_with_home(Command::Apps, &home)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("kiln login"), "{error:#}");
}

#[tokio::test]
async fn a_wrong_password_fails_with_the_servers_reason() {
    let fake = start_fake().await;
    let base = fake.lock().unwrap().base.clone();
    let scratch = tempfile::tempdir().unwrap();
    let login = LoginArgs {
        api: Some(base),
        username: "admin".into(),
        password: "wrong".into(),
        org: None,
        space: None,
    };
    let error = kiln_cli::run_with_home(Command::Login(login), scratch.path())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Bad credentials"), "{error:#}");
}
