//! Blobs in a real S3 server (moto on 127.0.0.1), reached through a relay
//! the test can cut: a cell's download is a redirect to the store's own
//! short-lived signed URL, so the bytes never pass through the API; a store
//! that goes away during a package or droplet upload fails it with CC's
//! `CF-BlobstoreUnavailable` and stores nothing half-way; once the store is
//! back, the same steps succeed.

use super::*;
use kiln_store::testing::{MotoS3, Relay, blobstore_at};
use kiln_store::{Blobstore, S3Blobstore};
use sha2::{Digest, Sha256};

const BUCKET: &str = "it-blobs";

struct OnS3 {
    kiln: Kiln,
    store: Arc<S3Blobstore>,
    relay: Relay,
    _moto: MotoS3,
}

/// Kiln on this binary's databases with its blobs in moto, through a relay.
async fn start_on_s3(dir: &Path) -> Option<OnS3> {
    let moto = MotoS3::start().await?;
    moto.create_bucket(BUCKET).await;
    let relay = Relay::start(moto.addr()).await;
    let url = moto.url_through(&relay, BUCKET);
    let store = Arc::new(blobstore_at(&url, dir.join("s3-scratch")).await.unwrap());
    let databases = databases(dir)
        .await
        .unwrap_or_else(|| kiln_store::DatabaseUrl::SqliteDir(dir.to_path_buf()));
    let kiln = start_with_blobstore(&databases, dir, 1 << 20, Some(PASSWORD), store.clone()).await;
    Some(OnS3 {
        kiln,
        store,
        relay,
        _moto: moto,
    })
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn app_with_package(kiln: &Kiln, name: &str) -> (String, String) {
    let app = kiln
        .create_app(
            name,
            Some(json!({"type": "buildpack", "data": {"buildpacks": ["python"]}})),
        )
        .await;
    let app_guid = app["guid"].as_str().unwrap().to_string();
    let pkg = kiln.new_package(&app_guid).await;
    (app_guid, pkg)
}

fn app_zip() -> Vec<u8> {
    zip_of(&[("app.py", "print(1)\n")])
}

#[tokio::test]
async fn cells_download_blobs_straight_from_s3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = start_on_s3(dir.path()).await else {
        return;
    };
    let kiln = &s3.kiln;
    let bp = kiln.create_buildpack("python", None).await;
    let (_, pkg) = app_with_package(kiln, "direct").await;
    let bits = app_zip();
    let (status, body) = kiln.upload_package(&pkg, json!([]), Some(bits)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    let build_guid = build["guid"].as_str().unwrap();
    let task = kiln.bbs.task_by_guid(build_guid).await.unwrap();
    let signed = &task.definition.downloads[0].from;

    // The API answers the cell's signed URL with the store's own URL,
    // short-lived, on the store's endpoint.
    let r = no_redirects().get(signed).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let store_base = format!("http://{}/{BUCKET}/", s3.relay.addr());
    assert!(location.starts_with(&store_base), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "{location}");
    let bytes = reqwest::get(&location).await.unwrap();
    assert_eq!(bytes.status(), StatusCode::OK);
    let zip = bytes.bytes().await.unwrap();
    let checksum = task.definition.downloads[0].checksum.as_ref().unwrap();
    assert_eq!(hex::encode(Sha256::digest(&zip)), checksum.value);
    // A tampered signature is still refused by the API, not redirected.
    let tampered = signed.replace("signature=", "signature=00");
    let r = no_redirects().get(&tampered).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A whole staging, as a cell does it (following the redirects).
    let (_, pkg2) = app_with_package(kiln, "direct2").await;
    kiln.upload_package(&pkg2, json!([]), Some(app_zip())).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let staged = stage(kiln, &pkg2, Ok(&result)).await;
    assert_eq!(staged["state"], "STAGED", "{staged}");
    let droplet = staged["droplet"]["guid"].as_str().unwrap();
    assert!(
        s3.store
            .exists(&format!("droplets/{droplet}"))
            .await
            .unwrap()
    );
}

fn blobstore_unavailable(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (code, title, detail) = error_of(body);
    assert_eq!((code, title.as_str()), (150007, "CF-BlobstoreUnavailable"));
    assert!(detail.contains("blobstore"), "{detail}");
}

#[tokio::test]
async fn s3_down_during_uploads_stores_nothing_and_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s3) = start_on_s3(dir.path()).await else {
        return;
    };
    let bp = s3.kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let (_, pkg) = app_with_package(&s3.kiln, "outage").await;

    // The package upload, with the store away: CC's 502, and the package
    // is not READY, nor is anything stored under its key.
    s3.relay.cut().await;
    let (status, body) = s3
        .kiln
        .upload_package(&pkg, json!([]), Some(app_zip()))
        .await;
    s3.relay.restore().await;
    blobstore_unavailable(status, &body);
    let (_, package) = s3.kiln.get(&format!("/v3/packages/{pkg}")).await;
    assert_eq!(package["state"], "AWAITING_UPLOAD", "{package}");
    assert!(!s3.store.exists(&format!("packages/{pkg}")).await.unwrap());

    // Back: the same upload succeeds.
    let (status, body) = s3
        .kiln
        .upload_package(&pkg, json!([]), Some(app_zip()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "READY", "{body}");

    // The droplet upload, with the store away: the cell's PUT into the
    // store fails (and a report of it anyway is refused), staging fails,
    // and no droplet is STAGED.
    let (status, build) = s3
        .kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    let build_guid = build["guid"].as_str().unwrap().to_string();
    let task = s3.kiln.bbs.task_by_guid(&build_guid).await.unwrap();
    s3.kiln.bbs.heartbeat_cell(cell()).await.unwrap();
    s3.kiln.bbs.converge().await.unwrap();
    assert!(s3.kiln.bbs.start_task(&build_guid, "cell-1").await.unwrap());
    s3.relay.cut().await;
    let droplet_up = &task.definition.uploads[0];
    let put = s3
        .kiln
        .http
        .put(&droplet_up.to)
        .body(b"fake droplet tgz".to_vec())
        .send()
        .await;
    assert!(
        put.as_ref().map_or(true, |r| !r.status().is_success()),
        "a PUT into a store that is away succeeded"
    );
    let report = s3
        .kiln
        .http
        .post(droplet_up.report_to.as_ref().unwrap())
        .json(&upload_report(b"fake droplet tgz"))
        .send()
        .await
        .unwrap();
    let status = report.status();
    let body: Value = report.json().await.unwrap();
    blobstore_unavailable(status, &body);
    s3.kiln
        .bbs
        .complete_task(
            &build_guid,
            "cell-1",
            true,
            "Uploading droplet failed: PUT: connection refused",
            "",
        )
        .await
        .unwrap();
    let failed = s3
        .kiln
        .wait_for(&format!("/v3/builds/{build_guid}"), |b| {
            b["state"] != "STAGING"
        })
        .await;
    s3.relay.restore().await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let (_, droplets) = s3.kiln.get("/v3/droplets?states=STAGED").await;
    assert_eq!(droplets["pagination"]["total_results"], 0, "{droplets}");
    if let Some(droplet) = failed["droplet"]["guid"].as_str() {
        assert!(
            !s3.store
                .exists(&format!("droplets/{droplet}"))
                .await
                .unwrap()
        );
    }

    // Back: staging the same package again succeeds.
    let staged = stage(&s3.kiln, &pkg, Ok(&result)).await;
    assert_eq!(staged["state"], "STAGED", "{staged}");
    s3.kiln.stop().await;
}

