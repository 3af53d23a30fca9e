//! Droplets by hand: download a staged droplet, make an AWAITING_UPLOAD
//! droplet for another app and upload those bits to it (or copy it), set
//! it current and start; bad input gets CC's words and changes nothing.

use super::roles::{call, grant, new_org, new_space, new_user};
use super::{Kiln, PASSWORD, error_of, stage, staging_result, start, zip_of};
use kiln_bbs::BbsClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

fn tgz_of(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

async fn upload(kiln: &Kiln, droplet: &str, bits: Vec<u8>, name: &str) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new().part(
        "bits",
        reqwest::multipart::Part::bytes(bits).file_name(name.to_string()),
    );
    let r = kiln
        .http
        .post(format!("{}/v3/droplets/{droplet}/upload", kiln.url))
        .bearer_auth(&kiln.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r.headers().get("location").cloned();
    let mut v: Value = r.json().await.unwrap_or(Value::Null);
    if let Some(l) = location {
        v["kiln_location"] = json!(l.to_str().unwrap());
    }
    (status, v)
}

async fn download(kiln: &Kiln, droplet: &str) -> (StatusCode, Vec<u8>) {
    let r = kiln
        .http
        .get(format!("{}/v3/droplets/{droplet}/download", kiln.url))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

fn assert_422(status: StatusCode, v: &Value, detail: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(error_of(v).2, detail, "{v}");
}

#[tokio::test]
async fn a_droplet_is_downloaded_uploaded_to_another_app_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = guid(&kiln.create_buildpack("python", None).await);
    let org = new_org(&kiln, "drops").await;
    let space = new_space(&kiln, &org, "s").await;
    let app =
        |name: &str| json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}});
    let (_, a) = kiln.post("/v3/apps", app("a")).await;
    let (_, b) = kiln.post("/v3/apps", app("b")).await;
    let (a, b) = (guid(&a), guid(&b));
    let pkg = kiln.new_package(&a).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let build = stage(&kiln, &pkg, Ok(&staging_result(&bp))).await;
    let staged = build["droplet"]["guid"].as_str().unwrap().to_string();

    // Download: the staged bits; CC's words for one not staged.
    let (status, bits) = download(&kiln, &staged).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bits, b"fake droplet tgz");

    // A droplet by hand: AWAITING_UPLOAD, CC's default process types.
    let rel = json!({"app": {"data": {"guid": b}}});
    let (status, fresh) = kiln
        .post(
            "/v3/droplets",
            json!({"relationships": rel, "process_types": {"web": "python app.py"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fresh}");
    assert_eq!(fresh["state"], "AWAITING_UPLOAD", "{fresh}");
    assert_eq!(fresh["process_types"]["web"], "python app.py");
    let fresh = guid(&fresh);
    let (status, v) = kiln.get(&format!("/v3/droplets/{fresh}/download")).await;
    assert_422(status, &v, "Only staged droplets can be downloaded.");

    // Bad input changes nothing.
    for (body, detail) in [
        (
            json!({"relationships": {"app": {"data": {"guid": "nowhere"}}}}),
            "Unable to use app. Ensure that the app exists and you have access to it.",
        ),
        (
            json!({"relationships": rel, "process_types": "web"}),
            "Process types must be an object",
        ),
        (
            json!({"relationships": rel, "state": "STAGED"}),
            "Unknown field(s): 'state'",
        ),
    ] {
        let (status, v) = kiln.post("/v3/droplets", body).await;
        assert_422(status, &v, detail);
    }
    let (status, v) = kiln.post("/v3/droplets", json!([1])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, list) = kiln.get(&format!("/v3/apps/{b}/droplets")).await;
    assert_eq!(list["pagination"]["total_results"], 1, "{list}");
    let (status, v) = upload(&kiln, &fresh, b"not a tgz".to_vec(), "droplet.tgz").await;
    assert_422(status, &v, "Uploaded bits are not a valid droplet file");
    let (status, v) = upload(&kiln, &fresh, tgz_of(&[("a", "b")]), "droplet.zip").await;
    assert_422(status, &v, "droplet.zip is not a tgz");
    let (_, d) = kiln.get(&format!("/v3/droplets/{fresh}")).await;
    assert_eq!(
        d["state"], "AWAITING_UPLOAD",
        "a refused upload changes nothing: {d}"
    );
    let r = kiln
        .http
        .post(format!("{}/v3/droplets/{fresh}/upload", kiln.url))
        .bearer_auth(&kiln.token)
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Upload real bits: 202 with a job; STAGED with their checksum.
    let tgz = tgz_of(&[("app/app.py", "print(1)"), ("staging_info.yml", "{}")]);
    let (status, v) = upload(&kiln, &fresh, tgz.clone(), "droplet.tgz").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert!(
        v["kiln_location"].as_str().unwrap().contains("/v3/jobs/"),
        "{v}"
    );
    assert_eq!(v["state"], "STAGED", "{v}");
    assert_eq!(v["checksum"]["type"], "sha256", "{v}");
    let (status, v) = upload(&kiln, &fresh, tgz.clone(), "droplet.tgz").await;
    assert_422(
        status,
        &v,
        "Droplet may be uploaded only once. Create a new droplet to upload bits.",
    );
    let (status, back) = download(&kiln, &fresh).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(back, tgz);

    // A copy of the staged droplet for b: STAGED, the same bits.
    let (status, copy) = kiln
        .post(
            &format!("/v3/droplets?source_guid={staged}"),
            json!({"relationships": rel}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{copy}");
    assert_eq!(copy["state"], "STAGED", "{copy}");
    assert_eq!(copy["relationships"]["app"]["data"]["guid"], b.as_str());
    let (_, bits) = download(&kiln, &guid(&copy)).await;
    assert_eq!(bits, b"fake droplet tgz");
    let (status, v) = kiln
        .post(
            "/v3/droplets?source_guid=nowhere",
            json!({"relationships": rel}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = kiln
        .post(
            &format!("/v3/droplets?source_guid={fresh}"),
            json!({"relationships": rel, "process_types": {}}),
        )
        .await;
    assert_422(status, &v, "Unknown field(s): 'process_types'");

    // The uploaded droplet runs b: current, started, desired.
    let (status, v) = kiln
        .patch(
            &format!("/v3/apps/{b}/relationships/current_droplet"),
            json!({"data": {"guid": fresh}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = kiln
        .post(&format!("/v3/apps/{b}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, web) = kiln.get(&format!("/v3/apps/{b}/processes/web")).await;
    assert_eq!(web["type"], "web", "{web}");
    let lrp = kiln
        .bbs
        .desired_lrp_by_process_guid(&format!(
            "{}-{}",
            guid(&web),
            web["version"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(lrp.instances, 1);
    let (_, events) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={b}&types=audit.app.droplet.create"
        ))
        .await;
    assert_eq!(events["pagination"]["total_results"], 2, "{events}");

    // Who may not: an auditor neither makes, uploads nor downloads.
    let (user, token) = new_user(&kiln, "drop-auditor").await;
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
        "space_auditor",
        &user,
        ("space", &space),
    )
    .await;
    let (status, _) = call(
        &kiln,
        &token,
        "POST",
        "/v3/droplets",
        Some(json!({"relationships": rel})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &kiln,
        &token,
        "GET",
        &format!("/v3/droplets/{fresh}/download"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    kiln.stop().await;
}
