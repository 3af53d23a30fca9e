//! kiln-api with a real CCDB, a real blobstore and an in-process
//! `kiln_bbs::Bbs` in a temp dir. The API serves on loopback (its loops run
//! and the test, playing the cell, uses the signed URLs over HTTP as a cell
//! does); the test's own API calls go to `Api::router()` with `oneshot`.
//!
//! This file is the root of two test binaries: `it` keeps the
//! CCDB and the BBS database in SQLite files and blobs in a directory,
//! `it_pg` (../it_pg.rs) in a fresh database per test on a real PostgreSQL
//! server and blobs in a fresh bucket on a real S3 server (moto), so every
//! test runs on both.

mod app_features;
mod authz_table;
mod buildpack_update;
mod custom_buildpacks;
mod deployments;
mod domains;
mod droplets;
mod links;
mod manifest_processes;
mod manifest_services;
mod metadata;
mod oneshot;
mod paging;
mod quotas;
mod roles;
mod s3;
mod seq;
mod services;
mod sidecars;
mod space_quotas;
mod tasks;
mod waits;

use kiln_api::{Api, ApiConfig, ApiDeps};
use kiln_bbs::{ActualLrpFilter, Bbs, BbsClient};
use kiln_model::bbs::{CellCapacity, CellPresence, HttpRoute};
use kiln_store::FsBlobstore;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "s3cret-admin";
const STACK: &str = "testos1-host";

struct Kiln {
    url: String,
    router: axum::Router,
    bbs: Bbs,
    http: reqwest::Client,
    token: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    generated_password: Option<String>,
    /// The API's blobstore, for tests that look at what it stored.
    blobstore: Arc<dyn kiln_store::Blobstore>,
}

/// Where this binary keeps the CCDB and the BBS database: SQLite files in
/// `dir` (`it`), or a fresh PostgreSQL database (`it_pg`; the test is
/// skipped, loudly, when PostgreSQL is missing).
async fn databases(dir: &Path) -> Option<kiln_store::DatabaseUrl> {
    if env!("CARGO_CRATE_NAME") != "it_pg" {
        return Some(kiln_store::DatabaseUrl::SqliteDir(dir.to_path_buf()));
    }
    let pg = kiln_store::testing::Postgres::shared().await?;
    Some(pg.database_for(dir).await)
}

async fn start(dir: &Path, max_package_bytes: u64, password: Option<&str>) -> Kiln {
    let Some(url) = databases(dir).await else {
        // Without PostgreSQL (and not required), run on SQLite after all.
        return start_on(
            &kiln_store::DatabaseUrl::SqliteDir(dir.to_path_buf()),
            dir,
            max_package_bytes,
            password,
        )
        .await;
    };
    start_on(&url, dir, max_package_bytes, password).await
}

async fn start_on(
    databases: &kiln_store::DatabaseUrl,
    dir: &Path,
    max_package_bytes: u64,
    password: Option<&str>,
) -> Kiln {
    let blobstore = blobstore(dir).await;
    start_with_blobstore(databases, dir, max_package_bytes, password, blobstore).await
}

/// Where this binary keeps blobs: a directory in `dir` (`it`), or a bucket
/// of its own on the process's moto S3 server (`it_pg`: PostgreSQL+S3, as a
/// cluster runs), the same bucket when the test opens `dir` again. The
/// server is a process-wide static, alive as long as any test's Kiln.
async fn blobstore(dir: &Path) -> Arc<dyn kiln_store::Blobstore> {
    if env!("CARGO_CRATE_NAME") == "it_pg"
        && let Some(moto) = kiln_store::testing::MotoS3::shared().await
    {
        return Arc::new(moto.blobstore_for(dir).await.unwrap());
    }
    Arc::new(FsBlobstore::new(dir.join("blobs")).await.unwrap())
}