/// A build's STAGING Task, started on the test's cell.
async fn started_staging(kiln: &Kiln, pkg: &str) -> (String, kiln_model::bbs::Task) {
    let (status, build) = kiln
        .post("/v3/builds", json!({"package": {"guid": pkg}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    let build_guid = build["guid"].as_str().unwrap().to_string();
    let task = kiln.bbs.task_by_guid(&build_guid).await.unwrap();
    kiln.bbs.heartbeat_cell(cell()).await.unwrap();
    kiln.bbs.converge().await.unwrap();
    assert!(kiln.bbs.start_task(&build_guid, "cell-1").await.unwrap());
    (build_guid, task)
}

/// Completes the staging Task as succeeded; the build once it left STAGING.
async fn complete_staging(kiln: &Kiln, build_guid: &str, result: &str) -> Value {
    kiln.bbs
        .complete_task(build_guid, "cell-1", false, "", result)
        .await
        .unwrap();
    kiln.wait_for(&format!("/v3/builds/{build_guid}"), |b| {
        b["state"] != "STAGING"
    })
    .await
}

async fn put(url: &str, bytes: &[u8]) -> StatusCode {
    reqwest::Client::new()
        .put(url)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

/// Issue 15: the staging Task PUTs the droplet and the build cache into
/// the bucket through the store's own signed URLs, under the keys the API
/// chose, so their bytes never pass through the API; the API checks the
/// object against the cell's report (size, MD5 = the ETag) and records the
/// cell's SHA-256. Forged reports (another size, another MD5, no object)
/// are refused and record nothing; a completion whose object is missing,
/// or was replaced after the report, fails the build and leaves no STAGED
/// droplet.
#[tokio::test]
async fn cells_upload_droplets_straight_to_s3_and_forgeries_fail() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = start_on_s3(dir.path()).await else {
        return;
    };
    let kiln = &s3.kiln;
    let bp = kiln.create_buildpack("python", None).await;
    let result = staging_result(bp["guid"].as_str().unwrap());
    let (app_guid, pkg) = app_with_package(kiln, "direct-up").await;
    kiln.upload_package(&pkg, json!([]), Some(app_zip())).await;

    // The upload actions: PUTs to the store's signed URLs for the exact
    // keys, the droplet reported to the API.
    let (build_guid, task) = started_staging(kiln, &pkg).await;
    let [droplet_up, cache_up] = &task.definition.uploads[..] else {
        panic!("{:?}", task.definition.uploads);
    };
    // The build shows its droplet once staged; the report URL names it.
    let report_to = droplet_up.report_to.clone().unwrap();
    let droplet = report_to.split('/').nth(6).unwrap().to_string();
    let store_base = format!("http://{}/{BUCKET}/", s3.relay.addr());
    for (up, key) in [
        (droplet_up, format!("droplets/{droplet}")),
        (cache_up, format!("buildpack_cache/{app_guid}")),
    ] {
        assert_eq!(up.method, kiln_model::bbs::UploadMethod::Put);
        assert!(
            up.to.starts_with(&format!("{store_base}{key}?")),
            "{}",
            up.to
        );
        assert!(up.to.contains("X-Amz-Signature="), "{}", up.to);
    }
    assert!(cache_up.report_to.is_none());
    assert!(
        report_to.starts_with(&format!(
            "{}/internal/v4/droplets/{droplet}/uploaded?",
            kiln.url
        )),
        "{report_to}"
    );
    let report = |r: kiln_model::bbs::UploadReport| {
        let url = report_to.clone();
        async move {
            let r = kiln.http.post(&url).json(&r).send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let bits = b"a droplet straight into the bucket".to_vec();
    let honest = upload_report(&bits);

    // Reported before anything is stored: refused.
    let (status, body) = report(honest.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(error_of(&body).2.contains("no object is stored"), "{body}");
    assert_eq!(put(&droplet_up.to, &bits).await, StatusCode::OK);
    assert_eq!(put(&cache_up.to, b"cache").await, StatusCode::OK);
    // Another size, another MD5, a malformed report: refused.
    let mut short = honest.clone();
    short.size -= 1;
    let mut other_md5 = honest.clone();
    other_md5.md5 = hex::encode(md5::Md5::digest(b"other bytes"));
    let mut malformed = honest.clone();
    malformed.sha256 = "not hex".into();
    for (forged, says) in [
        (short, "the stored object has"),
        (other_md5, "MD5"),
        (malformed, "hex sha256"),
    ] {
        let (status, body) = report(forged).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(error_of(&body).2.contains(says), "{says}: {body}");
    }
    // A bad signature on the report: refused.
    let tampered = report_to.replace("signature=", "signature=00");
    let r = kiln
        .http
        .post(&tampered)
        .json(&honest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The honest report, then completion: STAGED with the cell's SHA-256.
    let (status, body) = report(honest.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let staged = complete_staging(kiln, &build_guid, &result).await;
    assert_eq!(staged["state"], "STAGED", "{staged}");
    assert_eq!(staged["droplet"]["guid"], droplet.as_str(), "{staged}");
    let (_, d) = kiln.get(&format!("/v3/droplets/{droplet}")).await;
    assert_eq!(d["checksum"]["value"], honest.sha256, "{d}");
    let mut stored = String::new();
    use tokio::io::AsyncReadExt;
    let mut f = s3.store.open(&format!("droplets/{droplet}")).await.unwrap();
    f.read_to_string(&mut stored).await.unwrap();
    assert_eq!(stored.as_bytes(), &bits[..]);

    // Replaced after the report (the signed URL still holds): the
    // completion finds another object and fails the build.
    let (build_guid, task) = started_staging(kiln, &pkg).await;
    let up = &task.definition.uploads[0];
    assert_eq!(put(&up.to, &bits).await, StatusCode::OK);
    let r = kiln
        .http
        .post(up.report_to.as_ref().unwrap())
        .json(&honest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(put(&up.to, b"swapped in later").await, StatusCode::OK);
    let failed = complete_staging(kiln, &build_guid, &result).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("not the one the cell uploaded"),
        "{failed}"
    );

    // Completed as succeeded with nothing uploaded: FAILED, not STAGED.
    let (build_guid, _) = started_staging(kiln, &pkg).await;
    let failed = complete_staging(kiln, &build_guid, &result).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("the droplet was not uploaded"),
        "{failed}"
    );
    let (_, staged_droplets) = kiln.get("/v3/droplets?states=STAGED").await;
    assert_eq!(
        staged_droplets["pagination"]["total_results"], 1,
        "only the honest droplet is STAGED: {staged_droplets}"
    );
}
