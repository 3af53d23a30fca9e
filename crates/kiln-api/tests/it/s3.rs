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

    // The droplet upload, with the store away: the cell's upload gets
    // CC's 502, staging fails, and no droplet is STAGED.
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
    let up = s3
        .kiln
        .http
        .post(&task.definition.uploads[0].to)
        .header("content-type", "application/octet-stream")
        .body(b"fake droplet tgz".to_vec())
        .send()
        .await
        .unwrap();
    let status = up.status();
    let body: Value = up.json().await.unwrap();
    blobstore_unavailable(status, &body);
    s3.kiln
        .bbs
        .complete_task(
            &build_guid,
            "cell-1",
            true,
            "Uploading droplet failed: POST: 502 Bad Gateway",
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
