//! `/v3/apps/:guid/features` (ssh, revisions) and `/ssh_enabled`: stored,
//! shown as CC shows them; revisions off means a deployment records none.

use super::{PASSWORD, error_of, stage, staging_result, start, zip_of};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn features_are_stored_and_revisions_off_records_none() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let bp = kiln.create_buildpack("python", None).await;
    let app = kiln.create_app("feat", None).await;
    let app = app["guid"].as_str().unwrap().to_string();

    let (status, list) = kiln.get(&format!("/v3/apps/{app}/features")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list["resources"],
        json!([
            {"name": "ssh", "description": "Enable SSHing into the app.", "enabled": true},
            {"name": "revisions", "description": "Enable versioning of an application", "enabled": true},
        ])
    );
    assert_eq!(list["pagination"]["total_results"], 2);

    // Kiln runs no SSH proxy: never enabled, for CC's global reason.
    let (_, ssh) = kiln.get(&format!("/v3/apps/{app}/ssh_enabled")).await;
    assert_eq!(
        ssh,
        json!({"enabled": false, "reason": "ssh is disabled globally"})
    );
    let (status, f) = kiln
        .patch(
            &format!("/v3/apps/{app}/features/ssh"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!((status, &f["enabled"]), (StatusCode::OK, &json!(false)));
    let (_, f) = kiln.get(&format!("/v3/apps/{app}/features/ssh")).await;
    assert_eq!(f["enabled"], false);

    // Refusals change nothing.
    for (path, body, want) in [
        (
            "ssh",
            json!({"enabled": "yes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "ssh",
            json!({"enabled": true, "x": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("ssh", json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        ("telnet", json!({"enabled": true}), StatusCode::NOT_FOUND),
    ] {
        let (status, e) = kiln
            .patch(&format!("/v3/apps/{app}/features/{path}"), body.clone())
            .await;
        assert_eq!(status, want, "{path} {body}: {e}");
    }
    let (status, e) = kiln.get(&format!("/v3/apps/{app}/features/telnet")).await;
    assert_eq!(
        (status, error_of(&e).2.as_str()),
        (StatusCode::NOT_FOUND, "Feature not found")
    );
    let (_, f) = kiln.get(&format!("/v3/apps/{app}/features/ssh")).await;
    assert_eq!(f["enabled"], false);
    let (status, _) = kiln.get("/v3/apps/no-such-app/features").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revisions off: the deployment names no revision and none is recorded.
    let (status, _) = kiln
        .patch(
            &format!("/v3/apps/{app}/features/revisions"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let pkg = kiln.new_package(&app).await;
    kiln.upload_package(&pkg, json!([]), Some(zip_of(&[("app.py", "x")])))
        .await;
    let build = stage(
        &kiln,
        &pkg,
        Ok(&staging_result(bp["guid"].as_str().unwrap())),
    )
    .await;
    let droplet = build["droplet"]["guid"].as_str().unwrap();
    let deploy =
        json!({"droplet": {"guid": droplet}, "relationships": {"app": {"data": {"guid": app}}}});
    let (status, d) = kiln.post("/v3/deployments", deploy.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!(d["revision"], json!(null), "{d}");
    let (_, revisions) = kiln.get(&format!("/v3/apps/{app}/revisions")).await;
    assert_eq!(revisions["resources"], json!([]));
    kiln.stop().await;
}

/// `/v3/spaces/:guid/features`: the space's `ssh`, on by default, changed
/// by a PATCH with CC's body and refusals.
#[tokio::test]
async fn a_space_ssh_feature_is_stored_and_shown_as_cc_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    let (status, list) = kiln.get(&format!("/v3/spaces/{space}/features")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let on = json!({"name": "ssh", "description": "Enable SSHing into apps in the space.", "enabled": true});
    assert_eq!(list["resources"], json!([on]));
    let ssh = format!("/v3/spaces/{space}/features/ssh");
    let (status, v) = kiln.patch(&ssh, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["enabled"], false);
    let (_, v) = kiln.get(&ssh).await;
    assert_eq!(v["enabled"], false);
    // Refusals change nothing.
    for (body, detail) in [
        (json!({"enabled": "yes"}), "invalid type"),
        (json!({"enabled": true, "x": 1}), "Unknown field(s): 'x'"),
        (json!({}), "missing field `enabled`"),
    ] {
        let (status, v) = kiln.patch(&ssh, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(error_of(&v).2.contains(detail), "{v}");
    }
    let (status, v) = kiln.get(&format!("/v3/spaces/{space}/features/gpu")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(error_of(&v).2, "Feature not found");
    let (status, v) = kiln.get("/v3/spaces/no-such-space/features").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = kiln.get(&ssh).await;
    assert_eq!(v["enabled"], false);
    kiln.stop().await;
}