/// [`start_on`] with blobs in `blobstore`.
async fn start_with_blobstore(
    databases: &kiln_store::DatabaseUrl,
    dir: &Path,
    max_package_bytes: u64,
    password: Option<&str>,
    blobstore: Arc<dyn kiln_store::Blobstore>,
) -> Kiln {
    let bbs = Bbs::open_on(
        &databases.component("bbs.sqlite", "bbs"),
        kiln_store::DEFAULT_MAX_CONNECTIONS,
        Default::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api = Api::open_on(
        &databases.component("api/ccdb.sqlite", "ccdb"),
        kiln_store::OpenOptions::default(),
        ApiConfig {
            data_dir: dir.join("api"),
            external_url: url.clone(),
            domain: "localhost".into(),
            stack: STACK.into(),
            admin_password: password.map(str::to_string),
            max_package_bytes,
            staging_timeout_ms: 60_000,
            db_encryption_key_file: None,
        },
        ApiDeps {
            bbs: Arc::new(bbs.clone()),
            blobstore: blobstore.clone(),
            logs: Arc::new(kiln_logs::LogStore::default()),
        },
    )
    .await
    .unwrap();
    let generated_password = api.generated_admin_password().map(str::to_string);
    let router = api.router();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let served = tokio::spawn(async move { api.run(listener, token).await.unwrap() });
    let http = reqwest::Client::new();
    let mut kiln = Kiln {
        url,
        router,
        bbs,
        http,
        token: String::new(),
        shutdown,
        served,
        generated_password,
        blobstore,
    };
    let pw = password
        .map(str::to_string)
        .or(kiln.generated_password.clone())
        .unwrap_or_default();
    let login = kiln.login(&pw).await;
    assert_eq!(login.0, StatusCode::OK, "{}", login.1);
    kiln.token = login.1["access_token"].as_str().unwrap().to_string();
    kiln
}

impl Kiln {
    /// Whether the API's blobstore holds `key` (`packages/GUID`, ...).
    async fn blob_exists(&self, key: &str) -> bool {
        self.blobstore.exists(key).await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.served.await.unwrap();
    }

    async fn login(&self, password: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/oauth/token", self.url))
            .basic_auth("cf", Some(""))
            .form(&[
                ("grant_type", "password"),
                ("username", "admin"),
                ("password", password),
                ("scope", ""),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    /// Hands the request to the router (no socket); returns the status and
    /// the JSON body (a string if not JSON, null if empty).
    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let req = req.bearer_auth(&self.token).build().unwrap();
        let req: http::Request<reqwest::Body> = req.try_into().unwrap();
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, axum::body::Body::new(body));
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.patch(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn space_guid(&self) -> String {
        let (_, orgs) = self.get("/v3/organizations?names=kiln").await;
        let org = orgs["resources"][0]["guid"].as_str().unwrap().to_string();
        let (_, spaces) = self
            .get(&format!("/v3/spaces?names=dev&organization_guids={org}"))
            .await;
        spaces["resources"][0]["guid"].as_str().unwrap().to_string()
    }

    async fn create_app(&self, name: &str, lifecycle: Option<Value>) -> Value {
        let mut body = json!({"name": name, "relationships": {"space": {"data": {"guid": self.space_guid().await}}}});
        if let Some(l) = lifecycle {
            body["lifecycle"] = l;
        }
        let (status, app) = self.post("/v3/apps", body).await;
        assert_eq!(status, StatusCode::CREATED, "{app}");
        app
    }

    async fn upload_package(
        &self,
        package_guid: &str,
        resources: Value,
        bits: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new().text("resources", resources.to_string());
        if let Some(bits) = bits {
            form = form.part(
                "bits",
                reqwest::multipart::Part::bytes(bits).file_name("package.zip"),
            );
        }
        self.send(
            self.http
                .post(format!("{}/v3/packages/{package_guid}/upload", self.url))
                .multipart(form),
        )
        .await
    }

    async fn new_package(&self, app_guid: &str) -> String {
        let (status, p) = self
            .post(
                "/v3/packages",
                json!({"type": "bits", "relationships": {"app": {"data": {"guid": app_guid}}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        assert_eq!(p["state"], "AWAITING_UPLOAD");
        p["guid"].as_str().unwrap().to_string()
    }

    async fn create_buildpack(&self, name: &str, position: Option<i64>) -> Value {
        let mut body = json!({"name": name, "stack": null});
        if let Some(p) = position {
            body["position"] = json!(p);
        }
        let (status, bp) = self.post("/v3/buildpacks/", body).await;
        assert_eq!(status, StatusCode::CREATED, "{bp}");
        let guid = bp["guid"].as_str().unwrap();
        let form = reqwest::multipart::Form::new().part(
            "bits",
            reqwest::multipart::Part::bytes(zip_of(&[
                ("bin/detect", "#!/bin/sh\n"),
                ("bin/compile", "#!/bin/sh\n"),
            ]))
            .file_name(format!("{name}.zip")),
        );
        let r = self
            .http
            .post(format!("{}/v3/buildpacks/{guid}/upload", self.url))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with(&format!("{}/v3/jobs/", self.url)),
            "{location}"
        );
        let bp: Value = r.json().await.unwrap();
        assert_eq!(bp["state"], "READY");
        let job = self.send(self.http.get(&location)).await.1;
        assert_eq!(job["state"], "COMPLETE", "{job}");
        bp
    }

    /// Polls `path` until `done` holds (bounded).
    async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, v) = self.get(path).await;
            if done(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {path}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in files {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default().unix_permissions(0o755),
        )
        .unwrap();
        w.write_all(content.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn zip_with_symlink(link: &str, target: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("app.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"print('hi')\n").unwrap();
    w.add_symlink(link, target, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.finish().unwrap().into_inner()
}

fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(data))
}

fn error_of(v: &Value) -> (i64, String, String) {
    let e = &v["errors"][0];
    (
        e["code"].as_i64().unwrap_or(0),
        e["title"].as_str().unwrap_or("").into(),
        e["detail"].as_str().unwrap_or("").into(),
    )
}

#[tokio::test]
async fn apps_processes_errors_and_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, None).await;
    let generated = kiln
        .generated_password
        .clone()
        .expect("a generated password on first start");
    assert_eq!(generated.len(), 24);
    let on_disk = std::fs::read_to_string(dir.path().join("api/admin-password")).unwrap();
    assert_eq!(on_disk, generated);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("api/admin-password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let app = kiln.create_app("one", None).await;
    assert_eq!(app["state"], "STOPPED");
    assert_eq!(app["lifecycle"]["data"]["stack"], STACK);
    assert_eq!(
        app["links"]["self"]["href"],
        format!("{}/v3/apps/{}", kiln.url, app["guid"].as_str().unwrap())
    );
    assert!(app["relationships"]["current_droplet"]["data"]["guid"].is_null());
    let app_guid = app["guid"].as_str().unwrap();
    let (_, procs) = kiln.get(&format!("/v3/apps/{app_guid}/processes")).await;
    let web = &procs["resources"][0];
    assert_eq!(web["type"], "web");
    assert_eq!(web["instances"], 1);
    assert_eq!(web["memory_in_mb"], 256);
    assert_eq!(web["disk_in_mb"], 1024);
    assert_eq!(
        web["health_check"],
        json!({"type": "port", "data": {"timeout": null, "invocation_timeout": null}})
    );
    assert!(web["command"].is_null());

    // Name conflict.
    let space = kiln.space_guid().await;
    let (status, body) = kiln
        .post(
            "/v3/apps",
            json!({"name": "one", "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body).2, "App with the name 'one' already exists.");

    // Pagination.
    kiln.create_app("two", None).await;
    kiln.create_app("three", None).await;
    let (_, page) = kiln.get("/v3/apps?per_page=2").await;
    assert_eq!(page["pagination"]["total_results"], 3);
    assert_eq!(page["pagination"]["total_pages"], 2);
    assert_eq!(page["resources"].as_array().unwrap().len(), 2);
    assert!(page["pagination"]["previous"].is_null());
    let next = page["pagination"]["next"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page2) = kiln.send(kiln.http.get(&next)).await;
    assert_eq!(page2["resources"][0]["name"], "three");
    assert!(page2["pagination"]["next"].is_null());
    let (_, named) = kiln.get("/v3/apps?names=two,three&order_by=-name").await;
    assert_eq!(named["resources"][0]["name"], "two");
    let (status, _) = kiln.get("/v3/apps?per_page=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Unknown guids.
    for (path, resource) in [
        ("/v3/apps/nope", "App"),
        ("/v3/packages/nope", "Package"),
        ("/v3/builds/nope", "Build"),
        ("/v3/droplets/nope", "Droplet"),
        ("/v3/processes/nope", "Process"),
        ("/v3/routes/nope", "Route"),
        ("/v3/buildpacks/nope", "Buildpack"),
        ("/v3/jobs/nope", "Job"),
    ] {
        let (status, body) = kiln.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            error_of(&body),
            (
                10010,
                "CF-ResourceNotFound".into(),
                format!("{resource} not found")
            )
        );
    }
    let (status, body) = kiln
        .get(&format!("/v3/apps/{app_guid}/droplets/current"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body).2, "Droplet not found");

    // Malformed JSON, unknown fields, null = not given.
    let (status, body) = kiln
        .send(
            kiln.http
                .post(format!("{}/v3/apps", kiln.url))
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body).0, 1001);
    let (status, body) = kiln
        .post(
            "/v3/apps",
            json!({"name": "x", "bogus": 1, "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body),
        (
            10008,
            "CF-UnprocessableEntity".into(),
            "Unknown field(s): 'bogus'".into()
        )
    );
    let (status, _) = kiln
        .post("/v3/apps", json!({"name": "nulls", "lifecycle": null, "environment_variables": null, "relationships": {"space": {"data": {"guid": space}}}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Start without a droplet; env vars; scale.
    let (status, body) = kiln
        .post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body).2,
        "Assign a droplet before starting this app."
    );
    let (_, vars) = kiln
        .patch(
            &format!("/v3/apps/{app_guid}/environment_variables"),
            json!({"var": {"A": "1", "B": "2"}}),
        )
        .await;
    assert_eq!(vars["var"], json!({"A": "1", "B": "2"}));
    let (_, vars) = kiln
        .patch(
            &format!("/v3/apps/{app_guid}/environment_variables"),
            json!({"var": {"A": null}}),
        )
        .await;
    assert_eq!(vars["var"], json!({"B": "2"}));
    let (_, env) = kiln.get(&format!("/v3/apps/{app_guid}/env")).await;
    assert_eq!(
        env["application_env_json"]["VCAP_APPLICATION"]["application_name"],
        "one"
    );
    let (status, scaled) = kiln
        .post(
            &format!("/v3/apps/{app_guid}/processes/web/actions/scale"),
            json!({"instances": 3, "memory_in_mb": 512}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(scaled["instances"], 3);
    let (_, stats) = kiln
        .get(&format!(
            "/v3/processes/{}/stats",
            scaled["guid"].as_str().unwrap()
        ))
        .await;
    let states: Vec<_> = stats["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].clone())
        .collect();
    assert_eq!(states, vec![json!("DOWN"); 3]);

    // Delete → 202 + job, and it is gone.
    let r = kiln
        .http
        .delete(format!("{}/v3/apps/{app_guid}", kiln.url))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/v3/jobs/")
    );
    assert_eq!(
        kiln.get(&format!("/v3/apps/{app_guid}")).await.0,
        StatusCode::NOT_FOUND
    );
    kiln.stop().await;

    // A second start keeps the password and generates none.
    let kiln = start(dir.path(), 1 << 20, Some(&generated)).await;
    assert!(kiln.generated_password.is_none());
    kiln.stop().await;
}

#[tokio::test]
async fn buildpacks_positions_and_invalid_zips() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    kiln.create_buildpack("second", Some(1)).await;
    kiln.create_buildpack("first", None).await; // CC's default position is 1
    kiln.create_buildpack("zeroth", Some(1)).await;
    kiln.create_buildpack("last", Some(99)).await;
    let (_, list) = kiln.get("/v3/buildpacks").await;
    let names: Vec<_> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].clone(), b["position"].clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            (json!("zeroth"), json!(1)),
            (json!("first"), json!(2)),
            (json!("second"), json!(3)),
            (json!("last"), json!(4))
        ]
    );
    let (status, _) = kiln.post("/v3/buildpacks", json!({"name": "first"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = kiln
        .post("/v3/buildpacks", json!({"name": "nowhere", "position": 0}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, bp) = kiln.post("/v3/buildpacks", json!({"name": "broken"})).await;
    let guid = bp["guid"].as_str().unwrap();
    for bits in [
        b"not a zip".to_vec(),
        zip_of(&[("README", "no bin here")]),
        zip_of(&[("bin/helper", "not a buildpack script")]),
        zip_of(&[("a/bin/detect", "x"), ("b/bin/compile", "x")]),
    ] {
        let form = reqwest::multipart::Form::new().part(
            "bits",
            reqwest::multipart::Part::bytes(bits).file_name("b.zip"),
        );
        let (status, body) = kiln
            .send(
                kiln.http
                    .post(format!("{}/v3/buildpacks/{guid}/upload", kiln.url))
                    .multipart(form),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error_of(&body).1, "CF-BuildpackInvalid");
    }
    // One nested directory holding bin/ is fine.
    let form = reqwest::multipart::Form::new().part(
        "bits",
        reqwest::multipart::Part::bytes(zip_of(&[("bp-1.0/bin/detect", "x")])).file_name("b.zip"),
    );
    let (status, _) = kiln
        .send(
            kiln.http
                .post(format!("{}/v3/buildpacks/{guid}/upload", kiln.url))
                .multipart(form),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    kiln.stop().await;
}

#[tokio::test]
async fn package_upload_resource_matching_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    const LIMIT: usize = 2 << 20;
    let kiln = start(dir.path(), LIMIT as u64, Some(PASSWORD)).await;
    let app = kiln.create_app("pkg", None).await;
    let app_guid = app["guid"].as_str().unwrap();

    // Over the resource pool's 64 KiB minimum, so the cache keeps it.
    let content = format!("print('hello from kiln')\n{}", "# padding\n".repeat(7000));
    let content = content.as_str();
    let sha = sha1_hex(content.as_bytes());
    let resource = json!({"checksum": {"value": sha}, "size_in_bytes": content.len(), "path": "app.py", "mode": "644"});
    let (status, matches) = kiln
        .post("/v3/resource_matches", json!({"resources": [resource]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(matches["resources"], json!([]));

    let p1 = kiln.new_package(app_guid).await;
    let (status, body) = kiln
        .upload_package(
            &p1,
            json!([]),
            Some(zip_of(&[
                ("app.py", content),
                ("Procfile", "web: python app.py\n"),
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "READY");

    let (_, matches) = kiln
        .post("/v3/resource_matches", json!({"resources": [resource]}))
        .await;
    assert_eq!(matches["resources"], json!([resource]));
    // As in Cloud Controller, small files (the Procfile, uploaded too) and
    // files their owner cannot write are never matched: they travel in the
    // zip.
    let procfile = "web: python app.py\n";
    let small = json!({"checksum": {"value": sha1_hex(procfile.as_bytes())}, "size_in_bytes": procfile.len(), "path": "Procfile", "mode": "644"});
    let mut read_only = resource.clone();
    read_only["mode"] = json!("444");
    let (_, matches) = kiln
        .post(
            "/v3/resource_matches",
            json!({"resources": [small, read_only]}),
        )
        .await;
    assert_eq!(matches["resources"], json!([]));
    // A big app offers tens of thousands of files (a body of several MB).
    let mut offered: Vec<Value> = (0..30_000)
        .map(|i| json!({"checksum": {"value": format!("{i:040x}")}, "size_in_bytes": 10, "path": format!("src/file-{i}.txt"), "mode": "644"}))
        .collect();
    offered.push(resource.clone());
    let (status, matches) = kiln
        .post("/v3/resource_matches", json!({"resources": offered}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(matches["resources"], json!([resource]));

    // Second package: only the resource list, in the legacy shape too.
    let p2 = kiln.new_package(app_guid).await;
    let legacy = json!([{"sha1": sha, "size": content.len(), "fn": "app.py", "mode": "644"}]);
    let (status, body) = kiln.upload_package(&p2, legacy, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = kiln
        .blobstore
        .open(&format!("packages/{p2}"))
        .await
        .unwrap()
        .into_std()
        .await;
    let mut zip = zip::ZipArchive::new(stored).unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("app.py").unwrap(), &mut got).unwrap();
    assert_eq!(got, content);

    // A listed resource the cache lacks.
    let p3 = kiln.new_package(app_guid).await;
    let missing = json!([{"checksum": {"value": "0".repeat(40)}, "size_in_bytes": 3, "path": "x", "mode": "644"}]);
    let (status, body) = kiln.upload_package(&p3, missing, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body).0, 150001);

    // Dangerous zips leave the package awaiting upload.
    for bits in [
        zip_of(&[("../evil", "x")]),
        zip_of(&[("/etc/evil", "x")]),
        zip_with_symlink("link", "../../etc/passwd"),
        zip_with_symlink("link", "/etc/passwd"),
    ] {
        let (status, body) = kiln.upload_package(&p3, json!([]), Some(bits)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            error_of(&body),
            (150001, "CF-AppPackageInvalid".into(), error_of(&body).2)
        );
        assert_eq!(
            kiln.get(&format!("/v3/packages/{p3}")).await.1["state"],
            "AWAITING_UPLOAD"
        );
    }
    // A symlink that stays inside is fine.
    let (status, _) = kiln
        .upload_package(
            &p3,
            json!([]),
            Some(zip_with_symlink("lib/link", "../app.py")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Oversized.
    let p4 = kiln.new_package(app_guid).await;
    let big = "x".repeat(LIMIT + 1024);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(
        "big",
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )
    .unwrap();
    w.write_all(big.as_bytes()).unwrap();
    let (status, body) = kiln
        .upload_package(&p4, json!([]), Some(w.finish().unwrap().into_inner()))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_of(&body),
        (
            150001,
            "CF-AppPackageInvalid".into(),
            format!("The app package is invalid: Package may not be larger than {LIMIT} bytes")
        )
    );
    assert_eq!(
        kiln.get(&format!("/v3/packages/{p4}")).await.1["state"],
        "AWAITING_UPLOAD"
    );
    // Small on the wire, too big unpacked (CC's packer counts unpacked
    // bytes): refused, package unchanged.
    let bomb = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(
            "zeros",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        w.write_all(&vec![0u8; LIMIT + 1024]).unwrap();
        w.finish().unwrap().into_inner()
    };
    assert!(bomb.len() < LIMIT);
    let (status, body) = kiln.upload_package(&p4, json!([]), Some(bomb)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        error_of(&body).2,
        format!("The app package is invalid: Package may not be larger than {LIMIT} bytes")
    );
    // Listed cached resources count too.
    let many = json!((0..20)
        .map(|i| json!({"checksum": {"value": sha}, "size_in_bytes": content.len(), "path": format!("f{i}"), "mode": "644"}))
        .collect::<Vec<_>>());
    let (status, _) = kiln.upload_package(&p4, many, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "20 cached files of 70 KB fit; 40 do not"
    );
    let p5 = kiln.new_package(app_guid).await;
    let too_many = json!((0..40)
        .map(|i| json!({"checksum": {"value": sha}, "size_in_bytes": content.len(), "path": format!("f{i}"), "mode": "644"}))
        .collect::<Vec<_>>());
    let (status, body) = kiln.upload_package(&p5, too_many, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body).0, 150001);
    assert_eq!(
        kiln.get(&format!("/v3/packages/{p5}")).await.1["state"],
        "AWAITING_UPLOAD"
    );
    // Not multipart at all: CF's envelope, not a bare rejection.
    let (status, body) = kiln
        .post(&format!("/v3/packages/{p5}/upload"), json!({"bits": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_of(&body).1, "CF-InvalidContentType");
    // A second upload to a READY package is refused.
    let (status, _) = kiln
        .upload_package(&p1, json!([]), Some(zip_of(&[("a", "b")])))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, list) = kiln
        .get(&format!("/v3/packages?app_guids={app_guid}&states=READY"))
        .await;
    assert_eq!(list["pagination"]["total_results"], 4);
    // The newest package, as `cf start` asks for it (all made this second).
    let (_, newest) = kiln
        .get(&format!(
            "/v3/packages?app_guids={app_guid}&order_by=-created_at&per_page=1&page=1"
        ))
        .await;
    assert_eq!(newest["resources"][0]["guid"], p5);
    kiln.stop().await;
}

fn cell() -> CellPresence {
    CellPresence {
        cell_id: "cell-1".into(),
        address: "127.0.0.1".into(),
        capacity: CellCapacity {
            memory_mb: 64 * 1024,
            disk_mb: 64 * 1024,
            containers: 100,
        },
        rootfs_providers: vec![kiln_model::rootfs::RootFsProvider::preloaded(STACK)],
    }
}

/// Uploads a one-file package for `app_guid`, stages it with the
/// buildpack `bp_guid` and makes its droplet the app's current one;
/// returns the droplet's guid.
async fn droplet_made_current(kiln: &Kiln, app_guid: &str, bp_guid: &str) -> String {
    let pkg = kiln.new_package(app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "print(1)")])))
        .await;
    let build = stage(kiln, &pkg, Ok(&staging_result(bp_guid))).await;
    let droplet = build["droplet"]["guid"].as_str().unwrap().to_string();
    let (status, v) = kiln
        .patch(
            &format!("/v3/apps/{app_guid}/relationships/current_droplet"),
            json!({"data": {"guid": droplet}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    droplet
}

/// Plays the cell's upload step: a POST of the bytes to the API, or (a
/// blobstore that signs uploads) a PUT into the store's signed URL and the
/// report of what was PUT to the API. The last request's response.
async fn cell_upload(
    kiln: &Kiln,
    action: &kiln_model::bbs::UploadAction,
    bytes: &[u8],
) -> reqwest::Response {
    use kiln_model::bbs::UploadMethod;
    if action.method == UploadMethod::Post {
        return kiln
            .http
            .post(&action.to)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
    }
    let put = kiln
        .http
        .put(&action.to)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    match &action.report_to {
        Some(report_to) => kiln
            .http
            .post(report_to)
            .json(&upload_report(bytes))
            .send()
            .await
            .unwrap(),
        None => put,
    }
}

/// What a cell reports of `bytes` after PUTting them.
fn upload_report(bytes: &[u8]) -> kiln_model::bbs::UploadReport {
    use sha2::Digest;
    kiln_model::bbs::UploadReport {
        size: bytes.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        md5: hex::encode(md5::Md5::digest(bytes)),
    }
}

/// Stages the app's newest package through the BBS, playing the cell.
async fn stage(kiln: &Kiln, package_guid: &str, outcome: Result<&str, &str>) -> Value {
    let (status, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": package_guid}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    assert_eq!(build["state"], "STAGING");
    let build_guid = build["guid"].as_str().unwrap().to_string();
    let task = kiln.bbs.task_by_guid(&build_guid).await.unwrap();
    kiln.bbs.heartbeat_cell(cell()).await.unwrap();
    kiln.bbs.converge().await.unwrap();
    assert!(kiln.bbs.start_task(&build_guid, "cell-1").await.unwrap());
    match outcome {
        Ok(result) => {
            // Fetch the package and upload a droplet like the cell does.
            let pkg = kiln
                .http
                .get(&task.definition.downloads[0].from)
                .send()
                .await
                .unwrap();
            assert_eq!(pkg.status(), StatusCode::OK);
            assert!(!pkg.bytes().await.unwrap().is_empty());
            let up = cell_upload(kiln, &task.definition.uploads[0], b"fake droplet tgz").await;
            let status = up.status();
            assert!(status.is_success(), "{status} {}", up.text().await.unwrap());
            kiln.bbs
                .complete_task(&build_guid, "cell-1", false, "", result)
                .await
                .unwrap();
        }
        Err(reason) => kiln
            .bbs
            .complete_task(&build_guid, "cell-1", true, reason, "")
            .await
            .unwrap(),
    }
    kiln.wait_for(&format!("/v3/builds/{build_guid}"), |b| {
        b["state"] != "STAGING"
    })
    .await
}

#[tokio::test]
async fn push_path_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let bp_guid = bp["guid"].as_str().unwrap();
    let app = kiln
        .create_app(
            "hello",
            Some(json!({"type": "buildpack", "data": {"buildpacks": ["python"]}})),
        )
        .await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    kiln.patch(
        &format!("/v3/apps/{app_guid}/environment_variables"),
        json!({"var": {"GREETING": "hi"}}),
    )
    .await;

    // Not ready → 400.
    let pkg = kiln.new_package(&app_guid).await;
    let (status, body) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body).2,
        "Bad request: Cannot stage package whose state is not ready."
    );
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "print(1)\n")])))
        .await;

    // The staging task as the contract says.
    let (status, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    assert_eq!(build["created_by"]["name"], "admin");
    assert_eq!(build["lifecycle"]["data"]["buildpacks"], json!(["python"]));
    let build_guid = build["guid"].as_str().unwrap().to_string();
    let (status, body) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body).0, 170017);
    let task = kiln.bbs.task_by_guid(&build_guid).await.unwrap();
    assert_eq!(task.domain, "cf-app-staging");
    let d = &task.definition;
    assert_eq!(d.rootfs.to_string(), format!("preloaded:{STACK}"));
    assert_eq!(d.log_guid, app_guid);
    assert_eq!(d.log_source, "STG");
    assert_eq!(
        (d.memory_mb, d.disk_mb, d.timeout_ms),
        // The Task's timeout is the configured staging timeout.
        (1024, 4096, 60_000)
    );
    assert_eq!(d.result_file, "/tmp/result.json");
    assert_eq!(d.downloads.len(), 3);
    assert_eq!(d.downloads[0].to, "/tmp/app");
    assert_eq!(d.downloads[0].kind, kiln_model::bbs::ArtifactKind::Zip);
    // Named by the buildpack's name, so staging headers name it too.
    assert_eq!(d.downloads[1].to, "/tmp/buildpacks/python");
    assert_eq!(
        d.downloads[1].cache_key.as_deref(),
        Some(
            format!(
                "buildpack-{bp_guid}-{}",
                d.downloads[1].checksum.as_ref().unwrap().value
            )
            .as_str()
        )
    );
    assert_eq!(
        d.downloads[1].checksum.as_ref().unwrap().algorithm,
        "sha256"
    );
    assert_eq!(
        (d.downloads[2].to.as_str(), d.downloads[2].optional),
        ("/tmp/cache", true)
    );
    assert_eq!(d.run.path, "/tmp/lifecycle/kiln");
    assert_eq!(
        d.run.args,
        vec![
            "lifecycle".to_string(),
            "builder".into(),
            "--build-dir=/tmp/app".into(),
            "--buildpacks-dir=/tmp/buildpacks".into(),
            "--buildpack-order=python".into(),
            "--skip-detect=true".into(),
            "--output-droplet=/tmp/droplet".into(),
            "--output-metadata=/tmp/result.json".into(),
            "--build-artifacts-cache-dir=/tmp/cache".into(),
            "--output-build-artifacts-cache=/tmp/output-cache".into(),
        ]
    );
    // Buildpack scripts run in the user's home, as on Diego.
    assert_eq!(
        (d.run.user.as_str(), d.run.dir.as_deref()),
        ("vcap", Some("/home/vcap"))
    );
    let env = |name: &str| {
        d.run
            .env
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone())
    };
    assert_eq!(env("CF_STACK").as_deref(), Some(STACK));
    assert_eq!(env("MEMORY_LIMIT").as_deref(), Some("1024m"));
    assert_eq!(env("VCAP_SERVICES").as_deref(), Some("{}"));
    assert_eq!(env("LANG").as_deref(), Some("en_US.UTF-8"));
    assert_eq!(env("GREETING").as_deref(), Some("hi"));
    let vcap: Value = serde_json::from_str(&env("VCAP_APPLICATION").unwrap()).unwrap();
    assert_eq!(vcap["application_name"], "hello");
    let version = vcap["version"].as_str().unwrap();
    assert_eq!(version.len(), 36, "{vcap}");
    assert_eq!(vcap["application_version"], version);
    assert_eq!(d.uploads[0].from, "/tmp/droplet");
    assert_eq!(d.uploads[1].from, "/tmp/output-cache");

    // Signed URLs: the buildpack downloads, a tampered signature is refused.
    let r = kiln.http.get(&d.downloads[1].from).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tampered = d.downloads[0].from.replace("signature=", "signature=00");
    assert_eq!(
        kiln.http.get(&tampered).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let other = d.downloads[0].from.replace(&pkg, &build_guid);
    assert_eq!(
        kiln.http.get(&other).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // A correctly signed URL that has expired is refused too: sign the
    // package path with the API's key (from its data dir) both ways.
    let key = std::fs::read_to_string(dir.path().join("api/signing-key")).unwrap();
    let path = format!("/internal/v4/packages/{pkg}/download");
    let signed = |expires: i64| {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.trim().as_bytes()).unwrap();
        mac.update(format!("GET\n{path}\n{expires}").as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        format!("{}{path}?expires={expires}&signature={signature}", kiln.url)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = kiln.http.get(signed(now + 60)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the test signs like the api");
    let r = kiln.http.get(signed(now - 1)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_of(&r.json().await.unwrap()).1, "CF-NotAuthorized");
    // The API's own signed upload URL: the droplet's, or the report of
    // one PUT into the blobstore.
    let api_upload = d.uploads[0].report_to.as_ref().unwrap_or(&d.uploads[0].to);
    let bad_upload = api_upload.replace("signature=", "signature=ab");
    let r = kiln
        .http
        .post(&bad_upload)
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        !kiln
            .blob_exists(&format!(
                "droplets/{}",
                api_upload.split('/').nth(6).unwrap()
            ))
            .await
    );
    // The build cache is absent until uploaded.
    assert_eq!(
        kiln.http
            .get(&d.downloads[2].from)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Play the cell.
    let pkg_bytes = kiln
        .http
        .get(&d.downloads[0].from)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        zip::ZipArchive::new(std::io::Cursor::new(pkg_bytes.to_vec()))
            .unwrap()
            .by_name("app.py")
            .is_ok()
    );
    let r = cell_upload(&kiln, &d.uploads[0], b"droplet bytes").await;
    assert!(r.status().is_success());
    let r = cell_upload(&kiln, &d.uploads[1], b"cache bytes").await;
    assert!(r.status().is_success());
    kiln.bbs.heartbeat_cell(cell()).await.unwrap();
    kiln.bbs.converge().await.unwrap();
    assert!(kiln.bbs.start_task(&build_guid, "cell-1").await.unwrap());
    let result = json!({
        "lifecycle_type": "buildpack",
        "lifecycle_metadata": {"buildpack_key": bp_guid, "detected_buildpack": "python",
                               "buildpacks": [{"key": bp_guid, "name": "python", "version": "1.0.0"}]},
        "process_types": {"web": "python app.py"},
        "execution_metadata": "",
    })
    .to_string();
    kiln.bbs
        .complete_task(&build_guid, "cell-1", false, "", &result)
        .await
        .unwrap();
    let build = kiln
        .wait_for(&format!("/v3/builds/{build_guid}"), |b| {
            b["state"] != "STAGING"
        })
        .await;
    assert_eq!(build["state"], "STAGED", "{build}");
    let droplet_guid = build["droplet"]["guid"].as_str().unwrap().to_string();
    let (_, droplet) = kiln.get(&format!("/v3/droplets/{droplet_guid}")).await;
    assert_eq!(droplet["state"], "STAGED");
    assert_eq!(droplet["process_types"], json!({"web": "python app.py"}));
    // The package's droplets, as `cf restart` looks them up.
    let (status, of_pkg) = kiln.get(&format!("/v3/packages/{pkg}/droplets")).await;
    assert_eq!(status, StatusCode::OK, "{of_pkg}");
    assert_eq!(of_pkg["pagination"]["total_results"], 1, "{of_pkg}");
    assert_eq!(of_pkg["resources"][0]["guid"], json!(droplet_guid));
    let (status, e) = kiln.get("/v3/packages/nope/droplets").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(droplet["checksum"]["type"], "sha256");
    assert_eq!(droplet["buildpacks"][0]["name"], "python");
    assert_eq!(droplet["buildpacks"][0]["version"], "1.0.0");
    // The task is resolved and deleted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kiln.bbs.task_by_guid(&build_guid).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the staging task was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The build cache is now there.
    assert_eq!(
        kiln.http
            .get(&d.downloads[2].from)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A failed staging maps the exit code.
    let pkg2 = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg2, json!([]), Some(zip_of(&[("x.txt", "x")])))
        .await;
    let failed = stage(&kiln, &pkg2, Err("Exited with status 222")).await;
    assert_eq!(failed["state"], "FAILED");
    assert_eq!(
        failed["error"],
        "NoAppDetectedError - An app was not successfully detected by any available buildpack"
    );
    let (_, droplets) = kiln
        .get(&format!("/v3/droplets?app_guids={app_guid}&states=FAILED"))
        .await;
    assert_eq!(droplets["pagination"]["total_results"], 1);
    let pkg3 = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg3, json!([]), Some(zip_of(&[("x.txt", "x")])))
        .await;
    let failed = stage(&kiln, &pkg3, Err("exceeded 900s timeout")).await;
    assert_eq!(
        failed["error"],
        "StagingError - Staging error: exceeded 900s timeout"
    );
    // Success without an uploaded droplet fails.
    let pkg4 = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg4, json!([]), Some(zip_of(&[("x.txt", "x")])))
        .await;
    let (_, b4) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg4}}))
        .await;
    let b4 = b4["guid"].as_str().unwrap().to_string();
    kiln.bbs.converge().await.unwrap();
    kiln.bbs.start_task(&b4, "cell-1").await.unwrap();
    kiln.bbs
        .complete_task(&b4, "cell-1", false, "", &result)
        .await
        .unwrap();
    let b4 = kiln
        .wait_for(&format!("/v3/builds/{b4}"), |b| b["state"] != "STAGING")
        .await;
    assert_eq!(b4["state"], "FAILED");

    // A route, the droplet, start.
    let (_, domains) = kiln.get("/v3/domains?names=localhost").await;
    let domain_guid = domains["resources"][0]["guid"].as_str().unwrap();
    let space = kiln.space_guid().await;
    let (status, body) = kiln
        .post(
            "/v3/routes",
            json!({"relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain_guid}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(&body).2.starts_with("Missing host"));
    let route_body = json!({"host": "hello", "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain_guid}}}});
    let (status, route) = kiln.post("/v3/routes", route_body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{route}");
    assert_eq!(route["url"], "hello.localhost");
    let (status, body) = kiln.post("/v3/routes", route_body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(&body).2.starts_with("Route already exists"));
    let route_guid = route["guid"].as_str().unwrap();
    let dest = json!({"destinations": [{"app": {"guid": app_guid}}]});
    let (status, dests) = kiln
        .post(
            &format!("/v3/routes/{route_guid}/destinations"),
            dest.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dests["destinations"][0]["port"], 8080);
    assert_eq!(dests["destinations"][0]["protocol"], "http1");
    assert_eq!(dests["destinations"][0]["app"]["process"]["type"], "web");
    let (_, dests) = kiln
        .post(&format!("/v3/routes/{route_guid}/destinations"), dest)
        .await;
    assert_eq!(dests["destinations"].as_array().unwrap().len(), 1);
    let (_, app_routes) = kiln.get(&format!("/v3/apps/{app_guid}/routes")).await;
    assert_eq!(app_routes["resources"][0]["url"], "hello.localhost");

    let (status, body) = kiln
        .patch(
            &format!("/v3/apps/{app_guid}/relationships/current_droplet"),
            json!({"data": {"guid": droplet_guid}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["guid"], droplet_guid);
    let (_, current) = kiln
        .get(&format!("/v3/apps/{app_guid}/droplets/current"))
        .await;
    assert_eq!(current["guid"], droplet_guid);
    let (status, started) = kiln
        .post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["state"], "STARTED");

    let (_, procs) = kiln
        .get(&format!("/v3/processes?app_guids={app_guid}"))
        .await;
    let web = &procs["resources"][0];
    let process_guid = format!(
        "{}-{}",
        web["guid"].as_str().unwrap(),
        web["version"].as_str().unwrap()
    );
    let lrp = kiln
        .bbs
        .desired_lrp_by_process_guid(&process_guid)
        .await
        .unwrap();
    assert_eq!(lrp.domain, "cf-apps");
    assert_eq!(lrp.instances, 1);
    assert_eq!(lrp.routes, vec![HttpRoute::from("hello.localhost")]);

    // A path route reaches the router with host and path apart.
    let (status, api_route) = kiln
        .post(
            "/v3/routes",
            json!({"host": "hello", "path": "/api", "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain_guid}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{api_route}");
    assert_eq!(api_route["url"], "hello.localhost/api");
    let api_route_guid = api_route["guid"].as_str().unwrap();
    let (_, api_dests) = kiln
        .post(
            &format!("/v3/routes/{api_route_guid}/destinations"),
            json!({"destinations": [{"app": {"guid": app_guid}}]}),
        )
        .await;
    let routes = kiln
        .bbs
        .desired_lrp_by_process_guid(&process_guid)
        .await
        .unwrap()
        .routes;
    assert!(
        routes.contains(&HttpRoute {
            host: "hello.localhost".into(),
            path: "/api".into()
        }),
        "{routes:?}"
    );
    let api_dguid = api_dests["destinations"][0]["guid"].as_str().unwrap();
    let r = kiln
        .http
        .delete(format!(
            "{}/v3/routes/{api_route_guid}/destinations/{api_dguid}",
            kiln.url
        ))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        kiln.bbs
            .desired_lrp_by_process_guid(&process_guid)
            .await
            .unwrap()
            .routes,
        vec![HttpRoute::from("hello.localhost")]
    );
    // A route on an internal domain is mapped, and is in the app's URIs,
    // but the router is never given it (CF serves it only over
    // container-to-container DNS).
    let (status, internal) = kiln
        .post(
            "/v3/domains",
            json!({"name": "apps.internal.test", "internal": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{internal}");
    let (status, iroute) = kiln
        .post(
            "/v3/routes",
            json!({"host": "hello", "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": internal["guid"]}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{iroute}");
    let (status, v) = kiln
        .post(
            &format!(
                "/v3/routes/{}/destinations",
                iroute["guid"].as_str().unwrap()
            ),
            json!({"destinations": [{"app": {"guid": app_guid}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, app_routes) = kiln.get(&format!("/v3/apps/{app_guid}/routes")).await;
    assert_eq!(app_routes["pagination"]["total_results"], 2, "{app_routes}");
    assert_eq!(
        kiln.bbs
            .desired_lrp_by_process_guid(&process_guid)
            .await
            .unwrap()
            .routes,
        vec![HttpRoute::from("hello.localhost")],
        "no internal route reaches the router"
    );
    let (_, env) = kiln.get(&format!("/v3/apps/{app_guid}/env")).await;
    let uris = &env["application_env_json"]["VCAP_APPLICATION"]["application_uris"];
    assert!(
        uris.as_array()
            .unwrap()
            .iter()
            .any(|u| u == "hello.apps.internal.test"),
        "{env}"
    );
    assert_eq!(lrp.log_guid, app_guid);
    assert_eq!(lrp.log_source, "APP/PROC/WEB");
    assert_eq!(lrp.rootfs.to_string(), format!("preloaded:{STACK}"));
    assert_eq!(lrp.setup[0].to, "/home/vcap");
    assert_eq!(
        lrp.setup[0].cache_key.as_deref(),
        Some(format!("droplet-{droplet_guid}").as_str())
    );
    assert_eq!(
        lrp.action.args,
        vec!["lifecycle", "launcher", "app", "", ""]
    );
    assert_eq!(lrp.action.user, "vcap");
    assert_eq!(lrp.health_check, kiln_model::bbs::HealthCheck::Port);
    let lrp_env = |name: &str| {
        lrp.action
            .env
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone())
    };
    assert_eq!(lrp_env("VCAP_APP_HOST").as_deref(), Some("0.0.0.0"));
    assert_eq!(lrp_env("MEMORY_LIMIT").as_deref(), Some("256m"));
    let vcap: Value = serde_json::from_str(&lrp_env("VCAP_APPLICATION").unwrap()).unwrap();
    assert_eq!(vcap["application_uris"], json!(["hello.localhost"]));
    assert_eq!(vcap["process_type"], "web");
    // The droplet download works.
    let r = kiln.http.get(&lrp.setup[0].from).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"droplet bytes");

    let web_guid = web["guid"].as_str().unwrap();
    let (_, stats) = kiln.get(&format!("/v3/processes/{web_guid}/stats")).await;
    assert_eq!(stats["resources"][0]["state"], "STARTING", "{stats}");
    assert_eq!(stats["resources"][0]["mem_quota"], 256 * 1024 * 1024);

    // Scale → instances on the same DesiredLrp; unmap → routes updated.
    let (status, _) = kiln
        .post(
            &format!("/v3/processes/{web_guid}/actions/scale"),
            json!({"instances": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        kiln.bbs
            .desired_lrp_by_process_guid(&process_guid)
            .await
            .unwrap()
            .instances,
        2
    );
    let dguid = dests["destinations"][0]["guid"].as_str().unwrap();
    let r = kiln
        .http
        .delete(format!(
            "{}/v3/routes/{route_guid}/destinations/{dguid}",
            kiln.url
        ))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        kiln.bbs
            .desired_lrp_by_process_guid(&process_guid)
            .await
            .unwrap()
            .routes
            .is_empty()
    );

    // Restart → new version, old LRP gone.
    kiln.post(&format!("/v3/apps/{app_guid}/actions/restart"), json!({}))
        .await;
    let (_, web2) = kiln.get(&format!("/v3/processes/{web_guid}")).await;
    assert_ne!(web2["version"], web["version"]);
    let lrps = kiln.bbs.desired_lrps(Some("cf-apps")).await.unwrap();
    assert_eq!(lrps.len(), 1);
    assert_eq!(
        lrps[0].process_guid,
        format!("{web_guid}-{}", web2["version"].as_str().unwrap())
    );

    // API log lines.
    let (_, logs) = kiln
        .get(&format!(
            "/api/v1/read/{app_guid}?start_time=0&envelope_types=LOG"
        ))
        .await;
    let batch = logs["envelopes"]["batch"].as_array().unwrap();
    assert!(batch.iter().any(|e| e["tags"]["source_type"] == "API"));
    use base64::Engine;
    let texts: Vec<String> = batch
        .iter()
        .map(|e| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(e["log"]["payload"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert!(texts.iter().any(|t| t == &format!("Updated app with guid {app_guid} ({{\"state\"=>\"STARTED\"}})")), "{texts:?}");
    assert!(batch[0]["timestamp"].is_string());
    // Several envelope types are a union; only non-log types find nothing.
    let (_, both) = kiln
        .get(&format!(
            "/api/v1/read/{app_guid}?start_time=0&envelope_types=GAUGE&envelope_types=LOG"
        ))
        .await;
    assert_eq!(
        both["envelopes"]["batch"].as_array().unwrap().len(),
        batch.len()
    );
    let (_, gauges) = kiln
        .get(&format!(
            "/api/v1/read/{app_guid}?start_time=0&envelope_types=GAUGE"
        ))
        .await;
    assert_eq!(gauges, json!({"envelopes": {"batch": []}}));
    let (_, newest) = kiln
        .get(&format!(
            "/api/v1/read/{app_guid}?start_time=-6795364578871345152&limit=1&descending=true"
        ))
        .await;
    assert_eq!(
        newest["envelopes"]["batch"][0]["timestamp"],
        batch.last().unwrap()["timestamp"]
    );
    let (status, _) = kiln
        .get(&format!("/api/v1/read/{app_guid}?limit=1001"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Stop removes it.
    let (_, stopped) = kiln
        .post(&format!("/v3/apps/{app_guid}/actions/stop"), json!({}))
        .await;
    assert_eq!(stopped["state"], "STOPPED");
    assert!(
        kiln.bbs
            .desired_lrps(Some("cf-apps"))
            .await
            .unwrap()
            .is_empty()
    );
    kiln.bbs.converge().await.unwrap();
    let actuals = kiln
        .bbs
        .actual_lrps(ActualLrpFilter::default())
        .await
        .unwrap();
    assert!(
        actuals
            .iter()
            .all(|a| !a.key.process_guid.starts_with(web_guid)),
        "{actuals:?}"
    );
    let (_, stats) = kiln.get(&format!("/v3/processes/{web_guid}/stats")).await;
    assert_eq!(stats["resources"][0]["state"], "DOWN");
    kiln.stop().await;

    // Reopen on the same data dir: everything is still there.
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let (status, app) = kiln.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app["relationships"]["current_droplet"]["data"]["guid"],
        droplet_guid
    );
    assert_eq!(
        kiln.get(&format!("/v3/packages/{pkg}")).await.1["state"],
        "READY"
    );
    assert_eq!(
        kiln.get(&format!("/v3/droplets/{droplet_guid}")).await.1["state"],
        "STAGED"
    );
    kiln.stop().await;
}

#[tokio::test]
async fn staging_with_detection_and_no_buildpacks() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let app = kiln.create_app("plain", None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let pkg = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("x", "x")])))
        .await;
    let (status, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(build["state"], "FAILED");
    assert_eq!(
        build["error"],
        "NoBuildpacksFound - There are no buildpacks available"
    );

    let a = kiln.create_buildpack("a", Some(1)).await;
    let b = kiln.create_buildpack("b", Some(2)).await;
    let (_, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    let task = kiln
        .bbs
        .task_by_guid(build["guid"].as_str().unwrap())
        .await
        .unwrap();
    let args = &task.definition.run.args;
    assert!(args.contains(&format!(
        "--buildpack-order={},{}",
        a["name"].as_str().unwrap(),
        b["name"].as_str().unwrap()
    )));
    assert!(args.contains(&"--skip-detect=false".to_string()));

    // An unknown named buildpack.
    kiln.patch(
        &format!("/v3/apps/{app_guid}"),
        json!({"lifecycle": {"type": "buildpack", "data": {"buildpacks": ["nope"]}}}),
    )
    .await;
    let pkg2 = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg2, json!([]), Some(zip_of(&[("x", "x")])))
        .await;
    kiln.bbs
        .cancel_task(build["guid"].as_str().unwrap())
        .await
        .unwrap();
    let cancelled = kiln
        .wait_for(
            &format!("/v3/builds/{}", build["guid"].as_str().unwrap()),
            |b| b["state"] != "STAGING",
        )
        .await;
    assert_eq!(
        cancelled["error"],
        "StagingError - Staging error: task was cancelled"
    );
    let (status, body) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg2}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body).2,
        "Buildpack \"nope\" must be an existing admin buildpack or a valid git URI"
    );

    // Deleting an app that is staging cancels its staging Task.
    let doomed = kiln.create_app("doomed", None).await;
    let doomed_guid = doomed["guid"].as_str().unwrap().to_string();
    let pkg3 = kiln.new_package(&doomed_guid).await;
    kiln.upload_package(&pkg3, json!([]), Some(zip_of(&[("x", "x")])))
        .await;
    let (_, staging) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg3}}))
        .await;
    let task_guid = staging["guid"].as_str().unwrap().to_string();
    assert!(kiln.bbs.task_by_guid(&task_guid).await.is_ok());
    let r = kiln
        .http
        .delete(format!("{}/v3/apps/{doomed_guid}", kiln.url))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kiln.bbs.task_by_guid(&task_guid).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the staging task of a deleted app was never cancelled and cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kiln.stop().await;
}

/// The staging result a builder writes for a one-buildpack python app.
fn staging_result(bp_guid: &str) -> String {
    json!({
        "lifecycle_type": "buildpack",
        "lifecycle_metadata": {"buildpack_key": bp_guid, "detected_buildpack": "python",
                               "buildpacks": [{"key": bp_guid, "name": "python", "version": "1.0.0"}]},
        "process_types": {"web": "python app.py"},
        "execution_metadata": "",
    })
    .to_string()
}

async fn web_lrp_guid(kiln: &Kiln, app_guid: &str) -> String {
    let (_, procs) = kiln.get(&format!("/v3/apps/{app_guid}/processes")).await;
    let web = &procs["resources"][0];
    format!(
        "{}-{}",
        web["guid"].as_str().unwrap(),
        web["version"].as_str().unwrap()
    )
}

async fn cf_apps_lrps(bbs: &Bbs) -> Vec<String> {
    let mut guids: Vec<String> = bbs
        .desired_lrps(Some("cf-apps"))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.process_guid)
        .collect();
    guids.sort();
    guids
}

#[tokio::test]
async fn droplet_changes_restarts_and_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let bp_guid = bp["guid"].as_str().unwrap().to_string();
    let app = kiln.create_app("durable", None).await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let result = staging_result(&bp_guid);

    // Two staged droplets; the app runs the first.
    let mut droplets = Vec::new();
    for file in ["one", "two"] {
        let pkg = kiln.new_package(&app_guid).await;
        kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", file)])))
            .await;
        let build = stage(&kiln, &pkg, Ok(&result)).await;
        assert_eq!(build["state"], "STAGED", "{build}");
        droplets.push(build["droplet"]["guid"].as_str().unwrap().to_string());
    }
    let rel = format!("/v3/apps/{app_guid}/relationships/current_droplet");
    let set_droplet = |guid: &str| kiln.patch(&rel, json!({"data": {"guid": guid}}));
    assert_eq!(set_droplet(&droplets[0]).await.0, StatusCode::OK);
    let (status, _) = kiln
        .post(&format!("/v3/apps/{app_guid}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = web_lrp_guid(&kiln, &app_guid).await;
    assert_eq!(cf_apps_lrps(&kiln.bbs).await, vec![first.clone()]);

    // Assigning another droplet to the started app changes nothing that
    // runs (Cloud Controller's AppAssignDroplet); the restart runs it.
    assert_eq!(set_droplet(&droplets[1]).await.0, StatusCode::OK);
    assert_eq!(cf_apps_lrps(&kiln.bbs).await, vec![first.clone()]);
    let (status, _) = kiln
        .post(&format!("/v3/apps/{app_guid}/actions/restart"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = web_lrp_guid(&kiln, &app_guid).await;
    assert_ne!(second, first);
    assert_eq!(cf_apps_lrps(&kiln.bbs).await, vec![second.clone()]);
    let lrp = kiln.bbs.desired_lrp_by_process_guid(&second).await.unwrap();
    assert_eq!(
        lrp.setup[0].cache_key.as_deref(),
        Some(format!("droplet-{}", droplets[1]).as_str())
    );
    set_droplet(&droplets[1]).await;
    assert_eq!(web_lrp_guid(&kiln, &app_guid).await, second);

    // A route to persist, and a build left STAGING.
    let (_, domains) = kiln.get("/v3/domains?names=localhost").await;
    let domain_guid = domains["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let space = kiln.space_guid().await;
    let (_, route) = kiln
        .post(
            "/v3/routes",
            json!({"host": "durable", "relationships": {"space": {"data": {"guid": space}}, "domain": {"data": {"guid": domain_guid}}}}),
        )
        .await;
    let route_guid = route["guid"].as_str().unwrap().to_string();
    kiln.post(
        &format!("/v3/routes/{route_guid}/destinations"),
        json!({"destinations": [{"app": {"guid": app_guid}}]}),
    )
    .await;
    let pkg = kiln.new_package(&app_guid).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "three")])))
        .await;
    let (_, pending) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(pending["state"], "STAGING");
    let pending_guid = pending["guid"].as_str().unwrap().to_string();

    // While the API is down, the BBS loses the staging Task and the app's
    // DesiredLrp, and gains a stale one.
    let bbs = kiln.bbs.clone();
    kiln.stop().await;
    bbs.cancel_task(&pending_guid).await.unwrap();
    bbs.resolving_task(&pending_guid).await.unwrap();
    bbs.delete_task(&pending_guid).await.unwrap();
    let mut stale = bbs.desired_lrp_by_process_guid(&second).await.unwrap();
    bbs.remove_desired_lrp(&second).await.unwrap();
    stale.process_guid = "gone-process-v1".into();
    bbs.desire_lrp(stale).await.unwrap();
    drop(bbs);

    // Reopened: the interrupted build fails with a reason, the reconcile
    // on start desires what the CCDB wants and removes the stale LRP.
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let failed = kiln
        .wait_for(&format!("/v3/builds/{pending_guid}"), |b| {
            b["state"] != "STAGING"
        })
        .await;
    assert_eq!(failed["state"], "FAILED");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("staging was interrupted"),
        "{failed}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while cf_apps_lrps(&kiln.bbs).await != vec![second.clone()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reconcile never converged: {:?}",
            cf_apps_lrps(&kiln.bbs).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lrp = kiln.bbs.desired_lrp_by_process_guid(&second).await.unwrap();
    assert_eq!(lrp.routes, vec![HttpRoute::from("durable.localhost")]);

    // Nothing was lost.
    let (_, app) = kiln.get(&format!("/v3/apps/{app_guid}")).await;
    assert_eq!(app["state"], "STARTED");
    assert_eq!(
        app["relationships"]["current_droplet"]["data"]["guid"],
        droplets[1]
    );
    let (_, builds) = kiln.get(&format!("/v3/builds?app_guids={app_guid}")).await;
    assert_eq!(builds["pagination"]["total_results"], 3);
    let (_, staged) = kiln
        .get(&format!("/v3/droplets?app_guids={app_guid}&states=STAGED"))
        .await;
    assert_eq!(staged["pagination"]["total_results"], 2);
    let (_, bps) = kiln.get("/v3/buildpacks?names=python").await;
    assert_eq!(bps["resources"][0]["state"], "READY");
    let (_, routes) = kiln.get(&format!("/v3/routes?app_guids={app_guid}")).await;
    assert_eq!(routes["resources"][0]["url"], "durable.localhost");
    let (_, pkgs) = kiln
        .get(&format!("/v3/packages?app_guids={app_guid}"))
        .await;
    assert_eq!(pkgs["pagination"]["total_results"], 3);
    kiln.stop().await;
}

impl Kiln {
    /// POSTs a manifest; returns the status, the `Location` header and the body.
    async fn apply_manifest(
        &self,
        space: &str,
        content_type: &str,
        yaml: &str,
    ) -> (StatusCode, Option<String>, String) {
        let r = self
            .http
            .post(format!(
                "{}/v3/spaces/{space}/actions/apply_manifest",
                self.url
            ))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(yaml.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (status, location, r.text().await.unwrap())
    }

    /// Applies a manifest that must be accepted; returns its job.
    async fn applied(&self, space: &str, yaml: &str) -> Value {
        let (status, location, body) = self.apply_manifest(space, "application/x-yaml", yaml).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(body.is_empty(), "{body}");
        let location = location.expect("apply_manifest answers a Location");
        assert!(
            location.starts_with(&format!("{}/v3/jobs/", self.url)),
            "{location}"
        );
        let job = self.send(self.http.get(&location)).await.1;
        assert_eq!(job["operation"], "space.apply_manifest", "{job}");
        job
    }

    async fn app_named(&self, space: &str, name: &str) -> Vec<Value> {
        let (_, apps) = self
            .get(&format!("/v3/apps?names={name}&space_guids={space}"))
            .await;
        apps["resources"].as_array().unwrap().clone()
    }

    async fn route_urls(&self, app_guid: &str) -> Vec<String> {
        let (_, routes) = self.get(&format!("/v3/apps/{app_guid}/routes")).await;
        routes["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["url"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test]
async fn manifest_diff_and_apply_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;

    // manifest_diff: a new app is all additions.
    let diff_path = format!("/v3/spaces/{space}/manifest_diff");
    let (status, diff) = kiln
        .send(
            kiln.http
                .post(format!("{}{diff_path}", kiln.url))
                .header("content-type", "application/x-yaml")
                .body("applications:\n- name: web-app\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(
        diff,
        json!({"diff": [{"op": "add", "path": "/applications/0/name", "value": "web-app"}]})
    );
    let (status, err) = kiln
        .post("/v3/spaces/no-such-space/manifest_diff", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(error_of(&err).2, "Space not found");
    let r = kiln
        .http
        .post(format!("{}{diff_path}", kiln.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A new app with processes, env, a command, a route and a service.
    let (status, si) = kiln
        .post(
            "/v3/service_instances",
            json!({"type": "user-provided", "name": "shop-db",
                "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{si}");
    let manifest = "---
applications:
- name: web-app
  instances: 2
  memory: 512M
  disk-quota: 1G
  command: ./run --fast
  health-check-type: http
  health-check-http-endpoint: /health
  timeout: 90
  path: ./ignored
  services: [shop-db]
  env:
    GREETING: hello
    COUNT: 3
    DEBUG: true
  routes:
  - route: shop.localhost
";
    let job = kiln.applied(&space, manifest).await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert_eq!(job["errors"], json!([]));
    assert_eq!(
        job["links"]["space"]["href"],
        format!("{}/v3/spaces/{space}", kiln.url)
    );
    let apps = kiln.app_named(&space, "web-app").await;
    assert_eq!(apps.len(), 1);
    let app_guid = apps[0]["guid"].as_str().unwrap().to_string();
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    assert_eq!(web["instances"], 2, "{web}");
    assert_eq!(web["memory_in_mb"], 512);
    assert_eq!(web["disk_in_mb"], 1024);
    assert_eq!(web["command"], "./run --fast");
    assert_eq!(web["health_check"]["type"], "http");
    assert_eq!(web["health_check"]["data"]["endpoint"], "/health");
    assert_eq!(web["health_check"]["data"]["timeout"], 90);
    let (_, env) = kiln
        .get(&format!("/v3/apps/{app_guid}/environment_variables"))
        .await;
    assert_eq!(
        env["var"],
        json!({"GREETING": "hello", "COUNT": "3", "DEBUG": "true"})
    );
    assert_eq!(kiln.route_urls(&app_guid).await, ["shop.localhost"]);

    // The app as a manifest, and a diff against it: only what changes.
    let r = kiln
        .http
        .get(format!("{}/v3/apps/{app_guid}/manifest", kiln.url))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-yaml");
    let yaml = r.text().await.unwrap();
    for line in [
        "name: web-app",
        "route: shop.localhost",
        "memory: 512M",
        "disk_quota: 1024M",
        "instances: 2",
        "GREETING: hello",
    ] {
        assert!(yaml.contains(line), "{line} not in {yaml}");
    }
    let (status, diff) = kiln
        .send(
            kiln.http
                .post(format!("{}{diff_path}", kiln.url))
                .header("content-type", "application/x-yaml")
                .body("applications:\n- name: web-app\n  instances: 3\n  memory: 512M\n  disk-quota: 1G\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(
        diff["diff"],
        json!([{"op": "replace", "path": "/applications/0/processes/0/instances", "was": 2, "value": 3}])
    );

    // Applying again updates the same app; env merges.
    let job = kiln
        .applied(
            &space,
            "applications:\n- name: web-app\n  instances: 4\n  env:\n    OTHER: x\n",
        )
        .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert_eq!(kiln.app_named(&space, "web-app").await.len(), 1);
    let (_, web) = kiln
        .get(&format!("/v3/apps/{app_guid}/processes/web"))
        .await;
    assert_eq!(web["instances"], 4, "{web}");
    assert_eq!(web["memory_in_mb"], 512);
    let (_, env) = kiln
        .get(&format!("/v3/apps/{app_guid}/environment_variables"))
        .await;
    assert_eq!(env["var"]["OTHER"], "x");
    assert_eq!(env["var"]["GREETING"], "hello");

    // default-route on an app with routes changes nothing; no-route unmaps.
    kiln.applied(
        &space,
        "applications:\n- name: web-app\n  default-route: true\n",
    )
    .await;
    assert_eq!(kiln.route_urls(&app_guid).await, ["shop.localhost"]);
    let job = kiln
        .applied(&space, "applications:\n- name: web-app\n  no-route: true\n")
        .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    assert!(kiln.route_urls(&app_guid).await.is_empty());

    // The cf CLI's default: `<name>.<default domain>`; legacy buildpack.
    let job = kiln
        .applied(
            &space,
            "applications:\n- name: second\n  default-route: true\n  buildpack: ruby_buildpack\n",
        )
        .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let second = kiln.app_named(&space, "second").await;
    assert_eq!(
        second[0]["lifecycle"]["data"]["buildpacks"],
        json!(["ruby_buildpack"])
    );
    let second_guid = second[0]["guid"].as_str().unwrap();
    assert_eq!(kiln.route_urls(second_guid).await, ["second.localhost"]);
    let job = kiln
        .applied(
            &space,
            "applications:\n- name: third\n  random-route: true\n",
        )
        .await;
    assert_eq!(job["state"], "COMPLETE", "{job}");
    let third = kiln.app_named(&space, "third").await;
    let urls = kiln.route_urls(third[0]["guid"].as_str().unwrap()).await;
    assert_eq!(urls.len(), 1);
    assert!(
        urls[0].starts_with("third-") && urls[0].ends_with(".localhost"),
        "{urls:?}"
    );

    // An unknown domain fails the job, naming the route.
    let job = kiln
        .applied(
            &space,
            "applications:\n- name: web-app\n  routes:\n  - route: a.example.com\n",
        )
        .await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["errors"][0]["code"], 10008);
    assert!(
        job["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("a.example.com"),
        "{job}"
    );

    // Requests refused outright.
    let (status, _, body) = kiln
        .apply_manifest(&space, "application/json", "applications: []")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error_of(&err),
        (
            1004,
            "CF-BadRequest".into(),
            "Bad request: Content-Type must be yaml".into()
        )
    );
    let (status, _, body) = kiln
        .apply_manifest(&space, "text/yaml; charset=utf-8", "applications: [\n- {")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_of(&err).1, "CF-MessageParseError");
    let (status, _, body) = kiln
        .apply_manifest(
            &space,
            "application/x-yaml",
            "version: 2\napplications:\n- name: web-app\n",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error_of(&err).2,
        "Unsupported manifest schema version. Currently supported versions: [1]."
    );
    let (status, _, body) = kiln
        .apply_manifest(
            &space,
            "application/x-yaml",
            "applications:\n- name: web-app\n  memory: lots\n",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("Memory must use a supported unit"), "{body}");
    let (status, _, body) = kiln
        .apply_manifest("no-such-space", "application/x-yaml", "applications: []")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("Space not found"), "{body}");
    kiln.stop().await;
}
